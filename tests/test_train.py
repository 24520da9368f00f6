"""The trainer: config errors, task, loss against a float64 reference, HF end to end, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("yaml")

from vipfast.cli import main  # noqa: E402
from vipfast.train import Trainer, load_config  # noqa: E402
from vipfast.train.loss import pack_sequences, policy_gradient_loss, response_logprobs  # noqa: E402
from vipfast.train.task import (  # noqa: E402
    ARITHMETIC_LEVELS, REVERSED_ANSWER_MARK, arithmetic_problems, arithmetic_task, exact_match, training_problems)

# A small, fast run: tiny model, short warm start, few prompts. Shared by the end-to-end tests.
TINY = {"model.hidden_size": 64, "model.num_heads": 2, "model.num_layers": 1, "model.intermediate_size": 128,
        "model.warmup_steps": 40, "task.train_size": 48, "task.eval_size": 32, "allocator.prompts_per_step": 6,
        "allocator.budget_per_prompt": 5, "allocator.min_rollouts": 3, "allocator.max_rollouts": 8,
        "generation.backend": "hf", "steps": 3, "eval_every": 2, "checkpoint_every": 2}


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Warm starts go to one cache per test session, never the user's."""
    monkeypatch.setenv("VIPFAST_CACHE", str(tmp_path_factory.getbasetemp() / "vipfast-cache"))


@pytest.fixture
def no_model(monkeypatch):
    """Loading or building a model fails the test: what it checks must be refused before any compute."""
    from vipfast.train import trainer

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error")

    monkeypatch.setattr(trainer, "load_policy", refuse)
    monkeypatch.setattr(trainer, "policy_directory", refuse)


def tiny_config(run_dir, **overrides):
    return load_config(None, {**TINY, "run_dir": str(run_dir), **overrides})


# -- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"optim.lrr": 1.0}, "unknown config key 'optim.lrr'"),
    ({"optim.lr": -1.0}, "optim.lr must be > 0"),
    ({"optim.lr": "fast"}, "optim.lr must be float"),
    ({"steps": 0}, "steps must be >= 1"),
    ({"allocator.name": "greedy"}, "allocator.name must be one of"),
    ({"allocator.budget_per_prompt": 100}, "allocator.budget_per_prompt must be in [min_rollouts, max_rollouts]"),
    ({"optim.estimator": "grpo", "allocator.min_rollouts": 2}, "allocator.min_rollouts must be >= 3"),
    ({"model.num_heads": 8}, "model.hidden_size / model.num_heads must be >= 32"),
    ({"task.kind": "dataset"}, "task.path must be a JSONL or Parquet file"),
    ({"task.kind": "dataset", "task.path": "/nonexistent.jsonl"}, "task.path must be an existing file"),
    ({"model.kind": "path", "model.path": "/nonexistent"}, "model.path must be a local Hugging Face model directory"),
    ({"optim.epochs": 2}, "optim.epochs must be 1 unless optim.clip_eps is set"),
    ({"optim": 3}, "optim must be a mapping"),
    ({"task.train_size": 10**6}, "task.train_size must be <= 32000 for arithmetic"),
    ({"task.eval_size": 10**5}, "task.eval_size must be <= 8000 for arithmetic"),
    ({"seed": -1}, "seed must be an integer in [0, 4294967295], got -1"),
    ({"seed": 2**32}, "seed must be an integer in [0, 4294967295]"),
    ({"cpu_threads": 10**6}, "cpu_threads must be in [0, "),
    ({"optim.lr": float("nan")}, "optim.lr must be a finite number, got nan"),
    ({"optim.max_grad_norm": float("inf")}, "optim.max_grad_norm must be a finite number, got inf"),
    ({"generation.top_p": 10**400}, "generation.top_p must be a finite number"),
    ({"steps.every": 3}, "cannot set 'steps.every': 'steps' is a single value, not a section"),
    ({"optim.lr.x": 3}, "cannot set 'optim.lr.x': 'optim.lr' is a single value"),
    ({"optimizer.lr": 3}, "unknown config key 'optimizer' in override 'optimizer.lr'"),
    ({"optim": 3, "optim.lr": 1.0}, "optim must be a mapping, got int"),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else None)
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ValueError) as error:
        load_config(None, overrides)
    assert message in str(error.value)


@pytest.mark.parametrize("content, message", [
    (b"steps: 3\nrun_dir: caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 21)"),
    (b"optim: {lr: [1,\n", "is not valid YAML"),
    (b"- steps\n", "must hold a mapping at the top level, got list"),
    (b"1: one\n~: none\n", "unknown config key '1'"),  # keys of mixed types sort by name
    (b"optim:\n  estimator: ppo\n", "optim.estimator must be one of"),
], ids=["latin-1", "yaml", "list", "mixed-keys", "estimator"])
def test_bad_config_file_names_the_file_or_key(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        load_config(path)
    assert message in str(error.value)
    if "key" not in message and "estimator" not in message:
        assert str(path) in str(error.value)


def test_config_path_that_is_missing_or_a_directory_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"config file {tmp_path} is not a file"):
        load_config(tmp_path)
    with pytest.raises(ValueError, match="config file .*nothing.yaml does not exist"):
        load_config(tmp_path / "nothing.yaml")


def test_run_dir_must_be_a_usable_directory(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    with pytest.raises(ValueError, match="run_dir must be a directory .*not a file"):
        load_config(None, {"run_dir": str(afile)})
    with pytest.raises(ValueError, match=f"run_dir must be a path below a directory, but {afile} is a file"):
        load_config(None, {"run_dir": str(afile / "run")})
    assert load_config(None, {"run_dir": str(tmp_path / "new" / "run")}).run_dir.endswith("new/run")


def test_bad_config_file_fails_before_any_compute(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("VIPFAST_CACHE", str(cache))
    config = tmp_path / "bad.yaml"
    config.write_text("optim:\n  estimator: ppo\n")
    assert main(["train", "--config", str(config)]) == 2
    assert capsys.readouterr().err.startswith("vipfast: error: optim.estimator must be one of")
    assert not cache.exists()  # no warm start began


def test_config_file_and_overrides_merge(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 7\noptim:\n  lr: 3.0e-4\n  betas: [0.8, 0.9]\n")
    config = load_config(path, {"allocator.name": "uniform"})
    assert (config.steps, config.optim.lr, config.optim.betas, config.allocator.name) == (7, 3e-4, (0.8, 0.9), "uniform")
    assert config.optim.estimator == "grpo"  # untouched keys keep the defaults


# -- task ----------------------------------------------------------------------------------------

def test_arithmetic_task_answers_are_right_and_splits_disjoint():
    task = arithmetic_task(load_config(None, {"task.train_size": 300, "task.eval_size": 200}).task)
    assert len(task.train) == 300 and len(task.held_out) == 200
    assert not {p.prompt for p in task.train} & {p.prompt for p in task.held_out}
    for prompt, answer, family, _ in task.train + task.held_out:
        # Least-significant digit first, announced by the mark: "47+38=r" -> "58".
        assert prompt.endswith("=" + REVERSED_ANSWER_MARK)
        assert int(answer[::-1]) == eval(prompt[:-2])  # noqa: S307 - digits and + - * only
        a, op, b = next((prompt[:i], prompt[i], prompt[i + 1:-2]) for i in range(1, len(prompt)) if prompt[i] in "+-*")
        assert family in (f"{len(a)}{op}{len(b)}", f"{len(b)}{op}{len(a)}")  # the level (subtraction may swap)
    assert task.families == tuple(f"{da}{op}{db}" for op, da, db in ARITHMETIC_LEVELS)
    operators = {next(op for op in "+-*" if op in p.prompt[1:]) for p in task.train}
    assert operators == {op for op, _, _ in ARITHMETIC_LEVELS}
    # Both sets sample the same distribution: the held-out set is not left short of the easy levels.
    one_digit = [sum(len(p.prompt) == 5 for p in part) / len(part) for part in (task.train, task.held_out)]
    assert one_digit[1] > 0.5 * one_digit[0] > 0
    assert exact_match([" 21", "12", ""], ["21", "21", "0"]).tolist() == [1.0, 0.0, 0.0]


def test_warm_start_never_sees_a_held_out_problem():
    held_out = {p.prompt for p in arithmetic_task(load_config().task).held_out}
    warm_start = {p.prompt for p in training_problems(20_000, np.random.default_rng(0))}
    assert len(warm_start) > 5000 and not warm_start & held_out
    # Not vacuous: unfiltered draws do hit the held-out set.
    assert {p.prompt for p in arithmetic_problems(20_000, np.random.default_rng(0))} & held_out


def test_math_verify_accepts_equivalent_forms():
    pytest.importorskip("math_verify")
    from vipfast.train.task import math_verify_match

    rewards = math_verify_match(["The answer is $\\frac{1}{2}$", "\\boxed{0.5}", "\\boxed{3}"], ["0.5", "1/2", "4"])
    assert rewards.tolist() == [1.0, 1.0, 0.0]


# -- loss against an independent float64 reference ------------------------------------------------

class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are a given tensor (plus a trainable zero, so gradients flow)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, input_ids, attention_mask):
        return type("Output", (), {"logits": self.logits})()


def reference_loss(logits, prompts, responses, rewards, sizes, old_logprobs, estimator, clip_eps, aggregation,
                   max_new_tokens):
    """Loop-per-token float64 numpy: log-softmax, group advantage, clipped surrogate, aggregation."""
    logits = logits.astype(np.float64)
    total, tokens, index = 0.0, 0, 0
    for size in sizes:
        group = rewards[index:index + size]
        mean, std = group.mean(), group.std(ddof=1)
        for j in range(size):
            i = index + j
            advantage = {"grpo": (group[j] - mean) / (std + 1e-6), "drgrpo": group[j] - mean,
                         "rloo": group[j] - (group.sum() - group[j]) / (size - 1)}[estimator]
            for k, token in enumerate(responses[i]):
                row = logits[i, len(prompts[i]) + k - 1]
                logprob = row[token] - np.log(np.exp(row - row.max()).sum()) - row.max()
                ratio = np.exp(logprob - old_logprobs[i][k])
                surrogate = ratio * advantage
                if clip_eps is not None:
                    surrogate = min(surrogate, np.clip(ratio, 1 - clip_eps, 1 + clip_eps) * advantage)
                total -= surrogate
                tokens += 1
        index += size
    return total / tokens if aggregation == "token-mean" else total / (len(responses) * max_new_tokens)


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo", "rloo"])
@pytest.mark.parametrize("clip_eps, aggregation", [(None, "token-mean"), (0.2, "token-mean"), (0.1, "token-sum")])
def test_policy_gradient_loss_matches_float64_reference(estimator, clip_eps, aggregation):
    from vipfast import group_advantages, token_advantages

    rng = np.random.default_rng(7)
    sizes = [3, 5, 4]  # ragged groups
    n, vocab, max_new = sum(sizes), 11, 4
    prompts = [[1] + rng.integers(3, vocab, size=rng.integers(1, 4)).tolist() for _ in range(n)]
    responses = [rng.integers(3, vocab, size=rng.integers(1, max_new + 1)).tolist() for _ in range(n)]
    rewards = rng.integers(0, 2, size=n).astype(float)
    rewards[:3] = [1, 0, 1]  # at least one group with spread
    batch = pack_sequences(prompts, responses, pad_id=0, device="cpu")
    logits = torch.randn(n, batch["input_ids"].shape[1], vocab, dtype=torch.float32)
    model = FixedLogits(logits)
    logprobs, mask = response_logprobs(model, batch)
    old = (logprobs.detach() + 0.3 * torch.randn_like(logprobs)) * mask  # ratios away from 1, so clipping bites
    advantages = group_advantages(torch.tensor(rewards), torch.tensor(sizes), estimator=estimator)
    per_token, _ = token_advantages(advantages, batch["response_lengths"], layout="padded")
    loss = policy_gradient_loss(logprobs, old, per_token, mask, clip_eps=clip_eps, aggregation=aggregation,
                                max_new_tokens=max_new)
    old_rows = [old[i, :len(r)].double().numpy() for i, r in enumerate(responses)]
    expected = reference_loss(logits.numpy(), prompts, responses, rewards, sizes, old_rows, estimator, clip_eps,
                              aggregation, max_new)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5, atol=1e-6)
    # The gradient reaches exactly the logits that score response tokens.
    loss.backward()
    touched = model.logits.grad.abs().sum(-1) > 0
    for i, (p, r) in enumerate(zip(prompts, responses)):
        columns = set(torch.nonzero(touched[i]).flatten().tolist())
        assert columns <= set(range(len(p) - 1, len(p) + len(r) - 1))


def test_batch_statistics_counts_wasted_rollouts():
    from vipfast.sampling import Prompts, StepBatch
    from vipfast.train.rollouts import StepRollouts, batch_statistics

    rewards = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], dtype=float)
    counts = np.array([3, 3, 4])
    rollouts = StepRollouts()
    rollouts.add(np.repeat([7, 8, 9], counts), [[1, 2]] * 10, rewards)
    prompts = Prompts(ids=np.array([7, 8, 9]), keys=np.arange(3, dtype=np.uint64))
    batch = StepBatch(prompts=prompts, group_prompt=np.arange(3), group_sizes=counts, rollouts=np.arange(10),
                      rewards=rewards, trained=np.ones(10, dtype=bool), generated_rollouts=10, generated_tokens=20,
                      rounds=1, prompts_drawn=3)
    families = {7: "a", 8: "b", 9: "a"}
    stats = batch_statistics(batch, rollouts, [families.get(i, "?") for i in range(10)])
    assert stats["wasted_rollouts"] == 7 and stats["wasted_fraction"] == 0.7
    assert stats["solve_rate"] == pytest.approx(2 / 3)
    assert stats["allocation_histogram"] == {3: 2, 4: 1}
    assert stats["mean_response_tokens"] == 2.0
    assert stats["rollouts_by_family"] == {"a": 7, "b": 3}
    # A rollout that is generated but not trained on is wasted too, even in a group with spread.
    batch.trained = np.array([True] * 3 + [True, False, True] + [True] * 4)
    assert batch_statistics(batch, rollouts, None)["wasted_rollouts"] == 8


# -- end to end ----------------------------------------------------------------------------------

def read_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_hf_end_to_end_through_the_cli(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train"] + [f"--set={k}={v}" for k, v in {**TINY, "run_dir": run_dir}.items()]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "backend hf" in out and "allocator overhead" in out
    rows = read_rows(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    budget = TINY["allocator.prompts_per_step"] * TINY["allocator.budget_per_prompt"]
    for previous, row in zip(rows, rows[1:]):
        assert row["rollouts"] - previous["rollouts"] == budget  # the allocator spends exactly the budget
        assert sum(int(n) * c for n, c in row["allocation_histogram"].items()) == budget
        assert set(row["time_s"]) == {"allocate", "generate", "reward", "update", "sync"}
        assert 0 <= row["allocator_overhead"] < 1 and 0 <= row["reward_mean"] <= 1
    assert [r["step"] for r in rows if r.get("held_out_accuracy") is not None] == [0, 2, 3]
    assert (run_dir / "checkpoint" / "policy" / "config.json").is_file()
    assert (run_dir / "curves.png").stat().st_size > 10_000
    assert main(["plot", str(run_dir), "--output", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accuracy_label_says_what_was_measured(tmp_path):
    from vipfast.train.plot import _run_accuracy_label, accuracy_label

    assert accuracy_label(0, 1.0) == "held-out accuracy (greedy)"
    assert accuracy_label(8, 0.7) == "held-out accuracy (8 samples/prompt, T=0.7)"
    config = tiny_config(tmp_path / "run", **{"eval_samples": 3, "generation.temperature": 1.5})
    Trainer(config)  # writes the run's config.yaml
    assert _run_accuracy_label(tmp_path / "run") == "held-out accuracy (3 samples/prompt, T=1.5)"


def test_backend_falls_back_to_hf_with_a_warning(monkeypatch):
    from vipfast.train import generation

    monkeypatch.setattr(generation, "vllm_available", lambda: False)
    with pytest.warns(UserWarning, match="vLLM is not installed: generating with Hugging Face"):
        assert generation.resolve_backend("auto") == "hf"
    with pytest.raises(ValueError, match="generation.backend is 'vllm' but vllm is not installed"):
        generation.resolve_backend("vllm")
    assert generation.resolve_backend("hf") == "hf"


def test_resume_from_checkpoint_takes_the_same_next_step(tmp_path):
    straight = tiny_config(tmp_path / "straight", steps=3, checkpoint_every=1)
    Trainer(straight).run()
    interrupted = tiny_config(tmp_path / "resumed", steps=2, checkpoint_every=1)
    Trainer(interrupted).run()
    resumed = Trainer(tiny_config(tmp_path / "resumed", steps=3, checkpoint_every=1))
    assert resumed.step == 2
    resumed.run()
    a, b = read_rows(tmp_path / "straight"), read_rows(tmp_path / "resumed")
    assert len(a) == len(b)
    for row_a, row_b in zip(a, b):
        for key in ("rollouts", "reward_mean", "loss", "grad_norm", "allocation_histogram", "held_out_accuracy"):
            assert row_a.get(key) == row_b.get(key), (row_a["step"], key)
    policy_a = Trainer(tiny_config(tmp_path / "straight")).model.state_dict()
    for name, tensor in Trainer(tiny_config(tmp_path / "resumed")).model.state_dict().items():
        assert torch.equal(tensor, policy_a[name]), name


def test_allocator_learns_within_the_step_and_its_errors_surface(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run"))
    row = trainer.train_step()
    # The update ran on the worker thread, yet it is done when the step returns.
    assert trainer.allocator.stats()["prompts_held"] == TINY["allocator.prompts_per_step"]
    assert row["time_s"]["allocate"] > 0

    def reject(*args, **kwargs):
        raise ValueError("rewards rejected by the allocator")

    trainer.allocator.update = reject
    with pytest.raises(ValueError, match="rewards rejected by the allocator"):
        trainer.train_step()


def test_resume_refuses_a_different_config(tmp_path):
    Trainer(tiny_config(tmp_path / "run", steps=1)).run()
    with pytest.raises(ValueError) as error:
        Trainer(tiny_config(tmp_path / "run", steps=2, **{"optim.lr": 0.5}))
    assert "whose optim.lr was 0.0001, not 0.5" in str(error.value)
    assert "--no-resume" in str(error.value) and "resume=False" not in str(error.value)


def test_dataset_task_with_math_verify_and_a_local_model_directory(tmp_path):
    pytest.importorskip("datasets")
    pytest.importorskip("math_verify")
    from vipfast.train.model import policy_directory

    model_dir = policy_directory(tiny_config(tmp_path / "unused").model)  # any local HF model directory
    rows = [{"problem": f"{a}+{b}=", "solution": f"\\boxed{{{a + b}}}"} for a in range(6) for b in range(4)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tiny_config(tmp_path / "run", steps=2, **{
        "task.kind": "dataset", "task.path": str(data), "task.eval_path": str(data), "task.eval_size": 8,
        "task.question_field": "problem", "task.answer_field": "solution", "task.verifier": "math",
        "model.kind": "path", "model.path": str(model_dir)})
    trainer = Trainer(config)
    assert trainer.task.train[0][:2] == ("0+0=", "\\boxed{0}") and len(trainer.task.held_out) == 8
    history = trainer.run()
    assert history[-1]["step"] == 2 and history[-1]["held_out_accuracy"] is not None


def test_dataset_with_a_missing_field_is_refused(tmp_path):
    pytest.importorskip("datasets")
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"q": "1+1=", "a": "2"}) + "\n")
    config = tiny_config(tmp_path / "run", **{"task.kind": "dataset", "task.path": str(data)})
    with pytest.raises(ValueError, match="task.question_field = 'question' is not a column"):
        Trainer(config)

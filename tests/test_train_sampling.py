"""The trainer on sampling modes: the default step against the plain loop it replaced, prompt sources, budget
accounting, exact resume with a multi-round mode, screens that refill, the oracle, prompt-mean aggregation
against a hand-computed gradient, custom rewards, chat templates and TensorBoard logging."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("yaml")

from test_train import TINY, no_model, private_cache, read_rows, tiny_config  # noqa: E402,F401 - fixtures

from vipfast import group_advantages, token_advantages  # noqa: E402
from vipfast.train import Trainer, load_config, prepare_run  # noqa: E402
from vipfast.train.loss import pack_sequences, policy_gradient_loss, response_logprobs  # noqa: E402
from vipfast.train.source import EPOCH_STREAM, EpochOrderSource, StepOrderSource, pool_prompts  # noqa: E402
from vipfast.train.task import exact_match  # noqa: E402


# -- the default step is the loop it replaced ----------------------------------------------------------

def plain_loop(trainer: Trainer, steps: int) -> list[dict]:
    """The step the trainer took before sampling modes, written out: prompts by rng.choice over the pool, one
    plan, one generation, exact-match rewards, GRPO advantages, token-mean loss, one AdamW step."""
    c = trainer.config
    rows = []
    for step in range(steps):
        rng = np.random.default_rng([c.seed, step])
        chosen = rng.choice(len(trainer.task.train), size=c.allocator.prompts_per_step, replace=False)
        plan = trainer.allocator.plan([trainer.task.train[i].prompt for i in chosen])
        counts = plan.counts
        generated = trainer.generator.generate([trainer.train_ids[i] for i in chosen], counts,
                                               seed=int(rng.integers(2**31 - 1)))
        references = [trainer.task.train[i].answer for i, n in zip(chosen, counts.tolist()) for _ in range(n)]
        rewards = exact_match(generated.texts, references)
        trainer.allocator.update(plan, rewards)
        batch = pack_sequences([trainer.train_ids[i] for i, n in zip(chosen, counts.tolist()) for _ in range(n)],
                               generated.response_ids, trainer.tokenizer.pad_token_id, "cpu")
        advantages = group_advantages(torch.as_tensor(rewards), torch.as_tensor(counts), estimator=c.optim.estimator)
        per_token, _ = token_advantages(advantages, batch["response_lengths"], layout="padded")
        for group in trainer.optimizer.param_groups:
            group["lr"] = c.optim.lr * min(1.0, (step + 1) / (c.optim.warmup_steps + 1))
        logprobs, mask = response_logprobs(trainer.model, batch)
        loss = policy_gradient_loss(logprobs, logprobs.detach(), per_token, mask, clip_eps=None,
                                    aggregation="token-mean", max_new_tokens=c.generation.max_new_tokens)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), c.optim.max_grad_norm)
        trainer.optimizer.step()
        rows.append(dict(loss=float(loss.detach()), reward_mean=float(rewards.mean()), counts=counts.tolist()))
    return rows


def test_the_default_step_is_the_plain_loop_bit_for_bit(tmp_path):
    """sampling.name 'single' with the 'step' order (the defaults) takes exactly the step of the loop it replaced."""
    reference = Trainer(tiny_config(tmp_path / "plain"))
    expected = plain_loop(reference, 3)
    trainer = Trainer(tiny_config(tmp_path / "sampled"))
    rows = [trainer.train_step() for _ in range(3)]
    for row, want in zip(rows, expected):
        assert row["loss"] == want["loss"] and row["reward_mean"] == want["reward_mean"]
        assert row["allocation_histogram"] == dict(zip(*np.unique(want["counts"], return_counts=True)))
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, reference.model.state_dict()[name]), name


# -- prompt sources ---------------------------------------------------------------------------------------

def test_epoch_order_reads_one_permutation_per_epoch_and_resumes(rng):
    size, seed = 10, int(rng.integers(1000))
    pool = pool_prompts(f"prompt {i}" for i in range(size))
    source = EpochOrderSource(pool, seed)
    ids = np.concatenate([source.draw(4).ids for _ in range(5)])  # 20 prompts: two whole epochs
    orders = [np.random.default_rng([seed, epoch, EPOCH_STREAM]).permutation(size) for epoch in range(2)]
    np.testing.assert_array_equal(ids, np.concatenate(orders))
    assert (source.epoch, source.position) == (2, 0)
    source.draw(3)
    resumed = EpochOrderSource(pool, seed)
    resumed.load_state(json.loads(json.dumps(source.state())))
    np.testing.assert_array_equal(resumed.draw(9).ids, source.draw(9).ids)  # crosses into epoch 3 alike
    assert source.draw(0).ids.size == 0
    for bad in ({"epoch": 1}, {"epoch": 0, "position": size}, {"epoch": -1, "position": 0}, [0, 1]):
        with pytest.raises(ValueError, match="prompt source state"):
            EpochOrderSource(pool, seed).load_state(bad)


def test_step_order_first_draw_is_the_steps_choice_and_refills_are_new_prompts(rng):
    pool = pool_prompts(f"prompt {i}" for i in range(12))
    seed = int(rng.integers(1000))
    source = StepOrderSource(pool)
    source.begin_step(np.random.default_rng([seed, 3]))
    first, second, rest = source.draw(5), source.draw(5), source.draw(5)
    np.testing.assert_array_equal(first.ids, np.random.default_rng([seed, 3]).choice(12, size=5, replace=False))
    drawn = np.concatenate([first.ids, second.ids, rest.ids])
    assert len(rest) == 2 and sorted(drawn.tolist()) == list(range(12))  # the pool runs dry within the step
    assert first.texts == tuple(f"prompt {i}" for i in first.ids)
    with pytest.raises(RuntimeError, match="before begin_step"):
        StepOrderSource(pool).draw(1)


# -- budget accounting and multi-round modes --------------------------------------------------------------

def recording_generator(trainer: Trainer) -> list[tuple[list[int], list[int]]]:
    """Every generation call of training steps: (counts, response lengths)."""
    calls = []
    real = trainer.generator.generate

    def generate(prompt_ids, counts, seed):
        out = real(prompt_ids, counts, seed)
        calls.append((np.asarray(counts).tolist(), [len(r) for r in out.response_ids]))
        return out

    trainer.generator.generate = generate
    return calls


@pytest.mark.parametrize("mode", [{"sampling.name": "dynamic", "sampling.oversample": 2.0, "sampling.max_rounds": 3},
                                  {"sampling.name": "reinforce_ada", "sampling.rounds": 2, "sampling.per_round": 4},
                                  {"sampling.name": "vip_rounds", "sampling.groups": "round"}],
                         ids=["dynamic", "reinforce_ada", "vip_rounds"])
def test_budget_accounting_counts_every_generated_rollout_and_token(tmp_path, mode):
    trainer = Trainer(tiny_config(tmp_path / "run", **{"sampling.order": "epoch", **mode}))
    calls = recording_generator(trainer)
    tokens = rollouts = 0
    for _ in range(3):
        before = len(calls)
        row = trainer.train_step()
        step_calls = calls[before:]
        generated = sum(sum(counts) for counts, _ in step_calls)
        step_tokens = sum(sum(lengths) for _, lengths in step_calls)
        rollouts, tokens = rollouts + generated, tokens + step_tokens
        assert row["generated_rollouts"] == generated and row["generated_tokens"] == step_tokens
        assert row["rounds"] == len(step_calls) >= 1
        assert (row["rollouts"], row["tokens"]) == (rollouts, tokens)  # cumulative
        assert 0 <= row["trained_rollouts"] <= generated and row["prompts_drawn"] >= 1
        assert sum(row["rollouts_by_family"].values()) == generated
        assert row["wasted_rollouts"] >= generated - row["trained_rollouts"]
        assert isinstance(row["complete"], bool)
    if mode["sampling.name"] == "reinforce_ada":
        assert row["trained_rollouts"] < generated  # it trains on a down-sampled subset of what it drew


def test_resume_mid_run_takes_the_same_next_step_with_a_multi_round_mode(tmp_path):
    """dynamic sampling, the epoch order (its position in the checkpoint) and a learning allocator."""
    mode = {"sampling.name": "dynamic", "sampling.oversample": 2.0, "sampling.max_rounds": 2,
            "sampling.order": "epoch", "checkpoint_every": 1}
    Trainer(tiny_config(tmp_path / "straight", steps=4, **mode)).run()
    Trainer(tiny_config(tmp_path / "resumed", steps=2, **mode)).run()
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "trainer_state.json").read_text())
    assert state["source"]["position"] > 0 or state["source"]["epoch"] > 0
    resumed = Trainer(tiny_config(tmp_path / "resumed", steps=4, **mode))
    assert resumed.step == 2 and resumed.source.state() == state["source"]
    resumed.run()
    straight, again = read_rows(tmp_path / "straight"), read_rows(tmp_path / "resumed")
    assert len(straight) == len(again) == 5
    for a, b in zip(straight, again):
        for key in ("rollouts", "tokens", "reward_mean", "loss", "grad_norm", "rounds", "prompts_drawn",
                    "trained_rollouts", "allocation_histogram", "held_out_accuracy"):
            assert a.get(key) == b.get(key), (a["step"], key)
    assert any(row.get("rounds", 1) > 1 for row in straight[1:])  # the mode did take several rounds
    model_a = Trainer(tiny_config(tmp_path / "straight", steps=4, **mode)).model.state_dict()
    for name, tensor in Trainer(tiny_config(tmp_path / "resumed", steps=4, **mode)).model.state_dict().items():
        assert torch.equal(tensor, model_a[name]), name


def test_a_screen_refills_through_the_source(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", **{"allocator.name": "greso", "sampling.order": "epoch"}))
    trainer.allocator.screen = lambda keys: np.asarray(keys) % np.uint64(2) == 0  # keeps about half
    position = trainer.source.position
    row = trainer.train_step()
    assert row["complete"] and row["prompts_drawn"] > TINY["allocator.prompts_per_step"]
    assert trainer.source.position == position + row["prompts_drawn"]
    assert row["generated_rollouts"] == TINY["allocator.prompts_per_step"] * TINY["allocator.budget_per_prompt"]


def test_rollout_budget_ends_the_run_at_equal_rollouts(tmp_path):
    config = tiny_config(tmp_path / "run", steps=50, rollout_budget=65, eval_every=100)
    rows = Trainer(config).run()
    assert [r["rollouts"] for r in rows] == [0, 30, 60, 90]  # stops after the step that reaches 65
    assert rows[-1]["held_out_accuracy"] is not None  # the last step is always evaluated
    assert prepare_run(load_config(None, {**TINY, "run_dir": str(tmp_path / "run"), "steps": 50,
                                          "rollout_budget": 65, "eval_every": 100})).finished


def test_sampling_options_are_checked_with_the_config():
    with pytest.raises(ValueError, match="sampling: mode 'dynamic' does not take the options \\['rounds'\\]"):
        load_config(None, {"sampling.name": "dynamic", "sampling.rounds": 3})
    with pytest.raises(ValueError, match="sampling: oversample must be a finite number >= 1"):
        load_config(None, {"sampling.name": "dynamic", "sampling.oversample": 0.5})
    with pytest.raises(ValueError, match="sampling.name must be one of"):
        load_config(None, {"sampling.name": "dapo"})
    with pytest.raises(ValueError, match="sampling.order must be one of \\('step', 'epoch'\\)"):
        load_config(None, {"sampling.order": "shuffle"})
    config = load_config(None, {"sampling.name": "dynamic", "sampling.oversample": 2})
    assert config.to_dict()["sampling"] == {"name": "dynamic", "order": "step", "oversample": 2}


# -- the oracle ---------------------------------------------------------------------------------------------

def test_the_oracle_weighs_by_measured_success_outside_the_budget(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", **{"allocator.name": "oracle", "allocator.oracle_samples": 4}))
    calls = recording_generator(trainer)
    row = trainer.train_step()
    budget = TINY["allocator.prompts_per_step"] * TINY["allocator.budget_per_prompt"]
    assert row["rollouts"] == row["generated_rollouts"] == budget  # the measurement is not counted
    assert calls[0][0] == [4] * TINY["allocator.prompts_per_step"] and row["oracle_s"] > 0
    # The measurement is the success fraction of the samples, and the weights are p(1 - p).
    trainer.generator.generate = lambda prompt_ids, counts, seed: type("Out", (), dict(
        texts=[trainer.task.train[0].answer if j < 1 + q % 4 else "x" for q, n in enumerate(counts) for j in range(n)],
        response_ids=[[1]] * int(sum(counts))))()
    keys = trainer.pool.keys[:1].repeat(1)
    assert trainer.measure_success(keys, None).tolist() == [0.25]
    plan = trainer.allocator.plan(list(trainer.pool.texts[:1]), keys=keys)
    assert plan.p.tolist() == [0.25] and plan.weights.tolist() == [0.1875]


# -- prompt-mean aggregation against a hand-computed gradient ---------------------------------------------

class Bigram(torch.nn.Module):
    """logits at a position = W[token at that position]: ∇ log softmax has a closed form."""

    def __init__(self, weights):
        super().__init__()
        self.weights = torch.nn.Parameter(weights.clone())

    def forward(self, input_ids, attention_mask):
        return type("Output", (), {"logits": self.weights[input_ids]})()


def hand_gradient(weights, prompts, responses, advantages, prompt_of_row, max_new_tokens) -> np.ndarray:
    """∇W of −(1/Q) Σ_q (1/n_q) Σ_i A_qi Σ_t log π(y_t | y_{t−1}) / max_new_tokens, from the definition in
    float64: ∂ log softmax(W[c])[y] / ∂W[c] = onehot(y) − softmax(W[c])."""
    w = weights.astype(np.float64)
    grad = np.zeros_like(w)
    labels, counts = np.unique(prompt_of_row, return_counts=True)
    rollouts_of = dict(zip(labels.tolist(), counts.tolist()))
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        sequence = prompt + response
        scale = advantages[i] / (len(labels) * rollouts_of[prompt_of_row[i]]) / max_new_tokens
        for k, token in enumerate(response):
            context = sequence[len(prompt) + k - 1]
            probabilities = np.exp(w[context] - w[context].max())
            probabilities /= probabilities.sum()
            grad[context] -= scale * (np.eye(len(w))[token] - probabilities)
    return grad


@pytest.mark.parametrize("layout", ["ragged", "one prompt", "one rollout each", "two groups of one prompt"])
def test_prompt_mean_gradient_matches_the_hand_computed_sum(rng, layout):
    vocab, max_new = 9, 4
    sizes = {"ragged": [2, 5, 3, 7], "one prompt": [4], "one rollout each": [1, 1, 1],
             "two groups of one prompt": [3, 2, 4]}[layout]
    group_prompt = [0, 0, 1] if layout == "two groups of one prompt" else list(range(len(sizes)))
    n = sum(sizes)
    prompt_of_row = np.repeat(group_prompt, sizes)
    prompt_ids = {q: [1] + rng.integers(3, vocab, size=int(rng.integers(1, 4))).tolist() for q in set(group_prompt)}
    prompts = [prompt_ids[q] for q in prompt_of_row.tolist()]
    responses = [rng.integers(3, vocab, size=int(rng.integers(1, max_new + 1))).tolist() for _ in range(n)]
    advantages = rng.normal(size=n)
    weights = torch.tensor(rng.normal(size=(vocab, vocab)), dtype=torch.float32)
    model = Bigram(weights)
    batch = pack_sequences(prompts, responses, pad_id=0, device="cpu")
    logprobs, mask = response_logprobs(model, batch)
    per_token, _ = token_advantages(torch.tensor(advantages), batch["response_lengths"], layout="padded")
    loss = policy_gradient_loss(logprobs, logprobs.detach(), per_token, mask, clip_eps=None,
                                aggregation="prompt-mean", max_new_tokens=max_new,
                                prompts=torch.as_tensor(prompt_of_row))
    loss.backward()
    expected = hand_gradient(weights.numpy(), prompts, responses, advantages, prompt_of_row, max_new)
    np.testing.assert_allclose(model.weights.grad.numpy(), expected, rtol=2e-4, atol=1e-6)
    if layout == "ragged":  # token-mean weighs prompts by their rollouts: another gradient
        model.weights.grad = None
        logprobs, mask = response_logprobs(model, batch)
        policy_gradient_loss(logprobs, logprobs.detach(), per_token, mask, clip_eps=None, aggregation="token-mean",
                             max_new_tokens=max_new).backward()
        assert not np.allclose(model.weights.grad.numpy() * mask.sum().item() / n, expected * len(sizes), rtol=1e-2)


def test_prompt_mean_needs_the_prompt_of_each_row():
    logprobs = torch.zeros(3, 2, requires_grad=True)
    mask = torch.ones(3, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="needs the prompt of each of the 3 rows"):
        policy_gradient_loss(logprobs, logprobs.detach(), torch.ones(3, 2), mask, clip_eps=None,
                             aggregation="prompt-mean", max_new_tokens=2)
    with pytest.raises(ValueError, match="aggregation must be"):
        policy_gradient_loss(logprobs, logprobs.detach(), torch.ones(3, 2), mask, clip_eps=None,
                             aggregation="sequence-mean", max_new_tokens=2)


# -- custom rewards -----------------------------------------------------------------------------------------

REWARDS = '''
import math

def length_match(completions, references):
    return [float(len(c.strip()) == len(r)) for c, r in zip(completions, references)]

def too_short(completions, references):
    return [1.0]

def not_finite(completions, references):
    return [math.nan] * len(completions)

def broken(completions, references):
    raise KeyError("no such reference")

def words(completions, references):
    return ["high"] * len(completions)
'''


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_rewards", None)
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)


def test_a_custom_reward_scores_the_rollouts(tmp_path, reward_module):
    trainer = Trainer(tiny_config(tmp_path / "run", **{"task.reward": f"{reward_module}:length_match"}))
    problems = trainer.task.train[:2]
    assert trainer.task.score([" " + "9" * len(problems[0].answer), "x" * 40], problems).tolist() == [1.0, 0.0]
    assert np.isfinite(trainer.train_step()["reward_mean"])


def test_prompt_mean_trains_end_to_end(tmp_path, reward_module):
    """Rewards with spread (a length reward: the tiny test policy rarely answers right), two rounds per step."""
    trainer = Trainer(tiny_config(tmp_path / "run", **{"optim.aggregation": "prompt-mean",
                                                       "task.reward": f"{reward_module}:length_match",
                                                       "sampling.name": "vip_rounds", "sampling.groups": "round"}))
    row = trainer.train_step()
    assert row["rounds"] == 2 and np.isfinite(row["loss"]) and row["grad_norm"] > 0


@pytest.mark.parametrize("reward, message", [
    ("no_such_module_here:reward", "cannot import module 'no_such_module_here'"),
    ("{module}:missing", "has no function 'missing'"),
    ("{module}:too_short", "returned shape (1,) for 2 completions"),
    ("{module}:not_finite", "returned nan for completion 0; rewards must be finite"),
    ("{module}:broken", "failed on (completions="),
    ("{module}:words", "must return numbers, one per completion"),
], ids=["module", "function", "length", "nan", "raises", "strings"])
def test_a_bad_custom_reward_is_refused_before_any_model(tmp_path, reward_module, no_model, reward, message):
    config = tiny_config(tmp_path / "run", **{"task.reward": reward.format(module=reward_module)})
    if reward.endswith("too_short"):  # the trial call scores one completion: a fixed-length answer passes it
        task = prepare_run(config).task
        with pytest.raises(ValueError, match=message.replace("(", "\\(").replace(")", "\\)")):
            task.score(["1", "2"], task.train[:2])
        return
    with pytest.raises(ValueError) as error:
        prepare_run(config)
    assert message in str(error.value) and "task.reward" in str(error.value)


@pytest.mark.parametrize("value", ["my_rewards", "my_rewards:", "my rewards:f", ":f", "a.:f"])
def test_a_reward_path_must_name_a_module_and_a_function(value):
    with pytest.raises(ValueError, match="task.reward must be null or 'package.module:function'"):
        load_config(None, {"task.reward": value})


# -- chat templates ------------------------------------------------------------------------------------------

@pytest.fixture
def chat_model(tmp_path):
    """A copy of the tiny warm-started model whose tokenizer has a chat template (system text, then the prompt,
    then the reversed-answer mark as the generation prompt)."""
    import shutil

    from vipfast.train.model import load_tokenizer, policy_directory

    directory = tmp_path / "chat-model"
    shutil.copytree(policy_directory(tiny_config(tmp_path / "unused").model), directory)
    tokenizer = load_tokenizer(directory)
    tokenizer.chat_template = ("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% if m['role'] == 'system' %}"
                               " {% endif %}{% endfor %}{% if add_generation_prompt %}r{% endif %}")
    tokenizer.save_pretrained(directory)
    return directory


def test_prompts_go_through_the_chat_template_of_a_local_model(tmp_path, chat_model):
    arithmetic = {"task.train_size": 48, "model.kind": "path", "model.path": str(chat_model)}
    trainer = Trainer(tiny_config(tmp_path / "run", **arithmetic))
    prompt = trainer.task.train[0].prompt
    assert trainer.train_ids[0] == trainer.tokenizer(prompt + "r")["input_ids"]
    with_system = Trainer(tiny_config(tmp_path / "sys", **arithmetic, **{"model.system_prompt": "12"}))
    assert with_system.train_ids[0] == trainer.tokenizer("12 " + prompt + "r")["input_ids"]
    plain = Trainer(tiny_config(tmp_path / "plain", **arithmetic, **{"model.chat_template": False}))
    assert plain.train_ids[0] == trainer.tokenizer(prompt)["input_ids"]
    assert np.isfinite(trainer.train_step()["loss"])


def test_a_required_chat_template_that_is_missing_is_refused(tmp_path, no_model):
    from vipfast.train.model import policy_directory

    directory = policy_directory(tiny_config(tmp_path / "unused").model)  # its tokenizer has no template
    config = tiny_config(tmp_path / "run", **{"model.kind": "path", "model.path": str(directory),
                                              "model.chat_template": True})
    with pytest.raises(ValueError, match="model.chat_template is true but the tokenizer in .* has no chat template"):
        prepare_run(config)
    with pytest.raises(ValueError, match="model.system_prompt must be null unless prompts go through a chat template"):
        load_config(None, {"model.system_prompt": "be brief"})
    with pytest.raises(ValueError, match="model.chat_template must be 'auto' or false for the tiny model"):
        load_config(None, {"model.chat_template": True})


# -- TensorBoard ---------------------------------------------------------------------------------------------

def test_tensorboard_asked_for_but_missing_is_refused_up_front(tmp_path, monkeypatch, no_model):
    from vipfast.train import config as config_module

    real = config_module._installed
    monkeypatch.setattr(config_module, "_installed", lambda module: module != "tensorboard" and real(module))
    with pytest.raises(ValueError, match="logging.tensorboard is true but the Python module tensorboard is not "
                                         "installed"):
        prepare_run(tiny_config(tmp_path / "run", **{"logging.tensorboard": True}))


def test_tensorboard_gets_every_number_of_every_row(tmp_path, monkeypatch):
    from vipfast.train import config as config_module
    from vipfast.train import rundir

    scalars, opened = [], []

    class Writer:
        def add_scalar(self, tag, value, global_step):
            scalars.append((tag, value, global_step))

        def flush(self):
            pass

        def close(self):
            opened.append("closed")

    monkeypatch.setattr(config_module, "_installed", lambda module: True)
    monkeypatch.setattr(rundir, "tensorboard_writer", lambda config, step: opened.append((config.run_dir, step))
                        or Writer())
    rows = Trainer(tiny_config(tmp_path / "run", **{"logging.tensorboard": True})).run()
    assert opened == [(str(tmp_path / "run"), 0), "closed"]
    logged = {(tag, step): value for tag, value, step in scalars}
    assert logged[("held_out_accuracy", 0)] == rows[0]["held_out_accuracy"]
    assert logged[("time_s/generate", 2)] == rows[2]["time_s"]["generate"]
    assert logged[("loss", 3)] == rows[3]["loss"]
    assert ("wasted_fraction", 1) in logged and not any(tag == "step" for tag, _ in logged)

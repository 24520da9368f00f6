"""vipfast.integrations.verl against the real verl package (its own venv: see .ci/run).

verl 0.9 pins transformers < 5.11, which the main test environment cannot hold, so these tests
skip there and run in CI's .venv-verl step.
"""

import numpy as np
import pytest
import torch

pytest.importorskip("verl", reason="verl is not installed: these tests run in CI's separate verl venv (.ci/run)")

from verl import DataProto  # noqa: E402
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, compute_rloo_outcome_advantage  # noqa: E402

import vipfast  # noqa: E402
from vipfast.integrations import verl as vip_verl  # noqa: E402

PROMPT_LEN, RESPONSE_LEN = 6, 10


def object_column(values) -> np.ndarray:
    column = np.empty(len(values), dtype=object)  # np.array would turn lists of messages into a 2-D array
    column[:] = values
    return column


def prompt_batch(num_prompts: int, seed: int = 0) -> DataProto:
    """One row per prompt, as verl's dataloader gives it, with chat prompts and uids."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, PROMPT_LEN + 1, num_prompts)
    attention = torch.zeros(num_prompts, PROMPT_LEN, dtype=torch.int64)
    for row, length in enumerate(lengths):
        attention[row, PROMPT_LEN - length:] = 1  # verl left-pads prompts
    chats = [[{"role": "user", "content": f"What is {i} + {3 * i}?"}] for i in range(num_prompts)]
    return DataProto.from_single_dict({
        "input_ids": torch.from_numpy(rng.integers(0, 1000, (num_prompts, PROMPT_LEN))),
        "attention_mask": attention,
        "raw_prompt": object_column(chats),
        "index": np.arange(num_prompts),
        "uid": object_column([f"uid-{i}" for i in range(num_prompts)]),
    })


def add_responses(batch: DataProto, rewards: np.ndarray, seed: int = 1) -> DataProto:
    """What generation and the reward function add: responses, masks and an outcome score on the last token."""
    rng = np.random.default_rng(seed)
    n = len(batch)
    lengths = torch.from_numpy(rng.integers(1, RESPONSE_LEN + 1, n))
    response_mask = (torch.arange(RESPONSE_LEN)[None, :] < lengths[:, None]).to(torch.int64)
    scores = torch.zeros(n, RESPONSE_LEN)
    scores[torch.arange(n), lengths - 1] = torch.as_tensor(rewards, dtype=torch.float32)
    batch.batch["responses"] = torch.from_numpy(rng.integers(0, 1000, (n, RESPONSE_LEN)))
    batch.batch["attention_mask"] = torch.cat([batch.batch["attention_mask"], response_mask], dim=1)
    batch.batch["response_mask"] = response_mask
    batch.batch["token_level_scores"] = scores
    batch.batch["token_level_rewards"] = scores.clone()
    return batch


def ragged_allocator(num_prompts: int, budget_per_prompt: int = 8):
    """A knapsack allocator that has seen one round of rewards, so its plan is far from uniform."""
    allocator = vipfast.make_allocator("knapsack", budget_per_prompt=budget_per_prompt, min_rollouts=2,
                                       max_rollouts=16, estimator="rloo")
    rates = np.linspace(0.0, 1.0, num_prompts)
    batch = prompt_batch(num_prompts)
    plan = vip_verl.plan_rollouts(allocator, batch)
    rewards = np.concatenate([(np.arange(n) < round(p * n)).astype(float) for p, n in zip(rates, plan.counts)])
    vip_verl.update_allocator(allocator, add_responses(plan.repeat(batch), rewards), plan)
    return allocator


def test_uniform_plan_is_verls_own_repeat():
    batch = prompt_batch(6)
    plan = vip_verl.plan_rollouts(vipfast.UniformAllocator(budget_per_prompt=4, min_rollouts=2), batch)
    ours, verls = plan.repeat(batch), batch.repeat(repeat_times=4, interleave=True)
    assert len(ours) == len(verls) == 24
    for key in verls.batch.keys():
        torch.testing.assert_close(ours.batch[key], verls.batch[key], rtol=0, atol=0)
    for key in verls.non_tensor_batch:
        assert ours.non_tensor_batch[key].tolist() == verls.non_tensor_batch[key].tolist()


def test_ragged_repeat_follows_the_plan_and_keeps_uids():
    batch = prompt_batch(12)
    plan = vip_verl.plan_rollouts(ragged_allocator(12), batch)
    assert plan.total == 12 * 8 and len(set(plan.counts.tolist())) > 1, plan.counts
    repeated = plan.repeat(batch)
    uids = repeated.non_tensor_batch["uid"].tolist()
    # contiguous groups, in prompt order, each with its planned size and its prompt's own tensors
    expected = [uid for uid, n in zip(batch.non_tensor_batch["uid"].tolist(), plan.counts.tolist()) for _ in range(n)]
    assert uids == expected
    source_row = np.repeat(np.arange(12), plan.counts)
    torch.testing.assert_close(repeated.batch["input_ids"], batch.batch["input_ids"][source_row], rtol=0, atol=0)
    assert repeated.non_tensor_batch["raw_prompt"].tolist() == batch.non_tensor_batch["raw_prompt"][source_row].tolist()


def test_plan_by_integer_keys_matches_the_update_keys():
    batch = prompt_batch(10)
    allocator = vipfast.make_allocator("knapsack", budget_per_prompt=6, min_rollouts=2, max_rollouts=12,
                                       estimator="rloo")
    plan = vip_verl.plan_rollouts(allocator, batch, prompt_key="index")
    assert plan.plan.keys.tolist() == list(range(10))
    rewards = np.concatenate([np.full(n, q % 2, dtype=float) if q < 5 else (np.arange(n) % 2).astype(float)
                              for q, n in enumerate(plan.counts)])
    vip_verl.update_allocator(allocator, add_responses(plan.repeat(batch), rewards), plan)
    # the knapsack preset stores each key's last success rate: exactly what the groups showed
    expected = [q % 2 if q < 5 else (plan.counts[q] // 2) / plan.counts[q] for q in range(10)]
    np.testing.assert_allclose(allocator.rates.read("rate", np.arange(10, dtype=np.uint64)), expected)
    # prompts that were all-fail / all-pass give way to the ones at p = 1/2
    counts = vip_verl.plan_rollouts(allocator, batch, prompt_key="index").counts
    assert counts[5:].min() > counts[:5].max()


@pytest.mark.parametrize("verl_name, norm_by_std", [("grpo", True), ("grpo", False), ("rloo", True)],
                         ids=["grpo", "drgrpo", "rloo"])
@pytest.mark.parametrize("reward_kind", ["binary", "continuous"])
def test_advantages_match_verls_functions_on_a_ragged_batch(verl_name, norm_by_std, reward_kind):
    batch = prompt_batch(16, seed=3)
    plan = vip_verl.plan_rollouts(ragged_allocator(16), batch)
    assert plan.counts.min() >= 2
    rng = np.random.default_rng(7)
    rewards = rng.integers(0, 2, plan.total).astype(float) if reward_kind == "binary" else rng.normal(size=plan.total)
    ragged = add_responses(plan.repeat(batch), rewards)
    vip_verl.balance_batch(ragged, dp_size=4)  # interleaves the groups, as verl does before advantages
    if verl_name == "grpo":
        expected, _ = compute_grpo_outcome_advantage(ragged.batch["token_level_rewards"], ragged.batch["response_mask"],
                                                     ragged.non_tensor_batch["uid"], norm_adv_by_std_in_grpo=norm_by_std)
    else:
        expected, _ = compute_rloo_outcome_advantage(ragged.batch["token_level_rewards"], ragged.batch["response_mask"],
                                                     ragged.non_tensor_batch["uid"])
    out = vip_verl.compute_advantage(ragged, verl_name, norm_adv_by_std_in_grpo=norm_by_std)
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.batch["returns"], expected, rtol=1e-5, atol=1e-5)
    assert out.batch["advantages"].abs().sum() > 0


def test_a_lone_rollout_gets_zero_where_verl_passes_its_reward_through():
    batch = add_responses(prompt_batch(3), np.ones(3))
    verl_grpo, _ = compute_grpo_outcome_advantage(batch.batch["token_level_rewards"], batch.batch["response_mask"],
                                                  batch.non_tensor_batch["uid"])
    assert verl_grpo.sum() > 0
    assert vip_verl.compute_advantage(batch, "grpo").batch["advantages"].abs().sum() == 0


def test_balance_gives_equal_rows_and_balanced_tokens_per_rank():
    batch = prompt_batch(16, seed=5)
    plan = vip_verl.plan_rollouts(ragged_allocator(16), batch, multiple_of=8)
    ragged = add_responses(plan.repeat(batch), np.zeros(plan.total), seed=11)
    row_id = torch.arange(len(ragged))
    ragged.batch["row_id"] = row_id
    contiguous_tokens = [int(c.batch["attention_mask"].sum()) for c in ragged.chunk(8)]
    stats = vip_verl.balance_batch(ragged, dp_size=8)
    chunks = ragged.chunk(8)  # what verl's dispatch hands each data-parallel rank
    assert [len(c) for c in chunks] == [len(ragged) // 8] * 8
    assert [int(c.batch["attention_mask"].sum()) for c in chunks] == stats["tokens"]
    assert sorted(ragged.batch["row_id"].tolist()) == row_id.tolist()  # a permutation: no row lost or doubled
    spread = max(stats["tokens"]) - min(stats["tokens"])
    assert spread <= max(contiguous_tokens) - min(contiguous_tokens)
    assert spread <= 0.05 * np.mean(stats["tokens"])


def test_advantages_do_not_depend_on_the_balance_order():
    batch = prompt_batch(8, seed=2)
    plan = vip_verl.plan_rollouts(ragged_allocator(8), batch)
    ragged = add_responses(plan.repeat(batch), np.random.default_rng(0).integers(0, 2, plan.total))
    ragged.batch["row_id"] = torch.arange(len(ragged))
    before = vip_verl.compute_advantage(ragged, "grpo").batch["advantages"].clone()
    vip_verl.balance_batch(ragged, dp_size=4)
    after = vip_verl.compute_advantage(ragged, "grpo").batch["advantages"]
    torch.testing.assert_close(after, before[ragged.batch["row_id"]], rtol=0, atol=0)


def test_bad_inputs_name_the_problem():
    batch = prompt_batch(4)
    uniform = vipfast.UniformAllocator(budget_per_prompt=3, min_rollouts=2)
    with pytest.raises(ValueError, match="does not divide into 8"):
        vip_verl.plan_rollouts(uniform, batch, multiple_of=8)
    with pytest.raises(ValueError, match="no non-tensor column 'prompt'"):
        vip_verl.plan_rollouts(uniform, batch, prompt_key="prompt")
    plan = vip_verl.plan_rollouts(uniform, batch)
    with pytest.raises(ValueError, match="uids repeat"):
        vip_verl.plan_rollouts(uniform, plan.repeat(batch))
    with pytest.raises(ValueError, match="plan is for 4 prompts but the batch has 12 rows"):
        plan.repeat(plan.repeat(batch))
    other = prompt_batch(4)
    other.non_tensor_batch["uid"] = object_column(["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="uids differ"):
        plan.repeat(other)
    with pytest.raises(ValueError, match="does not split into 5 equal"):
        vip_verl.balance_batch(add_responses(plan.repeat(batch), np.zeros(12)), dp_size=5)
    stray = add_responses(plan.repeat(batch), np.zeros(12))
    stray.non_tensor_batch["uid"] = object_column([f"stray-{row // 3}" for row in range(12)])
    with pytest.raises(ValueError, match="not in the plan"):
        vip_verl.update_allocator(uniform, stray, plan)
    with pytest.raises(ValueError, match="estimator must be one of"):
        vip_verl.compute_advantage(add_responses(plan.repeat(batch), np.zeros(12)), "gae")

"""Screening rules, refills and multi-round steps with vipfast.integrations.verl, against the real verl package.

Generation and rewards are stood in for by add_responses (test_integration_verl); everything else is
verl's DataProto and collate function.
"""

from collections import Counter

import numpy as np
import pytest
import torch

pytest.importorskip("verl", reason="verl is not installed: these tests run in CI's separate verl venv (.ci/run)")

from test_integration_verl import PROMPT_LEN, add_responses, object_column, prompt_batch  # noqa: E402
from verl import DataProto  # noqa: E402

import vipfast  # noqa: E402
from vipfast.integrations import verl as vip_verl  # noqa: E402
from vipfast.sampling import extra_rollouts  # noqa: E402


class SkipsMultiplesOfThree(vipfast.UniformAllocator):
    """A uniform split whose screen skips every prompt whose key (a dataset index here) is a multiple of 3."""

    def screen(self, keys):
        return np.asarray(keys) % 3 != 0


def rloo_reference(rewards, sizes) -> np.ndarray:
    """Float64, from the definition: r_j minus the mean of the other rewards of its group; 0 in a group of one."""
    out, start = [], 0
    for n in sizes:
        r = np.asarray(rewards[start:start + n], dtype=np.float64)
        start += n
        out += list(r - (r.sum() - r) / (n - 1)) if n > 1 else [0.0] * n
    return np.array(out)


def dataset_items(size: int, seed: int = 0) -> list[dict]:
    """Rows as verl's RLHFDataset returns them: tensors per prompt, the chat, the dataset index."""
    rng = np.random.default_rng(seed)
    return [dict(input_ids=torch.from_numpy(rng.integers(0, 1000, PROMPT_LEN)),
                 attention_mask=torch.ones(PROMPT_LEN, dtype=torch.int64),
                 raw_prompt=[{"role": "user", "content": f"What is {i} + {3 * i}?"}], index=i)
            for i in range(size)]


def collated(items) -> DataProto:
    return DataProto.from_single_dict(vip_verl._collate(items))


def first_batch(items, count: int) -> DataProto:
    batch = collated(items[:count])
    batch.non_tensor_batch["uid"] = object_column([f"uid-{i}" for i in range(count)])
    return batch


def test_screen_without_refill_drops_the_screened_rows():
    batch = prompt_batch(8)
    plan = vip_verl.plan_rollouts(SkipsMultiplesOfThree(budget_per_prompt=4, min_rollouts=2), batch, prompt_key="index")
    kept = [i for i in range(8) if i % 3]
    assert plan.batch.non_tensor_batch["index"].tolist() == kept
    assert plan.uids.tolist() == [f"uid-{i}" for i in kept]
    assert plan.screened_out.tolist() == ["uid-0", "uid-3", "uid-6"]
    assert plan.plan.keys.tolist() == kept and plan.counts.tolist() == [4] * len(kept)
    torch.testing.assert_close(plan.batch.batch["input_ids"], batch.batch["input_ids"][kept], rtol=0, atol=0)
    repeated = plan.repeat(plan.batch)
    assert repeated.non_tensor_batch["uid"].tolist() == [f"uid-{i}" for i in kept for _ in range(4)]
    with pytest.raises(ValueError, match="uids differ from the plan's.*plan.batch"):
        plan.repeat(batch.select_idxs(np.arange(len(kept))))


def test_screen_with_refill_replaces_screened_rows_from_the_dataset():
    items = dataset_items(30)
    refill = vip_verl.DatasetRefill(items, seed=5)
    allocator = SkipsMultiplesOfThree(budget_per_prompt=4, min_rollouts=2)
    batch = first_batch(items, 8)
    plan = vip_verl.plan_rollouts(allocator, batch, prompt_key="index", refill=refill, multiple_of=8)
    indices = plan.batch.non_tensor_batch["index"].tolist()
    assert len(indices) == 8 and all(i % 3 for i in indices)
    assert indices[:5] == [1, 2, 4, 5, 7]  # the batch's kept rows first, then refills in the refill order
    walk = vip_verl.DatasetRefill(items, seed=5)(30).non_tensor_batch["index"].tolist()  # one epoch of the walk
    keepable = np.flatnonzero(np.array(walk) % 3 != 0)
    drawn = walk[:keepable[2] + 1]  # each draw asks for what is missing: the shortest prefix with 3 keepable
    assert indices[5:] == [i for i in drawn if i % 3]
    assert len(plan.screened_out) == 3 + sum(i % 3 == 0 for i in drawn)
    assert len(set(plan.uids.tolist())) == 8 and set(plan.uids[:5]) == {f"uid-{i}" for i in (1, 2, 4, 5, 7)}
    # the planned batch flows through the recipe: repeat, rewards, update, advantages
    repeated = add_responses(plan.repeat(plan.batch), np.tile([0.0, 1.0], plan.total // 2))
    vip_verl.update_allocator(allocator, repeated, plan)
    assert vip_verl.compute_advantage(repeated, "grpo").batch["advantages"].abs().sum() > 0
    # the refill walk resumes from its state
    resumed = vip_verl.DatasetRefill(items, seed=5)
    resumed.load_state_dict(refill.state_dict())
    assert resumed(4).non_tensor_batch["index"].tolist() == refill(4).non_tensor_batch["index"].tolist()


def test_refill_rows_are_collated_as_verls_dataloader_collates_them():
    rl_dataset = pytest.importorskip("verl.utils.dataset.rl_dataset", reason="verl's dataset module needs `datasets`",
                                     exc_type=ImportError)
    items = dataset_items(5)
    ours, verls = vip_verl._collate(items), rl_dataset.collate_fn(items)
    assert ours.keys() == verls.keys()
    for key, value in verls.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
        else:
            assert ours[key].dtype == value.dtype == object and ours[key].tolist() == value.tolist()


def test_screen_that_skips_everything_stops_after_max_draws():
    class SkipsAll(vipfast.UniformAllocator):
        def screen(self, keys):
            return np.zeros(len(keys), dtype=bool)

    items = dataset_items(10)
    asked = []

    def refill(count):
        asked.append(count)
        return collated(items[:count])

    plan = vip_verl.plan_rollouts(SkipsAll(budget_per_prompt=4, min_rollouts=2), first_batch(items, 4),
                                  prompt_key="index", refill=refill, max_draws=2.5)
    assert len(plan.batch) == 0 and plan.total == 0
    assert len(plan.screened_out) == 10 and sum(asked) == 6  # ceil(2.5 * 4) prompts drawn in all


def test_refill_that_runs_dry_returns_what_was_kept():
    items = dataset_items(6)
    plan = vip_verl.plan_rollouts(SkipsMultiplesOfThree(budget_per_prompt=4, min_rollouts=2), first_batch(items, 6),
                                  prompt_key="index", refill=lambda count: None)
    assert plan.batch.non_tensor_batch["index"].tolist() == [1, 2, 4, 5]


def test_greso_screens_settled_prompts_and_refills_keep_the_batch_full():
    items = dataset_items(40)
    allocator = vipfast.make_allocator("greso", budget_per_prompt=4, min_rollouts=4, max_rollouts=4, p_easy=0.05,
                                       p_hard=0.05, seed=0)
    batch = first_batch(items, 8)
    plan = vip_verl.plan_rollouts(allocator, batch)  # nothing seen yet: nothing screened
    assert len(plan.screened_out) == 0 and plan.batch is batch
    solved = np.repeat(np.arange(8) < 4, 4).astype(float)  # prompts 0-3 always solved, 4-7 never
    vip_verl.update_allocator(allocator, add_responses(plan.repeat(batch), solved), plan)
    refill = vip_verl.DatasetRefill(items, seed=1)
    again = vip_verl.plan_rollouts(allocator, first_batch(items, 8), refill=refill, multiple_of=32)
    assert len(again.batch) == 8 and again.total == 32
    # settled prompts (0-7) are kept with probability 0.05, fresh ones always: only settled ones are screened out
    refilled = vip_verl.DatasetRefill(items, seed=1)(refill.state_dict()["position"]).non_tensor_batch["index"]
    settled_drawn = 8 + int(np.sum(refilled.astype(int) < 8))
    settled_kept = sum(i < 8 for i in again.batch.non_tensor_batch["index"].tolist())
    assert len(again.screened_out) == settled_drawn - settled_kept >= 6


def test_dapo_recipe_with_a_vipfast_allocator():
    """DAPO's loop (verl-recipe dapo_ray_trainer.fit) with the vipfast lines of docs/integrations/verl.md."""
    allocator = vipfast.make_allocator("knapsack", budget_per_prompt=4, min_rollouts=2, max_rollouts=8,
                                       estimator="rloo")
    updates = []
    update = allocator.update
    allocator.update = lambda plan, rewards, sizes=None, **kw: updates.append((len(rewards), kw)) or update(
        plan, rewards, sizes, **kw)
    items, train_batch_size, rollout_n = dataset_items(64), 6, 4
    solve_rate = np.random.default_rng(3).choice([0.0, 0.5, 1.0], size=len(items))
    rng = np.random.default_rng(4)
    generation_batches = (first_batch(items[start:], 6) for start in range(0, 64, 6))
    batch, num_prompt_in_batch, generated = None, 0, 0
    for new_batch in generation_batches:
        new_batch.non_tensor_batch["uid"] = object_column([f"g{generated}-{i}" for i in range(len(new_batch))])
        plan = vip_verl.plan_rollouts(allocator, new_batch, prompt_key="index")       # vipfast: plan ...
        new_batch = plan.repeat(new_batch)                                            # ... and repeat
        success = rng.random(len(new_batch)) < solve_rate[new_batch.non_tensor_batch["index"].astype(int)]
        new_batch = add_responses(new_batch, success.astype(float), seed=generated)
        generated += len(new_batch)
        scored = new_batch
        scores = new_batch.batch["token_level_scores"].sum(-1).numpy()
        by_uid = {}
        for uid, score in zip(new_batch.non_tensor_batch["uid"], scores):
            by_uid.setdefault(uid, []).append(score)
        kept_uids = [uid for uid, values in by_uid.items() if np.std(values) > 0 or len(values) == 1]
        num_prompt_in_batch += len(kept_uids)
        new_batch = new_batch[[i for i, uid in enumerate(new_batch.non_tensor_batch["uid"]) if uid in kept_uids]]
        batch = new_batch if batch is None else DataProto.concat([batch, new_batch])
        step_done = num_prompt_in_batch >= train_batch_size
        vip_verl.update_allocator(allocator, scored, plan, ends_step=step_done)   # vipfast: every generated rollout
        if step_done:
            break
    assert step_done
    traj_bsz = train_batch_size * rollout_n
    batch = batch[:traj_bsz]                                                          # DAPO's cut, unchanged
    batch = vip_verl.compute_advantage(batch, "rloo")                                 # vipfast: ragged advantages
    assert len(batch) == traj_bsz
    assert sum(n for n, _ in updates) == generated
    assert [kw["ends_step"] for _, kw in updates] == [False] * (len(updates) - 1) + [True]
    # every group of the cut batch but the last is whole and informative; the cut group's own rows make its baseline
    sizes = Counter(batch.non_tensor_batch["uid"].tolist())
    rewards = batch.batch["token_level_scores"].sum(-1).numpy()
    uids = batch.non_tensor_batch["uid"]
    for uid in list(sizes)[:-1]:
        assert np.ptp(rewards[uids == uid]) > 0
    got = (batch.batch["advantages"].sum(-1) / batch.batch["response_mask"].sum(-1)).numpy()
    np.testing.assert_allclose(got, rloo_reference(rewards, list(sizes.values())), rtol=1e-5, atol=1e-5)


def test_vip_rounds_recipe_in_verl_terms():
    """Two rounds under one budget (docs/integrations/verl.md): round 1 by the weights, round 2 re-planned."""
    allocator = vipfast.make_allocator("beta", budget_per_prompt=8, min_rollouts=2, max_rollouts=16,
                                       estimator="rloo")
    batch = first_batch(dataset_items(8), 8)
    plan = vip_verl.plan_rollouts(allocator, batch)
    budget = plan.total
    first = vipfast.allocate(plan.plan.weights, budget // 2, min_rollouts=2, max_rollouts=16, estimator="rloo")
    round1 = plan.with_counts(first)
    rng = np.random.default_rng(6)
    rows1 = add_responses(round1.repeat(batch), rng.integers(0, 2, first.sum()).astype(float), seed=1)
    vip_verl.update_allocator(allocator, rows1, round1, ends_step=False)
    replan = vip_verl.plan_rollouts(allocator, batch)
    extra = extra_rollouts(replan.plan.weights, first, budget - first.sum(), max_rollouts=16, estimator="rloo")
    round2 = replan.with_counts(extra)
    rows2 = add_responses(round2.repeat(batch), rng.integers(0, 2, extra.sum()).astype(float), seed=2)
    vip_verl.update_allocator(allocator, rows2, round2)
    step = DataProto.concat([rows1, rows2])  # the same uids: one group per prompt over both rounds
    assert len(step) == budget and (first + extra).max() <= 16
    out = vip_verl.compute_advantage(step, "rloo")
    uids = step.non_tensor_batch["uid"]
    rewards = step.batch["token_level_scores"].sum(-1).numpy()
    got = (out.batch["advantages"].sum(-1) / out.batch["response_mask"].sum(-1)).numpy()
    for uid, n in zip(plan.uids, first + extra):
        members = uids == uid
        assert members.sum() == n
        np.testing.assert_allclose(got[members], rloo_reference(rewards[members], [n]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="counts must be 8 integers >= 0"):
        plan.with_counts(np.full(8, -1))

"""vipfast inside verl's PPO/GRPO trainer, without a fork (docs/integrations/verl.md).

verl repeats every prompt `rollout.n` times (`DataProto.repeat(n, interleave=True)`) and groups
rollouts by the `uid` each prompt gets. Ragged groups need five lines of its `fit` loop:

    plan = plan_rollouts(allocator, batch)            # after the uids are assigned
    gen_batch_output = plan.repeat(gen_batch)         # instead of gen_batch.repeat(n, interleave=True)
    batch = plan.repeat(batch)                        # instead of batch.repeat(n, interleave=True)
    ...
    update_allocator(allocator, batch, plan)          # once token_level_scores are in the batch
    batch = compute_advantage(batch, estimator="grpo")  # instead of verl's compute_advantage

With the allocator's budget at `rollout.n` per prompt the batch keeps verl's row count
(train_batch_size * rollout.n), so mini-batches, dispatch and verl's own `_balance_batch` work
unchanged; `balance_batch` here does the same for trainers that have no such method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from verl import DataProto
from verl.utils.seqlen_balancing import calculate_workload, get_seqlen_balanced_partitions

from vipfast.advantages import group_advantages, group_ids_from_index
from vipfast.allocators import Plan

from ._prompts import prompt_text

__all__ = ["RolloutPlan", "plan_rollouts", "balance_batch", "compute_advantage", "update_allocator",
           "VERL_ESTIMATORS"]

# verl's adv_estimator names and the vipfast estimator that matches each for groups of >= 2
# (grpo with norm_adv_by_std_in_grpo=False is Dr. GRPO).
VERL_ESTIMATORS = {"grpo": "grpo", "grpo_vectorized": "grpo", "rloo": "rloo", "rloo_vectorized": "rloo"}


@dataclass(frozen=True)
class RolloutPlan:
    """How many rollouts each prompt of one verl batch gets.

    uids     [Q] the batch's `uid` of each prompt, in batch order
    plan     the allocator's Plan for those prompts (plan.counts: int64 [Q] rollouts per prompt)
    """

    uids: np.ndarray
    plan: Plan

    @property
    def counts(self) -> np.ndarray:
        return self.plan.counts

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def repeat(self, batch: DataProto) -> DataProto:
        """The ragged batch: row q repeated counts[q] times, a prompt's rows contiguous (verl's interleave=True)."""
        if len(batch) != len(self.counts):
            raise ValueError(f"the plan is for {len(self.counts)} prompts but the batch has {len(batch)} rows; "
                             "repeat the un-repeated batch the plan was made from")
        uids = batch.non_tensor_batch.get("uid")
        if uids is not None and not np.array_equal(np.asarray(uids, dtype=object), self.uids):
            raise ValueError("the batch's uids differ from the plan's: plan and repeat the same batch, in the same order")
        rows = np.repeat(np.arange(len(self.counts)), self.counts)
        return batch.select_idxs(rows)


def plan_rollouts(allocator, batch: DataProto, *, prompt_key: str = "raw_prompt", multiple_of: int = 1) -> RolloutPlan:
    """Ask `allocator` for each prompt's rollout count; one row per prompt, `uid` already set.

    prompt_key   the non-tensor column that identifies a prompt: verl's `raw_prompt` (chat messages),
                 any column of strings, or a column of non-negative integers used as the allocator's keys
                 (e.g. a dataset index you copy out of `extra_info`)
    multiple_of  the total must divide evenly into this many parts (the data-parallel size, or
                 ppo_mini_batch_size * rollout.n): a ValueError otherwise, before any generation
    """
    if "uid" not in batch.non_tensor_batch:
        raise ValueError("the batch has no 'uid' column: assign uids (one per prompt) before planning")
    uids = np.asarray(batch.non_tensor_batch["uid"], dtype=object)
    if len(set(uids.tolist())) != len(uids):
        raise ValueError("plan_rollouts needs one row per prompt, but the batch's uids repeat: plan before repeating")
    prompts, keys = _prompt_identities(batch, prompt_key)
    plan = allocator.plan(prompts, keys=keys)
    counts = plan.counts
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    if counts.sum() % multiple_of:
        raise ValueError(f"the plan has {int(counts.sum())} rollouts, which does not divide into {multiple_of} equal "
                         f"parts; give the allocator a budget that is a multiple of {multiple_of} "
                         "(budget_per_prompt=rollout.n keeps verl's usual train_batch_size * rollout.n)")
    return RolloutPlan(uids=uids, plan=plan)


def balance_batch(batch: DataProto, dp_size: int) -> dict:
    """Reorder `batch` in place so that its dp_size equal chunks carry balanced token workloads.

    The rows a rank gets are those of one contiguous chunk, as verl dispatches them; every rank
    gets len(batch) / dp_size rows. Advantages are grouped by uid, so the order does not change
    them. The workload model and the partitioner are verl's own (calculate_workload,
    get_seqlen_balanced_partitions, as in RayPPOTrainer._balance_batch). Returns per-rank
    `tokens` and `workload` lists.
    """
    if dp_size < 1:
        raise ValueError(f"dp_size must be >= 1, got {dp_size}")
    rows = len(batch)
    if rows % dp_size or rows < dp_size:
        raise ValueError(f"a batch of {rows} rows does not split into {dp_size} equal data-parallel chunks; "
                         f"make the rollout budget a multiple of {dp_size} (plan_rollouts(..., multiple_of={dp_size}))")
    tokens = batch.batch["attention_mask"].view(rows, -1).sum(-1)
    workload = calculate_workload(tokens)
    partitions = get_seqlen_balanced_partitions(workload.tolist(), k_partitions=dp_size, equal_size=True)
    batch.reorder(torch.tensor([i for part in partitions for i in part]))
    return dict(tokens=[int(tokens[part].sum()) for part in partitions],
                workload=[int(workload[part].sum()) for part in partitions])


def compute_advantage(batch: DataProto, estimator: str = "grpo", *, eps: float = 1e-6,
                      norm_adv_by_std_in_grpo: bool = True, reward_key: str = "token_level_rewards") -> DataProto:
    """Outcome advantages of the ragged groups (rows grouped by `uid`), written as verl writes them.

    Sets batch.batch["advantages"] and ["returns"] to the per-rollout advantage times the response
    mask, [N, response_length]. estimator: "grpo", "drgrpo", "rloo", or verl's names "grpo",
    "grpo_vectorized", "rloo", "rloo_vectorized" (verl's grpo with norm_adv_by_std_in_grpo=False is
    "drgrpo"). For groups of >= 2 rollouts the values are those of verl's
    compute_grpo_outcome_advantage / compute_rloo_outcome_advantage; a group of one gets 0 here,
    where verl passes its raw reward through (docs/integrations/verl.md).
    """
    name = VERL_ESTIMATORS.get(estimator, estimator)
    if name == "grpo" and not norm_adv_by_std_in_grpo:
        name = "drgrpo"
    if "uid" not in batch.non_tensor_batch:
        raise ValueError("the batch has no 'uid' column; advantages are computed per uid group")
    if reward_key not in batch.batch.keys():
        raise ValueError(f"the batch has no {reward_key!r}; it has {sorted(batch.batch.keys())}")
    scores = batch.batch[reward_key].sum(-1)  # [N] outcome reward per rollout
    order, sizes = group_ids_from_index(batch.non_tensor_batch["uid"])
    order = order.to(scores.device)
    advantages = torch.empty(scores.shape, dtype=torch.float32, device=scores.device)
    advantages[order] = group_advantages(scores[order], sizes, estimator=name, eps=eps)
    mask = _response_mask(batch)
    token_advantages = advantages[:, None] * mask
    batch.batch["advantages"] = token_advantages
    batch.batch["returns"] = token_advantages
    return batch


def update_allocator(allocator, batch: DataProto, plan: RolloutPlan, *, score_key: str = "token_level_scores") -> None:
    """Feed each group's rewards back to `allocator`: rows grouped by uid, matched to the plan's prompts.

    score_key: the verifier's score per token ([N, L], summed per row), before any KL penalty.
    Groups whose uid the plan does not know raise a ValueError; prompts a filter dropped are
    simply not observed.
    """
    if score_key not in batch.batch.keys():
        raise ValueError(f"the batch has no {score_key!r}; it has {sorted(batch.batch.keys())}")
    scores = batch.batch[score_key].sum(-1).detach().to("cpu", torch.float64)  # [N]
    uids = batch.non_tensor_batch["uid"]
    order, sizes = group_ids_from_index(uids)
    first_rows = (torch.cumsum(sizes, 0) - sizes)
    position = {uid: q for q, uid in enumerate(plan.uids.tolist())}
    group_uids = [uids[int(order[i])] for i in first_rows]
    missing = [uid for uid in group_uids if uid not in position]
    if missing:
        raise ValueError(f"{len(missing)} uid groups of the batch are not in the plan (first: {missing[0]!r})")
    rows = np.array([position[uid] for uid in group_uids], dtype=np.int64)
    allocator.update(plan.plan.select(rows), scores[order].numpy(), sizes.numpy())


def _prompt_identities(batch: DataProto, prompt_key: str):
    """(texts, None) for text or chat columns, (None, uint64 keys) for integer columns."""
    if prompt_key not in batch.non_tensor_batch:
        raise ValueError(f"the batch has no non-tensor column {prompt_key!r} to identify prompts; it has "
                         f"{sorted(batch.non_tensor_batch)}")
    column = batch.non_tensor_batch[prompt_key]
    values = column.tolist()
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return None, np.asarray(values)  # the allocator checks that they are non-negative
    return [prompt_text(v) for v in values], None


def _response_mask(batch: DataProto) -> torch.Tensor:
    if "response_mask" in batch.batch.keys():
        return batch.batch["response_mask"]
    # verl's compute_response_mask: the attention mask over the response columns
    width = batch.batch["responses"].size(1)
    return batch.batch["attention_mask"][:, -width:]

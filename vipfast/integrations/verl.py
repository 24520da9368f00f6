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

A rule that skips prompts before rollout (an allocator with `screen`, e.g. GRESO) is honoured by
`plan_rollouts`, which draws prompts exactly as vipfast's sampling modes do: screened-out rows are
listed in `plan.screened_out` and replaced by rows from `refill` (e.g. a `DatasetRefill`); the
planned prompts are `plan.batch`, which the fit loop then uses in place of its batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from verl import DataProto
from verl.utils.seqlen_balancing import calculate_workload, get_seqlen_balanced_partitions

from vipfast._validation import as_int64_array
from vipfast.advantages import group_advantages, group_ids_from_index
from vipfast.allocators import Plan
from vipfast.embedders import prompt_keys
from vipfast.sampling import Sampler, plan_for

from ._prompts import prompt_text
from ._source import RefillOrder, StepSource

__all__ = ["RolloutPlan", "plan_rollouts", "DatasetRefill", "balance_batch", "compute_advantage", "update_allocator",
           "VERL_ESTIMATORS"]

# verl's adv_estimator names and the vipfast estimator that matches each for groups of >= 2
# (grpo with norm_adv_by_std_in_grpo=False is Dr. GRPO).
VERL_ESTIMATORS = {"grpo": "grpo", "grpo_vectorized": "grpo", "rloo": "rloo", "rloo_vectorized": "rloo"}


@dataclass(frozen=True)
class RolloutPlan:
    """How many rollouts each prompt of one verl batch gets.

    uids          [Q] the `uid` of each planned prompt, in order
    plan          the allocator's Plan for those prompts (plan.counts: int64 [Q] rollouts per prompt)
    batch         the planned prompts, one row each: the batch given to plan_rollouts, or, under a
                  screening allocator, its rows the screen kept followed by kept refill rows
    screened_out  [k] uids of the rows (given or refilled) the allocator's screen skipped
    """

    uids: np.ndarray
    plan: Plan
    batch: DataProto | None = None
    screened_out: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))

    @property
    def counts(self) -> np.ndarray:
        return self.plan.counts

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def with_counts(self, counts) -> RolloutPlan:
        """The same prompts with other counts (>= 0 each): a round of a multi-round step, e.g. vip_rounds'."""
        counts = as_int64_array(counts, "counts")
        if counts.shape != self.counts.shape or (counts.size and counts.min() < 0):
            raise ValueError(f"counts must be {len(self.counts)} integers >= 0, got {counts.tolist()}")
        return replace(self, plan=replace(self.plan, counts=counts))

    def repeat(self, batch: DataProto) -> DataProto:
        """The ragged batch: row q repeated counts[q] times, a prompt's rows contiguous (verl's interleave=True)."""
        if len(batch) != len(self.counts):
            raise ValueError(f"the plan is for {len(self.counts)} prompts but the batch has {len(batch)} rows; "
                             "repeat the un-repeated batch the plan was made from")
        uids = batch.non_tensor_batch.get("uid")
        if uids is not None and not np.array_equal(np.asarray(uids, dtype=object), self.uids):
            raise ValueError("the batch's uids differ from the plan's: repeat the batch the plan was made for, in the "
                             "same order (under a screening allocator, plan.batch)")
        rows = np.repeat(np.arange(len(self.counts)), self.counts)
        return batch.select_idxs(rows)


def plan_rollouts(allocator, batch: DataProto, *, prompt_key: str = "raw_prompt", multiple_of: int = 1,
                  refill: Callable[[int], DataProto | None] | None = None, max_draws: float = 8.0) -> RolloutPlan:
    """Ask `allocator` for each prompt's rollout count; one row per prompt, `uid` already set.

    prompt_key   the non-tensor column that identifies a prompt: verl's `raw_prompt` (chat messages),
                 any column of strings, or a column of non-negative integers used as the allocator's keys
                 (e.g. a dataset index you copy out of `extra_info`)
    multiple_of  the total must divide evenly into this many parts (the data-parallel size, or
                 ppo_mini_batch_size * rollout.n): a ValueError otherwise, before any generation
    refill       for allocators with a `screen` (GRESO): refill(count) returns up to `count` further prompt rows
                 (a DataProto with the batch's columns; rows without a `uid` get one), or None when the data
                 ran out. Screened-out rows are replaced from it, so plan.batch has len(batch) prompts unless
                 `max_draws` * len(batch) prompts were drawn first. Without it, screened-out rows are dropped.
    max_draws    at most this many times len(batch) prompts are drawn (given and refilled) in one call

    Prompts are drawn as vipfast's sampling modes draw them (`Sampler.draw`) and planned by
    `vipfast.sampling.plan_for`; allocators without a screen plan the batch as it is.
    """
    if "uid" not in batch.non_tensor_batch:
        raise ValueError("the batch has no 'uid' column: assign uids (one per prompt) before planning")
    uids = np.asarray(batch.non_tensor_batch["uid"], dtype=object)
    if len(uids) == 0:
        raise ValueError("the batch has no rows to plan")
    if len(set(uids.tolist())) != len(uids):
        raise ValueError("plan_rollouts needs one row per prompt, but the batch's uids repeat: plan before repeating")
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    drawing = _Drawing(batch, prompt_key, refill)
    prompts, drawn = Sampler(max_draws=max_draws).draw(allocator, drawing.source, len(batch))
    planned = drawing.rows(prompts.ids)
    plan = plan_for(allocator, prompts)
    counts = plan.counts
    if counts.sum() % multiple_of:
        raise ValueError(f"the plan has {int(counts.sum())} rollouts, which does not divide into {multiple_of} equal "
                         f"parts; give the allocator a budget that is a multiple of {multiple_of} "
                         "(budget_per_prompt=rollout.n keeps verl's usual train_batch_size * rollout.n)")
    skipped = np.setdiff1d(np.arange(drawn), prompts.ids)
    return RolloutPlan(uids=np.asarray(planned.non_tensor_batch["uid"], dtype=object), plan=plan, batch=planned,
                       screened_out=drawing.uids()[skipped])


class _Drawing:
    """The prompt source of one plan_rollouts call: the batch's rows, then refill rows, kept in order."""

    def __init__(self, batch: DataProto, prompt_key: str, refill):
        self.chunks, self.prompt_key, self.refill = [batch], prompt_key, refill
        texts, keys = _prompt_identities(batch, prompt_key)
        self.source = StepSource(texts, prompt_keys(texts) if keys is None else keys,
                                 refill=None if refill is None else self._more)

    def _more(self, count: int):
        chunk = self.refill(count)
        if chunk is None or len(chunk) == 0:
            return None
        if "uid" not in chunk.non_tensor_batch:
            chunk.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(chunk))], dtype=object)
        self.chunks.append(chunk)
        if len(set(self.uids().tolist())) != len(self.uids()):
            raise ValueError("refill returned rows whose uids repeat ones already drawn; leave 'uid' unset in them")
        texts, keys = _prompt_identities(chunk, self.prompt_key)
        return texts, prompt_keys(texts) if keys is None else keys

    def uids(self) -> np.ndarray:
        return np.concatenate([np.asarray(chunk.non_tensor_batch["uid"], dtype=object) for chunk in self.chunks])

    def rows(self, ids: np.ndarray) -> DataProto:
        """The drawn rows `ids` (positions over the batch and its refills), as one DataProto."""
        if len(self.chunks) == 1 and np.array_equal(ids, np.arange(len(self.chunks[0]))):
            return self.chunks[0]
        try:
            every = DataProto.concat(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
        except (AssertionError, KeyError, RuntimeError, ValueError) as error:
            raise ValueError(f"refill rows must have the batch's columns and shapes to join it: {error}") from None
        return every.select_idxs(ids)


class DatasetRefill:
    """`refill=` for plan_rollouts: further prompts from a dataset (e.g. verl's RLHFDataset), in a seeded walk
    over it (epoch after epoch), collated as verl's dataloader collates rows: tensors stacked, every other
    field an object array. Pass `collate_fn` to collate otherwise.

    Put `state_dict()` in your checkpoint and `load_state_dict()` it on resume to draw the same refills.
    """

    def __init__(self, dataset, *, seed: int = 0, shuffle: bool = True, collate_fn=None):
        self.dataset, self.collate_fn = dataset, collate_fn or _collate
        self.order = RefillOrder(len(dataset), seed=seed, shuffle=shuffle)

    def __call__(self, count: int) -> DataProto:
        return DataProto.from_single_dict(self.collate_fn([self.dataset[int(i)] for i in self.order.take(count)]))

    def state_dict(self) -> dict:
        return self.order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state)


def _collate(rows: list[dict]) -> dict:
    """Dataset rows as one batch dict: a field of tensors stacked, any other field a 1-D object array."""
    out = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        else:
            column = np.empty(len(values), dtype=object)  # np.array would make lists of messages 2-D
            column[:] = values
            out[key] = column
    return out


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


def update_allocator(allocator, batch: DataProto, plan: RolloutPlan, *, score_key: str = "token_level_scores",
                     ends_step: bool = True) -> None:
    """Feed each group's rewards back to `allocator`: rows grouped by uid, matched to the plan's prompts.

    score_key: the verifier's score per token ([N, L], summed per row), before any KL penalty.
    Groups whose uid the plan does not know raise a ValueError; prompts a filter dropped are
    simply not observed. ends_step=False for batches generated within a training step that others
    follow (DAPO's extra generation batches, a first round): evidence ages once per step.
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
    allocator.update(plan.plan.select(rows), scores[order].numpy(), sizes.numpy(), ends_step=ends_step)


def _prompt_identities(batch: DataProto, prompt_key: str):
    """(texts, None) for text or chat columns, (None, integer keys) for integer columns."""
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

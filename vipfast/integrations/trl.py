"""TRL's GRPOTrainer with ragged groups sized by a vipfast allocator, and vipfast's sampling modes.

    from vipfast.integrations.trl import VIPGRPOConfig, VIPGRPOTrainer

    args = VIPGRPOConfig(output_dir="out", num_generations=8, allocator="vipfast", min_rollouts=4, max_rollouts=32,
                         sampling="dynamic", sampling_options={"oversample": 3.0, "max_rounds": 10})
    trainer = VIPGRPOTrainer(model=..., reward_funcs=..., args=args, train_dataset=...)
    trainer.train()

How it hooks in (docs/integrations/trl.md). TRL's sampler lays each generation batch out as
Q = generation_batch_size / num_generations prompts, each repeated num_generations times, split
across processes in rank order. Each training step runs a vipfast sampling mode (`sampling`, the
same Sampler objects vipfast's trainer and simulator run) on a prompt source that yields those Q
prompts and then refills from train_dataset. Each generation round the mode asks for runs TRL's
generation and reward functions on every process, each on its share of the round's rows; the
allocator's decisions (plans, screens) are the main process's, broadcast, so every process runs the
mode identically. The step's batch is then cut or padded to TRL's generation_batch_size rows, and
TRL's own code computes log-probs and logs on those rows (it is handed the generated completions
and their rewards instead of generating again); the advantages come from the batch's groups.

Generation backends: plain transformers `generate` and vLLM colocate mode generate one
completion per row, so ragged rows need nothing more; vLLM server mode asks the server for
`num_generations` completions per unique prompt, so in training this trainer sends every row as
its own request (n=1) and lets vLLM's prefix cache share the prompt. On vLLM's CPU backend the
colocated engine gets the new weights through vLLM's `reload_weights` instead of TRL's
per-parameter `load_weights`, which that backend cannot take (see `_push_weights_to_cpu_vllm`).

Evaluation keeps TRL's equal groups (num_generations_eval).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, gather_object
from trl import GRPOConfig, GRPOTrainer

from vipfast.advantages import ADVANTAGE_ESTIMATORS, group_advantages
from vipfast.allocators import allocator_names, load_allocator, make_allocator
from vipfast.sampling import Outcomes, Prompts, StepBatch, informative_groups, make_sampler, sampler_names

from ._source import RefillOrder, StepSource, prompt_identities

__all__ = ["VIPGRPOConfig", "VIPGRPOTrainer", "ALLOCATOR_CHECKPOINT", "SAMPLING_CHECKPOINT"]

# Saved beside the model in each checkpoint-<step>/ folder and read back on resume.
ALLOCATOR_CHECKPOINT = "vipfast_allocator.npz"
SAMPLING_CHECKPOINT = "vipfast_sampling.json"
# Options of a sampling mode that are the trained rollouts per prompt: they default to num_generations.
GROUP_SIZE_OPTIONS = {"pods": "keep", "reinforce_ada": "group_size"}


@dataclass
class VIPGRPOConfig(GRPOConfig):
    """GRPOConfig plus the allocator's and the sampling mode's options.

    `num_generations` becomes the mean trained rollouts per prompt: a generation batch still has
    generation_batch_size rows.
    """

    _VALID_DICT_FIELDS = GRPOConfig._VALID_DICT_FIELDS + ["sampling_options"]

    allocator: str = field(default="vipfast", metadata={"help": f"One of {allocator_names()}."})
    advantage_estimator: str | None = field(
        default=None,
        metadata={"help": "'grpo', 'drgrpo' or 'rloo'. Default: 'grpo' when scale_rewards='group', 'drgrpo' when "
                          "scale_rewards='none'. The allocator optimises for the same estimator's variance."})
    advantage_epsilon: float = field(default=1e-4, metadata={"help": "Added to the group std for 'grpo' (TRL's 1e-4)."})
    min_rollouts: int = field(default=4, metadata={"help": "Fewest rollouts a prompt gets."})
    max_rollouts: int = field(default=32, metadata={"help": "Most rollouts a prompt gets."})
    allocator_embedder: str = field(default="minilm",
                                    metadata={"help": "'minilm' (vipfast[minilm]) or 'hashing' (no model)."})
    allocator_reward_threshold: float | None = field(
        default=None,
        metadata={"help": "A rollout counts as a success when its (weighted, summed) reward >= this. Needed when "
                          "rewards are not in [0, 1]."})
    sampling: str = field(
        default="single",
        metadata={"help": f"How a step generates, one of {sampler_names()}: 'single' (one round, TRL's behaviour), "
                          "'dynamic' (DAPO), 'reinforce_ada', 'pods', 'vip_rounds' (docs/sampling.md)."})
    sampling_options: dict | str | None = field(
        default=None,
        metadata={"help": "Options of the sampling mode, e.g. {'oversample': 3.0, 'max_rounds': 10} for 'dynamic' "
                          "(JSON on the command line). 'pods' keep and 'reinforce_ada' group_size default to "
                          "num_generations."})
    rollouts_per_prompt: float | None = field(
        default=None,
        metadata={"help": "The allocator's budget per prompt, default num_generations. Only 'pods' trains fewer "
                          "rollouts than it generates, so only there may it exceed num_generations."})

    def __post_init__(self):
        super().__post_init__()
        if self.allocator not in allocator_names():
            raise ValueError(f"allocator must be one of {allocator_names()}, got {self.allocator!r}")
        if self.advantage_estimator is None:
            defaults = {"group": "grpo", "none": "drgrpo"}
            if self.scale_rewards not in defaults:
                raise ValueError(f"scale_rewards={self.scale_rewards!r} normalises across groups, which ragged groups "
                                 "do not support: use scale_rewards='group' or 'none', or set advantage_estimator")
            self.advantage_estimator = defaults[self.scale_rewards]
        if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage_estimator must be one of {ADVANTAGE_ESTIMATORS}, got {self.advantage_estimator!r}")
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(f"multi_objective_aggregation={self.multi_objective_aggregation!r} is not supported with "
                             "ragged groups; use 'sum_then_normalize'")
        self._check_sampling()

    def _check_sampling(self) -> None:
        if self.sampling not in sampler_names():
            raise ValueError(f"sampling must be one of {sampler_names()}, got {self.sampling!r}")
        options = {} if self.sampling_options is None else self.sampling_options
        if not isinstance(options, dict):
            raise TypeError(f"sampling_options must be a dict (or a JSON object string), got {options!r}")
        if self.sampling in GROUP_SIZE_OPTIONS:
            options = {GROUP_SIZE_OPTIONS[self.sampling]: self.num_generations, **options}
        make_sampler(self.sampling, **options)  # unknown or out-of-range options raise here, not mid-training
        self.sampling_options = options
        if self.rollouts_per_prompt is None:
            self.rollouts_per_prompt = float(self.num_generations)
        budget = self.rollouts_per_prompt
        if not self.min_rollouts <= budget <= self.max_rollouts:
            raise ValueError(f"the allocator's budget per prompt ({budget:g}: rollouts_per_prompt, default "
                             f"num_generations) must lie in [min_rollouts, max_rollouts] = "
                             f"[{self.min_rollouts}, {self.max_rollouts}]")
        if budget != self.num_generations and self.sampling != "pods":
            raise ValueError(f"rollouts_per_prompt ({budget:g}) differs from num_generations ({self.num_generations}): "
                             f"sampling={self.sampling!r} trains every rollout it keeps, so the batch would be cut or "
                             "padded every step; only 'pods' trains fewer rollouts than it generates")


class VIPGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose steps run a vipfast sampling mode with an allocator sizing each prompt's group.

    allocator: an allocator object to use instead of the one `args` describes (e.g. a VIPAllocator
    with a custom embedder, or one loaded from a checkpoint). Under sampling="single" its budget for
    the Q prompts of a generation batch must be generation_batch_size.

    After each step: `last_plan` (the allocator's last Plan), `last_batch` (the sampling mode's
    StepBatch) and `last_rows` ("rollouts": the generated rollout each row of the generation batch
    holds, "trains": whether the row trains, "entries": the StepBatch entries of the training rows).
    """

    def __init__(self, *args, allocator=None, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.args
        if not isinstance(config, VIPGRPOConfig):
            raise ValueError(f"VIPGRPOTrainer needs a VIPGRPOConfig, got {type(config).__name__}")
        self._reject_unsupported_inputs()
        self.prompts_per_batch = config.generation_batch_size // self.num_generations
        self.allocator = allocator if allocator is not None else self._allocator_from(config)
        self.sampler = make_sampler(config.sampling, **config.sampling_options)
        self._check_budget()
        self.refill_order = self._refill_order()
        self._decisions = MainProcessAllocator(self)
        self.last_plan = self.last_batch = self.last_rows = None
        self._step_rollouts: _StepRollouts | None = None
        self._replay = None  # (what _generate returns, what _calculate_rewards returns) for the batch's rows
        self._colocated_vllm_on_cpu = self.use_vllm and self.vllm_mode == "colocate" and _vllm_runs_on_cpu()

    def _allocator_from(self, config: VIPGRPOConfig):
        return make_allocator(config.allocator, budget_per_prompt=config.rollouts_per_prompt,
                              estimator=config.advantage_estimator, min_rollouts=config.min_rollouts,
                              max_rollouts=config.max_rollouts, reward_threshold=config.allocator_reward_threshold,
                              embedder=config.allocator_embedder)

    def _reject_unsupported_inputs(self) -> None:
        """Rounds call TRL's generation and reward functions on rows of text or chat prompts."""
        used = {"tools": self.tools, "environment_factory": self.environment_factories,
                "rollout_func": self.rollout_func}
        unsupported = [name for name, value in used.items() if value]
        columns = getattr(self.train_dataset, "column_names", None) or []
        unsupported += [f"a train_dataset column {name!r}" for name in ("image", "images") if name in columns]
        if unsupported:
            raise ValueError(f"VIPGRPOTrainer trains on text or chat prompts with reward functions; it does not "
                             f"support {', '.join(unsupported)}")

    def _check_budget(self) -> None:
        """Fail at construction, not mid-training, when the allocator's budget does not fit the mode."""
        if self.sampler.name == "single":
            budget = self.allocator.budget_for(self.prompts_per_batch)
            if budget != self.args.generation_batch_size:
                raise ValueError(f"the allocator's budget for {self.prompts_per_batch} prompts is {budget}, but each "
                                 f"generation batch has generation_batch_size = {self.args.generation_batch_size} rows")
            return
        most = self.prompts_per_batch
        if self.sampler.name == "dynamic":
            most = math.ceil(self.sampler.oversample * self.prompts_per_batch)
        self.allocator.budget_for(most)  # raises ValueError when that many prompts cannot be planned

    def _refill_order(self) -> RefillOrder | None:
        """The walk over train_dataset that replaces screened-out and dropped prompts (None: nothing to refill)."""
        refills = self.sampler.name == "dynamic" or hasattr(self.allocator, "screen")
        dataset = self.train_dataset
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            if refills:
                raise ValueError(f"sampling={self.sampler.name!r} with allocator {self.allocator.name!r} refills "
                                 "prompts from train_dataset, which must support len() and indexing (not an "
                                 "IterableDataset)")
            return None
        return RefillOrder(len(dataset), seed=self.args.seed, shuffle=self.shuffle_dataset)

    # -- one training step: the sampling mode's rounds, then TRL's scoring of the batch ---------------
    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        prompt_rows = self._generation_batch_prompts(inputs)
        self._step_rollouts = _StepRollouts(prompt_rows)
        texts, keys = prompt_identities([row["prompt"] for row in prompt_rows])
        source = StepSource(texts, keys, refill=self._refill_prompts if self.refill_order is not None else None)
        batch = self.sampler.sample(self._decisions, source, self._generate_round, self.prompts_per_batch)
        batch.learn(self._decisions)
        rows, advantages = self._batch_rows(batch)
        output = self._score_rows(rows["rollouts"], rows["trains"])
        per_process = len(advantages) // self.accelerator.num_processes
        start = self.accelerator.process_index * per_process
        output["advantages"] = advantages[start:start + per_process].to(output["advantages"].device)
        self._log_step(batch, rows, advantages)
        self.last_batch, self.last_rows = batch, rows
        self._step_rollouts = None
        return output

    def _generation_batch_prompts(self, inputs) -> list[dict]:
        """The Q prompt rows of TRL's generation batch (gathered from every process)."""
        group = self.num_generations
        all_rows = gather_object(list(inputs))
        if len(all_rows) != self.args.generation_batch_size:
            raise RuntimeError(f"expected a generation batch of {self.args.generation_batch_size} rows from TRL's "
                               f"sampler, got {len(all_rows)}")
        unique_rows = all_rows[::group]
        for q, row in enumerate(unique_rows):  # the sampler's layout: num_generations copies in a row
            if any(copy["prompt"] != row["prompt"] for copy in all_rows[q * group:(q + 1) * group]):
                raise RuntimeError("the train sampler did not give num_generations consecutive copies of each prompt; "
                                   "VIPGRPOTrainer needs TRL's RepeatSampler layout")
        return [dict(row) for row in unique_rows]

    def _refill_prompts(self, count: int):
        """The next `count` train_dataset rows: added to the step's rows, identified for the allocator."""
        columns = list(self._step_rollouts.rows[0])  # the columns TRL's dataloader gives, so reward kwargs line up
        rows = [{key: self.train_dataset[int(i)][key] for key in columns} for i in self.refill_order.take(count)]
        self._step_rollouts.rows += rows
        return prompt_identities([row["prompt"] for row in rows])

    def _generate_round(self, prompts: Prompts, counts) -> Outcomes:
        """The sampling mode's `generate`: counts[i] completions of prompts[i], generated and scored by TRL.

        Every process generates an equal share of the round's rows (TRL gathers rewards across
        processes with equal shapes), the last process's share padded with copies of the round's last row.
        """
        step, processes = self._step_rollouts, self.accelerator.num_processes
        prompt_of = np.repeat(prompts.ids, np.asarray(counts, dtype=np.int64))
        total = len(prompt_of)
        if total == 0:  # nothing planned (every process knows it alike): TRL's code takes no empty batch
            return Outcomes(rewards=np.empty(0), tokens=np.empty(0, dtype=np.int64))
        share = -(-total // processes)
        positions = np.arange(self.accelerator.process_index * share, (self.accelerator.process_index + 1) * share)
        rows = [step.rows[i] for i in prompt_of[np.minimum(positions, total - 1)].tolist()]
        prompt_texts = [row["prompt"] for row in rows]
        prompt_ids, completion_ids, _, completions, logprobs, *_ = self._generate(prompt_texts)
        rewards_per_func = self._calculate_rewards(rows, prompt_texts, completions, completion_ids)[:total]
        extra = dict(self._pending_extra_logs)  # columns reward functions logged: kept per rollout for its row
        self._pending_extra_logs.clear()
        lengths = torch.tensor([len(ids) for ids in completion_ids], device=self.accelerator.device)
        tokens = self.accelerator.gather(lengths)[:total].cpu().numpy()
        for j, position in enumerate(positions.tolist()):
            if position < total:
                step.records[step.total + position] = _Record(
                    prompt_ids[j], completion_ids[j], completions[j], None if logprobs is None else logprobs[j],
                    {column: values[j] for column, values in extra.items() if j < len(values)})
        step.add_round(prompt_of, rewards_per_func, filler=share * processes - total)
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights[None, :]).nansum(dim=1)  # as TRL sums; unscorable rows count as 0
        return Outcomes(rewards=rewards.double().cpu().numpy(), tokens=tokens.astype(np.int64))

    def _batch_rows(self, batch: StepBatch) -> tuple[dict, torch.Tensor]:
        """({"rollouts": the rollout of each of the generation_batch_size rows, "trains": which rows train,
        "entries": the batch entries of the training rows}, each row's advantage).

        Rows are the batch's trained rollouts in batch order. When there are more than rows, each group
        gives up its latest ones, evenly across groups (see `_even_cut`): the rest are trimmed, still in
        their groups' statistics but not in the loss. Missing rows are padded with generated rollouts that
        do not train, advantage 0 and masked out of the loss.
        """
        step, size = self._step_rollouts, self.args.generation_batch_size
        advantages = self._group_advantages(batch)
        trained = np.flatnonzero(batch.trained)
        kept = trained if len(trained) <= size else _even_cut(trained, batch.group_sizes, size)
        rollouts = batch.rollouts[kept]
        missing = size - len(kept)
        if missing and step.total == 0:
            raise RuntimeError(f"the step generated no rollouts: the sampling mode drew {batch.prompts_drawn} prompts "
                               "and kept none (a screening allocator skipped them all); raise sampling_options "
                               "max_draws or check the allocator")
        spare = np.setdiff1d(np.arange(step.total), rollouts)
        padding = np.resize(spare if len(spare) else np.arange(step.total), missing)
        trains = np.concatenate([np.ones(len(kept), dtype=bool), np.zeros(missing, dtype=bool)])
        rows = dict(rollouts=np.concatenate([rollouts, padding]).astype(np.int64), trains=trains, entries=kept)
        return rows, torch.cat([advantages[kept], torch.zeros(missing, dtype=advantages.dtype)])

    def _group_advantages(self, batch: StepBatch) -> torch.Tensor:
        """Per entry of the batch: its advantage within its group; unscorable rollouts get 0 and stay out of the
        group's statistics (as TRL does)."""
        scorable, sizes = _scorable_groups(batch, self._step_rollouts.scorable)
        advantages = torch.zeros(len(batch.rollouts), dtype=torch.float32)
        if scorable.any():
            advantages[torch.from_numpy(scorable)] = group_advantages(
                batch.rewards[scorable], sizes[sizes > 0], estimator=self.args.advantage_estimator,
                eps=self.args.advantage_epsilon).cpu()
        return advantages

    def _score_rows(self, rollouts: np.ndarray, trains: np.ndarray) -> dict:
        """TRL's own scoring (log-probs, masks, its logs) of this process's rows, fed the generated completions.

        Rows that do not train get an all-zero loss mask (TRL's `tool_mask`, multiplied into the loss mask)
        and NaN rewards, so TRL leaves them out of the loss and of its reward statistics.
        """
        step, processes = self._step_rollouts, self.accelerator.num_processes
        records = _gather_records(step.records, set(rollouts.tolist()))
        per_process = len(rollouts) // processes
        mine = slice(self.accelerator.process_index * per_process, (self.accelerator.process_index + 1) * per_process)
        local = [records[number] for number in rollouts[mine].tolist()]
        completion_ids = [record.completion_ids for record in local]
        logprobs = [record.logprobs for record in local]
        loss_mask = None
        if not trains[mine].all():
            loss_mask = [[int(train)] * len(ids) for train, ids in zip(trains[mine].tolist(), completion_ids)]
        generated = ([record.prompt_ids for record in local], completion_ids, loss_mask,
                     [record.completion for record in local], None if None in logprobs else logprobs, {}, None, [])
        columns = sorted({column for record in local for column in record.extra})
        self._pending_extra_logs.update({column: [record.extra.get(column) for record in local] for column in columns})
        rewards_per_func = step.rewards_per_func[torch.from_numpy(rollouts)].clone()
        rewards_per_func[torch.from_numpy(~trains)] = torch.nan
        prompt_of = step.prompt_of
        self._replay = (generated, rewards_per_func.to(self.accelerator.device))
        try:
            return super()._generate_and_score_completions([dict(step.rows[prompt_of[n]])
                                                            for n in rollouts[mine].tolist()])
        finally:
            self._replay = None

    def _log_step(self, batch: StepBatch, rows: dict, advantages: torch.Tensor) -> None:
        """Replace TRL's equal-group statistics of this batch with the batch's own; add its budget accounting."""
        metrics = self._metrics["train"]
        scorable, sizes = _scorable_groups(batch, self._step_rollouts.scorable)
        informative = informative_groups(batch.rewards[scorable], sizes)
        in_rows = np.repeat(np.arange(len(batch.group_sizes)), batch.group_sizes)[rows["entries"]]  # their groups
        metrics["frac_reward_zero_std"][-1] = float(np.mean(~informative[in_rows])) if len(in_rows) else 0.0
        if len(batch.group_sizes):
            sizes = batch.group_sizes
            metrics["vipfast/rollouts_min"].append(float(sizes.min()))
            metrics["vipfast/rollouts_max"].append(float(sizes.max()))
            metrics["vipfast/prompts_at_min"].append(float(np.mean(sizes == sizes.min())))
        accounting = {"generated_rollouts": batch.generated_rollouts, "generated_tokens": batch.generated_tokens,
                      "rounds": batch.rounds, "prompts_drawn": batch.prompts_drawn, "groups": len(batch.group_sizes),
                      "informative_groups": int(informative.sum()), "trained_rollouts": len(rows["entries"]),
                      "trimmed_rollouts": batch.trained_rollouts - len(rows["entries"]),
                      "padded_rows": int((~rows["trains"]).sum()),
                      "filler_rollouts": self._step_rollouts.filler, "complete": float(batch.complete)}
        for name, value in accounting.items():
            metrics[f"vipfast/sampling/{name}"].append(float(value))
        logged = self._logs["advantages"]
        for _ in range(len(advantages)):
            logged.pop()
        logged.extend(advantages.tolist())

    # -- hooks into TRL ----------------------------------------------------------------------------
    def _generate(self, prompts):
        if self._replay is not None:
            return self._replay[0]
        return super()._generate(prompts)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        if self._replay is not None:
            return self._replay[1]
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
        # vLLM server mode dedupes rows by taking every num_generations-th one; ragged rows must go one by one.
        if self.model.training:
            num_generations = 1
        if self._colocated_vllm_on_cpu and self.state.global_step != self._last_loaded_step:
            self._push_weights_to_cpu_vllm()
            self._last_loaded_step = self.state.global_step  # TRL's own marker: it then skips its push
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs)

    def _push_weights_to_cpu_vllm(self):
        """Load the policy's weights into the colocated vLLM engine on vLLM's CPU backend.

        That backend repacks each linear layer's weight for its GEMM kernels and drops the original
        parameter, so TRL's push (`model.load_weights` one parameter at a time) fails with
        "'Parameter' object has no attribute 'weight_loader'". `reload_weights` restores the
        checkpoint layout, loads every tensor and repacks again.
        """
        generation = self.vllm_generation
        llm = generation.llm
        llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=generation._iter_named_params()))
        llm.reset_prefix_cache()  # its key/values were computed with the old weights

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            self.allocator.save(os.path.join(folder, ALLOCATOR_CHECKPOINT))
            if self.refill_order is not None:
                with open(os.path.join(folder, SAMPLING_CHECKPOINT), "w") as handle:
                    json.dump(dict(sampling=self.sampler.name, refill=self.refill_order.state_dict()), handle)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        if os.path.exists(path := os.path.join(checkpoint, ALLOCATOR_CHECKPOINT)):
            self.allocator = load_allocator(path, **getattr(self.allocator, "unsaved_options", dict)())
        if self.refill_order is not None and os.path.exists(path := os.path.join(checkpoint, SAMPLING_CHECKPOINT)):
            with open(path) as handle:
                self.refill_order.load_state_dict(json.load(handle)["refill"])


class MainProcessAllocator:
    """The trainer's allocator as every process sees it: the main process plans, screens and learns, and the
    other processes receive its plans and screens, so every process runs the sampling mode identically.

    An error on the main process is raised on every process (none is left waiting for a broadcast).
    """

    def __init__(self, trainer: VIPGRPOTrainer):
        self._trainer = trainer

    def plan(self, prompts=None, *, keys=None, embeddings=None):
        plan = self._decide(lambda allocator: allocator.plan(prompts, keys=keys, embeddings=embeddings))
        self._trainer.last_plan = plan
        return plan

    def update(self, plan, rewards, group_sizes=None, *, ends_step: bool = True) -> None:
        if self._trainer.accelerator.is_main_process:
            self._trainer.allocator.update(plan, rewards, group_sizes, ends_step=ends_step)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        allocator = self._trainer.allocator
        if name == "screen":
            screen = allocator.screen  # AttributeError for rules that screen nothing: the sampler then skips it
            return lambda keys: self._decide(lambda _: screen(keys))
        return getattr(allocator, name)

    def _decide(self, decide):
        shared = [None]
        if self._trainer.accelerator.is_main_process:
            try:
                shared = [(True, decide(self._trainer.allocator))]
            except Exception as error:  # every process must reach the broadcast, then raise alike
                shared = [(False, error)]
        broadcast_object_list(shared, from_process=0)
        succeeded, value = shared[0]
        if not succeeded:
            raise value
        return value


class _Record(NamedTuple):
    """One generated rollout as TRL's `_generate` returned it, and what reward functions logged for it."""

    prompt_ids: list
    completion_ids: list
    completion: Any
    logprobs: list | None
    extra: dict


class _StepRollouts:
    """Every rollout one step generated, numbered in generation order (the sampling modes' rollout numbers).

    rows: the step's prompt rows (the generation batch's, then refills), indexed by the source's prompt ids.
    records: {rollout: _Record} of the rollouts this process generated; rewards_per_func, prompt_of and
    scorable cover every process's.
    """

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.records: dict[int, _Record] = {}
        self._rewards: list[torch.Tensor] = []
        self._prompts: list[np.ndarray] = []
        self.total = self.filler = 0

    def add_round(self, prompt_of: np.ndarray, rewards_per_func: torch.Tensor, filler: int) -> None:
        self._prompts.append(prompt_of)
        self._rewards.append(rewards_per_func.detach().float().cpu())
        self.total += len(prompt_of)
        self.filler += filler

    @property
    def prompt_of(self) -> np.ndarray:
        return np.concatenate(self._prompts) if self._prompts else np.empty(0, dtype=np.int64)

    @property
    def rewards_per_func(self) -> torch.Tensor:
        return torch.cat(self._rewards)

    @property
    def scorable(self) -> np.ndarray:
        """bool [total]: rollouts some reward function scored."""
        if not self._rewards:
            return np.zeros(0, dtype=bool)
        return (~torch.isnan(self.rewards_per_func).all(dim=1)).numpy()


def _even_cut(entries: np.ndarray, group_sizes: np.ndarray, size: int) -> np.ndarray:
    """The `size` of these batch entries (ascending) to keep: every group's first trained entry, then every
    group's second, ..., in group order, so that each group keeps its earliest rollouts and groups lose
    their latest ones evenly. The cut goes by generation order, not by reward."""
    group = np.repeat(np.arange(len(group_sizes)), group_sizes)[entries]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(group)) + 1])
    rank = np.arange(len(entries)) - np.repeat(starts, np.diff(np.concatenate([starts, [len(entries)]])))
    return np.sort(entries[np.lexsort((group, rank))[:size]])


def _scorable_groups(batch: StepBatch, scorable_rollouts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per entry of the batch: whether some reward function scored it, per group: its scored entries)."""
    scorable = scorable_rollouts[batch.rollouts]
    group_of = np.repeat(np.arange(len(batch.group_sizes)), batch.group_sizes)
    return scorable, np.bincount(group_of[scorable], minlength=len(batch.group_sizes))


def _gather_records(records: dict[int, _Record], wanted: set[int]) -> dict[int, _Record]:
    """The records of the wanted rollouts, from whichever process generated each, on every process."""
    mine = {number: record for number, record in records.items() if number in wanted}
    merged: dict[int, _Record] = {}
    for part in gather_object([mine]):
        merged.update(part)
    return merged


def _vllm_runs_on_cpu() -> bool:
    from vllm.platforms import current_platform  # here: vLLM is imported only by trainers that use it

    return current_platform.is_cpu()

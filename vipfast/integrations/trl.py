"""TRL's GRPOTrainer with ragged groups: a vipfast allocator decides each prompt's rollouts.

    from vipfast.integrations.trl import VIPGRPOConfig, VIPGRPOTrainer

    args = VIPGRPOConfig(output_dir="out", num_generations=8, allocator="vipfast", min_rollouts=4, max_rollouts=32)
    trainer = VIPGRPOTrainer(model=..., reward_funcs=..., args=args, train_dataset=...)
    trainer.train()

How it hooks in (docs/integrations/trl.md). TRL's sampler lays each generation batch out as
Q = generation_batch_size / num_generations prompts, each repeated num_generations times, split
across processes in rank order. The trainer keeps that layout and budget: it gathers the Q
prompts on every process, the main process asks the allocator for counts summing to
generation_batch_size and broadcasts them, and each process generates and scores its own slice
of the ragged rows (prompt q repeated counts[q] times). So `num_generations` is the mean number
of rollouts per prompt, and everything TRL sizes from the generation batch (buffering over
steps_per_generation, loss normalisation, vLLM) is unchanged. Advantages are then recomputed on
the ragged groups with vipfast.group_advantages, and the rewards go back to the allocator.

Generation backends: plain transformers `generate` and vLLM colocate mode generate one
completion per row, so ragged rows need nothing more; vLLM server mode asks the server for
`num_generations` completions per unique prompt, so in training this trainer sends every row as
its own request (n=1) and lets vLLM's prefix cache share the prompt. On vLLM's CPU backend the
colocated engine gets the new weights through vLLM's `reload_weights` instead of TRL's
per-parameter `load_weights`, which that backend cannot take (see `_push_weights_to_cpu_vllm`).

Evaluation keeps TRL's equal groups (num_generations_eval).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, gather_object
from trl import GRPOConfig, GRPOTrainer

from vipfast.advantages import ADVANTAGE_ESTIMATORS, group_advantages
from vipfast.allocators import allocator_names, load_allocator, make_allocator

from ._prompts import prompt_text

__all__ = ["VIPGRPOConfig", "VIPGRPOTrainer", "ALLOCATOR_CHECKPOINT"]

# Saved beside the model in each checkpoint-<step>/ folder and read back on resume.
ALLOCATOR_CHECKPOINT = "vipfast_allocator.npz"


@dataclass
class VIPGRPOConfig(GRPOConfig):
    """GRPOConfig plus the allocator's options. `num_generations` becomes the mean rollouts per prompt."""

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
        if not self.min_rollouts <= self.num_generations <= self.max_rollouts:
            raise ValueError(f"num_generations ({self.num_generations}) is the mean rollouts per prompt and must lie in "
                             f"[min_rollouts, max_rollouts] = [{self.min_rollouts}, {self.max_rollouts}]")


class VIPGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose generation batches have one ragged group per prompt, sized by an allocator.

    allocator: an allocator object to use instead of the one `args` describes (e.g. a VIPAllocator
    with a custom embedder, or one loaded from a checkpoint). Its budget for the Q prompts of a
    generation batch must be generation_batch_size.
    """

    def __init__(self, *args, allocator=None, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.args
        if not isinstance(config, VIPGRPOConfig):
            raise ValueError(f"VIPGRPOTrainer needs a VIPGRPOConfig, got {type(config).__name__}")
        self.prompts_per_batch = config.generation_batch_size // self.num_generations
        self.allocator = allocator if allocator is not None else self._allocator_from(config)
        budget = self.allocator.budget_for(self.prompts_per_batch)
        if budget != config.generation_batch_size:
            raise ValueError(f"the allocator's budget for {self.prompts_per_batch} prompts is {budget}, but each "
                             f"generation batch has generation_batch_size = {config.generation_batch_size} rows")
        self.last_plan = None
        self._rewards_per_func = None
        self._colocated_vllm_on_cpu = self.use_vllm and self.vllm_mode == "colocate" and _vllm_runs_on_cpu()

    def _allocator_from(self, config: VIPGRPOConfig):
        return make_allocator(config.allocator, budget=config.generation_batch_size,
                              estimator=config.advantage_estimator, min_rollouts=config.min_rollouts,
                              max_rollouts=config.max_rollouts, reward_threshold=config.allocator_reward_threshold,
                              embedder=config.allocator_embedder)

    # -- the ragged generation batch ------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        plan, rows = self._ragged_rows(inputs)
        counts = plan.counts
        self._rewards_per_func = None
        output = super()._generate_and_score_completions(rows)
        rewards_per_func = self._rewards_per_func  # [N, F] all processes', in rank order
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights[None, :]).nansum(dim=1)  # [N], as TRL sums them
        scorable = ~torch.isnan(rewards_per_func).all(dim=1)  # rows some reward function scored
        advantages, sizes = self._ragged_advantages(rewards, counts, scorable)
        start = self.accelerator.process_index * len(rows)
        output["advantages"] = advantages[start:start + len(rows)].to(output["advantages"].device)
        self._log_ragged(advantages, rewards, counts, scorable)
        if self.accelerator.is_main_process and bool(scorable.any()):
            kept = (sizes > 0).cpu().numpy()  # a prompt none of whose rollouts was scored teaches nothing
            self.allocator.update(plan.select(kept), rewards[scorable].cpu().numpy(), sizes.cpu().numpy()[kept])
        return output

    def _ragged_rows(self, inputs):
        """(the allocator's Plan for the Q prompts, this process's rows of the ragged batch)."""
        group = self.num_generations
        all_rows = gather_object(list(inputs))
        if len(all_rows) != self.args.generation_batch_size:
            raise RuntimeError(f"expected a generation batch of {self.args.generation_batch_size} rows from TRL's "
                               f"sampler, got {len(all_rows)}")
        unique_rows = all_rows[::group]
        prompts = [prompt_text(row["prompt"]) for row in unique_rows]
        for q, prompt in enumerate(prompts):  # the sampler's layout: num_generations copies in a row
            if any(prompt_text(row["prompt"]) != prompt for row in all_rows[q * group:(q + 1) * group]):
                raise RuntimeError("the train sampler did not give num_generations consecutive copies of each prompt; "
                                   "VIPGRPOTrainer needs TRL's RepeatSampler layout")
        shared = [None]
        if self.accelerator.is_main_process:
            shared = [self.allocator.plan(prompts)]
        broadcast_object_list(shared, from_process=0)  # every process must split the same plan
        plan = self.last_plan = shared[0]
        ragged = [dict(row) for row, n in zip(unique_rows, plan.counts.tolist()) for _ in range(n)]
        start = self.accelerator.process_index * len(inputs)
        return plan, ragged[start:start + len(inputs)]

    def _ragged_advantages(self, rewards, counts, scorable):
        """(advantages [N], scorable rollouts per prompt [Q]); unscorable rows get 0 and stay out of the baseline."""
        counts = torch.as_tensor(counts, device=rewards.device)
        group_of = torch.repeat_interleave(torch.arange(len(counts), device=rewards.device), counts)
        sizes = torch.bincount(group_of[scorable], minlength=len(counts))
        advantages = torch.zeros_like(rewards)
        advantages[scorable] = group_advantages(rewards[scorable], sizes[sizes > 0], estimator=self.args.advantage_estimator,
                                                eps=self.args.advantage_epsilon).to(rewards.dtype)
        return advantages, sizes

    def _log_ragged(self, advantages, rewards, counts, scorable):
        """Replace TRL's equal-group statistics of this batch with the ragged ones; add the plan's."""
        metrics = self._metrics["train"]
        group_of = np.repeat(np.arange(len(counts)), counts)[scorable.cpu().numpy()]
        values = rewards[scorable].cpu().numpy()
        low, high = np.full(len(counts), np.inf), np.full(len(counts), -np.inf)
        np.minimum.at(low, group_of, values)
        np.maximum.at(high, group_of, values)
        metrics["frac_reward_zero_std"][-1] = float(np.mean((low == high)[group_of]))  # per rollout, as TRL's
        metrics["vipfast/rollouts_min"].append(float(counts.min()))
        metrics["vipfast/rollouts_max"].append(float(counts.max()))
        metrics["vipfast/prompts_at_min"].append(float(np.mean(counts == counts.min())))
        logged = self._logs["advantages"]
        for _ in range(len(advantages)):
            logged.pop()
        logged.extend(advantages.tolist())

    # -- hooks into TRL ----------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = rewards_per_func
        return rewards_per_func

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

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and os.path.exists(path := os.path.join(checkpoint, ALLOCATOR_CHECKPOINT)):
            self.allocator = load_allocator(path, **getattr(self.allocator, "unsaved_options", dict)())


def _vllm_runs_on_cpu() -> bool:
    from vllm.platforms import current_platform  # here: vLLM is imported only by trainers that use it

    return current_platform.is_cpu()

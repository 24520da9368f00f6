"""The RLVR loop: allocate → generate → verify → ragged advantages → torch update → push weights → learn.

    trainer = Trainer(load_config("configs/arithmetic.yaml"))
    trainer.run()          # resumes from run_dir/checkpoint when there is one

Every random choice of step t (its prompts, its sampling seeds) derives from (seed, t), so a run
resumed from the checkpoint of step t takes exactly the step t+1 an uninterrupted run takes.
Outputs in run_dir: config.yaml, metrics.jsonl (one row per step, plus row 0: the held-out
accuracy before training), checkpoint/ (policy, optimizer, allocator, trainer state; rundir.py).
Everything that can be checked is checked before a model is loaded (`prepare_run`).
"""

from __future__ import annotations

import pickle
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .._files import atomic_write
from ..advantages import group_advantages, token_advantages
from ..allocators import load_allocator, make_allocator
from . import rundir
from .config import TrainConfig, check_dependencies, read_yaml_mapping
from .generation import make_generator, resolve_backend
from .loss import pack_sequences, policy_gradient_loss, response_logprobs
from .model import TINY_MAX_POSITIONS, load_policy, policy_directory
from .task import Task, make_task

TIMERS = ("allocate", "generate", "reward", "update", "sync")
# Keys whose change makes a checkpoint meaningless for this config (steps may grow, run_dir move).
RESUMABLE_CHANGES = {"steps", "run_dir", "eval_every", "checkpoint_every"}


@dataclass
class PreparedRun:
    """What `prepare_run` found: the task, the generation backend, and the checkpoint to resume from."""

    config: TrainConfig
    task: Task | None  # None for a finished run: nothing will be trained
    backend: str
    checkpoint: rundir.Checkpoint | None

    @property
    def finished(self) -> bool:
        return self.checkpoint is not None and self.checkpoint.step >= self.config.steps


def prepare_run(config: TrainConfig, *, resume: bool = True) -> PreparedRun:
    """Every check that needs no model, in seconds: installed extras, the device, the run directory's
    checkpoint (recovered from any interrupted save, verified, matched to config.yaml and metrics.jsonl)
    and the task's data. Errors are ValueErrors naming the key or file."""
    check_dependencies(config)
    backend = resolve_backend(config.generation.backend)
    _check_device(config.device)
    checkpoint = rundir.recover_checkpoint(config.run_dir) if resume else None
    if checkpoint is not None:
        _check_resumable(Path(config.run_dir), config)
        rundir.check_metrics_match(config.run_dir, checkpoint)
    prepared = PreparedRun(config, None, backend, checkpoint)
    if not prepared.finished:
        prepared.task = make_task(config.task)  # bad data fails here, before any model is built
        _check_task_fits(prepared.task, config)
    return prepared


class Trainer:
    def __init__(self, config: TrainConfig, *, resume: bool = True, prepared: PreparedRun | None = None):
        """prepared: `prepare_run(config, resume=resume)` when the caller already ran it."""
        prepared = prepared or prepare_run(config, resume=resume)
        if prepared.config is not config:
            raise ValueError("prepared must be prepare_run(config)'s result for this config")
        self.config = config
        if config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
        self.run_dir = Path(config.run_dir)
        self.checkpoint_dir = self.run_dir / rundir.CHECKPOINT
        self.task = prepared.task or make_task(config.task)
        self.device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.backend = prepared.backend
        resuming = prepared.checkpoint is not None
        if resuming:
            print(f"resuming from step {prepared.checkpoint.step} ({self.checkpoint_dir})", file=sys.stderr)
        start_dir = self.checkpoint_dir / "policy" if resuming else policy_directory(config.model)
        self.model, self.tokenizer = load_policy(start_dir, self.device)
        o = config.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        a = config.allocator
        if resuming:
            self.allocator = load_allocator(self.checkpoint_dir / "allocator.npz")
        else:
            self.allocator = make_allocator(a.name, budget_per_prompt=a.budget_per_prompt, estimator=o.estimator,
                                            min_rollouts=a.min_rollouts, max_rollouts=a.max_rollouts,
                                            embedder=a.embedder)
        self.train_ids = [self.tokenizer(p)["input_ids"] for p, _ in self.task.train]
        self.held_out_ids = [self.tokenizer(p)["input_ids"] for p, _ in self.task.held_out]
        longest_prompt = max(map(len, self.train_ids + self.held_out_ids))
        self.generator = make_generator(self.backend, model=self.model, tokenizer=self.tokenizer, model_dir=start_dir,
                                        config=config.generation, seed=config.seed, device=self.device,
                                        max_model_len=longest_prompt + config.generation.max_new_tokens)
        self._learner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vipfast-allocator")
        self.step, self.rollouts = 0, 0
        if resuming:
            self._load_checkpoint(prepared.checkpoint)
        else:
            self._start_run_dir()

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        rows = []
        if self.step == 0 and self.task.held_out:
            rows.append(self._log(dict(step=0, rollouts=0, held_out_accuracy=self.evaluate())))
        # A context, so that an interrupted bar still ends its line before the message that follows.
        with tqdm(range(self.step, self.config.steps), initial=self.step, total=self.config.steps, desc="train",
                  unit="step", file=sys.stderr) as bar:
            for _ in bar:
                row = self.train_step()
                if self.step % self.config.eval_every == 0 or self.step == self.config.steps:
                    row["held_out_accuracy"] = self.evaluate() if self.task.held_out else None
                rows.append(self._log(row))  # before the checkpoint: a checkpoint's step always has its row
                if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                    self.save_checkpoint()
                bar.set_postfix(reward=f"{row['reward_mean']:.3f}", held_out=row.get("held_out_accuracy"))
        return rows

    def train_step(self) -> dict:
        c = self.config
        timer = StepTimer()
        rng = np.random.default_rng([c.seed, self.step])
        chosen = rng.choice(len(self.task.train), size=c.allocator.prompts_per_step, replace=False)
        prompts = [self.task.train[i][0] for i in chosen]
        with timer("allocate"):
            plan = self.allocator.plan(prompts)
        counts = plan.counts
        with timer("generate"):
            rollouts = self.generator.generate([self.train_ids[i] for i in chosen], counts,
                                               seed=int(rng.integers(2**31 - 1)))
        with timer("reward"):
            references = [self.task.train[i][1] for i, n in zip(chosen, counts.tolist()) for _ in range(n)]
            rewards = self.task.verify(rollouts.texts, references)
        # The allocator learns from this step's rewards while torch updates the policy: neither
        # reads what the other writes, and the GP's native code runs without the GIL. Only the
        # wait for it, if any, is allocator time; it ends within the step, so checkpoints and
        # the next plan see the same allocator state as a sequential run.
        with timer("allocate"):
            learning = self._learner.submit(self.allocator.update, plan, rewards)
        with timer("update"):
            prompt_ids = [self.train_ids[i] for i, n in zip(chosen, counts.tolist()) for _ in range(n)]
            update = self.policy_update(prompt_ids, rollouts.response_ids, rewards, counts)
        with timer("sync"):
            self.generator.sync(self.model)
        with timer("allocate"):
            learning.result()
        self.step += 1
        self.rollouts += int(counts.sum())
        return dict(step=self.step, rollouts=self.rollouts, **batch_statistics(rewards, counts, rollouts.response_ids),
                    **update, time_s=timer.seconds, allocator_overhead=timer.seconds["allocate"] / timer.total)

    def policy_update(self, prompt_ids, response_ids, rewards: np.ndarray, counts: np.ndarray) -> dict:
        """One AdamW step (or `optim.epochs` clipped ones) on the token-level policy-gradient loss."""
        o = self.config.optim
        batch = pack_sequences(prompt_ids, response_ids, self.tokenizer.pad_token_id, self.device)
        advantages = group_advantages(torch.as_tensor(rewards, device=self.device),
                                      torch.as_tensor(counts, device=self.device), estimator=o.estimator)
        per_token, _ = token_advantages(advantages, batch["response_lengths"], layout="padded")
        old_logprobs = None
        if o.epochs > 1:
            with torch.no_grad():
                old_logprobs, _ = response_logprobs(self.model, batch)
        for group in self.optimizer.param_groups:  # a function of the step alone, so resuming needs no scheduler state
            group["lr"] = o.lr * min(1.0, (self.step + 1) / (o.warmup_steps + 1))
        for _ in range(o.epochs):
            logprobs, mask = response_logprobs(self.model, batch)
            loss = policy_gradient_loss(logprobs, logprobs.detach() if old_logprobs is None else old_logprobs,
                                        per_token, mask, clip_eps=o.clip_eps, aggregation=o.aggregation,
                                        max_new_tokens=self.config.generation.max_new_tokens)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.max_grad_norm)
            self.optimizer.step()
        return dict(loss=float(loss.detach()), grad_norm=float(grad_norm))

    def evaluate(self) -> float:
        """Held-out accuracy: mean reward of `eval_samples` samples per prompt (greedy when 0)."""
        answers = [answer for _, answer in self.task.held_out]
        samples = self.config.eval_samples
        if samples == 0:
            return float(self.task.verify(self.generator.greedy(self.held_out_ids), answers).mean())
        counts = np.full(len(self.held_out_ids), samples)
        seed = int(np.random.default_rng([self.config.seed, self.step, 1]).integers(2**31 - 1))
        texts = self.generator.generate(self.held_out_ids, counts, seed=seed).texts
        return float(self.task.verify(texts, [a for a in answers for _ in range(samples)]).mean())

    # -- run directory and checkpoints ---------------------------------------------------------------
    def _start_run_dir(self) -> None:
        import yaml

        rundir.start_over(self.run_dir)
        text = yaml.safe_dump(_plain(self.config.to_dict()), sort_keys=False)
        atomic_write(self.run_dir / rundir.CONFIG, lambda handle: handle.write(text.encode()))

    def save_checkpoint(self) -> None:
        """Written beside the old one, then swapped in: a kill at any point leaves a complete checkpoint."""
        def write_files(directory: Path) -> None:
            self.model.save_pretrained(directory / "policy")
            self.tokenizer.save_pretrained(directory / "policy")
            torch.save(self.optimizer.state_dict(), directory / "optimizer.pt")
            self.allocator.save(directory / "allocator.npz")

        rundir.save_checkpoint(self.run_dir, self.step, self.rollouts, write_files)

    def _load_checkpoint(self, checkpoint: rundir.Checkpoint) -> None:
        self.step, self.rollouts = checkpoint.step, checkpoint.rollouts
        path = checkpoint.directory / "optimizer.pt"
        try:
            self.optimizer.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
        except (RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as error:
            raise ValueError(f"{path} does not hold this run's optimizer state: {error}") from None
        rundir.keep_metrics_through(self.run_dir, self.step)

    def _log(self, row: dict) -> dict:
        rundir.append_metrics(self.run_dir, row)
        return row


def _check_resumable(run_dir: Path, config: TrainConfig) -> None:
    """The checkpoint's run must have had this config, up to RESUMABLE_CHANGES."""
    saved = _flatten(read_yaml_mapping(run_dir / rundir.CONFIG, "the run's config"))
    current = _flatten(_plain(config.to_dict()))
    for key in sorted(set(saved) | set(current)):
        if key.split(".")[0] not in RESUMABLE_CHANGES and saved.get(key) != current.get(key):
            raise ValueError(f"{run_dir} holds a checkpoint of a run whose {key} was {saved.get(key)!r}, not "
                             f"{current.get(key)!r}; {rundir.START_OVER}")


def _check_device(device: str) -> None:
    try:
        parsed = torch.device(device if device != "auto" else "cpu")
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu' or a torch device such as 'cuda:0', got {device!r}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device is {device!r} but torch sees no CUDA device; use 'auto' or 'cpu'")


def _check_task_fits(task: Task, config: TrainConfig) -> None:
    wanted = config.allocator.prompts_per_step
    if len(task.train) < wanted:
        raise ValueError(f"allocator.prompts_per_step ({wanted}) must be <= the task's {len(task.train)} training "
                         f"prompts")
    if config.model.kind == "tiny":  # one token per character, after BOS
        longest = 1 + max(len(prompt) for prompt, _ in task.train + task.held_out)
        room = TINY_MAX_POSITIONS - longest
        if config.generation.max_new_tokens > room:
            raise ValueError(f"generation.max_new_tokens must be <= {room} for the tiny model: its {TINY_MAX_POSITIONS} "
                             f"positions hold the longest prompt ({longest} tokens) and the response, got "
                             f"{config.generation.max_new_tokens}")


def describe_last_checkpoint(run_dir) -> str:
    """Where a stopped run can resume from, in a sentence."""
    try:
        checkpoint = rundir.recover_checkpoint(run_dir, verify=False)
    except (OSError, ValueError) as error:
        return f"the checkpoint in {run_dir} is unreadable ({error})"
    if checkpoint is None:
        return f"no checkpoint in {run_dir} yet"
    return f"last checkpoint: {checkpoint.directory} (step {checkpoint.step}); run the same command to resume"


class StepTimer:
    """Wall seconds per phase of one step; a phase timed twice adds up."""

    def __init__(self):
        self.seconds = dict.fromkeys(TIMERS, 0.0)

    def __call__(self, phase: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.started = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[phase] += time.perf_counter() - self.started

        return _Span()

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def batch_statistics(rewards: np.ndarray, counts: np.ndarray, response_ids) -> dict:
    """Reward, solve rate, wasted rollouts (groups of all-equal rewards: zero advantage) and the allocation."""
    offsets = np.concatenate([[0], np.cumsum(counts)])
    group_means = np.add.reduceat(rewards, offsets[:-1]) / counts
    settled = (group_means == 0) | (group_means == 1)
    values, frequency = np.unique(counts, return_counts=True)
    return dict(reward_mean=float(rewards.mean()), solve_rate=float((group_means > 0).mean()),
                wasted_rollouts=int(counts[settled].sum()), wasted_fraction=float(counts[settled].sum() / counts.sum()),
                allocation_histogram={int(v): int(f) for v, f in zip(values, frequency)},
                mean_response_tokens=float(np.mean([len(r) for r in response_ids])))


def _flatten(mapping: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 1e-4}} -> {"optim.lr": 1e-4}."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _plain(value):
    """Tuples as lists, so a config compares equal to its YAML round trip."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def train(config: TrainConfig, *, resume: bool = True) -> list[dict]:
    """Run (or resume) training; a finished run returns [] at once."""
    prepared = prepare_run(config, resume=resume)
    return [] if prepared.finished else Trainer(config, resume=resume, prepared=prepared).run()



"""The RLVR loop: plan → generate → verify → ragged advantages → torch update → push weights → learn.

    trainer = Trainer(load_config("configs/arithmetic.yaml"))
    trainer.run()          # resumes from run_dir/checkpoint when there is one

A step runs through a sampling mode (vipfast.sampling, `sampling.name`): it draws prompts from the pool
(`sampling.order`, source.py), plans with the allocator and calls back `generate_and_verify` once per
generation round; the StepBatch it returns says which rollouts train and how they group for advantages.
Every random choice of step t (its prompts in "step" order, its sampling seeds) derives from (seed, t),
and the "epoch" order's position is checkpointed, so a run resumed from the checkpoint of step t takes
exactly the step t+1 an uninterrupted run takes. Outputs in run_dir: config.yaml, metrics.jsonl (one row
per step, plus row 0: the held-out accuracy before training), checkpoint/ (policy, optimizer, allocator,
trainer state; rundir.py). Everything that can be checked is checked before a model is loaded (`prepare_run`).
"""

from __future__ import annotations

import json
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
from ..sampling import Outcomes, Prompts, StepBatch, make_sampler
from . import rundir
from .config import ORACLE, TrainConfig, check_dependencies, read_yaml_mapping
from .generation import make_generator, resolve_backend
from .loss import pack_sequences, policy_gradient_loss, response_logprobs
from .model import build_tokenizer, load_policy, load_tokenizer, policy_directory, prompt_encoder, uses_chat_template
from .oracle import PolicyOracle
from .rollouts import StepRollouts, batch_rows, batch_statistics
from .source import make_source, pool_prompts
from .task import Task, by_family, majority_accuracy, make_task

TIMERS = ("allocate", "generate", "reward", "update", "sync")
# Keys whose change makes a checkpoint meaningless for this config (steps may grow, run_dir move).
RESUMABLE_CHANGES = {"steps", "rollout_budget", "run_dir", "eval_every", "checkpoint_every", "logging"}
ORACLE_STREAM = 3  # tags the oracle's sampling seeds: [seed, step, 3, call]


@dataclass
class PreparedRun:
    """What `prepare_run` found: the task, the generation backend, and the checkpoint to resume from."""

    config: TrainConfig
    task: Task | None  # None for a finished run: nothing will be trained
    backend: str
    checkpoint: rundir.Checkpoint | None

    @property
    def finished(self) -> bool:
        return self.checkpoint is not None and run_is_over(self.config, self.checkpoint.step, self.checkpoint.rollouts)


def run_is_over(config: TrainConfig, step: int, rollouts: int) -> bool:
    return step >= config.steps or (config.rollout_budget is not None and rollouts >= config.rollout_budget)


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
        if config.model.kind == "path":
            uses_chat_template(load_tokenizer(Path(config.model.path)), config.model)  # model.chat_template: true needs one
        prepared.task = make_task(config.task)  # bad data fails here, before any model is built
        _check_task_fits(prepared.task, config)
        if checkpoint is not None:  # the source's saved position must fit this pool
            source = make_source(config.sampling.order, pool_prompts(p.prompt for p in prepared.task.train), config.seed)
            source.load_state(rundir.read_trainer_state(checkpoint)["source"])
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
        start_dir = self.checkpoint_dir / "policy" if resuming else policy_directory(config.model, self.task.tiny)
        self.model, self.tokenizer = load_policy(start_dir, self.device)
        o = config.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.allocator = self._allocator(self.checkpoint_dir / "allocator.npz" if resuming else None)
        self.sampler = make_sampler(config.sampling.name, **config.sampling.options)
        self.pool = pool_prompts(p.prompt for p in self.task.train)
        self.source = make_source(config.sampling.order, self.pool, config.seed)
        self._pool_index = {int(key): i for i, key in enumerate(self.pool.keys.tolist())}
        self._pool_families = [p.family for p in self.task.train] if self.task.families else None
        encode = prompt_encoder(self.tokenizer, config.model)
        self.train_ids = [encode(p.prompt) for p in self.task.train]
        self.held_out_ids = [encode(p.prompt) for p in self.task.held_out]
        longest_prompt = max(map(len, self.train_ids + self.held_out_ids))
        self.generator = make_generator(self.backend, model=self.model, tokenizer=self.tokenizer, model_dir=start_dir,
                                        config=config.generation, seed=config.seed, device=self.device,
                                        max_model_len=longest_prompt + config.generation.max_new_tokens)
        self._learner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vipfast-allocator")
        self.step, self.rollouts, self.tokens = 0, 0, 0
        self._oracle_calls, self._oracle_seconds = 0, 0.0
        if resuming:
            self._load_checkpoint(prepared.checkpoint)
        else:
            self._start_run_dir()
        self._tensorboard = rundir.tensorboard_writer(config, self.step) if config.logging.tensorboard else None

    def _allocator(self, saved: Path | None):
        a, o = self.config.allocator, self.config.optim
        options = dict(budget_per_prompt=a.budget_per_prompt, estimator=o.estimator, min_rollouts=a.min_rollouts,
                       max_rollouts=a.max_rollouts, reward_threshold=a.reward_threshold)
        if a.name == ORACLE:
            return PolicyOracle.restore(saved, self.measure_success, **options) if saved else \
                PolicyOracle(self.measure_success, **options)
        return load_allocator(saved) if saved else make_allocator(a.name, embedder=a.embedder, **options)

    @property
    def finished(self) -> bool:
        return run_is_over(self.config, self.step, self.rollouts)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, *, progress: bool = True) -> list[dict]:
        """Train until `steps` (or `rollout_budget`) is reached; progress: show a bar on stderr."""
        rows = []
        if self.step == 0 and self.task.held_out:
            rows.append(self._log(dict(step=0, rollouts=0, tokens=0, **self.evaluation(), **self.majority_baseline())))
        # A context, so that an interrupted bar still ends its line before the message that follows.
        with tqdm(initial=self.step, total=self.config.steps, desc="train", unit="step", file=sys.stderr,
                  disable=not progress) as bar:
            while not self.finished:
                row = self.train_step()
                if self.step % self.config.eval_every == 0 or self.finished:
                    row.update(self.evaluation() if self.task.held_out else dict(held_out_accuracy=None))
                rows.append(self._log(row))  # before the checkpoint: a checkpoint's step always has its row
                if self.step % self.config.checkpoint_every == 0 or self.finished:
                    self.save_checkpoint()
                bar.update()
                bar.set_postfix(reward=_short(row["reward_mean"]), held_out=row.get("held_out_accuracy"))
        if self._tensorboard is not None:
            self._tensorboard.close()
        return rows

    def train_step(self) -> dict:
        c = self.config
        timer = StepTimer()
        step_rng = np.random.default_rng([c.seed, self.step])
        self.source.begin_step(step_rng)
        rollouts = StepRollouts()
        oracle_before = self._oracle_seconds
        started = time.perf_counter()

        def generate_and_verify(prompts: Prompts, counts: np.ndarray) -> Outcomes:
            return self.generate_and_verify(prompts, counts, rollouts, int(step_rng.integers(2**31 - 1)), timer)

        # plan → generate → verify, in as many rounds as the sampling mode takes
        batch = self.sampler.sample(self.allocator, self.source, generate_and_verify, c.allocator.prompts_per_step)
        oracle_seconds = self._oracle_seconds - oracle_before
        timer.add("allocate", time.perf_counter() - started - timer.seconds["generate"] - timer.seconds["reward"]
                  - oracle_seconds)
        advantages = self.advantages(batch)
        # The allocator learns from this step's rewards while torch updates the policy: neither
        # reads what the other writes, and the GP's native code runs without the GIL. Only the
        # wait for it, if any, is allocator time; it ends within the step, so checkpoints and
        # the next plan see the same allocator state as a sequential run.
        with timer("allocate"):
            learning = self._learner.submit(batch.learn, self.allocator)
        with timer("update"):
            update = self.policy_update(batch, rollouts, advantages)
        with timer("sync"):
            self.generator.sync(self.model)
        with timer("allocate"):
            learning.result()
        self.step += 1
        self.rollouts += batch.generated_rollouts
        self.tokens += batch.generated_tokens
        row = dict(step=self.step, rollouts=self.rollouts, tokens=self.tokens,
                   **batch_statistics(batch, rollouts, self._pool_families),
                   **update, time_s=timer.seconds, allocator_overhead=timer.seconds["allocate"] / timer.total)
        if c.allocator.name == ORACLE:
            row.update(oracle_s=oracle_seconds)
        return row

    def generate_and_verify(self, prompts: Prompts, counts: np.ndarray, rollouts: StepRollouts, seed: int,
                            timer: StepTimer) -> Outcomes:
        """One generation round: counts[i] rollouts of prompts[i], scored, kept in `rollouts`."""
        counts = np.asarray(counts, dtype=np.int64)
        rows = np.flatnonzero(counts > 0)  # a backend asked for 0 samples of a prompt may refuse
        ids = prompts.ids[rows]
        with timer("generate"):
            generated = self.generator.generate([self.train_ids[i] for i in ids.tolist()], counts[rows], seed=seed)
        with timer("reward"):
            pool_ids = np.repeat(ids, counts[rows])
            rewards = self.task.score(generated.texts, [self.task.train[i] for i in pool_ids.tolist()])
        rollouts.add(pool_ids, generated.response_ids, rewards)
        return Outcomes(rewards=rewards, tokens=np.array([len(r) for r in generated.response_ids], dtype=np.int64))

    def advantages(self, batch: StepBatch) -> torch.Tensor:
        """float64 [N]: each batch rollout's advantage within its advantage group."""
        return group_advantages(torch.as_tensor(batch.rewards, device=self.device),
                                torch.as_tensor(batch.group_sizes, device=self.device),
                                estimator=self.config.optim.estimator)

    def policy_update(self, batch: StepBatch, rollouts: StepRollouts, advantages: torch.Tensor) -> dict:
        """One AdamW step (or `optim.epochs` clipped ones) on the policy-gradient loss of the trained rollouts."""
        o = self.config.optim
        trained = np.flatnonzero(batch.trained)
        if not len(trained):  # a mode that kept no group: nothing to learn from this step
            return dict(loss=None, grad_norm=None)
        numbers = batch.rollouts[trained]
        pool_ids = rollouts.pool_ids[numbers]
        packed = pack_sequences([self.train_ids[i] for i in pool_ids.tolist()],
                                [rollouts.response_ids[n] for n in numbers.tolist()], self.tokenizer.pad_token_id,
                                self.device)
        per_token, _ = token_advantages(advantages[torch.as_tensor(trained, device=self.device)]
                                        if len(trained) < len(advantages) else advantages,
                                        packed["response_lengths"], layout="padded")
        prompts = torch.as_tensor(batch_rows(batch)[trained], device=self.device)
        old_logprobs = None
        if o.epochs > 1:
            with torch.no_grad():
                old_logprobs, _ = response_logprobs(self.model, packed)
        for group in self.optimizer.param_groups:  # a function of the step alone, so resuming needs no scheduler state
            group["lr"] = o.lr * min(1.0, (self.step + 1) / (o.warmup_steps + 1))
        for _ in range(o.epochs):
            logprobs, mask = response_logprobs(self.model, packed)
            loss = policy_gradient_loss(logprobs, logprobs.detach() if old_logprobs is None else old_logprobs,
                                        per_token, mask, clip_eps=o.clip_eps, aggregation=o.aggregation,
                                        max_new_tokens=self.config.generation.max_new_tokens, prompts=prompts)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.max_grad_norm)
            self.optimizer.step()
        return dict(loss=float(loss.detach()), grad_norm=float(grad_norm))

    def measure_success(self, keys: np.ndarray, texts) -> np.ndarray:
        """The oracle's measurement: the current policy's success rate on each prompt from
        `allocator.oracle_samples` samples (outside the budget; seeds from (seed, step, ORACLE_STREAM, call))."""
        started = time.perf_counter()
        ids = np.array([self._pool_index[int(key)] for key in np.asarray(keys).tolist()], dtype=np.int64)
        samples = self.config.allocator.oracle_samples
        seed = int(np.random.default_rng([self.config.seed, self.step, ORACLE_STREAM, self._oracle_calls])
                   .integers(2**31 - 1))
        self._oracle_calls += 1
        generated = self.generator.generate([self.train_ids[i] for i in ids.tolist()], np.full(len(ids), samples),
                                            seed=seed)
        rewards = self.task.score(generated.texts, [self.task.train[i] for i in np.repeat(ids, samples).tolist()])
        threshold = self.config.allocator.reward_threshold
        successes = rewards if threshold is None else (rewards >= threshold).astype(np.float64)
        self._oracle_seconds += time.perf_counter() - started
        return successes.reshape(len(ids), samples).mean(1)

    def evaluation(self) -> dict:
        """Held-out accuracy: mean reward of `eval_samples` samples per prompt (greedy when 0), overall and per
        family."""
        problems = self.task.held_out
        samples = max(self.config.eval_samples, 1)
        if self.config.eval_samples == 0:
            rewards = self.task.score(self.generator.greedy(self.held_out_ids), problems)
        else:
            counts = np.full(len(self.held_out_ids), samples)
            seed = int(np.random.default_rng([self.config.seed, self.step, 1]).integers(2**31 - 1))
            texts = self.generator.generate(self.held_out_ids, counts, seed=seed).texts
            rewards = self.task.score(texts, [p for p in problems for _ in range(samples)])
        row = dict(held_out_accuracy=float(rewards.mean()))
        if self.task.families:
            row["held_out_by_family"] = by_family(rewards, [p.family for p in problems for _ in range(samples)])
        return row

    def evaluate(self) -> float:
        return self.evaluation()["held_out_accuracy"]

    def majority_baseline(self) -> dict:
        """What answering each family's most common training answer scores on the held-out set."""
        per_family = majority_accuracy(self.task)
        counts = {family: sum(p.family == family for p in self.task.held_out) for family in per_family}
        overall = sum(per_family[f] * counts[f] for f in per_family) / max(sum(counts.values()), 1)
        return dict(majority_accuracy=overall, majority_by_family=per_family) if self.task.families else \
            dict(majority_accuracy=overall)

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
            state = json.dumps(dict(source=self.source.state(), tokens=self.tokens))
            atomic_write(directory / rundir.TRAINER_STATE, lambda handle: handle.write(state.encode()))

        rundir.save_checkpoint(self.run_dir, self.step, self.rollouts, write_files)

    def _load_checkpoint(self, checkpoint: rundir.Checkpoint) -> None:
        self.step, self.rollouts = checkpoint.step, checkpoint.rollouts
        path = checkpoint.directory / "optimizer.pt"
        try:
            self.optimizer.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
        except (RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as error:
            raise ValueError(f"{path} does not hold this run's optimizer state: {error}") from None
        state = rundir.read_trainer_state(checkpoint)
        self.source.load_state(state["source"])
        self.tokens = state["tokens"]
        rundir.keep_metrics_through(self.run_dir, self.step)

    def _log(self, row: dict) -> dict:
        rundir.append_metrics(self.run_dir, row)
        if self._tensorboard is not None:
            rundir.write_scalars(self._tensorboard, row)
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
    if config.model.kind == "tiny":
        encode = prompt_encoder(build_tokenizer(task.tiny), config.model)
        longest = max(len(encode(p.prompt)) for p in task.train + task.held_out)  # BOS included
        positions = task.tiny.max_positions
        room = positions - longest
        if config.generation.max_new_tokens > room:
            raise ValueError(f"generation.max_new_tokens must be <= {room} for the tiny model: its {positions} "
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

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def _short(value) -> str | None:
    return None if value is None else f"{value:.3f}"


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



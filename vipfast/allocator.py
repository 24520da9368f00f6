"""Allocators: plan each batch's rollouts, learn from the rewards that come back.

    alloc = vipfast.VIPAllocator(budget_per_prompt=8.0, estimator="rloo", min_rollouts=4, max_rollouts=32)
    counts = alloc.plan(prompts)                 # int64 [Q], sums to the budget
    alloc.update(prompts, rewards, group_sizes)  # rewards flat [N], group_sizes [Q]

All allocators share the budget rule and the update format:
- budget: a fixed total (`budget=`) or `round(budget_per_prompt * Q)`; it must lie in
  [Q * min_rollouts, Q * max_rollouts].
- rewards: binary, or fractional in [0, 1] (each rollout counts as that fraction of a success), or
  anything finite with `reward_threshold=t` (a rollout succeeds when its reward >= t).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ._validation import as_uint64_keys
from .allocation import ESTIMATORS, allocate, knapsack_costs
from .embedders import EmbeddingCache, make_embedder, prompt_keys

__all__ = ["UniformAllocator", "VIPAllocator", "make_allocator", "load_allocator"]

CHECKPOINT_FORMAT = "vipfast-allocator"
CHECKPOINT_VERSION = 1
_DOMAIN = {"rloo": 2, "drgrpo": 3, "grpo": 3}
# "Last-step fit": evidence one step old keeps this weight, older evidence is negligible.
PAPER_FORGETTING = 1e-3


def successes_per_group(rewards, group_sizes, threshold=None) -> tuple[np.ndarray, np.ndarray]:
    """(successes float64 [Q], trials int64 [Q]) from flat rewards [N] and group sizes [Q]."""
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1) if np.size(rewards) else np.zeros(0)
    sizes = np.asarray(group_sizes)
    if sizes.ndim != 1 or sizes.dtype.kind not in "iu":
        raise ValueError(f"group_sizes must be a 1-D integer array, got dtype {sizes.dtype} shape {sizes.shape}")
    if sizes.size and sizes.min() < 1:
        raise ValueError(f"group_sizes must be >= 1, got {int(sizes.min())} at index {int(np.argmin(sizes))}")
    if int(sizes.sum()) != len(rewards):
        raise ValueError(f"group_sizes add up to {int(sizes.sum())} but there are {len(rewards)} rewards")
    if not np.all(np.isfinite(rewards)):
        bad = int(np.flatnonzero(~np.isfinite(rewards))[0])
        raise ValueError(f"rewards[{bad}] is {rewards[bad]}; rewards must be finite")
    if threshold is not None:
        rewards = (rewards >= threshold).astype(np.float64)
    elif rewards.size and (rewards.min() < 0 or rewards.max() > 1):
        bad = int(np.flatnonzero((rewards < 0) | (rewards > 1))[0])
        raise ValueError(f"rewards[{bad}] = {rewards[bad]} is outside [0, 1]; pass reward_threshold= for other scales")
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    successes = np.add.reduceat(rewards, offsets[:-1]) if sizes.size else np.zeros(0)
    return successes, sizes.astype(np.int64)


class _Allocator:
    """Budget rule, bounds, timing and checkpoint plumbing shared by every allocator."""

    name = "base"

    def __init__(self, *, budget_per_prompt=8.0, budget=None, estimator="rloo", min_rollouts=4, max_rollouts=32,
                 reward_threshold=None):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if min_rollouts < _DOMAIN[estimator]:
            raise ValueError(f"min_rollouts = {min_rollouts} is below estimator '{estimator}''s domain n >= {_DOMAIN[estimator]}")
        if max_rollouts < min_rollouts:
            raise ValueError(f"min_rollouts ({min_rollouts}) exceeds max_rollouts ({max_rollouts})")
        if budget is None and not (np.isfinite(budget_per_prompt) and budget_per_prompt > 0):
            raise ValueError(f"budget_per_prompt must be a positive number, got {budget_per_prompt}")
        self.config = dict(budget_per_prompt=float(budget_per_prompt), budget=None if budget is None else int(budget),
                           estimator=estimator, min_rollouts=int(min_rollouts), max_rollouts=int(max_rollouts),
                           reward_threshold=reward_threshold)
        self.last_plan: dict = {}
        self.latency = {"plan": [], "update": []}

    @property
    def bounds(self) -> dict:
        return dict(min_rollouts=self.config["min_rollouts"], max_rollouts=self.config["max_rollouts"])

    def budget_for(self, num_prompts: int) -> int:
        budget = self.config["budget"]
        if budget is None:
            budget = int(round(self.config["budget_per_prompt"] * num_prompts))
        lo, hi = num_prompts * self.config["min_rollouts"], num_prompts * self.config["max_rollouts"]
        if not lo <= budget <= hi:
            raise ValueError(f"budget {budget} is infeasible for {num_prompts} prompts with {self.config['min_rollouts']}"
                             f" <= n <= {self.config['max_rollouts']}: it must lie in [{lo}, {hi}]")
        return budget

    @staticmethod
    def resolve_keys(prompts=None, keys=None) -> np.ndarray:
        if keys is not None:
            keys = as_uint64_keys(keys)
            if prompts is not None and len(prompts) != len(keys):
                raise ValueError(f"{len(prompts)} prompts but {len(keys)} keys")
            return keys
        if prompts is None:
            raise ValueError("plan/update need prompts or keys")
        return prompt_keys(prompts)

    def plan(self, prompts=None, *, keys=None, embeddings=None) -> np.ndarray:
        started = time.perf_counter()
        keys = self.resolve_keys(prompts, keys)
        predicted = self.predict(keys, prompts, embeddings)
        counts = self.solve(predicted, self.budget_for(len(keys)))
        self.last_plan = dict(keys=keys, counts=counts, **predicted)
        self.latency["plan"].append(time.perf_counter() - started)
        return counts

    def update(self, keys_or_prompts, rewards, group_sizes) -> None:
        started = time.perf_counter()
        items = list(keys_or_prompts) if not isinstance(keys_or_prompts, np.ndarray) else keys_or_prompts
        is_text = len(items) > 0 and isinstance(items[0], str)
        keys = prompt_keys(items) if is_text else as_uint64_keys(items)
        successes, trials = successes_per_group(rewards, group_sizes, self.config["reward_threshold"])
        if len(keys) != len(trials):
            raise ValueError(f"{len(keys)} prompts but {len(trials)} group sizes")
        self.learn(keys, items if is_text else None, successes, trials)
        self.latency["update"].append(time.perf_counter() - started)

    def stats(self) -> dict:
        return dict(name=self.name, config=dict(self.config), last_plan=dict(self.last_plan),
                    latency_s={k: float(np.median(v)) if v else None for k, v in self.latency.items()})

    # -- per allocator ------------------------------------------------------------------------
    def predict(self, keys, prompts, embeddings) -> dict:
        """Per-prompt predictions: at least `weights` (and `p` where the allocator predicts it)."""
        raise NotImplementedError

    def solve(self, predicted: dict, budget: int) -> np.ndarray:
        return allocate(predicted["weights"], budget, estimator=self.config["estimator"], **self.bounds)

    def learn(self, keys, prompts, successes, trials) -> None:
        raise NotImplementedError

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path) -> None:
        """Atomic: writes a temporary file beside `path`, fsyncs it, then renames it over `path`."""
        path = Path(path)
        header = dict(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, allocator=self.name,
                      config=self.config, init=self.init_options())
        arrays = {f"state/{k}": v for k, v in self.state_arrays().items()}
        descriptor, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                np.savez(handle, header=np.array(json.dumps(header)), **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def init_options(self) -> dict:
        return {}

    @classmethod
    def load(cls, path, **overrides) -> _Allocator:
        allocator = load_allocator(path, **overrides)
        if not isinstance(allocator, cls):
            raise ValueError(f"{path} holds a {type(allocator).__name__}, not a {cls.__name__}")
        return allocator


class UniformAllocator(_Allocator):
    """The same number of rollouts for every prompt (the remainder to the lowest indices)."""

    name = "uniform"

    def predict(self, keys, prompts, embeddings) -> dict:
        return dict(weights=np.ones(len(keys)))

    def learn(self, keys, prompts, successes, trials) -> None:
        pass


class LastRatePredictor:
    """Each prompt's empirical success rate when it was last seen; 0.5 if never (Knapsack-RL)."""

    def __init__(self):
        self.rates: dict[int, float] = {}

    def predict(self, keys) -> np.ndarray:
        return np.array([self.rates.get(k, 0.5) for k in keys.tolist()])

    def observe(self, keys, successes, trials) -> None:
        for key, k, n in zip(keys.tolist(), successes.tolist(), trials.tolist()):
            self.rates[key] = k / n

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"rates/keys": np.array(list(self.rates), dtype=np.uint64), "rates/values": np.array(list(self.rates.values()))}

    def load_state_arrays(self, arrays) -> None:
        self.rates = dict(zip(arrays["rates/keys"].tolist(), arrays["rates/values"].tolist()))


# GP settings per preset. "vipfast" departs from DESIGN.md section 3's pseudo-observation: Laplace
# sites pool the counts of neighbouring prompts, and the wider prior lets a prompt that never (or
# always) succeed reach p ~ 0.001 (docs/success_gp.md, "Laplace sites"). Its logits are recalibrated
# against the outcomes of its own predictions, which undoes the GP's compression of them; with that,
# a longer memory (forgetting 0.99) pays (docs/success_gp.md, "Recalibration"). It runs the fast engine
# from the first step: that is exact while at most num_inducing keys are stored, and auto mode's
# exact engine between num_inducing and 1024 keys cost up to 130 ms per step in the default
# training run (docs/allocator.md). "paper" reproduces the published VIP code's predictor.
PRESETS = {
    "vipfast": dict(gp=dict(noise="laplace", signal_var=64.0, forgetting=0.99, mode="fast", calibration_window=10),
                    weights="expected"),
    "paper": dict(gp=dict(lengthscale=0.27, prior_mean=-5.0, noise="fixed", jitter=1e-4, proba="plugin",
                          forgetting=PAPER_FORGETTING), weights="plugin"),
    "knapsack": dict(gp=None, weights="plugin"),
}


class VIPAllocator(_Allocator):
    """Predict each prompt's success probability, then solve for the counts exactly.

    preset "vipfast": SuccessGP (uncertainty-aware weights E[p(1-p)], forgetting) + the exact solver.
    preset "paper":   the published VIP predictor (fixed bandwidth 0.27, prior mean -5, clipped-rate
                      logits as near-noiseless observations, last-step fit, sigmoid(mean)) + the exact solver.
    preset "knapsack": Knapsack-RL's value with last-seen empirical success rates, solved exactly.
    embedder: "minilm", "hashing" or an object; only used when plan() gets prompt texts without
    embeddings. Each prompt is embedded once (cached by key).
    """

    name = "vip"

    def __init__(self, budget_per_prompt=8.0, *, preset="vipfast", embedder="minilm", embedding_dim=None,
                 gp_options=None, embedding_cache_size=1 << 16, **options):
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
        super().__init__(budget_per_prompt=budget_per_prompt, **options)
        self.preset = preset
        self.name = preset
        self.embedder_spec = embedder if isinstance(embedder, str) else None
        self._embedder_object = None if embedder is None or isinstance(embedder, str) else make_embedder(embedder)
        self._cache = None
        self.embedding_cache_size = int(embedding_cache_size)
        self.gp_options = {**(PRESETS[preset]["gp"] or {}), **(gp_options or {})}
        self.embedding_dim = embedding_dim
        self.gp = None
        self.rates = LastRatePredictor() if PRESETS[preset]["gp"] is None else None
        self._planned_embeddings: dict[int, np.ndarray] = {}

    def init_options(self) -> dict:
        # A custom embedder object is not serialised: load(path, embedder=...) supplies it again.
        return dict(preset=self.preset, embedder=self.embedder_spec, embedding_dim=self.embedding_dim,
                    gp_options=self.gp_options, embedding_cache_size=self.embedding_cache_size)

    # -- embeddings ----------------------------------------------------------------------------
    def _embeddings(self, keys, prompts, embeddings) -> np.ndarray | None:
        if self.rates is not None:
            return None
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if embeddings.ndim != 2 or len(embeddings) != len(keys):
                raise ValueError(f"embeddings must be [Q={len(keys)}, d], got shape {embeddings.shape}")
            return embeddings
        if prompts is None:
            raise ValueError("plan needs prompt texts or embeddings for the GP presets")
        if self._cache is None:
            if self._embedder_object is None and self.embedder_spec is None:
                raise ValueError("this allocator has no embedder: pass embeddings=, or construct/load it with embedder=")
            embedder = self._embedder_object or make_embedder(self.embedder_spec)
            self._cache = EmbeddingCache(embedder, self.embedding_cache_size)
        return self._cache(keys, prompts)

    def _gp_for(self, dim: int):
        if self.gp is None:
            from .success_gp import SuccessGP

            self.embedding_dim = self.embedding_dim or dim
            self.gp = SuccessGP(self.embedding_dim, **self.gp_options)
        return self.gp

    # -- allocator hooks -------------------------------------------------------------------------
    def predict(self, keys, prompts, embeddings) -> dict:
        if self.rates is not None:
            p = self.rates.predict(keys)
            return dict(p=p, weights=p * (1 - p))
        x = self._embeddings(keys, prompts, embeddings)
        gp = self._gp_for(x.shape[1])
        self._planned_embeddings = dict(zip(keys.tolist(), x))
        prediction = gp.predict(keys, x)
        p = prediction.proba
        weights = prediction.weight if PRESETS[self.preset]["weights"] == "expected" else p * (1 - p)
        return dict(p=p, weights=weights)

    def stats(self) -> dict:
        """Adds the GP's recalibration map (offset a, scale b of f -> a + b f) where a GP is in use."""
        stats = super().stats()
        if self.gp is not None:
            stats["calibration"] = dict(zip(("offset", "scale"), self.gp.calibration))
        return stats

    def solve(self, predicted: dict, budget: int) -> np.ndarray:
        if self.preset != "knapsack":
            return super().solve(predicted, budget)
        lo, hi = self.config["min_rollouts"], self.config["max_rollouts"]
        return allocate(None, budget, min_rollouts=lo, curve=knapsack_costs(predicted["p"], lo, hi))

    def learn(self, keys, prompts, successes, trials) -> None:
        if self.rates is not None:
            self.rates.observe(keys, successes, trials)
            return
        known = [self._planned_embeddings.get(k) for k in keys.tolist()]
        if all(x is not None for x in known):
            x = np.stack(known) if known else np.zeros((0, self.embedding_dim or 1), dtype=np.float32)
        else:
            x = self._embeddings(keys, prompts, None)
        gp = self._gp_for(x.shape[1])
        gp.observe(keys, x, successes, trials)
        gp.advance()

    def state_arrays(self) -> dict[str, np.ndarray]:
        if self.rates is not None:
            return self.rates.state_arrays()
        arrays = {}
        if self.gp is not None:
            arrays.update({f"gp/{k}": np.asarray(v) for k, v in self.gp.state_dict().items()})
        planned = self._planned_embeddings
        arrays["planned/keys"] = np.array(list(planned), dtype=np.uint64)
        arrays["planned/embeddings"] = np.array(list(planned.values()), dtype=np.float32).reshape(len(planned), -1)
        return arrays

    def load_state_arrays(self, arrays) -> None:
        if self.rates is not None:
            self.rates.load_state_arrays(arrays)
            return
        gp_state = {k.removeprefix("gp/"): v for k, v in arrays.items() if k.startswith("gp/")}
        if gp_state:
            from .success_gp import SuccessGP

            self.gp = SuccessGP.from_state_dict({k: (v.item() if v.ndim == 0 else v) for k, v in gp_state.items()})
        self._planned_embeddings = dict(zip(arrays["planned/keys"].tolist(), arrays["planned/embeddings"]))


_ALLOCATORS = {"uniform": UniformAllocator, "vipfast": VIPAllocator, "paper": VIPAllocator, "knapsack": VIPAllocator}


def make_allocator(name: str, **options) -> _Allocator:
    """"uniform", or a VIPAllocator preset: "vipfast", "paper", "knapsack"."""
    if name == "uniform":
        options.pop("embedding_dim", None)
        return UniformAllocator(**options)
    if name in PRESETS:
        return VIPAllocator(preset=name, **options)
    raise ValueError(f"allocator must be 'uniform' or one of {tuple(PRESETS)}, got {name!r}")


def load_allocator(path, **overrides) -> _Allocator:
    """Any allocator saved by `.save`; rejects files that are not such checkpoints, naming why.

    overrides: constructor options to replace, e.g. `embedder=` for a custom embedder object.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {k.removeprefix("state/"): data[k] for k in data.files if k.startswith("state/")}
    except (OSError, ValueError, KeyError, EOFError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable vipfast allocator checkpoint: {error}") from None
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a vipfast allocator checkpoint (format {header.get('format')!r})")
    if header.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {header.get('version')}; this vipfast reads version "
                         f"{CHECKPOINT_VERSION}")
    kind = _ALLOCATORS.get(header.get("allocator"))
    if kind is None:
        raise ValueError(f"{path} holds an unknown allocator {header.get('allocator')!r}")
    allocator = kind(**header["config"], **{**header.get("init", {}), **overrides})
    allocator.load_state_arrays(arrays)
    return allocator

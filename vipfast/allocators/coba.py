"""CoBA-RL (arXiv 2602.03048): a capability-shaped value of n rollouts per prompt, solved exactly.

Value of n rollouts for a prompt with success rate p (p̃ = clip(p, ε, 1 − ε), ε = `smoothing`):

    V(n, p) = (1 − exp(−n · p̃(1 − p̃) / τ)) · BetaPDF(p̃; α, β)

- p: the prompt's success rate over its last `window` (3) visits that returned rollouts; 0.5 if unseen.
- α, β: from the global failure rate F, the mean over the last `window` updates of each update's mean
  per-prompt failure rate. F ≤ ½ is sharpened to F' = σ(10 (F − ½)) (else F' = F); then
  α = clip(1 + (S − 2) F', 1, S − 1), β = S − α with S = `beta_sum` (7). The density's mode sits at
  p = F': while the policy fails often the value favours nearly solved prompts (exploit), and the
  focus moves to hard prompts as it improves (explore). Before any update α = max(S − 2, 1), β = S − α.
- τ: from the batch's spread of p̃, τ = τ_min + (τ_max − τ_min) · min(Var(p̃) / v_max, 1), with
  τ_min = 3, τ_max = 12, v_max = 1/6 (population variance over the batch's prompts).
These follow the authors' published implementation; bounds default to 2..32 rollouts.

Concavity. For fixed p, α, β > 0 and τ > 0, V(n) = C (1 − e^{−cn}) with C = BetaPDF(p̃) ≥ 0 and
c = p̃(1 − p̃)/τ ≥ 0. For p̃ ∈ (0, 1) both are finite and positive, so V is strictly increasing and
strictly concave in n (second difference −C e^{−cn}(1 − e^{−c})² < 0) — also near the ends, where
the density grows without bound when α < 1 (p̃ → 0) or β < 1 (p̃ → 1). For p̃ ∈ {0, 1} (only with
ε = 0) c = 0 and V ≡ 0 for every n, which is concave, and is the limit of V as p̃ → 0 or 1 whatever
α, β > 0 (V ≈ n p̃^α / (τ B(α, β)) near 0), so an infinite density there counts as 0. With S ≥ 2 the
rule's own α, β never drop below 1. So every prompt's −V is discretely convex, and the sum of V
under the budget is maximised exactly by `vipfast.allocate` with per-prompt cost tables (the
published code places units one at a time by a heap greedy, which reaches the same optimum value).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from .._validation import as_float64_array, as_int64
from ..allocation import allocate, estimator_min_rollouts
from .base import AllocatorBase, Weighing
from .prompt_table import PromptTable, merge_duplicate_keys
from .registry import register

__all__ = ["CobaAllocator", "coba_shape", "coba_tau", "coba_values", "coba_costs"]

UNSEEN_RATE = 0.5
SHARPNESS = 10.0  # slope of the sigmoid that sharpens failure rates at or below one half


def coba_shape(failure_rate: float, beta_sum: float) -> tuple[float, float]:
    """(α, β) of the value's Beta density for a global failure rate in [0, 1]."""
    if not 0 <= failure_rate <= 1:
        raise ValueError(f"failure_rate must lie in [0, 1], got {failure_rate}")
    sharpened = failure_rate
    if failure_rate <= 0.5:
        sharpened = 1.0 / (1.0 + math.exp(-SHARPNESS * (failure_rate - 0.5)))
    alpha = min(max(1.0 + (beta_sum - 2.0) * sharpened, 1.0), beta_sum - 1.0)
    return alpha, beta_sum - alpha


def coba_tau(p: np.ndarray, tau_min: float, tau_max: float, variance_max: float, smoothing: float) -> float:
    """τ from the spread of the batch's clipped success rates (τ_min for an empty or uniform batch)."""
    p = _success_rates(p)
    if len(p) == 0:
        return float(tau_min)
    clipped = np.clip(p, smoothing, 1.0 - smoothing)
    spread = min(float(np.var(clipped)) / variance_max, 1.0)
    return float(tau_min + (tau_max - tau_min) * spread)


def _beta_density(p, alpha: float, beta: float) -> np.ndarray:
    """BetaPDF(p; α, β) for p in [0, 1]: +inf at an end where the exponent is negative."""
    p = np.asarray(p, dtype=np.float64)
    log_norm = math.lgamma(alpha + beta) - math.lgamma(alpha) - math.lgamma(beta)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_density = _xlogy(alpha - 1.0, p) + _xlogy(beta - 1.0, 1.0 - p) + log_norm
        return np.exp(log_density)


def _xlogy(a: float, x: np.ndarray) -> np.ndarray:
    """a · log(x), 0 where a == 0 (a density exponent of 0 leaves its factor at 1 even at x = 0)."""
    return np.zeros_like(x) if a == 0 else a * np.log(x)


def coba_values(p, counts, alpha: float, beta: float, tau: float, smoothing: float = 0.01) -> np.ndarray:
    """V(n, p) for each prompt and each count: float64 [Q, len(counts)]."""
    p = _success_rates(p)
    n = as_float64_array(counts, "counts", 1)
    if n.size and not (np.all(np.isfinite(n)) and n.min() >= 0):
        raise ValueError(f"counts must be finite and >= 0, got {counts}")
    for name, value in (("alpha", alpha), ("beta", beta), ("tau", tau)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value}")
    if not 0 <= smoothing < 0.5:
        raise ValueError(f"smoothing must lie in [0, 0.5), got {smoothing}")
    p = np.clip(p, smoothing, 1.0 - smoothing)
    rate = p * (1.0 - p) / tau
    density = _beta_density(p, alpha, beta)
    with np.errstate(invalid="ignore"):
        values = -np.expm1(-np.outer(rate, n)) * density[:, None]
    # rate == 0 only at p in {0, 1}: V is 0 there for every n, the limit even where the density is infinite
    return np.where(rate[:, None] > 0, values, 0.0)


def coba_costs(p, min_rollouts: int, max_rollouts: int, alpha: float, beta: float, tau: float,
               smoothing: float = 0.01) -> np.ndarray:
    """−V(n, p) for n = min..max: the per-prompt convex cost table that `vipfast.allocate` minimises."""
    lo, hi = as_int64(min_rollouts, "min_rollouts"), as_int64(max_rollouts, "max_rollouts")
    if not 0 <= lo <= hi:
        raise ValueError(f"need 0 <= min_rollouts <= max_rollouts, got {lo} and {hi}")
    return -coba_values(p, np.arange(lo, hi + 1), alpha, beta, tau, smoothing)


def _success_rates(p) -> np.ndarray:
    p = as_float64_array(p, "p", 1)
    outside = ~((p >= 0) & (p <= 1))
    if outside.any():
        bad = int(np.flatnonzero(outside)[0])
        raise ValueError(f"p[{bad}] = {p[bad]} is outside [0, 1]")
    return p


class CobaAllocator(AllocatorBase):
    """CoBA-RL's value with windowed per-prompt success rates; remembers at most `capacity` prompts (LRU).

    window: visits per prompt and updates of the global failure rate that count (3); beta_sum: S = α + β (7);
    tau_min, tau_max, variance_max: τ's range and the variance that reaches τ_max (3, 12, 1/6);
    smoothing: ε, the clip of p inside the value (0.01). min_rollouts defaults to 2 (or the estimator's
    minimum), max_rollouts to 32.
    """

    name = "coba"

    def __init__(self, *, window: int = 3, beta_sum: float = 7.0, tau_min: float = 3.0, tau_max: float = 12.0,
                 variance_max: float = 1.0 / 6.0, smoothing: float = 0.01, capacity: int = 1 << 21,
                 estimator: str = "rloo", min_rollouts: int | None = None, max_rollouts: int = 32, **options):
        if min_rollouts is None:
            min_rollouts = max(2, estimator_min_rollouts(estimator))
        super().__init__(estimator=estimator, min_rollouts=min_rollouts, max_rollouts=max_rollouts, **options)
        _check_options(window, beta_sum, tau_min, tau_max, variance_max, smoothing)
        self.window, self.beta_sum, self.smoothing = int(window), float(beta_sum), float(smoothing)
        self.tau_range, self.variance_max = (float(tau_min), float(tau_max)), float(variance_max)
        self.capacity = as_int64(capacity, "capacity")
        columns = {f"{kind}/{age}": 0.0 for age in range(self.window) for kind in ("successes", "trials")}
        bounds = {f"{kind}/{age}": (0.0, f"trials/{age}" if kind == "successes" else np.inf)
                  for age in range(self.window) for kind in ("successes", "trials")}
        self.visits = PromptTable(columns, capacity=self.capacity, bounds=bounds,  # age 0 = the latest visit
                                  whole=[f"trials/{age}" for age in range(self.window)], name="visits")
        self.failure_rates: deque[float] = deque(maxlen=self.window)

    def init_options(self) -> dict:
        return dict(window=self.window, beta_sum=self.beta_sum, tau_min=self.tau_range[0], tau_max=self.tau_range[1],
                    variance_max=self.variance_max, smoothing=self.smoothing, capacity=self.capacity)

    # -- what the rule reads -----------------------------------------------------------------------
    def success_rates(self, keys) -> np.ndarray:
        """Each prompt's success rate over its last `window` visits (0.5 if none)."""
        rows = self.visits.rows(keys)
        successes = sum(self.visits.read(f"successes/{age}", rows=rows) for age in range(self.window))
        trials = sum(self.visits.read(f"trials/{age}", rows=rows) for age in range(self.window))
        return np.divide(successes, trials, out=np.full(len(rows), UNSEEN_RATE), where=trials > 0)

    @property
    def failure_rate(self) -> float | None:
        return float(np.mean(self.failure_rates)) if self.failure_rates else None

    def shape(self) -> tuple[float, float]:
        if not self.failure_rates:
            alpha = max(self.beta_sum - 2.0, 1.0)
            return alpha, self.beta_sum - alpha
        return coba_shape(self.failure_rate, self.beta_sum)

    # -- plan and learn ----------------------------------------------------------------------------
    def weigh(self, keys, prompts, embeddings) -> Weighing:
        p = self.success_rates(keys)
        alpha, beta = self.shape()
        tau = coba_tau(p, *self.tau_range, self.variance_max, self.smoothing)
        clipped = np.clip(p, self.smoothing, 1.0 - self.smoothing)
        return Weighing(p=p, weights=_beta_density(clipped, alpha, beta), shape=(alpha, beta), tau=tau)

    def solve(self, weighing: Weighing, budget: int) -> np.ndarray:
        lo, hi = self.table_range(len(weighing["p"]), budget)
        costs = coba_costs(weighing["p"], lo, hi, *weighing["shape"], weighing["tau"], self.smoothing)
        return allocate(None, budget, min_rollouts=lo, curve=costs)

    def learn(self, plan, successes, trials) -> None:
        seen = trials > 0
        if not seen.any():
            return
        keys, successes, trials = merge_duplicate_keys(plan.keys[seen], successes[seen], trials[seen])
        self.failure_rates.append(float(np.mean(1.0 - successes / trials)))
        rows = self.visits.insert(keys)
        for kind, latest in (("successes", successes), ("trials", trials)):
            for age in range(self.window - 1, 0, -1):
                self.visits.write(f"{kind}/{age}", rows, self.visits.column(f"{kind}/{age - 1}")[rows])
            self.visits.write(f"{kind}/0", rows, latest)

    def rule_stats(self) -> dict:
        alpha, beta = self.shape()
        return dict(prompts_held=len(self.visits), memory_bytes=self.visits.memory_bytes, alpha=alpha, beta=beta,
                    failure_rate=self.failure_rate)

    # -- checkpoints -------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"failure_rates": np.array(self.failure_rates, dtype=np.float64),
                **{f"visits/{k}": v for k, v in self.visits.state_arrays().items()}}

    def load_state_arrays(self, arrays, version) -> None:
        rates = np.asarray(arrays["failure_rates"], dtype=np.float64)
        if rates.ndim != 1 or len(rates) > self.window or not np.all((rates >= 0) & (rates <= 1)):
            raise ValueError(f"failure_rates must hold at most {self.window} rates in [0, 1], got {rates}")
        self.failure_rates = deque(rates.tolist(), maxlen=self.window)
        self.visits.load_state_arrays({k.removeprefix("visits/"): v for k, v in arrays.items() if k != "failure_rates"})


def _check_options(window, beta_sum, tau_min, tau_max, variance_max, smoothing) -> None:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    if not (np.isfinite(beta_sum) and beta_sum >= 2):
        raise ValueError(f"beta_sum (alpha + beta) must be a finite number >= 2, got {beta_sum}")
    if not (np.isfinite(tau_min) and np.isfinite(tau_max) and 0 < tau_min <= tau_max):
        raise ValueError(f"tau_min and tau_max must be finite with 0 < tau_min <= tau_max, got {tau_min}, {tau_max}")
    if not (np.isfinite(variance_max) and variance_max > 0):
        raise ValueError(f"variance_max must be a positive number, got {variance_max}")
    if not 0 <= smoothing < 0.5:
        raise ValueError(f"smoothing must lie in [0, 0.5), got {smoothing}")


register("coba", CobaAllocator, "CoBA-RL: Beta-shaped value of n rollouts driven by the global failure rate")

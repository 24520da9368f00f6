"""How well an allocator's predictions match the outcomes they were made for, over recent updates.

Each update scores the plan's predicted p against the rollouts that came back, before the rule
learns from them: the Brier score per rollout, the expected calibration error (10 equal-width bins),
and the same Brier for the running global success rate, a predictor that knows nothing per prompt.
A predictor whose Brier is no better than that baseline's cannot tell prompts apart, so its plans
are no better than uniform (docs/allocators.md, "When to fall back to uniform").
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["PredictionMonitor"]

BINS = 10


class PredictionMonitor:
    """Brier, ECE and prediction spread over the last `window` updates that carried predictions."""

    def __init__(self, window: int = 20):
        self.window = int(window)
        self._rows: deque[np.ndarray] = deque(maxlen=self.window)
        self.total_successes = 0.0
        self.total_trials = 0.0

    # One row per update: rollouts, Brier sum, baseline Brier sum, spread, per-bin rollouts, p sums, outcome sums.
    _WIDTH = 4 + 3 * BINS

    def record(self, p, successes: np.ndarray, trials: np.ndarray) -> None:
        trials = trials.astype(np.float64)
        if p is not None and trials.sum() > 0:
            p = np.asarray(p, dtype=np.float64)
            base = (self.total_successes + 1.0) / (self.total_trials + 2.0)
            row = np.zeros(self._WIDTH)
            row[0] = trials.sum()
            row[1] = _brier_sum(p, successes, trials)
            row[2] = _brier_sum(np.full_like(p, base), successes, trials)
            seen = p[trials > 0]
            row[3] = np.quantile(seen, 0.95) - np.quantile(seen, 0.05)
            bins = np.minimum((p * BINS).astype(np.int64), BINS - 1)
            row[4:4 + BINS] = np.bincount(bins, weights=trials, minlength=BINS)
            row[4 + BINS:4 + 2 * BINS] = np.bincount(bins, weights=p * trials, minlength=BINS)
            row[4 + 2 * BINS:] = np.bincount(bins, weights=successes, minlength=BINS)
            self._rows.append(row)
        self.total_successes += float(successes.sum())
        self.total_trials += float(trials.sum())

    def summary(self) -> dict:
        """brier, global_rate_brier, ece, p_spread (5-95 % range of the last prediction), rollouts scored."""
        if not self._rows:
            return dict(updates=0, rollouts=0, brier=None, global_rate_brier=None, ece=None, p_spread=None)
        rows = np.stack(self._rows)
        total = rows[:, 0].sum()
        counts = rows[:, 4:4 + BINS].sum(0)
        gap = np.abs(rows[:, 4 + BINS:4 + 2 * BINS].sum(0) - rows[:, 4 + 2 * BINS:].sum(0))
        return dict(updates=len(rows), rollouts=int(total), brier=float(rows[:, 1].sum() / total),
                    global_rate_brier=float(rows[:, 2].sum() / total), ece=float(gap.sum() / max(counts.sum(), 1.0)),
                    p_spread=float(rows[-1, 3]))

    def state_arrays(self) -> dict[str, np.ndarray]:
        rows = np.stack(self._rows) if self._rows else np.zeros((0, self._WIDTH))
        return {"rows": rows, "totals": np.array([self.total_successes, self.total_trials])}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if not arrays:
            return
        rows, totals = arrays["rows"], arrays["totals"]
        if rows.ndim != 2 or rows.shape[1] != self._WIDTH or totals.shape != (2,):
            raise ValueError(f"monitor state has shapes {rows.shape} and {totals.shape}, expected (k, {self._WIDTH}) and (2,)")
        if rows.dtype.kind not in "iuf" or totals.dtype.kind not in "iuf" or not (
                np.all(np.isfinite(rows)) and np.all(np.isfinite(totals)) and np.all(totals >= 0)):
            raise ValueError("monitor state must hold finite numbers, with totals >= 0")
        self._rows = deque(np.asarray(rows, dtype=np.float64), maxlen=self.window)
        self.total_successes, self.total_trials = (float(v) for v in totals)


def _brier_sum(p: np.ndarray, successes: np.ndarray, trials: np.ndarray) -> float:
    """Σ over rollouts of (p − y)², with k successes of n counted as k ones and n − k zeros."""
    return float(np.sum(successes * (1 - p) ** 2 + (trials - successes) * p**2))

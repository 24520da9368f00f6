"""Success prediction at dataset scale: each prompt's own history, with a GP over embeddings as its prior.

Model: the logit of prompt q is f_q = g(x_q) + b_q, where g ~ GP over its embedding x_q (the shared part:
what related prompts say) and b_q ~ N(0, τ²) is the prompt's own effect, independent across prompts.
Equivalently f is a GP whose kernel is k(x, x') + τ² [q = q']. Evidence:
- the GP (a SuccessGP on a bounded store: inducing points, recent keys) learns g from every prompt's
  counts, their sites' noise widened by τ² (a prompt's own effect is noise to the shared part);
- a per-prompt table keeps every prompt's forgotten counts (k_q, n_q) for the whole dataset.
Prediction for prompt q: the GP's posterior at x_q without q's own site (its cavity N(m, v)), widened by
τ² to a prior N(m, v + τ²) for f_q, times the binomial likelihood of q's own counts (Laplace: Newton's
method on the exact log posterior), recalibrated by an affine map of the logit fitted to the outcomes of
past predictions. The allocation weight is E[σ(f)(1 − σ(f))] under that posterior, never a plug-in.

Limits: when embeddings say nothing, g is flat and the prediction is a per-prompt counter with a shared
logit-normal prior; when no prompt repeats, the table is empty at prediction time and the prediction is the
GP's (with kernel k + τ²). τ² is estimated from the data: the excess of the squared residuals of prompts'
observed logits around their cavities over the variance the cavity and the binomial noise explain.
docs/success_model.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _core
from ._validation import as_uint64_keys
from .allocators.prompt_table import PromptTable, count_bounds, merge_duplicate_keys, saved_count
from .success_gp import SuccessGP

__all__ = ["SuccessModel", "SuccessPrediction"]

_HERMITE = np.polynomial.hermite_e.hermegauss(96)
_SELECTION_NODES = np.polynomial.hermite_e.hermegauss(16)
_SELECTION_ROWS = 256  # observed rows that score the candidates each update, at most (about)
# Candidate prompt-effect variances τ² (logit²) and the per-update weight of past scores.
_PROMPT_VAR_GRID = np.geomspace(0.05, 100.0, 12)
_PROMPT_VAR_FORGETTING = 0.9


class SuccessPrediction(NamedTuple):
    """Per prompt, float64 [Q] each (gp: the GP's own prediction, handed back to observe)."""

    mean: np.ndarray         # posterior mean of the logit f
    var: np.ndarray          # its variance
    proba: np.ndarray        # p-hat = E[σ(f)]
    weight: np.ndarray       # E[σ(f)(1 − σ(f))], the allocation weight
    cavity_mean: np.ndarray  # the GP at the prompt without its own site (what the embeddings say of g)
    cavity_var: np.ndarray   # the prior for f is the recalibrated N(cavity_mean, cavity_var + τ²)
    own_successes: np.ndarray  # the prompt's own forgotten counts the posterior used
    own_trials: np.ndarray
    gp: object


class SuccessModel:
    """GP prior over embeddings + every prompt's own forgotten counts (see the module docstring).

    dim: embedding width. gp_options: SuccessGP options for the shared part (its jitter is set to the
    initial τ²). prompt_var: initial τ² (re-estimated online unless fixed_prompt_var). forgetting: per-step
    weight of a prompt's old counts. capacity: prompts the table holds (least recently seen dropped past it).
    calibration_window: steps of outcomes the recalibration map is fitted on (0: off).
    """

    def __init__(self, dim, *, gp_options=None, prompt_var=1.0, fixed_prompt_var=False, forgetting=0.99,
                 capacity=1 << 21, calibration_window=10):
        if not 0 < forgetting <= 1:
            raise ValueError(f"forgetting must lie in (0, 1], got {forgetting}")
        if not prompt_var > 0:
            raise ValueError(f"prompt_var must be > 0, got {prompt_var}")
        options = dict(noise="laplace", signal_var=16.0, forgetting=forgetting, mode="fast", capacity=4096,
                       num_inducing=128)
        options.update(gp_options or {})
        options["jitter"] = float(prompt_var)
        self.gp = SuccessGP(dim, **options)
        self.prompt_var = float(prompt_var)
        self.fixed_prompt_var = bool(fixed_prompt_var)
        self.forgetting = float(forgetting)
        # cavity_*: what the embeddings said of g at the prompt's last visit (NaN: never observed), so a
        # pre-rollout screen can predict a prompt from its key alone.
        self.counts = PromptTable({"successes": 0.0, "trials": 0.0, "step": 0.0, "cavity_mean": np.nan,
                                   "cavity_var": np.nan}, capacity=capacity, dtype=np.float32,
                                  optional=("cavity_mean", "cavity_var"),
                                  bounds={**count_bounds(lambda: self.step), "cavity_var": (0.0, np.inf)},
                                  whole=("step",), name="counts")
        self.calibration_window = int(calibration_window)
        self.calibration = _core.LogitCalibration(self.calibration_window)
        self.prompt_var_scores = np.zeros((2, len(_PROMPT_VAR_GRID)))  # [identity, recalibrated] x τ² grid
        self.use_calibration = False
        self.step = 0

    # -- prediction ---------------------------------------------------------------------------------
    def own_counts(self, keys) -> tuple[np.ndarray, np.ndarray]:
        return self._own_counts_at(self.counts.rows(keys))

    def _own_counts_at(self, rows) -> tuple[np.ndarray, np.ndarray]:
        decay = self.forgetting ** (self.step - self.counts.read("step", rows=rows))
        return self.counts.read("successes", rows=rows) * decay, self.counts.read("trials", rows=rows) * decay

    def _cavity(self, keys, gp_prediction) -> tuple[np.ndarray, np.ndarray]:
        """The GP's posterior at each prompt without that prompt's own site (exact for Gaussian sites)."""
        mean, var = gp_prediction.mean, gp_prediction.var
        site_precision, site_target = self.gp.stored_sites(keys)
        precision = 1.0 / var - site_precision
        held = (site_precision > 0) & (precision > 1e-12)
        cavity_var = np.where(held, 1.0 / np.where(held, precision, 1.0), var)
        cavity_mean = np.where(held, cavity_var * (mean / var - site_precision * site_target), mean)
        return cavity_mean, cavity_var

    def _prior(self, cavity_mean, cavity_var, prompt_var, calibrated=None):
        """The prior for f: N(m, v + τ²) from the embeddings, recalibrated (a + b m, b² (v + τ²)) when the
        running scores say the map predicts better than the identity."""
        calibrated = self.use_calibration if calibrated is None else calibrated
        if not calibrated:
            return cavity_mean, cavity_var + prompt_var
        return self.calibration.apply(cavity_mean, cavity_var + prompt_var)

    def predict(self, keys, embeddings) -> SuccessPrediction:
        keys = as_uint64_keys(keys)
        gp_prediction = self.gp.predict(keys, embeddings)
        cavity_mean, cavity_var = self._cavity(keys, gp_prediction)
        prior_mean, prior_var = self._prior(cavity_mean, cavity_var, self.prompt_var)
        successes, trials = self.own_counts(keys)
        mean, var = _laplace_posterior(prior_mean, prior_var, successes, trials)
        proba, weight = _moments(mean, var)
        return SuccessPrediction(mean, var, proba, weight, cavity_mean, cavity_var, successes, trials, gp_prediction)

    def revisit_weight(self, keys) -> np.ndarray:
        """float64 [k]: the allocation weight E[σ(f)(1 − σ(f))] from each prompt's own counts and the prior its
        embedding gave at its last visit: what can be known before its embedding is computed (a pre-rollout
        screen). NaN for prompts never observed."""
        keys = as_uint64_keys(keys)
        rows = self.counts.rows(keys)
        cavity_mean = self.counts.read("cavity_mean", rows=rows).astype(np.float64)
        cavity_var = self.counts.read("cavity_var", rows=rows).astype(np.float64)
        known = np.flatnonzero(np.isfinite(cavity_mean) & (cavity_var > 0))
        weight = np.full(len(keys), np.nan)
        if len(known):
            successes, trials = self._own_counts_at(rows[known])
            prior_mean, prior_var = self._prior(cavity_mean[known], cavity_var[known], self.prompt_var)
            mean, var = _laplace_posterior(prior_mean, prior_var, successes, trials)
            weight[known] = _core.expected_bernoulli_variance(mean, var)
        return weight

    # -- learning -------------------------------------------------------------------------------------
    def observe(self, keys, embeddings, successes, trials, prediction: SuccessPrediction | None = None) -> None:
        keys = as_uint64_keys(keys)
        successes = np.asarray(successes, dtype=np.float64)
        trials = np.asarray(trials, dtype=np.int64)
        if prediction is None:
            prediction = self.predict(keys, embeddings)
        self.calibration.record(self.step, prediction.cavity_mean, prediction.cavity_var + self.prompt_var, successes,
                                trials)
        if not self.fixed_prompt_var:
            self._update_prompt_var(prediction, successes, trials)
        self.gp.observe(keys, embeddings, successes, trials, prediction=prediction.gp)
        visited = keys
        keys, successes, trials = merge_duplicate_keys(keys, successes, trials)
        old_successes, old_trials = self.own_counts(keys)
        rows = self.counts.insert(keys)
        self.counts.write("successes", rows, old_successes + successes)
        self.counts.write("trials", rows, old_trials + trials)
        self.counts.write("step", rows, self.step)
        visited_rows = self.counts.rows(visited)
        self.counts.write("cavity_mean", visited_rows, prediction.cavity_mean)
        self.counts.write("cavity_var", visited_rows, prediction.cavity_var)

    def advance(self, steps: int = 1) -> None:
        """`steps` training steps have passed: every count ages (weight forgetting**age), in the GP too."""
        self.step += int(steps)
        self.gp.advance(steps)

    def _update_prompt_var(self, prediction, successes, trials) -> None:
        """Choose τ² (a grid) and whether to recalibrate the prior by how well each choice's weights would have
        allocated this step's rollouts, scored on the outcomes; running scores with forgetting.

        The score is the allocation loss of weights ŵ under the relaxed rloo solution n − 1 ∝ √ŵ:
        L(ŵ) = (Σ u/√ŵ)(Σ √ŵ), with u = k(n − k)/(n(n − 1)) the unbiased estimate of each observed prompt's
        p(1 − p). It does not depend on the budget, and the true weights minimise its expectation; a choice
        that calls an informative prompt settled pays for it through 1/√ŵ.
        """
        seen = np.flatnonzero(trials >= 2)
        if not len(seen):
            return
        seen = seen[:: max(1, len(seen) // _SELECTION_ROWS)]  # an even subsample bounds the cost
        n, k = trials[seen].astype(np.float64), successes[seen]
        informative = k * (n - k) / (n * (n - 1))
        own_k, own_n = prediction.own_successes[seen][:, None], prediction.own_trials[seen][:, None]
        cavity_mean, cavity_var = prediction.cavity_mean[seen][:, None], prediction.cavity_var[seen][:, None]
        tau2 = np.broadcast_to(_PROMPT_VAR_GRID[None, :], (len(n), len(_PROMPT_VAR_GRID)))
        for choice, calibrated in enumerate((False, True)):
            mean, var = self._prior(np.broadcast_to(cavity_mean, tau2.shape).ravel(),
                                    np.broadcast_to(cavity_var, tau2.shape).ravel(), tau2.ravel(), calibrated)
            mean, var = _laplace_posterior(mean.reshape(tau2.shape), var.reshape(tau2.shape), own_k, own_n)
            root = np.sqrt(np.maximum(_quick_weight(mean, var), 1e-12))
            loss = (informative[:, None] / root).sum(0) * root.sum(0) / len(n) ** 2
            self.prompt_var_scores[choice] = _PROMPT_VAR_FORGETTING * self.prompt_var_scores[choice] + loss
        choice, best = np.unravel_index(int(np.argmin(self.prompt_var_scores)), self.prompt_var_scores.shape)
        self.use_calibration = bool(choice)
        self.prompt_var = float(_PROMPT_VAR_GRID[best])

    # -- inspection and state ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Embedding width."""
        return self.gp.dim

    @property
    def num_prompts(self) -> int:
        """Prompts with counts in the table."""
        return len(self.counts)

    def stats(self) -> dict:
        return dict(prompts_held=len(self.counts), gp_stored=self.gp.num_stored, prompt_var=self.prompt_var,
                    recalibrated=self.use_calibration,
                    calibration=dict(offset=self.calibration.offset, scale=float(np.exp(self.calibration.log_scale))),
                    memory_bytes=self.counts.memory_bytes)

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"gp/{k}": np.asarray(v) for k, v in self.gp.state_dict().items()}
        arrays.update({f"counts/{k}": v for k, v in self.counts.state_arrays().items()})
        arrays["calibration/map"] = np.array([self.calibration.offset, self.calibration.log_scale])
        arrays["calibration/records"] = self.calibration.records()
        arrays["calibration/window"] = np.array(self.calibration_window)
        arrays["prompt_var"] = np.array(self.prompt_var)
        arrays["prompt_var_scores"] = self.prompt_var_scores.copy()
        arrays["use_calibration"] = np.array(self.use_calibration)
        arrays["step"] = np.array(self.step)
        return arrays

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        gp_state = {k.removeprefix("gp/"): v for k, v in arrays.items() if k.startswith("gp/")}
        self.gp = SuccessGP.from_state_dict({k: (v.item() if v.ndim == 0 else v) for k, v in gp_state.items()})
        self.step = saved_count(arrays["step"], "step")  # before the counts, whose steps it bounds
        self.counts.load_state_arrays({k.removeprefix("counts/"): v for k, v in arrays.items()
                                       if k.startswith("counts/")})
        offset, log_scale = arrays["calibration/map"]
        self.calibration_window = saved_count(arrays["calibration/window"], "calibration/window")
        self.calibration = _core.LogitCalibration(self.calibration_window)
        self.calibration.restore(float(offset), float(log_scale), arrays["calibration/records"])
        prompt_var = np.asarray(arrays["prompt_var"])
        if prompt_var.shape != () or prompt_var.dtype.kind not in "iuf" or not (np.isfinite(prompt_var)
                                                                                and prompt_var > 0):
            raise ValueError(f"prompt_var must be a finite number > 0, got {prompt_var.tolist()!r}")
        scores = np.asarray(arrays["prompt_var_scores"])
        if (scores.shape != self.prompt_var_scores.shape or scores.dtype.kind not in "iuf"
                or not np.all(np.isfinite(scores) & (scores >= 0))):
            raise ValueError(f"prompt_var_scores must hold finite scores >= 0 of shape {self.prompt_var_scores.shape}, "
                             f"got {scores.dtype} of shape {scores.shape}")
        use_calibration = np.asarray(arrays["use_calibration"])
        if use_calibration.shape != () or use_calibration.dtype.kind != "b":
            raise ValueError(f"use_calibration must be a bool, got {use_calibration.tolist()!r}")
        self.prompt_var = float(prompt_var)
        self.prompt_var_scores = scores.astype(np.float64)
        self.use_calibration = bool(use_calibration)


def _laplace_posterior(prior_mean, prior_var, successes, trials):
    """N(f̂, 1/(n σ(f̂)σ(−f̂) + 1/V)) at the mode f̂ of k log σ(f) + (n − k) log σ(−f) − (f − m)²/(2V), elementwise
    over the broadcast shape (the core's bracketed Newton method)."""
    m, v, k, n = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (prior_mean, prior_var, successes,
                                                                                   trials)))
    mean, var = _core.laplace_posterior(m.ravel(), v.ravel(), k.ravel(), n.ravel())
    return mean.reshape(m.shape), var.reshape(m.shape)


def _sigmoid(f):
    return 1.0 / (1.0 + np.exp(-np.clip(f, -700.0, 700.0)))


def _moments(mean, var):
    """(E[σ(f)], E[σ(f)(1 − σ(f))]) for f ~ N(mean, var): Gauss–Hermite for the first, the core's adaptive
    Gauss–Hermite quadrature for the second."""
    nodes, weights = _HERMITE
    p = _sigmoid(mean[:, None] + np.sqrt(var)[:, None] * nodes[None, :])
    return p @ (weights / weights.sum()), _core.expected_bernoulli_variance(mean, var)


def _quick_weight(mean, var):
    """E[σ(f)(1 − σ(f))] by a 20-node Gauss–Hermite rule, any shape: enough to rank candidate choices."""
    nodes, weights = _SELECTION_NODES
    p = _sigmoid(mean[..., None] + np.sqrt(var)[..., None] * nodes)
    return (p * (1 - p)) @ (weights / weights.sum())

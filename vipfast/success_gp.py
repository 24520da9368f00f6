"""Success-probability predictor: a Gaussian process over prompt embeddings.

    gp = vipfast.SuccessGP(384)
    prediction = gp.predict(keys, embeddings)         # before the step's rollouts: GPPrediction
    gp.observe(keys, embeddings, successes, trials, prediction=prediction)   # after they are verified
    gp.advance()                                      # one training step has passed

The latent logit f of a prompt has a GP prior over its L2-normalised embedding; k successes in
n trials become a Gaussian pseudo-observation of f, and evidence of age a steps is tempered by
forgetting**a. `mode="exact"` is the dense float64 GP on the stored keys (the reference);
`mode="fast"` an inducing-point (FITC) approximation updated in information form, whose cost
per step does not grow with training; `mode="auto"` is exact while at most `auto_exact_max`
keys are stored. docs/success_gp.md gives the model, the algorithms and the measurements.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from . import _core
from ._validation import as_float64_array, as_int64, as_real, as_uint64_keys

__all__ = ["GPPrediction", "SuccessGP", "STATE_FORMAT_VERSION"]

STATE_FORMAT_VERSION: int = _core.SUCCESS_GP_STATE_VERSION
_INT64_MAX = 2**63 - 1


class _Posterior(NamedTuple):
    mean: np.ndarray    # posterior mean of the logit f (of a + b f when recalibrated)
    var: np.ndarray     # posterior variance of f (b^2 var when recalibrated)
    proba: np.ndarray   # p-hat = E[sigmoid(f)] (moderated) or sigmoid(mean) (plugin)
    weight: np.ndarray  # E[sigmoid(f)(1 - sigmoid(f))], the allocation weight


class GPPrediction(_Posterior):
    """Posterior summaries per prompt, each float64 [Q]: mean, var, proba, weight.

    It unpacks as those four. `basis` is what `SuccessGP.observe(..., prediction=...)` takes back
    for the same keys: the keys, the GP's posterior of the logit before recalibration (which the
    recalibration scores against the outcomes) and, from the fast engine, the feature rows it
    computed with the id of the inducing set they belong to (reused while that set is in use).
    """

    basis: _core.PredictionBasis | None = None

    def __new__(cls, mean, var, proba, weight, basis: _core.PredictionBasis | None = None):
        prediction = super().__new__(cls, mean, var, proba, weight)
        prediction.basis = basis
        return prediction


def _as_embeddings(embeddings, dim: int) -> np.ndarray:
    try:
        array = np.asarray(embeddings)
    except Exception as error:
        raise TypeError(f"embeddings must be a 2-D array of real numbers: {error}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"embeddings must hold real numbers, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"embeddings must have shape (Q, dim) = (Q, {dim}), got {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float64)


def _as_counts(value, name: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as error:
        raise TypeError(f"{name} must be a 1-D array of integers: {error}") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    kind = array.dtype.kind
    if kind == "f":
        bad = np.flatnonzero(~(np.isfinite(array) & (array == np.round(array))))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] = {array[bad[0]]} is not a whole number")
    elif kind == "u":
        big = np.flatnonzero(array > _INT64_MAX)
        if big.size:
            raise ValueError(f"{name}[{big[0]}] = {array[big[0]]} does not fit in int64")
    elif kind != "i":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    if kind == "f" and array.size and np.abs(array).max() > _INT64_MAX:
        i = int(np.argmax(np.abs(array)))
        raise ValueError(f"{name}[{i}] = {array[i]} does not fit in int64")
    return np.ascontiguousarray(array, dtype=np.int64)


def _optional_real(value, name: str) -> float | None:
    return None if value is None else as_real(value, name)


def _text(value, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    return value


# Python types per kind of option; the option table and every value check live in the native core.
_COERCE = {"int": as_int64, "float": as_real, "float or None": _optional_real, "str": _text}


def _native_config(options: Mapping[str, Any]) -> _core.SuccessGPConfig:
    config = _core.SuccessGPConfig()
    for name, kind in _core.SuccessGPConfig.option_kinds().items():
        setattr(config, name, _COERCE[kind](options[name], name))
    return config


def _basis(prediction) -> _core.PredictionBasis:
    if not isinstance(prediction, GPPrediction) or prediction.basis is None:
        raise TypeError(f"prediction must be a GPPrediction returned by SuccessGP.predict, got {type(prediction).__name__}")
    return prediction.basis


class SuccessGP:
    """Forecasts each prompt's success probability before any rollout is drawn.

    dim: embedding width (384 for all-MiniLM-L6-v2).
    lengthscale: RBF lengthscale on unit-norm embeddings; None = median pairwise distance of the
        stored keys, cached and re-estimated when the stored set grew or turned over by 25 %.
    signal_var: prior variance sigma_f^2 of the logit.
    prior_mean: prior mean of the logit; None = forgetting-weighted mean of the stored targets.
    forgetting: gamma in (0, 1]; evidence of age a steps counts gamma**a (1 = never forget).
    capacity: keys stored at most; the least recently observed key is evicted.
    mode: "exact" | "fast" | "auto" (exact while at most `auto_exact_max` keys are stored).
    noise: "binomial" (y = logit((k+1/2)/(n+1)), s^2 = 1/((n+1) p(1-p)) + jitter),
        "fixed" (the published VIP code: y = logit(clip(k/n, clip, 1-clip)), s^2 = jitter) or
        "laplace" (the binomial likelihood's Newton site at the model's mean f* before the
        observation, f* kept within 2 s of the binomial target: W = n p*(1-p*),
        y = f* + (k - n p*)/W, s^2 = 1/W + jitter; pools counts across neighbouring keys).
    jitter: extra noise variance (binomial, laplace: default 0) or the noise variance (fixed,
        default 1e-4).
    clip: rate clipping of the "fixed" noise model.
    proba: "moderated" (sigmoid(mu / sqrt(1 + pi var / 8))) or "plugin" (sigmoid(mu), as VIP's code).
    num_inducing: inducing points of the fast mode.
    calibration_window: 0 (off) or W in [1, 1000]: recalibrate predictions by an affine map of the logit,
        f -> a + b f, fitted (maximum a posteriori) to the outcomes of the last W steps' predictions
        (each outcome scored against the prediction made before it was observed; weights
        (1 - 1/W)^age). mean, var, p-hat and the weight are then those of the recalibrated logit.
        docs/success_gp.md, "Recalibration".
    """

    __slots__ = ("_gp",)

    def __init__(self, dim, *, lengthscale=None, signal_var=1.0, prior_mean=None, forgetting=0.95, capacity=4096,
                 mode="auto", noise="binomial", jitter=None, clip=0.01, proba="moderated", num_inducing=384,
                 auto_exact_max=1024, calibration_window=0):
        options = dict(locals())  # the keyword arguments, by name: one per row of the native option table
        del options["self"]
        if jitter is None:
            options["jitter"] = 1e-4 if noise == "fixed" else 0.0
        self._gp = _core.SuccessGP(_native_config(options))

    # -- training loop -------------------------------------------------------------------

    def predict(self, keys, embeddings) -> GPPrediction:
        """Posterior mean and variance of the logit, p-hat and E[p(1-p)] in one pass; changes nothing."""
        mean, var, proba, weight, basis = self._gp.predict(as_uint64_keys(keys), _as_embeddings(embeddings, self._gp.dim))
        return GPPrediction(mean, var, proba, weight, basis)

    def observe(self, keys, embeddings, successes, trials, prediction: GPPrediction | None = None) -> None:
        """Add one step's outcomes: keys uint64 [Q], embeddings [Q, dim], successes real [Q], trials int [Q].

        Successes may be fractional: rewards in [0, 1] summed per group count as that many successes.
        Duplicate keys are merged (counts summed, the last embedding kept); rows with trials == 0
        carry no evidence. A key seen before keeps its forgotten counts and adds these to them.

        prediction: what `predict` returned for the same keys in the same order (ValueError
        otherwise), typically the plan that drew these rollouts. Recalibration scores its outcomes
        against it, and the fast engine reuses the features it computed. Without it, a model with
        recalibration predicts the rows first.

        If it raises, the model is exactly as before.
        """
        self._gp.observe(as_uint64_keys(keys), _as_embeddings(embeddings, self._gp.dim),
                         as_float64_array(successes, "successes", 1), _as_counts(trials, "trials"),
                         None if prediction is None else _basis(prediction))

    def advance(self, steps: int = 1) -> None:
        """`steps` training steps have passed: all stored evidence ages (weight * forgetting**steps)."""
        self._gp.advance(as_int64(steps, "steps"))

    def predict_latent(self, keys, embeddings) -> tuple[np.ndarray, np.ndarray]:
        """(mean, var) of the posterior of the logit f (of a + b f when recalibrated), float64 [Q] each."""
        prediction = self.predict(keys, embeddings)
        return prediction.mean, prediction.var

    def predict_proba(self, keys, embeddings) -> np.ndarray:
        """p-hat [Q]: E[sigmoid(f)] ~ sigmoid(mu / sqrt(1 + pi var / 8)), or sigmoid(mu) with proba="plugin"."""
        return self.predict(keys, embeddings).proba

    def expected_bernoulli_variance(self, keys, embeddings) -> np.ndarray:
        """w [Q] = E[sigmoid(f)(1 - sigmoid(f))] by adaptive Gauss-Hermite quadrature (docs/success_gp.md)."""
        return self.predict(keys, embeddings).weight

    # -- inspection ----------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._gp.dim

    @property
    def step(self) -> int:
        """Number of advance() steps so far."""
        return self._gp.step

    @property
    def num_stored(self) -> int:
        return self._gp.num_stored

    @property
    def lengthscale(self) -> float | None:
        """The lengthscale in use (None before any observation under the median heuristic)."""
        return self._gp.lengthscale

    @property
    def prior_mean(self) -> float:
        """The prior mean of the logit the next prediction uses."""
        return self._gp.prior_mean

    @property
    def active_mode(self) -> str:
        """"exact" or "fast": the engine the next prediction uses."""
        return self._gp.active_mode

    @property
    def num_inducing_used(self) -> int:
        return self._gp.num_inducing_used

    @property
    def calibration(self) -> tuple[float, float]:
        """(a, b) of the recalibration map f -> a + b f; (0, 1) while off or before any outcome."""
        return self._gp.calibration

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (jitter resolved)."""
        return self._gp.config

    def pseudo_observations(self) -> dict[str, np.ndarray]:
        """The stored keys' pseudo-observations now: keys, unit embeddings, targets y, noise_var
        (s^2 / forgetting**age), the forgotten successes and trials behind them and, for
        noise="laplace", each site's linearisation point f*."""
        return self._gp.pseudo_observations()

    def stored_sites(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """(precision, target), float64 [Q]: each key's pseudo-observation now (precision s^-2 * forgetting**age),
        precision 0 for keys the store does not hold. What a prediction at a stored key owes to its own counts."""
        return self._gp.stored_sites(as_uint64_keys(keys))

    # -- state ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A plain dict of numpy arrays, numbers and strings, with "format_version"."""
        return self._gp.state()

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> SuccessGP:
        """Rebuild from state_dict(); predictions match the original bit for bit."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping from state_dict(), got {type(state).__name__}")
        plain = {key: value.item() if isinstance(value, np.generic) else value for key, value in state.items()}
        gp = cls.__new__(cls)
        gp._gp = _core.SuccessGP.from_state(plain)
        return gp

    def __getstate__(self):
        return self.state_dict()

    def __setstate__(self, state):
        self._gp = type(self).from_state_dict(state)._gp

    def __repr__(self) -> str:
        config = self.config
        return (f"SuccessGP(dim={self.dim}, mode={config['mode']!r} [{self.active_mode}], "
                f"stored={self.num_stored}/{config['capacity']}, step={self.step}, lengthscale={self.lengthscale})")

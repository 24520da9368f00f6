"""SuccessModel (GP prior over embeddings + every prompt's own counts) against independent float64 references.

The references are written from the model's definition: scipy's bounded scalar minimiser for the Laplace mode,
adaptive quadrature for the moments, tests/gp_reference.py's textbook GP (chol(K + S)) for the shared part, and a
plain per-prompt logistic-normal counter for the no-embedding limit.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, optimize

from gp_reference import ReferenceGP
from vipfast import _core
from vipfast.success_model import SuccessModel, _laplace_posterior, _moments

EXACT = dict(mode="exact", noise="binomial", lengthscale=0.7, prior_mean=-0.5, signal_var=2.0, forgetting=0.9)


def log_posterior(f, m, v, k, n):
    return k * -np.logaddexp(0.0, -f) + (n - k) * -np.logaddexp(0.0, f) - (f - m) ** 2 / (2 * v)


def test_laplace_mode_and_curvature_match_a_scalar_optimiser(rng):
    m = rng.normal(0, 4, 400)
    v = np.exp(rng.uniform(np.log(1e-3), np.log(300), 400))
    n = rng.integers(0, 65, 400).astype(float)
    k = np.floor(rng.uniform(0, 1, 400) * (n + 1))
    k[:20], k[20:40] = 0, n[20:40]  # all failures, all successes
    mean, var = _laplace_posterior(m, v, k, n)
    for i in range(len(m)):
        width = 30 * np.sqrt(v[i]) + 60
        best = optimize.minimize_scalar(lambda f: -log_posterior(f, m[i], v[i], k[i], n[i]),
                                        bounds=(m[i] - width, m[i] + width), method="bounded",
                                        options={"xatol": 1e-11})
        assert abs(mean[i] - best.x) < 1e-6 * (1 + abs(best.x)), (i, m[i], v[i], k[i], n[i], rng.seed_for_message)
        p = 1 / (1 + np.exp(-best.x))
        np.testing.assert_allclose(var[i], 1 / (n[i] * p * (1 - p) + 1 / v[i]), rtol=1e-6)


def _mode_from_the_slope(m, v, k, n):
    """The mode as the root of the log posterior's slope k σ(−f) − (n − k) σ(f) − (f − m)/V, which falls strictly
    from positive at m − V(n + 1) − 1 to negative at m + V(n + 1) + 1."""
    def slope(f):
        return k * np.exp(-np.logaddexp(0.0, f)) - (n - k) * np.exp(-np.logaddexp(0.0, -f)) - (f - m) / v
    half_width = v * (n + 1) + 1
    return optimize.brentq(slope, m - half_width, m + half_width, xtol=1e-14, rtol=1e-15, maxiter=2000)


@pytest.mark.parametrize("v", [1e-12, 1e-6, 1.0, 1e4, 1e8])
def test_laplace_posterior_holds_at_extreme_widths_and_counts(v):
    for m in (-30.0, 0.0, 7.5, 30.0):
        for n in (0.0, 1.0, 2.5, 1e6, 1e9):
            for k in sorted({0.0, np.floor(n / 3), n}):
                (mean,), (var,) = _core.laplace_posterior([m], [v], [k], [n])
                want = _mode_from_the_slope(m, v, k, n)
                assert abs(mean - want) <= 1e-6 * (1 + abs(want)), (m, v, k, n, mean, want)
                curvature = np.exp(-np.logaddexp(0.0, -want) - np.logaddexp(0.0, want))  # σ(f)σ(−f), no cancellation
                np.testing.assert_allclose(var, 1 / (n * curvature + 1 / v), rtol=1e-6, err_msg=str((m, v, k, n)))


def test_laplace_posterior_matches_the_slopes_root_far_from_the_trainers_range(rng):
    count = 300
    m = rng.normal(0, 1, count) * np.exp(rng.uniform(0, np.log(1e4), count))
    v = np.exp(rng.uniform(np.log(1e-10), np.log(1e14), count))
    n = np.floor(np.exp(rng.uniform(0, np.log(1e10), count))) * (rng.random(count) < 0.95)
    k = np.floor(rng.random(count) * (n + 1))
    mean, _ = _core.laplace_posterior(m, v, k, n)
    for i in range(count):
        want = _mode_from_the_slope(m[i], v[i], k[i], n[i])
        assert abs(mean[i] - want) <= 1e-6 * (1 + abs(want)), (m[i], v[i], k[i], n[i], mean[i], want,
                                                               rng.seed_for_message)


def test_laplace_mode_is_accurate_to_the_posteriors_width_for_huge_counts(rng):
    """With n up to 1e16 the posterior's sd is ~1e-8: the mode must be found to a small part of it."""
    count = 200
    m, v = rng.uniform(-6, 6, count), np.exp(rng.uniform(np.log(1e-2), np.log(1e2), count))
    n = np.floor(np.exp(rng.uniform(np.log(1e10), np.log(1e16), count)))
    k = np.floor(rng.random(count) * (n + 1))
    m[0], v[0], k[0], n[0] = -2.4298941, 7.4028365, 5.634035e14, 5.748343e15
    mean, var = _core.laplace_posterior(m, v, k, n)
    for i in range(count):
        want = _mode_from_the_slope(m[i], v[i], k[i], n[i])
        assert abs(mean[i] - want) <= 1e-3 * np.sqrt(var[i]) + 4 * np.spacing(abs(want)), (
            m[i], v[i], k[i], n[i], mean[i], want, var[i], rng.seed_for_message)


def test_laplace_posterior_on_a_saturated_logistic_and_at_the_largest_variance():
    # n σ(f) saturates at n: the mode is m − V n exactly, the bracket's far end
    (mean,), (var,) = _core.laplace_posterior([700.0], [1e-300], [0.0], [1e300])
    assert mean == 699.0 and var == 1e-300
    (mean,), _ = _core.laplace_posterior([1e8], [1e-12], [0.0], [1e15])
    assert abs(mean - (1e8 - 1e3)) <= 4 * np.spacing(1e8)
    largest = np.finfo(np.float64).max
    for m, n in [(0.0, 0.0), (50.0, 0.0), (-1e300, 5.0)]:
        (mean,), (var,) = _core.laplace_posterior([m], [largest], [0.0], [n])
        assert np.isfinite(mean) and 0 < var <= largest, (m, n, mean, var)


def test_laplace_posterior_of_nothing_is_empty():
    mean, var = _core.laplace_posterior(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
    assert mean.shape == var.shape == (0,) and mean.dtype == var.dtype == np.float64


@pytest.mark.parametrize("argument, value, match", [
    ("prior_mean", np.nan, r"prior_mean\[1\] must be finite, got nan"),
    ("prior_mean", np.inf, r"prior_mean\[1\] must be finite"),
    ("prior_var", 0.0, r"prior_var\[1\] must be finite and > 0, got 0"),
    ("prior_var", -1.0, r"prior_var\[1\] must be finite and > 0, got -1"),
    ("prior_var", np.inf, r"prior_var\[1\] must be finite and > 0, got inf"),
    ("trials", -1.0, r"trials\[1\] must be finite and >= 0, got -1"),
    ("trials", np.nan, r"trials\[1\] must be finite and >= 0, got nan"),
    ("successes", 5.0, r"successes\[1\] must lie in \[0, trials\[1\]\] = \[0, 4\], got 5"),
    ("successes", -0.5, r"successes\[1\] must lie in .*got -0.5"),
    ("successes", np.nan, r"successes\[1\] must lie in .*got nan"),
])
def test_laplace_posterior_names_a_bad_row(argument, value, match):
    arguments = dict(prior_mean=np.zeros(3), prior_var=np.ones(3), successes=np.ones(3), trials=np.full(3, 4.0))
    arguments[argument][1] = value
    with pytest.raises(ValueError, match=match):
        _core.laplace_posterior(**arguments)


def test_laplace_posterior_refuses_bad_shapes_and_types():
    ones = np.ones(3)
    with pytest.raises(ValueError, match="prior_var must be 1-D, got 2-D"):
        _core.laplace_posterior(ones, np.ones((3, 1)), ones, ones)
    with pytest.raises(ValueError, match="trials has length 2, expected 3"):
        _core.laplace_posterior(ones, ones, ones, np.ones(2))
    with pytest.raises(TypeError):
        _core.laplace_posterior(ones, ones, ones, np.array(["a", "b", "c"]))


def test_moments_match_adaptive_quadrature(rng):
    mean = np.r_[rng.normal(0, 3, 30), -12.0, 12.0, 0.0]
    var = np.r_[np.exp(rng.uniform(np.log(1e-4), np.log(20), 30)), 0.5, 0.5, 1e-9]
    proba, weight = _moments(mean, var)
    for i in range(len(mean)):
        sd = np.sqrt(var[i])
        density = lambda f: np.exp(-0.5 * ((f - mean[i]) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))  # noqa: E731
        sigmoid = lambda f: 1 / (1 + np.exp(-f))  # noqa: E731
        lo, hi = mean[i] - 12 * sd, mean[i] + 12 * sd
        p = integrate.quad(lambda f: sigmoid(f) * density(f), lo, hi, epsabs=1e-13)[0]
        w = integrate.quad(lambda f: sigmoid(f) * (1 - sigmoid(f)) * density(f), lo, hi, epsabs=1e-13)[0]
        np.testing.assert_allclose(proba[i], p, rtol=1e-5, atol=1e-12, err_msg=rng.seed_for_message)
        # the core's adaptive Gauss-Hermite rule: < 2e-6 relative for |mean| <= 10 (docs/success_gp.md)
        np.testing.assert_allclose(weight[i], w, rtol=2e-6, atol=1e-12, err_msg=rng.seed_for_message)


def batches(rng, keys, dim, steps, size, rate=0.4, repeat=True):
    """Random batches of keys (drawn with repeats across steps unless repeat=False) and their outcomes."""
    x = rng.normal(size=(len(keys), dim))
    order = rng.permutation(len(keys))
    for step in range(steps):
        rows = rng.choice(len(keys), size, replace=False) if repeat else order[step * size:(step + 1) * size]
        trials = rng.integers(1, 9, size)
        yield keys[rows], x[rows], rng.binomial(trials, rate).astype(float), trials


def fixed_model(dim, prompt_var=0.8, **gp):
    return SuccessModel(dim, gp_options={**EXACT, **gp}, prompt_var=prompt_var, fixed_prompt_var=True,
                        forgetting=EXACT["forgetting"], calibration_window=0)


def test_the_cavity_is_the_gp_without_the_prompts_own_evidence(rng):
    """At a prompt the GP holds, the prior comes from every other prompt: a leave-one-out refit."""
    keys = np.arange(1, 41, dtype=np.uint64)
    model = fixed_model(4)
    reference = ReferenceGP(4, **{k: v for k, v in EXACT.items() if k != "mode"}, jitter=0.8)
    for batch in batches(rng, keys, 4, 6, 12):
        model.observe(*batch)
        model.advance()
        reference.observe(*batch)
        reference.advance()
    stored = list(reference.store)
    for key in stored[:6]:
        x = reference.store[key][0]
        cavity_mean, cavity_var = model._cavity(np.array([key], np.uint64),
                                                model.gp.predict(np.array([key], np.uint64), x[None, :]))
        held = reference.store.pop(key)
        expected_mean, expected_var = reference.predict_latent(x[None, :])
        reference.store[key] = held
        np.testing.assert_allclose(cavity_mean, expected_mean, rtol=1e-8, atol=1e-9, err_msg=rng.seed_for_message)
        np.testing.assert_allclose(cavity_var, expected_var, rtol=1e-7, atol=1e-10, err_msg=rng.seed_for_message)


def test_without_repeats_the_prediction_is_the_gp_with_the_prompt_effect_added(rng):
    keys = np.arange(1, 201, dtype=np.uint64)
    model = fixed_model(4, prompt_var=1.3)
    reference = ReferenceGP(4, **{k: v for k, v in EXACT.items() if k != "mode"}, jitter=1.3)
    for batch in batches(rng, keys[:150], 4, 5, 30, repeat=False):
        model.observe(*batch)
        model.advance()
        reference.observe(*batch)
        reference.advance()
    new_x = rng.normal(size=(50, 4))
    prediction = model.predict(keys[150:], new_x)
    mean, var = reference.predict_latent(new_x)
    np.testing.assert_allclose(prediction.mean, mean, rtol=1e-8, atol=1e-9, err_msg=rng.seed_for_message)
    np.testing.assert_allclose(prediction.var, var + 1.3, rtol=1e-8, err_msg=rng.seed_for_message)


def test_without_embedding_signal_it_is_a_per_prompt_counter(rng):
    """A shared part with no variance leaves each prompt its own logistic-normal counter N(μ0, τ²)."""
    keys = np.arange(1, 31, dtype=np.uint64)
    model = fixed_model(3, prompt_var=2.5, signal_var=1e-12, prior_mean=0.7)
    counts = {}
    for batch_keys, x, successes, trials in batches(rng, keys, 3, 8, 10):
        model.observe(batch_keys, x, successes, trials)
        model.advance()
        for key in counts:
            counts[key] = [0.9 * counts[key][0], 0.9 * counts[key][1]]
        for key, s, n in zip(batch_keys.tolist(), successes, trials):
            old = counts.get(key, [0.0, 0.0])
            counts[key] = [old[0] + 0.9 * s, old[1] + 0.9 * n]
    prediction = model.predict(keys, rng.normal(size=(30, 3)))
    for i, key in enumerate(keys.tolist()):
        k, n = counts.get(key, [0.0, 0.0])
        best = optimize.minimize_scalar(lambda f: -log_posterior(f, 0.7, 2.5, k, n), bounds=(-40, 40),
                                        method="bounded", options={"xatol": 1e-11}).x
        p = 1 / (1 + np.exp(-best))
        np.testing.assert_allclose(prediction.mean[i], best, atol=2e-5, err_msg=rng.seed_for_message)
        np.testing.assert_allclose(prediction.var[i], 1 / (n * p * (1 - p) + 1 / 2.5), rtol=2e-5)


def test_the_prompt_effect_variance_follows_how_much_prompts_differ(rng):
    """With embeddings that say nothing, prompts that differ a lot call for a larger τ² than near-identical ones."""
    chosen = {}
    for spread in (0.3, 3.0):
        model = SuccessModel(4, gp_options=dict(mode="fast", num_inducing=16), calibration_window=0)
        logits = rng.normal(0, spread, 300)
        x = rng.normal(size=(300, 4))
        for _ in range(30):
            rows = rng.choice(300, 100, replace=False)
            prediction = model.predict(rows.astype(np.uint64), x[rows])
            trials = np.full(100, 8)
            model.observe(rows.astype(np.uint64), x[rows], rng.binomial(8, 1 / (1 + np.exp(-logits[rows]))).astype(float),
                          trials, prediction=prediction)
            model.advance()
        chosen[spread] = model.prompt_var
    assert chosen[3.0] > 4 * chosen[0.3], (chosen, rng.seed_for_message)


def test_state_round_trips_and_keeps_predicting_the_same(rng):
    keys = np.arange(1, 61, dtype=np.uint64)
    model = SuccessModel(5, gp_options=dict(mode="fast", num_inducing=16), calibration_window=4)
    stream = list(batches(rng, keys, 5, 10, 20))
    for batch in stream[:6]:
        model.observe(*batch)
        model.advance()
    restored = SuccessModel(5, gp_options=dict(mode="fast", num_inducing=16), calibration_window=4)
    restored.load_state_arrays(model.state_arrays())
    for batch in stream[6:]:
        for left, right in zip(model.predict(*batch[:2])[:4], restored.predict(*batch[:2])[:4]):
            np.testing.assert_array_equal(left, right)
        for each in (model, restored):
            each.observe(*batch)
            each.advance()
    assert restored.prompt_var == model.prompt_var and restored.use_calibration == model.use_calibration


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="forgetting must lie in"):
        SuccessModel(3, forgetting=1.5)
    with pytest.raises(ValueError, match="prompt_var must be > 0"):
        SuccessModel(3, prompt_var=0.0)

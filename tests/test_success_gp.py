"""SuccessGP: exact mode against an independent float64 numpy GP, fast against exact, forgetting,
input validation, threads and binding fuzzing (docs/success_gp.md). State: test_success_gp_state.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import integrate
from scipy.spatial.distance import pdist

import vipfast
from vipfast import _core
from gp_reference import (ReferenceGP, Workload, assert_same_predictions, expected_bernoulli_variance_reference, normalise,
                          pseudo_observation, rbf)


def run(models, workload, steps, start=0, duplicates=0, zero_trials=0):
    """Feeds `steps` batches of the workload to every model (observe + advance)."""
    rng = np.random.default_rng(start)
    for t in range(start, start + steps):
        keys, x, _, trials, successes = workload.batch(t)
        if duplicates:  # repeat some rows with their own counts: they must be merged
            pick = rng.choice(len(keys), duplicates, replace=False)
            keys, x = np.concatenate([keys, keys[pick]]), np.concatenate([x, x[pick]])
            extra = rng.binomial(3, 0.5, duplicates)
            trials, successes = np.concatenate([trials, np.full(duplicates, 3)]), np.concatenate([successes, extra])
        if zero_trials:
            trials, successes = trials.copy(), successes.copy()
            trials[:zero_trials] = successes[:zero_trials] = 0
        for model in models:
            model.observe(keys, x, successes, trials)
            model.advance()


def small_workload(**overrides):
    options = dict(num_keys=500, dim=24, clusters=8, batch=60, rollouts=8, seed=3)
    options.update(overrides)
    return Workload(**options)


# ---------------------------------------------------------------------------------------------
# exact mode = an independent float64 numpy GP on the same pseudo-observations
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("noise", ["binomial", "laplace"])
@pytest.mark.parametrize("prior_mean", [None, -0.7], ids=["running-mean", "fixed-mean"])
@pytest.mark.parametrize("forgetting", [0.9, 1.0], ids=["forgetting", "no-forgetting"])
def test_exact_matches_numpy_reference(prior_mean, forgetting, noise):
    workload = small_workload()
    options = dict(lengthscale=0.9, signal_var=1.7, prior_mean=prior_mean, forgetting=forgetting, capacity=230,
                   noise=noise)
    gp = vipfast.SuccessGP(24, mode="exact", **options)
    ref = ReferenceGP(24, **options)
    run([gp, ref], workload, steps=9, duplicates=7, zero_trials=3)
    assert gp.num_stored == len(ref.store) == 230  # evictions happened

    stored = gp.pseudo_observations()
    x_ref, y_ref, s2_ref, _ = ref.pseudo_observations()
    order = np.argsort(stored["keys"])
    ref_order = np.argsort(np.fromiter(ref.store, dtype=np.uint64))
    np.testing.assert_array_equal(stored["keys"][order], np.fromiter(ref.store, dtype=np.uint64)[ref_order])
    # Laplace sites sit at posterior means, themselves agreeing to ~1e-10 (two different solves).
    tolerance = dict(rtol=1e-12) if noise == "binomial" else dict(rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(stored["targets"][order], y_ref[ref_order], **tolerance)
    np.testing.assert_allclose(stored["noise_var"][order], s2_ref[ref_order], **tolerance)
    np.testing.assert_allclose(gp.prior_mean, ref.prior_mean(), **tolerance)
    if noise == "laplace":
        lin_ref = np.array([entry[4] for entry in ref.store.values()])
        np.testing.assert_allclose(stored["linearisation"][order], lin_ref[ref_order], **tolerance)

    keys, x, *_ = workload.batch(100)
    mean, var = gp.predict_latent(keys, x)
    mean_ref, var_ref = ref.predict_latent(x)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(var, var_ref, rtol=1e-8)


def test_exact_reproduces_the_published_predictor_knobs():
    """Fixed lengthscale and prior mean, logit of the clipped rate with jitter 1e-4, sigmoid(mean)."""
    workload = small_workload(num_keys=150, batch=40)
    options = dict(lengthscale=0.6, prior_mean=-2.0, forgetting=0.5, noise="fixed", jitter=1e-4, clip=0.05)
    gp = vipfast.SuccessGP(24, mode="exact", proba="plugin", **options)
    ref = ReferenceGP(24, **options)
    run([gp, ref], workload, steps=4)
    keys, x, *_ = workload.batch(50)
    prediction = gp.predict(keys, x)
    mean_ref, var_ref = ref.predict_latent(x)
    # K + 1e-4 I is ill-conditioned (cond ~ 1e6): both solves lose about six digits.
    np.testing.assert_allclose(prediction.mean, mean_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(prediction.var, var_ref, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(prediction.proba, 1 / (1 + np.exp(-prediction.mean)), rtol=1e-15)
    y, s2 = pseudo_observation([0, 3, 8], [8, 8, 8], "fixed", 1e-4, 0.05)
    np.testing.assert_allclose(y, np.log([0.05 / 0.95, 3 / 5, 0.95 / 0.05]))
    np.testing.assert_array_equal(s2, 1e-4)


def test_median_heuristic_lengthscale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10)).astype(np.float32)
    gp = vipfast.SuccessGP(10, mode="exact")
    assert gp.lengthscale is None
    gp.observe(np.arange(200), x, rng.integers(0, 5, 200), np.full(200, 4))
    np.testing.assert_allclose(gp.lengthscale, np.median(pdist(normalise(x))), rtol=1e-12)
    # The same set again is no material change: the cached value stays.
    before = gp.lengthscale
    gp.observe(np.arange(200), x, np.zeros(200, int), np.ones(200, int))
    assert gp.lengthscale == before


def test_predictions_follow_the_documented_formulas():
    workload = small_workload()
    gp = vipfast.SuccessGP(24, mode="exact", signal_var=3.0)
    run([gp], workload, steps=3)
    keys, x, *_ = workload.batch(30)
    mean, var, proba, weight = gp.predict(keys, x)
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-mean / np.sqrt(1 + np.pi * var / 8))), rtol=1e-14)
    np.testing.assert_allclose(weight, expected_bernoulli_variance_reference(mean, var), rtol=2e-7, atol=1e-15)
    np.testing.assert_array_equal(gp.predict_proba(keys, x), proba)
    np.testing.assert_array_equal(gp.expected_bernoulli_variance(keys, x), weight)
    np.testing.assert_array_equal(gp.predict_latent(keys, x)[1], var)


@pytest.mark.parametrize("var", [0.5, 5.0, 20.0, 400.0])
@pytest.mark.parametrize("mean", [-6.0, 0.0, 2.5])
def test_expected_bernoulli_variance_is_accurate_for_wide_posteriors(mean, var):
    """Adaptive Gauss-Hermite: < 2e-6 relative for |mean| <= 10 at any width (docs)."""
    gp = vipfast.SuccessGP(2, mode="exact", signal_var=var, prior_mean=mean)
    weight = gp.expected_bernoulli_variance([0], [[1.0, 0.0]])[0]
    density = lambda f: np.exp(-(f - mean) ** 2 / (2 * var)) / np.sqrt(2 * np.pi * var) * np.exp(-abs(f)) / (1 + np.exp(-abs(f))) ** 2  # noqa: E731
    span = 40 * np.sqrt(var) + 40
    exact = integrate.quad(density, mean - span, mean + span, points=sorted({0.0, mean}), epsabs=1e-15, limit=2000)[0]
    assert abs(weight - exact) <= 2e-6 * exact


def test_expected_bernoulli_variance_matches_the_definition_on_a_grid():
    """Every width and centre a posterior of the logit takes in practice, and the ends."""
    mean, var = (grid.ravel() for grid in np.meshgrid(np.linspace(-10, 10, 21), np.geomspace(1e-6, 1e4, 21)))
    np.testing.assert_allclose(_core.expected_bernoulli_variance(mean, var),
                               expected_bernoulli_variance_reference(mean, var), rtol=2e-6, atol=0)
    ends = _core.expected_bernoulli_variance(np.array([1.5, np.inf, -np.inf, 0.0]), np.array([0.0, 1.0, 1.0, np.inf]))
    np.testing.assert_allclose(ends, [np.exp(-1.5) / (1 + np.exp(-1.5)) ** 2, 0.0, 0.0, 0.0], rtol=1e-15)


def test_empty_model_predicts_the_prior():
    gp = vipfast.SuccessGP(3, signal_var=2.0, prior_mean=0.4)
    mean, var, proba, weight = gp.predict([5, 6], [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(mean, 0.4)
    np.testing.assert_array_equal(var, 2.0)
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-0.4 / np.sqrt(1 + np.pi * 2 / 8))))
    np.testing.assert_allclose(weight, expected_bernoulli_variance_reference(0.4, 2.0), rtol=2e-7)
    assert vipfast.SuccessGP(3).prior_mean == 0.0


# ---------------------------------------------------------------------------------------------
# store semantics
# ---------------------------------------------------------------------------------------------

def test_duplicate_keys_within_one_observe_are_merged():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    merged = vipfast.SuccessGP(2, mode="exact", lengthscale=1.0)
    merged.observe([7, 9, 7], x, [1, 2, 3], [2, 4, 4])
    single = vipfast.SuccessGP(2, mode="exact", lengthscale=1.0)
    single.observe([7, 9], x[[2, 1]], [4, 2], [6, 4])  # summed counts, last embedding
    for key in ("keys", "embeddings", "targets", "noise_var", "successes", "trials"):
        np.testing.assert_array_equal(merged.pseudo_observations()[key], single.pseudo_observations()[key])


def test_fractional_successes_are_rewards_in_unit_interval_summed(rng):
    rewards = rng.uniform(0, 1, size=(3, 5))
    gp = vipfast.SuccessGP(2, mode="exact", lengthscale=1.0)
    gp.observe([1, 2, 3], rng.normal(size=(3, 2)), rewards.sum(axis=1), [5, 5, 5])
    stored = gp.pseudo_observations()
    np.testing.assert_allclose(stored["successes"], rewards.sum(axis=1), rtol=1e-15)
    y, s2 = pseudo_observation(rewards.sum(axis=1), 5.0)
    np.testing.assert_allclose(stored["targets"], y, rtol=1e-12)
    np.testing.assert_allclose(stored["noise_var"], s2, rtol=1e-12)


def test_zero_trials_carry_no_evidence():
    gp = vipfast.SuccessGP(2, mode="exact", lengthscale=1.0)
    gp.observe([1, 2], [[1, 0], [0, 1]], [0, 0], [0, 5])
    np.testing.assert_array_equal(gp.pseudo_observations()["keys"], [2])


def test_forgotten_counts_merge_repeated_observations():
    gp = vipfast.SuccessGP(2, mode="exact", lengthscale=1.0, forgetting=0.5)
    gp.observe([1], [[1, 0]], [4], [8])
    gp.advance(2)
    gp.observe([1], [[1, 0]], [1], [2])
    stored = gp.pseudo_observations()
    np.testing.assert_allclose(stored["successes"], [4 * 0.25 + 1])
    np.testing.assert_allclose(stored["trials"], [8 * 0.25 + 2])
    gp.advance(3)  # the pseudo-observation's weight decays as forgetting**age
    y, s2 = pseudo_observation(2.0, 4.0)
    np.testing.assert_allclose(gp.pseudo_observations()["noise_var"], [s2 / 0.5**3])
    np.testing.assert_allclose(gp.pseudo_observations()["targets"], [y])


def test_capacity_evicts_the_least_recently_observed_key():
    gp = vipfast.SuccessGP(2, mode="exact", lengthscale=1.0, capacity=3)
    x = [[1, 0]]
    for key in (1, 2, 3):
        gp.observe([key], x, [1], [2])
    gp.observe([1], x, [1], [2])  # 1 is recent again; 2 is now the oldest
    gp.observe([4], x, [1], [2])
    assert sorted(gp.pseudo_observations()["keys"].tolist()) == [1, 3, 4]


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_keys_are_uint64_without_loss(mode):
    gp = vipfast.SuccessGP(2, mode=mode, lengthscale=1.0)
    keys = [0, 2**63, 2**64 - 1]
    gp.observe(keys, np.eye(2)[[0, 1, 0]], [1, 2, 3], [4, 4, 4])
    assert sorted(gp.pseudo_observations()["keys"].tolist()) == keys
    gp.observe(np.array(keys, dtype=np.uint64), np.eye(2)[[0, 1, 0]], [1, 2, 3], [4, 4, 4])
    assert gp.num_stored == 3


# ---------------------------------------------------------------------------------------------
# noise="laplace": Newton sites of the binomial likelihood
# ---------------------------------------------------------------------------------------------

def two_clusters(rng, dim=8, size=20):
    """Keys of a cluster that never succeeds and of one that succeeds sometimes."""
    centres = normalise(rng.normal(size=(2, dim)))
    x = normalise(np.repeat(centres, size, axis=0) + 0.3 / np.sqrt(dim) * rng.normal(size=(2 * size, dim)))
    trials = rng.integers(2, 9, size=2 * size)
    successes = np.concatenate([np.zeros(size), rng.binomial(trials[size:], 0.4)]).astype(np.float64)
    return np.arange(1, 2 * size + 1, dtype=np.uint64), x, successes, trials


def laplace_mode(x, successes, trials, lengthscale, signal_var, prior_mean):
    """The binomial-likelihood GP's posterior mode, by scipy's Newton-CG on f = mu0 + L u."""
    from scipy.optimize import minimize

    chol = np.linalg.cholesky(rbf(x, x, lengthscale, signal_var) + 1e-10 * np.eye(len(x)))

    def objective(u):
        f = prior_mean + chol @ u
        loglik = successes * f - trials * np.logaddexp(0.0, f)
        p = 1.0 / (1.0 + np.exp(-f))
        return 0.5 * u @ u - loglik.sum(), u - chol.T @ (successes - trials * p)

    u = minimize(objective, np.zeros(len(x)), jac=True, method="L-BFGS-B", options=dict(gtol=1e-10, maxiter=5000)).x
    return prior_mean + chol @ u


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_laplace_newton_steps_reach_the_posterior_mode(mode, rng):
    """Observing no new evidence (zero trials) takes Newton steps; they converge to the mode of the
    binomial-likelihood posterior that scipy finds independently, within the re-linearisation
    tolerance. The binomial pseudo-observation cannot pool a cluster's zero counts and stays far off."""
    keys, x, successes, trials = two_clusters(rng)
    options = dict(lengthscale=0.5, signal_var=9.0, prior_mean=0.0, forgetting=1.0, mode=mode, num_inducing=64)
    gp = vipfast.SuccessGP(8, noise="laplace", **options)
    binomial = vipfast.SuccessGP(8, noise="binomial", **options)
    for model in (gp, binomial):
        model.observe(keys, x, successes, trials)
    for _ in range(30):
        gp.observe(keys, x, np.zeros(len(keys)), np.zeros(len(keys), dtype=np.int64))
    mode_ref = laplace_mode(x, successes, trials, 0.5, 9.0, 0.0)
    mean = gp.predict_latent(keys, x)[0]
    assert np.abs(mean - mode_ref).max() < 0.3, np.abs(mean - mode_ref).max()
    never = slice(0, 20)
    assert mode_ref[never].mean() < -3.0  # the pooled evidence says "very hard"
    assert binomial.predict_latent(keys, x)[0][never].mean() > mode_ref[never].mean() + 1.0


def test_laplace_site_at_a_contradicted_linearisation_point_does_not_overshoot():
    """The prior says p ~ 3e-4; the key succeeds half the time. A Newton step from the prior mean
    would put the site ~80 logits up; the trust region keeps it near the key's own rate."""
    gp = vipfast.SuccessGP(2, mode="exact", noise="laplace", prior_mean=-8.0, signal_var=0.5)
    gp.observe([7], [[1.0, 0.0]], [20.0], [40])
    stored = gp.pseudo_observations()
    y, s2 = pseudo_observation([20.0], [40.0], "laplace", linearisation=stored["linearisation"])
    np.testing.assert_allclose(stored["targets"], y, rtol=1e-12)
    np.testing.assert_allclose(stored["noise_var"], s2, rtol=1e-12)
    assert abs(stored["targets"][0]) < 1.0 and stored["noise_var"][0] < 0.2


def test_laplace_site_has_no_bound_on_the_side_its_counts_allow():
    """0 of n is consistent with any lower logit: the site is linearised at the model's mean even
    far below the binomial target, and says "lower still"."""
    gp = vipfast.SuccessGP(2, mode="exact", noise="laplace", prior_mean=-9.0, signal_var=0.01)
    gp.observe([7], [[1.0, 0.0]], [0.0], [3])
    stored = gp.pseudo_observations()
    assert stored["linearisation"][0] < -8.9
    assert stored["targets"][0] < stored["linearisation"][0]
    y, s2 = pseudo_observation([0.0], [3.0], "laplace", linearisation=stored["linearisation"])
    np.testing.assert_allclose([stored["targets"][0], stored["noise_var"][0]], [y[0], s2[0]], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# fast mode against exact
# ---------------------------------------------------------------------------------------------

def test_fast_equals_exact_when_the_inducing_points_cover_the_store():
    workload = small_workload(num_keys=200, dim=16, batch=40)
    fast = vipfast.SuccessGP(16, mode="fast", lengthscale=0.8, num_inducing=400)
    exact = vipfast.SuccessGP(16, mode="exact", lengthscale=0.8)
    run([fast, exact], workload, steps=6)
    assert fast.num_inducing_used == fast.num_stored  # Z = the stored embeddings
    keys, x, *_ = workload.batch(40)
    a, b = fast.predict(keys, x), exact.predict(keys, x)
    np.testing.assert_allclose(a.mean, b.mean, atol=1e-6)
    np.testing.assert_allclose(a.var, b.var, rtol=1e-6)


@pytest.mark.parametrize("noise", ["binomial", "laplace"])
def test_fast_tracks_exact_on_a_small_run(noise):
    workload = Workload(num_keys=1500, dim=32, clusters=16, batch=128, seed=5)
    fast = vipfast.SuccessGP(32, mode="fast", num_inducing=128, capacity=1024, noise=noise)
    exact = vipfast.SuccessGP(32, mode="exact", capacity=1024, noise=noise)
    run([fast, exact], workload, steps=15)
    keys, x, *_ = workload.batch(15)
    assert fast.lengthscale == exact.lengthscale
    assert np.abs(fast.predict_proba(keys, x) - exact.predict_proba(keys, x)).mean() <= 0.02


@pytest.mark.slow
def test_fast_tracks_exact_on_the_benchmark_data():
    """d = 384, Q = 512, 40 steps over 8192 keys, capacity 4096 (the bench's workload)."""
    workload = Workload()
    fast = vipfast.SuccessGP(384, mode="fast")
    exact = vipfast.SuccessGP(384, mode="exact")
    run([fast, exact], workload, steps=40)
    keys, x, *_ = workload.batch(40)
    difference = np.abs(fast.predict_proba(keys, x) - exact.predict_proba(keys, x))
    assert exact.num_stored == 4096 and fast.num_inducing_used == 384
    assert difference.mean() <= 0.02, difference.mean()


def test_auto_switches_from_exact_to_fast_by_size():
    workload = small_workload(num_keys=400, batch=50)
    gp = vipfast.SuccessGP(24, mode="auto", auto_exact_max=120, num_inducing=32)
    seen = []
    for t in range(5):
        run([gp], workload, steps=1, start=t)
        seen.append((gp.num_stored > 120, gp.active_mode, gp.num_inducing_used))
    assert {big: (mode, used) for big, mode, used in seen} == {False: ("exact", 0), True: ("fast", 32)}


# ---------------------------------------------------------------------------------------------
# forgetting and calibration on synthetic training runs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_predictions_follow_a_shift_in_success_rates(mode):
    """All prompts jump from p = 0.2 to p = 0.8 after 20 steps; the forecast follows at the pace
    the forgetting factor sets (half-life log 0.5 / log gamma steps)."""
    rng = np.random.default_rng(0)
    keys = np.arange(64)
    x = rng.normal(size=(64, 16))

    def forecasts(forgetting, steps_after_shift):
        gp = vipfast.SuccessGP(16, mode=mode, forgetting=forgetting, num_inducing=32)
        outcomes = np.random.default_rng(1)
        means = []
        for t in range(20 + steps_after_shift):
            p = 0.2 if t < 20 else 0.8
            gp.observe(keys, x, outcomes.binomial(16, p, 64), np.full(64, 16))
            gp.advance()
            means.append(gp.predict_proba(keys, x).mean())
        return means[19], means[19:]

    before, after = forecasts(0.6, 4)
    assert abs(before - 0.2) < 0.05
    assert after[4] > 0.65  # four steps after the shift
    before, after = forecasts(0.95, 20)  # the default: half-life 13.5 steps
    assert abs(before - 0.2) < 0.05 and after[4] < 0.5 and after[20] > 0.6
    _, after = forecasts(1.0, 20)  # without forgetting, 20 old steps against 20 new ones
    assert after[20] < 0.55


def brier_scores(mode, steps=40, **gp_options):
    """Mean Brier score of each forecaster against every realised rollout outcome."""
    workload = Workload(num_keys=3000, dim=32, clusters=24, batch=128, rollouts=8, seed=11)
    gp = vipfast.SuccessGP(32, mode=mode, **gp_options)
    counts: dict[int, list[float]] = {}
    total_k = total_n = 0.0
    scores = {"gp": [], "beta": [], "global": []}
    for t in range(steps):
        keys, x, _, trials, successes = workload.batch(t)
        if t >= 5:
            forecasts = {
                "gp": gp.predict_proba(keys, x),
                "beta": np.array([(counts.get(k, [0, 0])[0] + 1) / (counts.get(k, [0, 0])[1] + 2) for k in keys.tolist()]),
                "global": np.full(len(keys), (total_k + 1) / (total_n + 2)),
            }
            for name, p in forecasts.items():  # per rollout: k outcomes of 1 and n - k of 0
                scores[name].append(np.sum(successes * (1 - p) ** 2 + (trials - successes) * p**2) / trials.sum())
        gp.observe(keys, x, successes, trials)
        gp.advance()
        for k, s, n in zip(keys.tolist(), successes, trials):
            entry = counts.setdefault(k, [0, 0])
            entry[0] += s
            entry[1] += n
        total_k, total_n = total_k + successes.sum(), total_n + trials.sum()
    return {name: float(np.mean(v)) for name, v in scores.items()}


@pytest.mark.parametrize("noise", ["binomial", "laplace"])
@pytest.mark.parametrize("mode", ["auto", "fast"])
def test_calibration_beats_per_prompt_and_global_baselines(mode, noise):
    scores = brier_scores(mode, num_inducing=128, noise=noise)
    assert scores["gp"] < scores["beta"] - 0.005, scores
    assert scores["gp"] < scores["global"] - 0.005, scores


# ---------------------------------------------------------------------------------------------
# bad input: ValueError / TypeError naming the value
# ---------------------------------------------------------------------------------------------

def good_batch():
    return dict(keys=[1, 2, 3], embeddings=np.ones((3, 4), np.float32), successes=[1, 2, 3], trials=[4, 4, 4])


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(embeddings=np.array([[1, 2, 3, 4], [1, 2, 3, np.nan], [1, 1, 1, 1]])), ValueError, r"embeddings\[1, 3\] is nan"),
        (dict(embeddings=np.array([[1, 2, 3, 4], [1, 2, 3, 4], [np.inf, 1, 1, 1]])), ValueError, r"embeddings\[2, 0\] is inf"),
        (dict(embeddings=np.ones((3, 5))), ValueError, r"embeddings must have shape \(Q, dim\) = \(Q, 4\), got \(3, 5\)"),
        (dict(embeddings=np.ones(4)), ValueError, r"embeddings must have shape"),
        (dict(embeddings=np.zeros((3, 4))), ValueError, r"embeddings\[0\] is all zeros"),
        (dict(embeddings=[["a"] * 4] * 3), TypeError, "embeddings must hold real numbers"),
        (dict(successes=[1, 5, 3]), ValueError, r"successes\[1\] = 5 exceeds trials\[1\] = 4"),
        (dict(successes=[-1, 2, 3]), ValueError, r"successes\[0\] = -1 is negative"),
        (dict(trials=[4, -4, 4]), ValueError, r"trials\[1\] = -4 is negative"),
        (dict(trials=[4, 4]), ValueError, "trials has length 2, expected 3"),
        (dict(successes=[1, 2, 3, 4]), ValueError, "successes has length 4, expected 3"),
        (dict(keys=[1, 2]), ValueError, r"embeddings' first axis has length 3, expected 2"),
        (dict(successes=[np.nan, 2, 3]), ValueError, r"successes\[0\] = nan is not finite"),
        (dict(trials=["4", "4", "4"]), TypeError, "trials must hold integers"),
        (dict(keys=[1, -2, 3]), ValueError, r"keys\[1\] = -2 is negative"),
        (dict(keys=np.array([1, -2, 3])), ValueError, r"keys\[1\] = -2 is negative"),
        (dict(keys=[1, 2**64, 3]), ValueError, r"keys\[1\] = 18446744073709551616 does not fit in uint64"),
        (dict(keys=[1.0, 2.0, 3.0]), TypeError, r"keys\[0\] = 1.0 is not an integer"),
        (dict(keys=np.array([1.0, 2.0, 3.0])), TypeError, "keys must be integers convertible to uint64 without loss, got dtype float64"),
        (dict(keys=["a", "b", "c"]), TypeError, "keys must be integers convertible to uint64"),
        (dict(keys=[[1, 2, 3]]), ValueError, "keys must be 1-D"),
    ],
    ids=["nan", "inf", "wrong-dim", "1d-embeddings", "zero-row", "str-embeddings", "successes>trials",
         "negative-successes", "negative-trials", "short-trials", "long-successes", "short-keys", "nan-successes",
         "str-counts", "negative-key", "negative-key-array", "key-too-large", "float-keys", "float-key-array",
         "str-keys", "2d-keys"],
)
def test_bad_observations_name_the_value(change, error, message):
    gp = vipfast.SuccessGP(4, mode="exact")
    with pytest.raises(error, match=message):
        gp.observe(**{**good_batch(), **change})
    assert gp.num_stored == 0  # nothing half-applied


def test_bad_predictions_name_the_value():
    gp = vipfast.SuccessGP(4)
    with pytest.raises(ValueError, match=r"embeddings\[0, 1\] is nan"):
        gp.predict([1], [[1, np.nan, 0, 0]])
    with pytest.raises(ValueError, match=r"embeddings must have shape \(Q, dim\) = \(Q, 4\)"):
        gp.predict([1], [[1, 0, 0]])


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(forgetting=0.0), r"forgetting must lie in \(0, 1\]"),
        (dict(forgetting=1.5), r"forgetting must lie in \(0, 1\]"),
        (dict(capacity=0), "capacity must be >= 1"),
        (dict(lengthscale=-1.0), r"lengthscale must be a positive number \(or None for the median heuristic\), got -1"),
        (dict(lengthscale=5e-180), r"lengthscale must be >= 1\S*e-100, got 5\S*e-180"),
        (dict(signal_var=0.0), "signal_var must be positive"),
        (dict(mode="dense"), "mode must be one of 'exact', 'fast', 'auto'; got 'dense'"),
        (dict(noise="gaussian"), "noise must be one of 'binomial', 'fixed', 'laplace'; got 'gaussian'"),
        (dict(proba="median"), "proba must be one of 'moderated', 'plugin'; got 'median'"),
        (dict(noise="fixed", jitter=0.0), "noise='fixed' needs jitter > 0"),
        (dict(clip=0.5), r"clip must lie in \(0, 0.5\)"),
        (dict(jitter=-1.0), "jitter must be finite and >= 0"),
        (dict(num_inducing=0), r"num_inducing must lie in \[1, 65536\]"),
        (dict(prior_mean=float("nan")), "prior_mean must be finite"),
    ],
)
def test_bad_configuration(options, message):
    with pytest.raises(ValueError, match=message):
        vipfast.SuccessGP(4, **options)


def test_bad_dim_and_steps():
    with pytest.raises(ValueError, match="dim must be >= 1"):
        vipfast.SuccessGP(0)
    with pytest.raises(TypeError, match="dim must be an integer"):
        vipfast.SuccessGP(3.5)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        vipfast.SuccessGP(2).advance(-1)


# ---------------------------------------------------------------------------------------------
# GIL and threads
# ---------------------------------------------------------------------------------------------

def test_the_gil_is_released_while_predicting():
    workload = Workload(num_keys=2000, dim=64, batch=1000, seed=2)
    gp = vipfast.SuccessGP(64, mode="exact", capacity=2000)
    run([gp], workload, steps=2)
    keys, x, *_ = workload.batch(2)
    ticks = 0
    done = threading.Event()

    def predict():
        for _ in range(3):
            gp._gp.predict(keys, x)  # the native call
        done.set()

    start = time.perf_counter()
    thread = threading.Thread(target=predict)
    thread.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    thread.join()
    elapsed = time.perf_counter() - start
    assert elapsed > 0.05 and ticks >= 10, (elapsed, ticks)  # Python ran while C++ worked


def test_threads_sharing_one_model_serialise_safely():
    workload = small_workload()
    gp = vipfast.SuccessGP(24, mode="fast", num_inducing=32)
    run([gp], workload, steps=3)
    keys, x, *_ = workload.batch(3)
    expected = gp.predict(keys, x)
    results = [None] * 4

    def work(slot):
        results[slot] = gp.predict(keys, x)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        for got, want in zip(result, expected):
            np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# fuzzing: no input crashes the process
# ---------------------------------------------------------------------------------------------

reals = st.floats(allow_nan=True, allow_infinity=True, width=64)
dtypes = st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.uint64, np.bool_, np.float16])


@st.composite
def batches(draw, dim):
    q = draw(st.integers(0, 6))
    shape = draw(st.sampled_from([(q, dim), (q, dim + 1), (q + 1, dim), (q,), (q, dim, 1)]))
    embeddings = draw(hnp.arrays(draw(dtypes), shape, elements=None if draw(st.booleans()) else st.just(1)))
    keys = draw(st.one_of(
        hnp.arrays(np.uint64, draw(st.sampled_from([(q,), (q + 1,)]))),
        st.lists(st.integers(-(2**64), 2**65), min_size=q, max_size=q),
        hnp.arrays(np.float64, (q,), elements=reals),
    ))
    counts = st.one_of(
        hnp.arrays(np.int64, (q,), elements=st.integers(-3, 2**62)),
        hnp.arrays(np.int64, (q,), elements=st.integers(0, 9)),
        hnp.arrays(np.float64, draw(st.sampled_from([(q,), (q + 2,)])), elements=reals),
        st.lists(st.integers(-5, 2**64), min_size=q, max_size=q),
    )
    return keys, embeddings, draw(counts), draw(counts)


def check_prediction(prediction):
    mean, var, proba, weight = prediction
    assert np.all(np.isfinite(mean)) and np.all(var >= 0)
    assert np.all((proba >= 0) & (proba <= 1)) and np.all((weight >= 0) & (weight <= 0.25))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_the_public_api(data):
    dim = data.draw(st.integers(1, 5))
    mode = data.draw(st.sampled_from(["exact", "fast", "auto"]))
    gp = vipfast.SuccessGP(dim, mode=mode, num_inducing=data.draw(st.integers(1, 6)), capacity=data.draw(st.integers(1, 8)),
                           forgetting=data.draw(st.sampled_from([1.0, 0.5, 1e-300])), auto_exact_max=3,
                           noise=data.draw(st.sampled_from(["binomial", "laplace"])),
                           calibration_window=data.draw(st.integers(0, 3)))
    for _ in range(data.draw(st.integers(1, 4))):
        keys, embeddings, successes, trials = data.draw(batches(dim))
        try:
            gp.observe(keys, embeddings, successes, trials)
        except (ValueError, TypeError):
            pass
        gp.advance(data.draw(st.integers(0, 3)))
        try:
            check_prediction(gp.predict(keys, embeddings))
        except (ValueError, TypeError):
            pass
    state = gp.state_dict()
    assert_same_predictions(gp, vipfast.SuccessGP.from_state_dict(state), [1], np.ones((1, dim)))


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_the_native_bindings(data):
    """The raw _core class, bypassing the Python conversions: forcecast and shape checks only."""
    dim = data.draw(st.integers(1, 4))
    config = _core.SuccessGPConfig()
    config.dim, config.forgetting, config.capacity, config.num_inducing, config.auto_exact_max = dim, 0.9, 5, 3, 2
    config.mode = data.draw(st.sampled_from(["exact", "fast"]))
    config.noise = data.draw(st.sampled_from(["binomial", "laplace"]))
    config.calibration_window = data.draw(st.integers(0, 2))
    gp = _core.SuccessGP(config)
    basis = None
    for _ in range(3):
        q = data.draw(st.integers(0, 5))
        keys = data.draw(hnp.arrays(data.draw(st.sampled_from([np.uint64, np.int64, np.float64])),
                                    data.draw(st.sampled_from([(q,), (q, 1), (q + 1,)]))))
        x = data.draw(hnp.arrays(np.float64, data.draw(st.sampled_from([(q, dim), (q, dim + 1), (q,)])), elements=reals))
        counts = [data.draw(hnp.arrays(np.int64, data.draw(st.sampled_from([(q,), (q + 1,)])),
                                       elements=st.integers(-2, 2**63 - 1))) for _ in range(2)]
        try:  # with the last prediction, which may be of other rows
            gp.observe(keys, x, *counts, basis if data.draw(st.booleans()) else None)
        except (ValueError, TypeError):
            pass
        try:
            *prediction, basis = gp.predict(keys, x)
            check_prediction(prediction)
        except (ValueError, TypeError):
            pass


def corrupted(draw, state):
    name = draw(st.sampled_from(sorted(state)))
    value = state[name]
    replacement = draw(st.one_of(
        st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True), st.text(max_size=3), st.none(),
        hnp.arrays(draw(st.sampled_from([np.float64, np.int64, np.uint64, np.bool_])), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)),
        st.just(np.asarray(value)[:1] if isinstance(value, np.ndarray) and value.ndim else value),
        st.just(-np.asarray(value) if isinstance(value, np.ndarray) and value.dtype.kind == "f" else value),
    ))
    return {**state, name: replacement}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_corrupted_states(data):
    gp = vipfast.SuccessGP(3, mode=data.draw(st.sampled_from(["exact", "fast"])), num_inducing=4, capacity=6,
                           noise=data.draw(st.sampled_from(["binomial", "laplace"])), calibration_window=data.draw(st.integers(0, 2)))
    gp.observe([1, 2, 3, 4], np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]), [1, 2, 3, 0], [3, 3, 3, 3])
    gp.predict([5], [[1, 2, 3]])
    state = corrupted(data.draw, gp.state_dict())
    try:
        clone = vipfast.SuccessGP.from_state_dict(state)
    except (ValueError, TypeError):
        return
    check_prediction(clone.predict([1, 9], [[1, 0, 0], [0, 1, 1]]))
    clone.observe([7], [[1, 1, 1]], [1], [2])
    check_prediction(clone.predict([1, 9], [[1, 0, 0], [0, 1, 1]]))

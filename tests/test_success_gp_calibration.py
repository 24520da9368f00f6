"""SuccessGP recalibration (calibration_window > 0): the affine map of the logit against an
independent scipy fit of the same objective, the predictions it yields, windowing, state and
bad input (docs/success_gp.md, "Recalibration")."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, log_expit

import vipfast
from gp_reference import Workload, assert_same_predictions, expected_bernoulli_variance_reference


def reference_map(records, step, window):
    """argmax over (a, log b) of the weighted moderated binomial log likelihood + N(0, 1) priors."""
    kept = [r for r in records if step - r[0] < window]
    age = np.array([step - r[0] for r in kept], dtype=np.float64)
    mean, var, k, n = (np.array([r[i] for r in kept]) for i in range(1, 5))
    weight = (1.0 - 1.0 / window) ** age

    def negative_log_posterior(theta):
        a, beta = theta
        b = np.exp(beta)
        z = (a + b * mean) / np.sqrt(1.0 + np.pi * b * b * var / 8.0)
        return -np.sum(weight * (k * log_expit(z) + (n - k) * log_expit(-z))) + 0.5 * (a * a + beta * beta)

    result = minimize(negative_log_posterior, np.zeros(2), method="Nelder-Mead",
                      options=dict(xatol=1e-10, fatol=1e-12, maxiter=20000))
    return result.x[0], np.exp(result.x[1])


def drive(window, mode, rng, steps=8, **options):
    """A recalibrated GP and a plain twin fed the same run; returns both and the records the
    recalibrated one should have scored: (step, raw mean, raw var, successes, trials)."""
    workload = Workload(num_keys=300, dim=16, clusters=6, batch=40, rollouts=6, seed=int(rng.integers(2**31)))
    settings = dict(mode=mode, noise="laplace", signal_var=9.0, num_inducing=24, **options)
    calibrated = vipfast.SuccessGP(16, calibration_window=window, **settings)
    plain = vipfast.SuccessGP(16, **settings)
    records = []
    for t in range(steps):
        keys, x, _, trials, successes = workload.batch(t)
        for gp in (plain, calibrated):  # as an allocator does: plan, then observe with the plan's prediction
            prediction = gp.predict(keys, x)
            gp.observe(keys, x, successes, trials, prediction=prediction)
            gp.advance()
            if gp is plain:
                records += [(t, m, v, k, n) for m, v, k, n in zip(prediction.mean, prediction.var, successes, trials)
                            if n > 0]
    return calibrated, plain, records, workload


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("window", [1, 3, 50])
def test_map_matches_an_independent_scipy_fit(mode, window, rng):
    calibrated, plain, records, _ = drive(window, mode, rng)
    a, b = reference_map(records, step=calibrated.step - 1, window=window)
    np.testing.assert_allclose(calibrated.calibration, (a, b), rtol=1e-6, atol=1e-6, err_msg=rng.seed_for_message)


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_predictions_are_those_of_the_mapped_logit(mode, rng):
    calibrated, plain, _, workload = drive(4, mode, rng)
    keys, x, *_ = workload.batch(99)
    a, b = calibrated.calibration
    raw, mapped = plain.predict(keys, x), calibrated.predict(keys, x)
    np.testing.assert_allclose(mapped.mean, a + b * raw.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mapped.var, b * b * raw.var, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(mapped.proba, expit(mapped.mean / np.sqrt(1 + np.pi * mapped.var / 8)), rtol=1e-12)
    np.testing.assert_allclose(mapped.weight, expected_bernoulli_variance_reference(mapped.mean, mapped.var), rtol=1e-6, atol=1e-9)


def test_recalibration_leaves_the_gp_evidence_alone(rng):
    """Only the output is mapped: the stored sites, hence the next steps' raw predictions, are the plain GP's."""
    calibrated, plain, *_ = drive(5, "fast", rng)
    for name, values in plain.pseudo_observations().items():
        np.testing.assert_array_equal(values, calibrated.pseudo_observations()[name], err_msg=name)


def test_a_compressed_predictor_is_stretched_back(rng):
    """Outcomes drawn at twice the GP's logits minus one: the map recovers b ~ 2, a ~ -1. A million
    initial trials per prompt pin the GP's logits, so the later outcomes barely move them; their
    own records (scored against the prior) leave the window before the first of those outcomes."""
    gp = vipfast.SuccessGP(2, calibration_window=20, mode="exact", lengthscale=0.3, signal_var=4.0, forgetting=1.0)
    angles = rng.uniform(0, 2 * np.pi, 400)
    x = np.stack([np.cos(angles), np.sin(angles)], 1)
    keys = np.arange(400, dtype=np.uint64)
    gp.observe(keys, x, np.round(1e6 * expit(3 * np.sin(3 * angles))), np.full(400, 10**6))
    gp.advance(20)
    for _ in range(30):
        batch = rng.choice(400, 100, replace=False)
        a, b = gp.calibration
        raw = (gp.predict(keys[batch], x[batch]).mean - a) / b
        trials = np.full(100, 20)
        gp.observe(keys[batch], x[batch], rng.binomial(trials, expit(2 * raw - 1)), trials)
        gp.advance()
    a, b = gp.calibration
    assert abs(b - 2.0) < 0.1 and abs(a + 1.0) < 0.1, (a, b, rng.seed_for_message)


def test_only_the_last_window_steps_are_kept(rng):
    calibrated, *_ = drive(3, "exact", rng, steps=7)
    state = calibrated.state_dict()
    assert set(state["calibration_record_steps"].tolist()) == {4, 5, 6}
    assert state["calibration_records"].shape == (len(state["calibration_record_steps"]), 4)


def test_off_by_default():
    gp = vipfast.SuccessGP(2, noise="laplace")
    assert gp.config["calibration_window"] == 0
    x = np.eye(2)
    for _ in range(3):
        gp.predict([1, 2], x)
        gp.observe([1, 2], x, [0, 3], [3, 3])
        gp.advance()
    assert gp.calibration == (0.0, 1.0)
    assert gp.state_dict()["calibration_records"].shape == (0, 4)


def test_outcomes_that_never_succeed_keep_the_map_inside_its_bounds():
    """The priors on a and log b, not the clamps, keep the map finite when nothing ever succeeds."""
    gp = vipfast.SuccessGP(2, calibration_window=5)
    x = np.eye(2)
    for _ in range(10):
        gp.predict([1, 2], x)
        gp.observe([1, 2], x, [0, 0], [10**9, 10**9])
        gp.advance()
    a, b = gp.calibration
    assert abs(a) < 50 and abs(np.log(b)) < 5, (a, b)
    mean, var, proba, weight = gp.predict([1, 2, 3], np.eye(3)[:, :2] + [[0, 0], [0, 0], [1, 1]])
    assert np.all(np.isfinite(mean)) and np.all(proba < 1e-3) and np.all(weight <= 0.25)


def test_predictions_too_extreme_to_use_are_not_recorded():
    gp = vipfast.SuccessGP(2, calibration_window=5, prior_mean=1e300, signal_var=1e300)
    gp.observe([1], [[1.0, 0.0]], [1], [2])
    assert gp.state_dict()["calibration_records"].shape == (0, 4)
    assert gp.calibration == (0.0, 1.0)


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_state_round_trips_with_the_records(mode, rng):
    calibrated, _, _, workload = drive(4, mode, rng, steps=5)
    clone = vipfast.SuccessGP.from_state_dict(calibrated.state_dict())
    assert clone.calibration == calibrated.calibration and clone.config == calibrated.config
    for t in range(5, 8):  # and they stay identical as training goes on
        keys, x, _, trials, successes = workload.batch(t)
        assert_same_predictions(calibrated, clone, keys, x)
        for gp in (calibrated, clone):
            gp.observe(keys, x, successes, trials)
            gp.advance()
    assert clone.calibration == calibrated.calibration


@pytest.mark.parametrize("window, error, message", [
    (-1, ValueError, r"calibration_window must lie in \[0, 1000\], got -1"),
    (1001, ValueError, r"calibration_window must lie in \[0, 1000\], got 1001"),
    (True, TypeError, "calibration_window must be an integer, got bool"),
    (2.5, (TypeError, ValueError), "calibration_window"),
])
def test_bad_window_names_the_value(window, error, message):
    with pytest.raises(error, match=message):
        vipfast.SuccessGP(3, calibration_window=window)


@pytest.mark.parametrize("entry, value, message", [
    ("calibration_offset", np.nan, "calibration offset must be finite"),
    ("calibration_log_scale", 6.0, r"calibration log-scale must be finite with \|log_scale\| <= 5"),
    ("calibration_records", np.array([[0.0, 1.0, 3.0, 2.0]]), "calibration record 0 is invalid"),
    ("calibration_records", np.array([[0.0, -1.0, 1.0, 2.0]]), "calibration record 0 is invalid"),
    ("calibration_records", np.zeros((2, 4)), r"state\['calibration_records'\] has shape"),
    ("calibration_record_steps", np.array([99]), r"calibration_record_steps'\]\[0\] = 99 is after step 1"),
    ("calibration_window", -3, r"calibration_window must lie in \[0, 1000\], got -3"),
])
def test_corrupt_calibration_state_is_rejected_by_name(entry, value, message):
    gp = vipfast.SuccessGP(3, calibration_window=4)
    gp.observe([1], [[1.0, 0.0, 0.0]], [1], [2])
    gp.advance()
    state = gp.state_dict()
    assert state["calibration_records"].shape == (1, 4)
    with pytest.raises(ValueError, match=message):
        vipfast.SuccessGP.from_state_dict({**state, entry: value})


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_without_a_prediction_observe_scores_the_one_the_model_makes_now(mode, rng):
    """Passing the plan's prediction, or none when nothing changed since: the same map, bit for bit."""
    workload = Workload(num_keys=300, dim=16, clusters=6, batch=40, rollouts=6, seed=int(rng.integers(2**31)))
    planned, unplanned = (vipfast.SuccessGP(16, calibration_window=4, mode=mode, num_inducing=24) for _ in range(2))
    for t in range(6):
        keys, x, _, trials, successes = workload.batch(t)
        planned.observe(keys, x, successes, trials, prediction=planned.predict(keys, x))
        unplanned.observe(keys, x, successes, trials)
        for gp in (planned, unplanned):
            gp.advance()
        assert planned.calibration == unplanned.calibration


def test_a_prediction_passed_back_is_the_one_scored(rng):
    """The plan's prediction is scored even when the model moved on before its outcomes arrived
    (here by advance() and an observe of other rows): the map is the reference fit of exactly the
    predictions each observe was given or made."""
    workload = Workload(num_keys=200, dim=8, clusters=4, batch=30, rollouts=6, seed=int(rng.integers(2**31)))
    gp = vipfast.SuccessGP(8, calibration_window=5, noise="laplace", forgetting=1.0)
    records = []

    def scored(prediction, successes, trials):
        basis = prediction.basis
        return [(gp.step, m, v, k, n) for m, v, k, n in zip(basis.latent_mean, basis.latent_var, successes, trials)
                if n > 0]

    for t in range(4):
        keys, x, _, trials, successes = workload.batch(t)
        plan = gp.predict(keys, x)
        gp.advance()
        now = gp.predict(keys[:3], x[:3])  # what an observe without a prediction scores
        records += scored(now, successes[:3], trials[:3])
        gp.observe(keys[:3], x[:3], successes[:3], trials[:3])
        records += scored(plan, successes, trials)
        gp.observe(keys, x, successes, trials, prediction=plan)
    a, b = reference_map(records, step=gp.step, window=5)
    np.testing.assert_allclose(gp.calibration, (a, b), rtol=1e-6, atol=1e-6, err_msg=rng.seed_for_message)


def test_a_rejected_observe_changes_nothing(rng):
    gp = vipfast.SuccessGP(3, calibration_window=3, noise="laplace", mode="fast", num_inducing=4)
    x = rng.normal(size=(6, 3))
    for _ in range(2):
        gp.observe(np.arange(6), x, [0, 1, 2, 3, 0, 1], [3] * 6, prediction=gp.predict(np.arange(6), x))
        gp.advance()
    plan = gp.predict(np.arange(6), x)
    before = gp.state_dict()
    bad = x.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"embeddings\[4, 1\] is nan"):
        gp.observe(np.arange(6), bad, [0, 1, 2, 3, 0, 1], [3] * 6, prediction=plan)
    after = gp.state_dict()
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


def test_a_checkpoint_between_plan_and_observe_resumes_exactly(rng):
    """The plan's prediction is not in the checkpoint: the resumed model takes it back from the
    caller (the same map), or plans again (the same bits from then on)."""
    calibrated, _, _, workload = drive(4, "fast", rng, steps=4)
    keys, x, _, trials, successes = workload.batch(4)
    plan = calibrated.predict(keys, x)
    taken_back, planned_again = (vipfast.SuccessGP.from_state_dict(calibrated.state_dict()) for _ in range(2))
    calibrated.observe(keys, x, successes, trials, prediction=plan)
    taken_back.observe(keys, x, successes, trials, prediction=plan)
    planned_again.observe(keys, x, successes, trials, prediction=planned_again.predict(keys, x))
    assert taken_back.calibration == planned_again.calibration == calibrated.calibration
    later_keys, later_x, *_ = workload.batch(5)
    assert_same_predictions(calibrated, planned_again, later_keys, later_x)


def test_state_entries_that_do_not_belong_are_rejected():
    plain = vipfast.SuccessGP(3)
    plain.observe([1], [[1.0, 0.0, 0.0]], [1], [2])
    state = plain.state_dict()
    with pytest.raises(ValueError, match="a calibration map or records without a calibration window"):
        vipfast.SuccessGP.from_state_dict({**state, "calibration_offset": 0.5})
    with pytest.raises(ValueError, match=r"state\['calibration_\w+'\] belongs to format_version 2, not 1"):
        vipfast.SuccessGP.from_state_dict({**state, "format_version": 1})

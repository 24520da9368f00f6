"""SuccessGP's call contract: predict returns a value and changes nothing; observe takes that value
back (checked against its rows, reused only while valid); a failing observe leaves the model
exactly as before; the split-rows helper thread gives the same bits however it is shared."""

from __future__ import annotations

import multiprocessing
import pickle
import threading

import numpy as np
import pytest

import vipfast
from vipfast import _core
from gp_reference import Workload, assert_same_predictions


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def trained(steps=4, seed=3, **options):
    workload = Workload(num_keys=300, dim=16, clusters=6, batch=40, rollouts=6, seed=seed)
    gp = vipfast.SuccessGP(16, **options)
    for t in range(steps):
        keys, x, _, trials, successes = workload.batch(t)
        gp.observe(keys, x, successes, trials, prediction=gp.predict(keys, x))
        gp.advance()
    return gp, workload


# ---------------------------------------------------------------------------------------------
# predict: a value, no state
# ---------------------------------------------------------------------------------------------

def test_a_prediction_unpacks_as_four_arrays_and_carries_its_basis():
    gp, workload = trained(mode="fast", num_inducing=24)
    keys, x, *_ = workload.batch(10)
    prediction = gp.predict(keys, x)
    mean, var, proba, weight = prediction
    assert len(prediction) == 4 and isinstance(prediction, tuple)
    basis = prediction.basis
    np.testing.assert_array_equal(basis.keys, keys)
    np.testing.assert_array_equal(basis.latent_mean, mean)  # no recalibration: the same posterior
    np.testing.assert_array_equal(basis.latent_var, var)
    stored = set(gp.pseudo_observations()["keys"].tolist())
    # the fast engine computed features for exactly the rows it does not store (same embeddings here)
    np.testing.assert_array_equal(basis.feature_rows, [i for i, k in enumerate(keys.tolist()) if k not in stored])
    assert basis.features.shape == (len(basis.feature_rows), gp.num_inducing_used) and basis.inducing_id != 0
    with pytest.raises(ValueError, match="read-only"):
        basis.latent_mean[0] = 1.0
    exact, _ = trained(mode="exact")
    assert exact.predict(keys, x).basis.inducing_id == 0 and exact.predict(keys, x).basis.features.shape == (0, 0)


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_predict_changes_nothing_and_caches_nothing(mode):
    gp, workload = trained(mode=mode, num_inducing=24, calibration_window=3, noise="laplace")
    keys, x, *_ = workload.batch(10)
    x = x.astype(np.float64)
    before = gp.state_dict()
    first = gp.predict(keys, x)
    assert_same_state(before, gp.state_dict())
    for a, b in zip(first, gp.predict(keys, x)):
        np.testing.assert_array_equal(a, b)
    x[0] = -x[0]  # the same array, changed in place: predicted afresh, not served from a cache
    assert gp.predict(keys, x).mean[0] != first.mean[0]


def test_a_prediction_pickles_and_is_taken_back_after():
    gp, workload = trained(mode="fast", num_inducing=24, calibration_window=3)
    twin = pickle.loads(pickle.dumps(gp))
    keys, x, _, trials, successes = workload.batch(10)
    prediction = gp.predict(keys, x)
    copied = pickle.loads(pickle.dumps(prediction))
    for a, b in zip(prediction, copied):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(copied.basis.features, prediction.basis.features)
    gp.observe(keys, x, successes, trials, prediction=prediction)
    twin.observe(keys, x, successes, trials, prediction=copied)
    assert_same_state(gp.state_dict(), twin.state_dict())


# ---------------------------------------------------------------------------------------------
# observe(prediction=...): checked, and reused only while valid
# ---------------------------------------------------------------------------------------------

def test_a_prediction_of_other_rows_is_rejected_and_changes_nothing():
    gp, workload = trained(mode="fast", num_inducing=24)
    keys, x, _, trials, successes = workload.batch(10)
    prediction = gp.predict(keys, x)
    before = gp.state_dict()
    with pytest.raises(ValueError, match=f"prediction has {len(keys)} rows but observe got {len(keys) - 1}"):
        gp.observe(keys[1:], x[1:], successes[1:], trials[1:], prediction=prediction)
    swapped = keys.copy()
    swapped[[3, 4]] = swapped[[4, 3]]
    with pytest.raises(ValueError, match=rf"prediction.keys\[3\] = {keys[3]} but keys\[3\] = {keys[4]}: the prediction "
                                         "was made for other keys"):
        gp.observe(swapped, x, successes, trials, prediction=prediction)
    with pytest.raises(TypeError, match="prediction must be a GPPrediction returned by SuccessGP.predict, got tuple"):
        gp.observe(keys, x, successes, trials, prediction=tuple(prediction))
    with pytest.raises(TypeError, match="prediction must be a GPPrediction"):
        gp.observe(keys, x, successes, trials, prediction=vipfast.GPPrediction(*prediction))  # no basis
    assert_same_state(before, gp.state_dict())


def test_features_are_taken_from_the_prediction():
    """The fast engine stores the prediction's features for the keys it adds: altered ones show."""
    gp, workload = trained(mode="fast", num_inducing=24, steps=12)  # most of the 300 keys stored: no rebuild
    keys, x, _, trials, successes = workload.batch(12)
    prediction = gp.predict(keys, x)
    basis = prediction.basis
    assert len(basis.feature_rows) > 0
    state = list(basis.__getstate__())
    state[6] = (basis.features + 0.25).ravel()  # the features
    altered = vipfast.GPPrediction(*prediction, _core.PredictionBasis.__new__(_core.PredictionBasis))
    altered.basis.__setstate__(tuple(state))
    gp.observe(keys, x, successes, trials, prediction=altered)
    assert gp.predict(keys, x).basis.inducing_id == basis.inducing_id
    stored = gp.state_dict()
    slot = {k: i for i, k in enumerate(stored["keys"].tolist())}
    for row, features in zip(basis.feature_rows, basis.features):
        np.testing.assert_array_equal(stored["features"][slot[int(keys[row])]], features + 0.25)


@pytest.mark.parametrize("prediction_of", ["another_inducing_set", "other_embeddings"])
def test_features_of_another_inducing_set_or_embedding_are_not_reused(prediction_of):
    """A prediction made before a rebuild, or for other embeddings of the keys: observe computes the
    features itself, exactly as without a prediction."""
    workload = Workload(num_keys=300, dim=16, clusters=6, batch=40, rollouts=6, seed=5)
    batches = [workload.batch(t) for t in range(4)]
    gp, plain = (vipfast.SuccessGP(16, mode="fast", num_inducing=24) for _ in range(2))
    for model in (gp, plain):
        model.observe(*batches[0][:2], batches[0][4], batches[0][3])  # 40 keys: settled inducing points
    keys, x, _, trials, successes = (a[:20] for a in batches[1])
    stale = gp.predict(keys, x if prediction_of == "another_inducing_set" else -x)
    if prediction_of == "another_inducing_set":
        for model in (gp, plain):  # the store doubles: a rebuild
            for batch in batches[2:]:
                model.observe(*batch[:2], batch[4], batch[3])
    gp.observe(keys, x, successes, trials, prediction=stale)
    plain.observe(keys, x, successes, trials)
    assert_same_state(gp.state_dict(), plain.state_dict())
    changed = gp.predict(keys, x).basis.inducing_id != stale.basis.inducing_id
    assert changed == (prediction_of == "another_inducing_set")


# ---------------------------------------------------------------------------------------------
# a failing observe changes nothing
# ---------------------------------------------------------------------------------------------

SETTINGS = {
    "exact-laplace-calibrated": dict(mode="exact", noise="laplace", calibration_window=3, capacity=60),
    "fast-laplace-calibrated": dict(mode="fast", noise="laplace", calibration_window=3, capacity=60, num_inducing=16),
    "fast-binomial": dict(mode="fast", capacity=60, num_inducing=16),
    "fast-first-build": dict(mode="fast", num_inducing=16),
    "auto-switching": dict(mode="auto", auto_exact_max=90, num_inducing=16),
}


@pytest.mark.parametrize("stage", ["relinearised", "stored", "engine_updated"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_a_failing_observe_leaves_the_model_exactly_as_before(setting, stage):
    """A numerical failure (RuntimeError) injected after each stage: the state, the next predictions
    and the retried observe are those of a twin that never failed. Evictions, re-linearised sites,
    an engine's first build and the auto switch happen in the failing observe."""
    steps = 0 if setting == "fast-first-build" else 2
    gp, workload = trained(steps=steps, **SETTINGS[setting])
    twin, _ = trained(steps=steps, **SETTINGS[setting])
    keys, x, _, trials, successes = workload.batch(steps)
    if setting == "auto-switching":
        assert gp.active_mode == "exact" and gp.num_stored + len(set(keys.tolist())) > 90
    before = gp.state_dict()
    prediction = gp.predict(keys, x)
    gp._gp._inject_failure_after(stage)
    with pytest.raises(RuntimeError, match=r"injected failure \(a test of observe's rollback\)"):
        gp.observe(keys, x, successes, trials, prediction=prediction)
    assert_same_state(before, gp.state_dict())
    assert gp.active_mode == twin.active_mode and gp.num_inducing_used == twin.num_inducing_used
    assert_same_predictions(gp, twin, keys, x)
    for model in (gp, twin):
        model.observe(keys, x, successes, trials, prediction=model.predict(keys, x))
        model.advance()
    assert_same_state(gp.state_dict(), twin.state_dict())
    later_keys, later_x, *_ = workload.batch(steps + 1)
    assert_same_predictions(gp, twin, later_keys, later_x)


def test_an_unknown_failure_stage_is_refused():
    with pytest.raises(ValueError, match="stage must be"):
        vipfast.SuccessGP(2)._gp._inject_failure_after("later")


# ---------------------------------------------------------------------------------------------
# the split-rows helper thread
# ---------------------------------------------------------------------------------------------

def big_batch():
    """Models whose predictions split their rows across two threads (at least 128 rows)."""
    gp, workload = trained(mode="exact", capacity=300, steps=6)
    keys, x, *_ = workload.batch(20)
    return gp, np.concatenate([keys, keys + 1, keys + 2, keys + 3]), np.concatenate([x, x, x, x])


def test_models_sharing_the_helper_thread_get_the_same_bits():
    """While one model's rows are on the helper thread, another's run inline: same results."""
    gp, keys, x = big_batch()
    twin = pickle.loads(pickle.dumps(gp))
    expected = gp.predict(keys, x)
    results = {0: [], 1: []}

    def work(model, slot):
        for _ in range(20):
            results[slot].append(model.predict(keys, x))

    threads = [threading.Thread(target=work, args=(model, slot)) for slot, model in enumerate((gp, twin))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for prediction in results[0] + results[1]:
        for a, b in zip(prediction, expected):
            np.testing.assert_array_equal(a, b)


def predict_in_child(gp, keys, x, queue):
    queue.put(np.stack(gp.predict(keys, x)))


def test_a_forked_child_starts_its_own_helper_thread():
    gp, keys, x = big_batch()
    expected = np.stack(gp.predict(keys, x))  # the parent's helper thread is running now
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=predict_in_child, args=(gp, keys, x, queue))
    child.start()
    result = queue.get(timeout=120)
    child.join(timeout=120)
    assert child.exitcode == 0
    np.testing.assert_array_equal(result, expected)

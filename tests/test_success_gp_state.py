"""SuccessGP state: bitwise round trips (dict, npz scalars, pickle, deepcopy; a property test over
random configurations and long runs with evictions), the option table behind constructor, config
and state, states of format versions 1 and 2, and corrupt states named."""

from __future__ import annotations

import copy
import inspect
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vipfast
from vipfast import _core
from gp_reference import Workload, assert_same_predictions

LEGACY_STATES = Path(__file__).parent / "data" / "success_gp_legacy_states.npz"


def run(models, workload, steps, start=0):
    """Feeds `steps` batches of the workload to every model: predict, observe with it, advance."""
    for t in range(start, start + steps):
        keys, x, _, trials, successes = workload.batch(t)
        for model in models:
            model.observe(keys, x, successes, trials, prediction=model.predict(keys, x))
            model.advance()


@pytest.mark.parametrize("noise", ["binomial", "laplace"])
@pytest.mark.parametrize("mode", ["exact", "fast", "auto"])
def test_state_round_trips_bitwise(mode, noise):
    workload = Workload(num_keys=400, dim=24, clusters=8, batch=50, rollouts=8, seed=3)
    gp = vipfast.SuccessGP(24, mode=mode, num_inducing=32, capacity=300, auto_exact_max=120, noise=noise)
    run([gp], workload, steps=4)
    keys, x, *_ = workload.batch(4)
    state = gp.state_dict()
    assert state["format_version"] == vipfast.success_gp.STATE_FORMAT_VERSION == 3
    assert all(isinstance(v, (int, float, str, np.ndarray)) for v in state.values())
    assert not any(name.startswith("cache") for name in state)  # a prediction is not state
    clones = [vipfast.SuccessGP.from_state_dict(state), pickle.loads(pickle.dumps(gp)), copy.deepcopy(gp)]
    for clone in clones:
        assert_same_predictions(gp, clone, keys, x)
    # ... and stay identical as training continues.
    run([gp, *clones], workload, steps=3, start=4)
    later_keys, later_x, *_ = workload.batch(9)
    for clone in clones:
        assert_same_predictions(gp, clone, later_keys, later_x)
        assert clone.config == gp.config and clone.step == gp.step == 7


def test_state_survives_a_round_trip_through_numpy_scalars():
    """As an .npz checkpoint stores it: every value a numpy array, scalars 0-d."""
    gp = vipfast.SuccessGP(3, mode="fast", num_inducing=4)
    gp.observe([1, 2, 3], np.eye(3), [1, 2, 3], [3, 3, 3])
    arrays = {k: np.asarray(v) for k, v in gp.state_dict().items()}
    clone = vipfast.SuccessGP.from_state_dict({k: v.item() if v.ndim == 0 else v for k, v in arrays.items()})
    assert_same_predictions(gp, clone, [1, 9], np.eye(3)[:2])


# ---------------------------------------------------------------------------------------------
# one option table: constructor keywords, config, state entries
# ---------------------------------------------------------------------------------------------

NON_DEFAULT = dict(lengthscale=0.5, signal_var=2.0, prior_mean=-1.0, forgetting=0.9, capacity=77, mode="fast",
                   noise="fixed", jitter=0.01, clip=0.05, proba="plugin", num_inducing=9, auto_exact_max=5,
                   calibration_window=4)


def test_one_option_table_drives_constructor_config_and_state():
    options = list(_core.SuccessGPConfig.option_kinds())
    assert list(inspect.signature(vipfast.SuccessGP.__init__).parameters)[1:] == options
    assert set(NON_DEFAULT) == set(options) - {"dim"}
    gp = vipfast.SuccessGP(5, **NON_DEFAULT)
    assert gp.config == dict(dim=5, **NON_DEFAULT)
    assert list(gp.config) == options
    state = gp.state_dict()
    for name, value in gp.config.items():
        assert state[name] == value, name
    assert vipfast.SuccessGP.from_state_dict(state).config == gp.config


def test_options_left_to_the_model_are_absent_from_the_state():
    gp = vipfast.SuccessGP(5)
    assert gp.config["lengthscale"] is None and gp.config["prior_mean"] is None
    state = gp.state_dict()
    assert "lengthscale" not in state and "prior_mean" not in state
    assert vipfast.SuccessGP.from_state_dict(state).config == gp.config


def test_the_native_config_checks_types_and_values():
    config = _core.SuccessGPConfig()
    with pytest.raises(TypeError, match="capacity must be an int"):
        config.capacity = 2.5
    with pytest.raises(TypeError, match="mode must be a str"):
        config.mode = 1
    with pytest.raises(ValueError, match="mode must be one of 'exact', 'fast', 'auto'; got 'x'"):
        config.mode = "x"
    config.lengthscale = None
    assert config.lengthscale is None
    with pytest.raises(ValueError, match="dim must be >= 1, got 0"):
        _core.SuccessGP(config)  # values are checked when a model is built


# ---------------------------------------------------------------------------------------------
# every state state_dict() writes loads: a property test
# ---------------------------------------------------------------------------------------------

@st.composite
def configurations(draw):
    noise = draw(st.sampled_from(["binomial", "fixed", "laplace"]))
    return dict(
        mode=draw(st.sampled_from(["exact", "fast", "auto"])),
        noise=noise,
        jitter=draw(st.sampled_from([1e-4, 1e-2])) if noise == "fixed" else draw(st.sampled_from([0.0, 0.1])),
        lengthscale=draw(st.sampled_from([None, 0.02, 0.05, 0.1, 0.3, 1.0])),
        prior_mean=draw(st.sampled_from([None, -2.0])),
        signal_var=draw(st.sampled_from([1.0, 16.0])),
        forgetting=draw(st.sampled_from([1.0, 0.9, 0.5])),
        capacity=draw(st.integers(3, 40)),
        num_inducing=draw(st.integers(1, 12)),
        auto_exact_max=draw(st.sampled_from([0, 5, 20])),
        calibration_window=draw(st.sampled_from([0, 1, 3])),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configurations(), seed=st.integers(0, 2**32 - 1), dim=st.integers(2, 6))
def test_every_saved_state_loads_and_predicts_the_same_bits(config, seed, dim):
    """Long runs with evictions; at several points the model is saved and loaded, and the clone must
    predict the same bits now and after further identical observes (version 2 could write states
    it could not load: a fast engine, lengthscale <= 0.1 and evictions)."""
    rng = np.random.default_rng(seed)
    pool = 3 * config["capacity"] + 5
    keys = rng.permutation(np.iinfo(np.uint64).max - np.arange(pool, dtype=np.uint64))
    x = rng.normal(size=(pool, dim))
    rates = rng.uniform(0.0, 1.0, size=pool)
    gp, clone = vipfast.SuccessGP(dim, **config), None

    def step(models):
        index = rng.integers(pool, size=int(rng.integers(1, 16)))
        trials = rng.integers(0, 7, size=len(index))
        successes = rng.binomial(trials, rates[index])
        outputs = []
        for model in models:
            prediction = model.predict(keys[index], x[index])
            model.observe(keys[index], x[index], successes, trials, prediction=prediction)
            model.advance(1)
            outputs.append(prediction)
        for other in outputs[1:]:
            for a, b in zip(outputs[0], other):
                np.testing.assert_array_equal(a, b)

    for t in range(60):
        step([gp] if clone is None else [gp, clone])
        if t % 20 == 19:
            clone = vipfast.SuccessGP.from_state_dict(gp.state_dict())
            assert_same_predictions(gp, clone, keys[:9], x[:9])
    assert_same_predictions(gp, clone, keys[-9:], x[-9:])


def test_fast_sums_stay_loadable_with_a_small_lengthscale(rng):
    """With lengthscale 0.1 the features are nearly one-hot: removing an evicted key's site can take
    a diagonal entry of S, whose exact value is 0, a rounding error below it."""
    gp = vipfast.SuccessGP(8, mode="fast", lengthscale=0.1, capacity=30, num_inducing=16)
    x = rng.normal(size=(200, 8))
    for _ in range(40):
        index = rng.choice(200, 20, replace=False)
        trials = rng.integers(1, 9, 20)
        gp.observe(index, x[index], rng.binomial(trials, 0.3), trials)
        gp.advance()
    state = gp.state_dict()
    assert np.diag(state["information"]).min() >= 0.0, rng.seed_for_message
    assert_same_predictions(gp, vipfast.SuccessGP.from_state_dict(state), np.arange(20), x[:20])


# ---------------------------------------------------------------------------------------------
# states of format versions 1 and 2 (written by vipfast 0.1.0 before version 3)
# ---------------------------------------------------------------------------------------------

def legacy(case):
    with np.load(LEGACY_STATES) as data:
        arrays = {name.removeprefix(case + "/"): data[name] for name in data.files if name.startswith(case + "/")}
    state = {name.removeprefix("state/"): value.item() if value.ndim == 0 else value
             for name, value in arrays.items() if name.startswith("state/")}
    return state, arrays


@pytest.mark.parametrize("case", ["fast_laplace_calibrated", "exact_fixed", "auto_binomial", "v1_fast_binomial",
                                  "v1_exact_laplace"])
def test_states_of_versions_1_and_2_load(case):
    """They predict what the version that wrote them predicted, before and after one more step; their
    prediction cache is dropped; saved again they are version 3 and round-trip bitwise."""
    state, data = legacy(case)
    assert state["format_version"] == (1 if case.startswith("v1") else 2)
    assert "cache_keys" in state
    gp = vipfast.SuccessGP.from_state_dict(state)
    if case.startswith("v1"):
        assert gp.config["calibration_window"] == 0
    keys, x = data["query_keys"], data["query_embeddings"]
    np.testing.assert_allclose(np.stack(gp.predict(keys, x)), data["predicted"], rtol=1e-12, atol=1e-15)
    gp.observe(data["next_keys"], data["next_embeddings"], data["next_successes"], data["next_trials"])
    gp.advance()
    np.testing.assert_allclose(np.stack(gp.predict(keys, x)), data["predicted_next"], rtol=1e-12, atol=1e-15)
    resaved = gp.state_dict()
    assert resaved["format_version"] == 3 and not any(name.startswith("cache") for name in resaved)
    assert_same_predictions(gp, vipfast.SuccessGP.from_state_dict(resaved), keys, x)


def test_a_version_2_state_with_a_rounding_error_below_zero_is_repaired():
    """Version 2 saved such states but refused to load them; their sums are summed again from the
    features. In a version 3 state a negative diagonal entry is corruption, and refused."""
    state, _ = legacy("v2_fast_negative_diagonal")
    assert np.diag(state["information"]).min() < 0
    gp = vipfast.SuccessGP.from_state_dict(state)
    resaved = gp.state_dict()
    assert np.diag(resaved["information"]).min() >= 0
    np.testing.assert_allclose(resaved["information"], state["information"], atol=1e-9)
    corrupt = resaved["information"].copy()
    corrupt[0, 0] = -1e-12
    with pytest.raises(ValueError, match=r"state\['information'\] has a negative diagonal entry at 0"):
        vipfast.SuccessGP.from_state_dict({**resaved, "information": corrupt})


# ---------------------------------------------------------------------------------------------
# corrupt states: ValueError naming the entry
# ---------------------------------------------------------------------------------------------

def test_state_linearisation_points_are_checked():
    gp = vipfast.SuccessGP(3, noise="laplace")
    gp.observe([1, 2], np.eye(3)[:2], [1, 0], [2, 2])
    state = gp.state_dict()
    with pytest.raises(ValueError, match=r"state\['linearisation'\] holds a non-finite value nan at flat index 1"):
        vipfast.SuccessGP.from_state_dict({**state, "linearisation": np.array([0.0, np.nan])})
    with pytest.raises(ValueError, match="state is missing 'linearisation'"):
        vipfast.SuccessGP.from_state_dict({k: v for k, v in state.items() if k != "linearisation"})
    binomial = vipfast.SuccessGP(3)
    binomial.observe([1, 2], np.eye(3)[:2], [1, 0], [2, 2])
    with pytest.raises(ValueError, match=r"state\['linearisation'\] belongs to noise='laplace' only"):
        vipfast.SuccessGP.from_state_dict({**binomial.state_dict(), "linearisation": state["linearisation"]})


def test_state_rejects_a_foreign_format_clearly():
    gp = vipfast.SuccessGP(3, mode="fast")
    gp.observe([1], [[1, 0, 0]], [1], [2])
    state = gp.state_dict()
    with pytest.raises(ValueError, match=r"format_version 99 is not supported: vipfast .* reads SuccessGP state format_versions 1 to 3"):
        vipfast.SuccessGP.from_state_dict({**state, "format_version": 99})
    with pytest.raises(ValueError, match="no 'format_version'"):
        vipfast.SuccessGP.from_state_dict({k: v for k, v in state.items() if k != "format_version"})
    with pytest.raises(ValueError, match="unknown entry 'extra'"):
        vipfast.SuccessGP.from_state_dict({**state, "extra": 1})
    with pytest.raises(ValueError, match="unknown entry 'cache_keys'"):  # version 3 has no prediction cache
        vipfast.SuccessGP.from_state_dict({**state, "cache_keys": np.zeros(0, np.uint64)})
    with pytest.raises(ValueError, match=r"state\['embeddings'\] has shape \(1,4,\) but \(1,3,\) is expected"):
        vipfast.SuccessGP.from_state_dict({**state, "embeddings": np.zeros((1, 4))})
    with pytest.raises(ValueError, match=r"state\['num_inducing_used'\] = 999 is outside \[0, num_inducing\]"):
        vipfast.SuccessGP.from_state_dict({**state, "num_inducing_used": 999})
    with pytest.raises(ValueError, match="state is missing 'trials'"):
        vipfast.SuccessGP.from_state_dict({k: v for k, v in state.items() if k != "trials"})
    with pytest.raises(ValueError, match="state is missing 'mode'"):
        vipfast.SuccessGP.from_state_dict({k: v for k, v in state.items() if k != "mode"})
    with pytest.raises(ValueError, match="state\\['capacity'\\] must be an int, got a float"):
        vipfast.SuccessGP.from_state_dict({**state, "capacity": 3.0})
    with pytest.raises(TypeError, match="mapping"):
        vipfast.SuccessGP.from_state_dict([1, 2])

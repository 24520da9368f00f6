"""The native key index and the per-prompt table built on it, against a dict reference."""

from __future__ import annotations

import numpy as np
import pytest

from vipfast import _core
from vipfast.allocators.prompt_table import PromptTable


def test_key_index_matches_a_dict(rng):
    index, reference = _core.KeyIndex(), {}
    for _ in range(50):
        keys = rng.integers(0, 2**64 - 1, size=int(rng.integers(0, 200)), dtype=np.uint64, endpoint=True)
        keys[: len(keys) // 3] = rng.choice(np.array(list(reference) or [7], dtype=np.uint64), len(keys) // 3)
        probe = np.r_[keys, rng.integers(0, 2**64 - 1, 20, dtype=np.uint64)]
        expected_found = [reference.get(int(k), -1) for k in probe]
        np.testing.assert_array_equal(index.find(probe), expected_found, err_msg=rng.seed_for_message)
        for k in keys.tolist():
            reference.setdefault(k, len(reference))
        np.testing.assert_array_equal(index.insert(keys), [reference[k] for k in keys.tolist()])
    assert len(index) == len(reference)
    np.testing.assert_array_equal(index.keys(), np.array(list(reference), dtype=np.uint64))


def test_key_index_edge_keys_and_repeats():
    extremes = np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)
    index = _core.KeyIndex(extremes)
    np.testing.assert_array_equal(index.find(extremes), [0, 1, 2, 3])
    np.testing.assert_array_equal(index.find(np.zeros(0, np.uint64)), [])
    with pytest.raises(ValueError, match=r"keys\[2\] = 5 repeats keys\[0\]"):
        _core.KeyIndex(np.array([5, 6, 5], dtype=np.uint64))
    with pytest.raises(ValueError, match="must be 1-D"):
        index.find(np.zeros((2, 2), np.uint64))


def test_a_million_prompts_fit_in_well_under_100_mb():
    table = PromptTable({"successes": 0.0, "trials": 0.0}, capacity=1 << 21, dtype=np.float32)
    keys = np.arange(1_000_000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    for start in range(0, len(keys), 100_000):
        table.insert(keys[start:start + 100_000])
    assert len(table) == 1_000_000
    assert table.memory_bytes < 64 * 2**20, table.memory_bytes


def test_table_reads_defaults_for_absent_prompts_and_evicts_the_least_recent(rng):
    table = PromptTable({"value": -1.0}, capacity=64)
    first = np.arange(40, dtype=np.uint64)
    table.write("value", table.insert(first), np.arange(40.0))
    np.testing.assert_array_equal(table.read("value", np.array([3, 99], dtype=np.uint64)), [3.0, -1.0])
    table.insert(first[:10])  # touch the first ten again
    second = np.arange(100, 140, dtype=np.uint64)
    table.write("value", table.insert(second), 1.0)
    assert len(table) <= 64
    assert (table.rows(first[:10]) >= 0).all() and (table.rows(second) >= 0).all()
    assert (table.rows(first[10:]) < 0).any()
    np.testing.assert_array_equal(table.read("value", first[:10]), np.arange(10.0))
    with pytest.raises(ValueError, match="does not fit a table of capacity 64"):
        table.insert(np.arange(1000, 1100, dtype=np.uint64))


def test_table_state_round_trips(rng):
    table = PromptTable({"a": 0.0, "b": 1.0}, capacity=100)
    keys = rng.integers(0, 2**63, 80, dtype=np.uint64)
    rows = table.insert(keys)
    table.write("a", rows, rng.normal(size=80))
    restored = PromptTable({"a": 0.0, "b": 1.0}, capacity=100)
    restored.load_state_arrays(table.state_arrays())
    for name in ("a", "b"):
        np.testing.assert_array_equal(restored.read(name, keys), table.read(name, keys))
    more = rng.integers(0, 2**63, 60, dtype=np.uint64)
    table.insert(more), restored.insert(more)
    np.testing.assert_array_equal(restored.keys(), table.keys())
    broken = table.state_arrays()
    broken["column/a"] = broken["column/a"][:-1]
    with pytest.raises(ValueError, match="column/a"):
        restored.load_state_arrays(broken)


def test_a_state_saved_before_a_column_existed_loads_it_as_its_default(rng):
    old = PromptTable({"a": 0.0}, capacity=100)
    keys = rng.integers(0, 2**63, 30, dtype=np.uint64)
    old.write("a", old.insert(keys), rng.normal(size=30))
    grown = PromptTable({"a": 0.0, "b": np.nan}, capacity=100, optional=("b",))
    grown.load_state_arrays(old.state_arrays())
    np.testing.assert_array_equal(grown.read("a", keys), old.read("a", keys))
    assert np.isnan(grown.read("b", keys)).all()
    foreign = dict(old.state_arrays(), **{"column/c": np.zeros(30)})
    with pytest.raises(ValueError, match="nothing else"):
        grown.load_state_arrays(foreign)
    for missing in ("touched", "column/a"):  # only optional columns may be missing
        with pytest.raises(ValueError, match=f"must hold.*'{missing}'"):
            grown.load_state_arrays({k: v for k, v in old.state_arrays().items() if k != missing})


def test_a_loaded_state_respects_the_tables_bounds(rng):
    step = [3]
    table = PromptTable({"successes": 0.0, "trials": 0.0, "step": 0.0, "extra": np.nan}, capacity=100,
                        dtype=np.float32, bounds={"successes": (0.0, "trials"), "step": (0.0, lambda: step[0])},
                        whole=("step",), name="counts")
    keys = rng.integers(0, 2**63, 5, dtype=np.uint64)
    rows = table.insert(keys)
    table.write("trials", rows, [4, 4, 2, 1, 0])
    table.write("successes", rows, [4, 1.5, 0, 1, 0])
    table.write("step", rows, [0, 1, 3, 3, 2])
    good = table.state_arrays()  # "extra" stays NaN: the default of a column that may be unset
    restored = PromptTable(table.defaults, capacity=100, dtype=np.float32, bounds=table.bounds, whole=table.whole,
                           name="counts")
    restored.load_state_arrays(good)
    np.testing.assert_array_equal(restored.read("successes", keys), table.read("successes", keys))
    cases = {
        "column/successes": ([4, 1.5, 0, 1.5, 0],
                             r"counts/column/successes\[3\] = 1.5 is above counts/column/trials\[3\] = 1.0"),
        "column/trials": ([4, 4, 2, np.inf, 0], r"counts/column/trials\[3\] = inf is not a finite float32 value"),
        "column/step": ([0, 1, 4, 3, 2], r"counts/column/step\[2\] = 4.0 is above 3"),
        "column/extra": ([0, 1e39, np.nan, 0, 0], r"counts/column/extra\[1\] = 1e\+39 is not a finite float32 value"),
        "touched": ([1, 1, 1, 1, 7], r"counts/touched\[4\] = 7.0 is above 1"),
        "clock": (-1, "counts/clock must be a whole number >= 0, got -1"),
    }
    for entry, (values, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            restored.load_state_arrays(dict(good, **{entry: np.array(values)}))
    with pytest.raises(ValueError, match="counts/column/trials must hold real numbers"):
        restored.load_state_arrays(dict(good, **{"column/trials": np.array(["4"] * 5)}))
    step[0] = 1  # bounds read when a state loads
    with pytest.raises(ValueError, match=r"counts/column/step\[2\] = 3.0 is above 1"):
        restored.load_state_arrays(good)

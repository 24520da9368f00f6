"""The prompt source both adapters hand vipfast's sampling modes: the refill order and the step's source."""

import numpy as np
import pytest

from vipfast.integrations._source import RefillOrder, StepSource


def test_refill_order_walks_each_epoch_as_a_seeded_permutation(rng):
    size = int(rng.integers(1, 40))
    seed = int(rng.integers(0, 2**31))
    order = RefillOrder(size, seed=seed)
    taken = np.concatenate([order.take(int(rng.integers(0, 2 * size + 1))) for _ in range(12)])
    taken = np.concatenate([taken, order.take(max(0, 3 * size - len(taken)))])  # at least three epochs
    epochs = taken[: 3 * size].reshape(3, size)
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(size))
    np.testing.assert_array_equal(epochs[0], np.random.default_rng([seed, 0]).permutation(size))
    np.testing.assert_array_equal(RefillOrder(size, seed=seed).take(3 * size), taken[: 3 * size])
    np.testing.assert_array_equal(RefillOrder(size, shuffle=False).take(2 * size), np.tile(np.arange(size), 2))
    assert order.take(0).dtype == np.int64 and len(order.take(0)) == 0


def test_refill_order_resumes_from_its_state(rng):
    order = RefillOrder(17, seed=4)
    order.take(int(rng.integers(0, 60)))
    state = order.state_dict()
    resumed = RefillOrder(17, seed=4)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.take(40), order.take(40))


def test_refill_order_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one row, got size 0"):
        RefillOrder(0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        RefillOrder(3, seed=-1)
    with pytest.raises(ValueError, match="count must be an integer >= 0, got True"):
        RefillOrder(3).take(True)
    with pytest.raises(ValueError, match="count must be an integer >= 0, got 2.0"):
        RefillOrder(3).take(2.0)
    with pytest.raises(ValueError, match="the dataset or seed changed"):
        RefillOrder(3).load_state_dict(RefillOrder(4).state_dict())
    state = RefillOrder(3).state_dict()
    with pytest.raises(ValueError, match="0 <= position < 3"):
        RefillOrder(3).load_state_dict({**state, "position": 3})


def test_step_source_gives_its_own_prompts_then_refills():
    asked = []

    def refill(count):
        asked.append(count)
        start = 10 * len(asked)
        return [f"refill {start + i}" for i in range(count + 1)], np.arange(start, start + count + 1)  # one spare

    source = StepSource(["a", "b", "c"], [1, 2, 3], refill=refill)
    first = source.draw(2)
    assert first.ids.tolist() == [0, 1] and first.keys.tolist() == [1, 2] and first.texts == ("a", "b")
    second = source.draw(3)  # "c", then 2 from the refill (which gives 3: one kept for later)
    assert asked == [2] and second.ids.tolist() == [2, 3, 4] and second.texts == ("c", "refill 10", "refill 11")
    third = source.draw(1)  # the spare, no refill call
    assert asked == [2] and third.texts == ("refill 12",) and len(source) == 6


def test_step_source_stops_when_the_refill_runs_dry():
    source = StepSource(None, [5, 6], refill=lambda count: None)
    assert source.draw(4).keys.tolist() == [5, 6]
    assert len(source.draw(4)) == 0 and source.refill is None


def test_step_source_rejects_bad_identities():
    with pytest.raises(ValueError, match="is negative"):
        StepSource(None, [1, -2])
    with pytest.raises(ValueError, match="2 prompt texts but 3 keys"):
        StepSource(["a", "b"], [1, 2, 3])
    with pytest.raises(ValueError, match="identified like the step's own"):
        StepSource(["a"], [1], refill=lambda count: (None, [2])).draw(2)
    with pytest.raises(ValueError, match="1 prompt texts for 2 keys"):
        StepSource(["a"], [1], refill=lambda count: (["b"], [2, 3])).draw(3)

"""Independent float64 references for the group advantages, written from the definitions, group by group.

Used by tests/test_advantages.py and tests/fuzz/fuzz_advantages.py. For a group of n rewards
with mean m and Bessel-corrected std s: grpo A = (r - m) / (s + eps), drgrpo A = r - m,
rloo A = n / (n - 1) (r - m); a group of one rollout (and an all-equal group) gets 0.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np


def reference_group(group: np.ndarray, estimator: str, eps: float = 1e-6) -> np.ndarray:
    """Advantages of one group in float64. Each group is divided by its largest |r| first, so
    float64 rewards up to the largest finite double neither overflow the squares nor the mean."""
    n = group.size
    out = np.zeros(n)
    if n < 2 or np.all(group == group[0]):
        return out
    unit = np.abs(group).max()
    y = group / unit
    centred = y - y.mean()
    if estimator == "grpo":
        return centred / (y.std(ddof=1) + eps / unit)
    with np.errstate(over="ignore"):  # float64 rewards near the limit: |A| itself may not fit
        if estimator == "drgrpo":
            return centred * unit
        return centred * (n / (n - 1)) * unit


def reference_group_advantages(rewards, sizes, estimator: str, eps: float = 1e-6) -> np.ndarray:
    return expected_advantages(rewards, positions_of_sizes(sizes), estimator, eps)[0]


def reference_groups_of(ids) -> list[list[int]]:
    """Positions of each distinct id (dict equality: 1 == 1.0 == True), groups in order of first appearance."""
    groups: dict = defaultdict(list)
    for i, key in enumerate(ids):
        groups[key].append(i)
    return list(groups.values())


def positions_of_sizes(sizes) -> list[np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))])
    return [np.arange(a, b) for a, b in zip(offsets[:-1], offsets[1:])]


def roundoff_tolerance(rewards, sizes, estimator: str, expected, roundoff: float, eps: float = 1e-6,
                       groups=None) -> np.ndarray:
    """Per-element bound for an implementation computing in unit roundoff `roundoff` and storing float32.

    The centred reward r - mean carries an absolute error of a few roundoffs of the group's
    largest |r| (M); grpo's std carries the same relative error, which scales A. So
    |error| <= 16 u M scale (1 + |A|) + 2^-23 |A|, with scale = 1/(std+eps), 1 or n/(n-1); the last term is
    the float32 rounding of the result and of the reference.
    Groups are contiguous of the given sizes, or `groups` lists each group's positions.
    """
    r = np.asarray(rewards, dtype=np.float64)
    bound = np.zeros_like(r)
    for positions in positions_of_sizes(sizes) if groups is None else groups:
        n = len(positions)
        group = r[positions]
        if n >= 2 and np.all(np.isfinite(group)) and not np.all(group == group[0]):  # all-equal: exactly 0
            unit = max(np.abs(group).max(), np.finfo(np.float64).tiny)
            y = group / unit
            scale = {"grpo": 1 / (y.std(ddof=1) + eps / unit), "drgrpo": unit, "rloo": unit * n / (n - 1)}[estimator]
            bound[positions] = 16 * roundoff * scale
    expected = np.abs(expected)
    with np.errstate(over="ignore", invalid="ignore"):
        return bound * (1 + expected) + 2.0**-23 * expected + 1e-300  # 2^-23 |A|: one float32 ulp


def seen_by_vipfast(container) -> np.ndarray:
    """Rewards as vipfast computes with them, in float64: the container's values as numpy reads them (a
    list holding an int beyond int64 reads as float64), then bools and integers of up to 16 bits as
    float32, wider integers as float64."""
    values = np.asarray(container)
    if values.dtype.kind != "f":
        values = values.astype(np.float32 if values.dtype.itemsize <= 2 else np.float64)
    return values.astype(np.float64)


def group_positions(form: str, grouping, num_rollouts: int, check: bool):
    """Each group's positions, or None when the grouping is one vipfast must refuse.

    form "sizes": sizes >= 0 (>= 1 with check) adding up to N; "offsets": from 0 to N, never
    decreasing (strictly increasing with check); "index": one id per rollout, no NaN id.
    """
    if form == "index":
        # tolist(): a tensor's elements are 0-d tensors, which hash by identity, not by value
        ids = grouping.tolist() if hasattr(grouping, "tolist") else list(grouping)
        if len(ids) != num_rollouts or any(key != key for key in ids):  # NaN is the id unequal to itself
            return None
        return [np.asarray(p, dtype=np.int64) for p in reference_groups_of(ids)]
    values = [int(v) for v in grouping]
    if form == "sizes":
        if any(v < 0 or (v == 0 and check) for v in values) or sum(values) != num_rollouts:
            return None
        offsets = [0, *itertools.accumulate(values)]
    else:
        offsets = values
        if not offsets or offsets[0] != 0 or offsets[-1] != num_rollouts:
            return None
        if any(b < a or (b == a and check) for a, b in zip(offsets, offsets[1:])):
            return None
    return [np.arange(a, b) for a, b in zip(offsets, offsets[1:])]


def expected_advantages(rewards, groups, estimator: str, eps: float):
    """(A [N] float64, spoiled [N] bool): spoiled rollouts share a group with a NaN or inf reward
    (with check=False their advantages must come out non-finite, whatever the value)."""
    r = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(r)
    spoiled = np.zeros(r.size, dtype=bool)
    for positions in groups:
        group = r[positions]
        if np.all(np.isfinite(group)):
            out[positions] = reference_group(group, estimator, eps)
        else:
            spoiled[positions] = True
    return out, spoiled


def assert_advantages(got, seen, groups, estimator: str, eps: float, roundoff: float, check: bool) -> None:
    """got [N] against the reference for the rewards as the implementation saw them: within roundoff
    where a group's rewards are finite, non-finite where they are not (only possible with check=False)."""
    expected, spoiled = expected_advantages(seen, groups, estimator, eps)
    assert not (check and spoiled.any()), "a NaN or inf reward got through check=True"
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == seen.shape, (got.shape, seen.shape)
    assert not np.isfinite(got[spoiled]).any(), "check=False: a group with a NaN or inf reward has finite advantages"
    expected = float32_result(expected)
    tolerance = roundoff_tolerance(seen, None, estimator, expected, roundoff, eps, groups=groups)
    with np.errstate(invalid="ignore"):
        bad = ~spoiled & ~((np.abs(got - expected) <= tolerance) | (got == expected))
    assert not bad.any(), f"got {got[bad]}, expected {expected[bad]} at {np.flatnonzero(bad)}"


def reference_tokens(advantages, lengths, layout: str, max_len: int | None = None):
    a, lengths = np.asarray(advantages, dtype=np.float64), np.asarray(lengths, dtype=np.int64)
    if layout == "packed":
        return np.concatenate([np.full(n, value) for value, n in zip(a, lengths)] + [np.zeros(0)])
    width = int(lengths.max(initial=0)) if max_len is None else max_len
    out, mask = np.zeros((a.size, width)), np.zeros((a.size, width), dtype=bool)
    for i, (value, n) in enumerate(zip(a, lengths)):
        out[i, :n], mask[i, :n] = value, True
    return out, mask


def float32_result(expected: np.ndarray) -> np.ndarray:
    """What float32 storage makes of the reference: beyond float32's range, +-inf."""
    with np.errstate(over="ignore"):
        return expected.astype(np.float32).astype(np.float64)

"""Ragged group advantages against an independent float64 numpy reference, on fresh random batches.

Every public function runs on four backends: the native core on CPU tensors (the default there),
the vectorised torch path forced on CPU (what devices other than CPU and CUDA run), the Triton
kernels on CPU tensors under TRITON_INTERPRET=1 (conftest sets it when there is no GPU), and the
Triton kernels on CUDA (marker `gpu`). Each test draws a new seed and reports it on failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
from collections import defaultdict

import numpy as np
import pytest
from advantages_reference import (
    assert_advantages,
    float32_result,
    group_positions,
    positions_of_sizes,
    reference_group_advantages,
    reference_groups_of,
    reference_tokens,
    roundoff_tolerance,
    seen_by_vipfast,
)

torch = pytest.importorskip("torch", reason="the advantage functions need torch (the `torch` extra)")
hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import vipfast  # noqa: E402
from vipfast import _core  # noqa: E402
from vipfast.advantages import LAYOUTS  # noqa: E402
from vipfast import advantages as advantages_module  # noqa: E402
from vipfast.allocation import ESTIMATORS  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

if not HAS_TRITON:
    _NO_INTERPRETER = "triton is not installed"
elif not INTERPRETED:
    _NO_INTERPRETER = "TRITON_INTERPRET is not 1 (a GPU is present, so the cuda tests run the kernels instead)"
else:
    _NO_INTERPRETER = ""
needs_interpreter = pytest.mark.skipif(bool(_NO_INTERPRETER), reason=_NO_INTERPRETER or "n/a")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device; none is visible to torch")

BACKENDS = [
    pytest.param("native", id="native"),
    pytest.param("torch-cpu", id="torch-cpu"),
    pytest.param("triton-interpreter", id="triton-interpreter", marks=needs_interpreter),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, needs_cuda]),
]
# The path each backend must take, and the unit roundoff of its arithmetic (native and torch sum in float64).
DISPATCH = {"native": "native", "torch-cpu": "torch", "triton-interpreter": "triton", "cuda": "triton"}
ROUNDOFF = {"native": 2.0**-52, "torch-cpu": 2.0**-52, "triton-interpreter": 2.0**-24, "cuda": 2.0**-24}


class Backend:
    def __init__(self, name: str):
        self.name = name
        self.device = torch.device("cuda" if name == "cuda" else "cpu")
        self.roundoff = ROUNDOFF[name]
        self.dispatched: list[str] = []

    def tensor(self, array, dtype=None):
        return torch.as_tensor(np.asarray(array), dtype=dtype, device=self.device)


def force_backend(monkeypatch, name: str) -> Backend:
    """Points vipfast.advantages at the backend's path and records every dispatch."""
    chosen = Backend(name)
    real = advantages_module._backend_for

    def spy(device):
        choice = {"torch-cpu": "torch", "triton-interpreter": "triton"}.get(name) or real(device)
        chosen.dispatched.append(choice)
        return choice

    monkeypatch.setattr(advantages_module, "_backend_for", spy)
    return chosen


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    chosen = force_backend(monkeypatch, request.param)
    yield chosen
    expected = DISPATCH[chosen.name]
    assert set(chosen.dispatched) <= {expected}, f"{chosen.name} dispatched to {chosen.dispatched}"


def assert_within(actual, expected, tolerance, rng, what=""):
    actual = actual.detach().cpu().numpy().astype(np.float64) if isinstance(actual, torch.Tensor) else actual
    assert actual.shape == expected.shape, f"{what}shape {actual.shape} != {expected.shape}; {rng.seed_for_message}"
    with np.errstate(invalid="ignore"):
        error = np.abs(actual - expected)
    bad = ~((error <= tolerance) | (actual == expected))  # == lets matching infinities through
    if bad.any():
        first = np.flatnonzero(bad)[:5]
        raise AssertionError(
            f"{what}{bad.sum()} of {bad.size} entries off; first at {first.tolist()}: got {actual[first]}, "
            f"expected {expected[first]}, tolerance {np.broadcast_to(tolerance, expected.shape)[first]}; "
            f"{rng.seed_for_message}")


def verl_style_advantages(scores: torch.Tensor, index, estimator: str, epsilon: float = 1e-6) -> torch.Tensor:
    """The per-group dictionary loop of verl's compute_{grpo,rloo}_outcome_advantage, re-typed from its
    definitions: singletons get mean 0 and std 1; rloo leaves a singleton's score as it is."""
    scores = scores.clone()
    id2score = defaultdict(list)
    id2mean, id2std = {}, {}
    for i in range(len(scores)):
        id2score[index[i]].append(scores[i])
    for uid, group in id2score.items():
        if len(group) == 1:
            id2mean[uid], id2std[uid] = torch.tensor(0.0), torch.tensor(1.0)
        else:
            stacked = torch.stack(group)
            id2mean[uid], id2std[uid] = torch.mean(stacked), torch.std(stacked)
    for i in range(len(scores)):
        uid, n = index[i], len(id2score[index[i]])
        if estimator == "grpo":
            scores[i] = (scores[i] - id2mean[uid]) / (id2std[uid] + epsilon)
        elif estimator == "drgrpo":
            scores[i] = scores[i] - id2mean[uid]
        elif n > 1:
            scores[i] = scores[i] * n / (n - 1) - id2mean[uid] * n / (n - 1)
    return scores


# ----------------------------------------------------------------------------------------------
# random ragged batches


def random_sizes(rng, max_size=64):
    """An odd number of groups with sizes 1..max_size, always including singletons."""
    groups = 2 * int(rng.integers(1, 20)) + 1
    sizes = rng.integers(1, max_size + 1, size=groups)
    sizes[rng.choice(groups, size=2, replace=False)] = 1
    return sizes


def random_rewards(rng, sizes, kind):
    n = int(sizes.sum())
    if kind == "binary":
        rewards = rng.integers(0, 2, size=n).astype(np.float32)
    elif kind == "normal":
        rewards = rng.normal(rng.uniform(-5, 5), rng.uniform(0.1, 3), size=n).astype(np.float32)
    elif kind == "huge":
        rewards = (rng.normal(size=n) * 1e30).astype(np.float32)
    elif kind == "tiny":
        rewards = (rng.normal(size=n) * 1e-30).astype(np.float32)
    else:
        raise ValueError(kind)
    # One all-equal group of size >= 2, if any: its advantages must come out exactly 0.
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    big = np.flatnonzero(sizes >= 2)
    if big.size:
        g = rng.choice(big)
        rewards[starts[g]:starts[g] + sizes[g]] = rewards[starts[g]]
    return rewards


def random_lengths(rng, n, max_len=37):
    lengths = rng.integers(0, max_len + 1, size=n)
    lengths[rng.random(n) < 0.1] = 0  # empty responses happen (truncation, filtering)
    return lengths


def interleaved_ids(rng, sizes, kind="str"):
    """One id per rollout for the groups of `sizes`, rows shuffled as in a balanced verl batch."""
    group = np.repeat(np.arange(sizes.size), sizes)
    shuffle = rng.permutation(group.size)
    ids = {"str": np.array([f"uid-{g}" for g in range(sizes.size)], dtype=object)[group],
           "int": group * 7919 - 2**62,  # keys spread wide: numbered first
           "compact-int": sizes.size + 4 - group}[kind]  # keys within a short span: a slot each
    return ids[shuffle], shuffle


# ----------------------------------------------------------------------------------------------
# values


@pytest.mark.parametrize("kind", ["binary", "normal", "huge", "tiny"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_group_advantages_match_float64_reference(backend, estimator, kind, rng):
    sizes = random_sizes(rng)
    rewards = random_rewards(rng, sizes, kind)
    expected = reference_group_advantages(rewards, sizes, estimator)
    by_sizes = vipfast.group_advantages(backend.tensor(rewards), backend.tensor(sizes), estimator=estimator)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    by_offsets = vipfast.group_advantages(backend.tensor(rewards), offsets=backend.tensor(offsets), estimator=estimator)
    assert by_sizes.dtype == torch.float32 and by_sizes.device.type == backend.device.type
    tolerance = roundoff_tolerance(rewards, sizes, estimator, expected, backend.roundoff)
    assert_within(by_sizes, expected, tolerance, rng)
    assert torch.equal(by_sizes, by_offsets), rng.seed_for_message


@pytest.mark.parametrize("ids", ["str", "int", "compact-int"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_index_groups_interleaved_rollouts_in_place(backend, estimator, ids, rng):
    """index=: the same numbers as the contiguous groups, at the rollouts' own positions."""
    sizes = random_sizes(rng)
    rewards = random_rewards(rng, sizes, "normal" if rng.random() < 0.5 else "binary")
    index, shuffle = interleaved_ids(rng, sizes, ids)
    expected = reference_group_advantages(rewards, sizes, estimator)
    tolerance = roundoff_tolerance(rewards, sizes, estimator, expected, backend.roundoff)
    out = vipfast.group_advantages(backend.tensor(rewards[shuffle]), index=index, estimator=estimator)
    assert out.dtype == torch.float32 and out.device.type == backend.device.type
    assert_within(out, expected[shuffle], tolerance[shuffle], rng)


WIDE_INTEGER_REWARDS = {
    "list": lambda values: values,
    "int32": lambda values: np.array(values, dtype=np.int32),
    "int64": lambda values: np.array(values, dtype=np.int64),
    "uint64": lambda values: np.array(values, dtype=np.uint64),
    "torch-int64": lambda values: torch.tensor(values, dtype=torch.int64),
}


@pytest.mark.parametrize("make", WIDE_INTEGER_REWARDS.values(), ids=WIDE_INTEGER_REWARDS.keys())
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_integer_rewards_keep_their_digits(make, estimator):
    """2^24 + 1 and 2^24 are one float32: integers wider than 16 bits are computed in float64."""
    rewards = [2**24 + 1, 2**24, 2**30 + 3, 2**30]
    sizes = [2, 2]
    expected = reference_group_advantages(np.array(rewards, dtype=np.float64), np.array(sizes), estimator)
    out = vipfast.group_advantages(make(rewards), sizes, estimator=estimator)
    assert np.all(out.numpy() != 0), out
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


def test_int16_and_bool_rewards_are_exact_in_float32():
    rewards = np.array([-(2**15), 2**15 - 1, 7, 7], dtype=np.int16)
    out = vipfast.group_advantages(rewards, [2, 2], estimator="drgrpo")
    assert out.tolist() == [-32767.5, 32767.5, 0.0, 0.0]
    assert vipfast.group_advantages(np.array([True, False]), [2], estimator="rloo").tolist() == [1.0, -1.0]


SWAPPED_OR_REVERSED = {
    "big-endian": lambda values: np.asarray(values).astype(np.asarray(values).dtype.newbyteorder(">")),
    "reversed-view": lambda values: np.asarray(values)[::-1].copy()[::-1],
    "read-only": lambda values: np.frombuffer(np.asarray(values).tobytes(), dtype=np.asarray(values).dtype),
}


@pytest.mark.parametrize("make", SWAPPED_OR_REVERSED.values(), ids=SWAPPED_OR_REVERSED.keys())
def test_any_numpy_layout_of_the_same_values_gives_the_same_result(make):
    """Non-native byte order, negative strides and read-only buffers are valid arrays: same numbers, no warning."""
    rewards, sizes, lengths = np.array([0.5, 1.0, 0.0, 3.0, -2.0]), np.array([3, 2]), np.array([2, 0, 1, 4, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(vipfast.group_advantages(make(rewards), make(sizes)),
                           vipfast.group_advantages(rewards, sizes))
        assert torch.equal(vipfast.token_advantages(make(rewards), make(lengths)),
                           vipfast.token_advantages(rewards, lengths))
        assert torch.equal(vipfast.fused_token_advantages(make(rewards), make(sizes), make(lengths)),
                           vipfast.fused_token_advantages(rewards, sizes, lengths))


def test_reference_groups_a_torch_index_by_value():
    """A tensor's elements hash by identity; the reference must still see [0, 0] as one group."""
    assert [p.tolist() for p in group_positions("index", torch.tensor([0, 0]), 2, True)] == [[0, 1]]
    out = vipfast.group_advantages(np.array([False, True]), index=torch.tensor([0, 0]), estimator="rloo", eps=0.0)
    assert out.tolist() == [-1.0, 1.0]


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("eps", [1e-6, 0.0], ids=["eps=1e-6", "eps=0"])
def test_singletons_and_all_equal_groups_give_exactly_zero(backend, estimator, eps, rng):
    sizes = np.array([1, 3, 1, 64, 2, 1, 17])
    values = rng.normal(size=sizes.size).astype(np.float32) * 10.0 ** rng.integers(-3, 4, size=sizes.size)
    rewards = np.repeat(values, sizes)
    out = vipfast.group_advantages(backend.tensor(rewards), backend.tensor(sizes), estimator=estimator, eps=eps)
    assert torch.count_nonzero(out).item() == 0, f"{out}; {rng.seed_for_message}"
    index = np.repeat(np.arange(sizes.size), sizes)[::-1].copy()
    out = vipfast.group_advantages(backend.tensor(rewards[::-1].copy()), index=index, estimator=estimator, eps=eps)
    assert torch.count_nonzero(out).item() == 0, f"{out}; {rng.seed_for_message}"


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_float64_rewards_near_the_largest_double(backend, estimator, rng):
    """Squares (and spreads) of 1e300 overflow float64: native sums such a group again, scaled by a power
    of two; the torch path scales every group by one, and takes over from the kernels for such rewards.
    drgrpo / rloo beyond float32's range give +-inf."""
    sizes = np.array([5, 3, 4])
    rewards = rng.normal(size=12) * 10.0 ** rng.uniform(150, 307.5, size=12)
    rewards[8:] = rng.normal(size=4)  # an ordinary group beside them
    expected = float32_result(reference_group_advantages(rewards, sizes, estimator))
    out = vipfast.group_advantages(backend.tensor(rewards), backend.tensor(sizes), estimator=estimator)
    tolerance = roundoff_tolerance(rewards, sizes, estimator, expected, 2.0**-52)
    assert_within(out, expected, tolerance, rng)
    index = [7, 7, 7, 7, 7, "b", "b", "b", 3, 3, 3, 3]
    by_index = vipfast.group_advantages(backend.tensor(rewards), index=index, estimator=estimator)
    assert_within(by_index, expected, tolerance, rng)


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_token_advantages_copy_each_advantage_to_its_tokens(backend, layout, rng):
    n = 2 * int(rng.integers(1, 60)) + 1
    advantages = rng.normal(size=n).astype(np.float32)
    lengths = random_lengths(rng, n)
    if layout == "packed":
        out = vipfast.token_advantages(backend.tensor(advantages), backend.tensor(lengths))
        assert out.dtype == torch.float32 and out.device.type == backend.device.type
        np.testing.assert_array_equal(out.cpu().numpy(), reference_tokens(advantages, lengths, "packed"),
                                      err_msg=rng.seed_for_message)
        return
    for max_len in (None, int(lengths.max()) + int(rng.integers(1, 70))):
        out, mask = vipfast.token_advantages(backend.tensor(advantages), backend.tensor(lengths), layout="padded",
                                             max_len=max_len)
        expected, expected_mask = reference_tokens(advantages, lengths, "padded", max_len)
        assert out.dtype == torch.float32 and mask.dtype == torch.bool
        np.testing.assert_array_equal(mask.cpu().numpy(), expected_mask, err_msg=rng.seed_for_message)
        np.testing.assert_array_equal(out.cpu().numpy(), expected, err_msg=rng.seed_for_message)


@pytest.mark.parametrize("layout", ["packed", "padded"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_fused_token_advantages_match_reference(backend, estimator, layout, rng):
    sizes = random_sizes(rng, max_size=int(rng.integers(1, 65)))
    rewards = random_rewards(rng, sizes, "normal" if rng.random() < 0.5 else "binary")
    lengths = random_lengths(rng, int(sizes.sum()))
    group = reference_group_advantages(rewards, sizes, estimator)
    tolerance = roundoff_tolerance(rewards, sizes, estimator, group, backend.roundoff)
    out = vipfast.fused_token_advantages(backend.tensor(rewards), backend.tensor(sizes), backend.tensor(lengths),
                                         estimator=estimator, layout=layout)
    if layout == "packed":
        assert_within(out, reference_tokens(group, lengths, "packed"), np.repeat(tolerance, lengths), rng)
        return
    out, mask = out
    expected, expected_mask = reference_tokens(group, lengths, "padded")
    np.testing.assert_array_equal(mask.cpu().numpy(), expected_mask, err_msg=rng.seed_for_message)
    assert_within(out, expected, tolerance[:, None] * expected_mask, rng)


def test_empty_batch(backend):
    empty = backend.tensor(np.zeros(0, dtype=np.float32))
    no_sizes = backend.tensor(np.zeros(0, dtype=np.int64))
    assert vipfast.group_advantages(empty, no_sizes).shape == (0,)
    assert vipfast.group_advantages(empty, offsets=backend.tensor([0])).shape == (0,)
    assert vipfast.group_advantages(empty, index=[]).shape == (0,)
    assert vipfast.token_advantages(empty, no_sizes).shape == (0,)
    out, mask = vipfast.token_advantages(empty, no_sizes, layout="padded")
    assert out.shape == mask.shape == (0, 0)
    assert vipfast.fused_token_advantages(empty, no_sizes, no_sizes).shape == (0,)
    out, mask = vipfast.fused_token_advantages(empty, no_sizes, no_sizes, layout="padded", max_len=5)
    assert out.shape == mask.shape == (0, 5)
    assert vipfast.group_advantages([], []).shape == (0,)


def test_responses_of_length_zero_only(backend):
    out, mask = vipfast.fused_token_advantages(backend.tensor([1.0, 0.0, 1.0]), backend.tensor([3]),
                                               backend.tensor([0, 0, 0]), layout="padded", max_len=4)
    assert out.shape == (3, 4) and not mask.any() and torch.count_nonzero(out).item() == 0
    nothing = vipfast.fused_token_advantages(backend.tensor([1.0, 0.0]), backend.tensor([2]), backend.tensor([0, 0]))
    assert nothing.shape == (0,)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_matches_verl_for_groups_of_two_or_more_and_zeroes_singletons(backend, estimator, rng):
    """verl: A = r (grpo: r / (1 + eps)) for a singleton (mean 0, std 1); vipfast: 0. Identical otherwise."""
    sizes = random_sizes(rng, max_size=16)
    rewards = random_rewards(rng, sizes, "binary" if rng.random() < 0.5 else "normal")
    uids, shuffle = interleaved_ids(rng, sizes)
    rewards = rewards[shuffle]
    verl = verl_style_advantages(torch.from_numpy(rewards), uids, estimator).numpy().astype(np.float64)

    ours = vipfast.group_advantages(backend.tensor(rewards), index=uids, estimator=estimator).cpu().numpy()
    order, group_sizes = vipfast.group_ids_from_index(uids)
    order_on_device = order.to(backend.device)
    grouped = vipfast.group_advantages(backend.tensor(rewards)[order_on_device], group_sizes.to(backend.device),
                                       estimator=estimator)
    assert np.array_equal(ours[order.numpy()], grouped.cpu().numpy()), rng.seed_for_message

    singleton = np.isin(uids, [f"uid-{g}" for g in np.flatnonzero(sizes == 1)])
    assert singleton.any()
    np.testing.assert_array_equal(ours[singleton], 0.0, err_msg=rng.seed_for_message)
    verl_singleton = rewards[singleton] / (1 + 1e-6) if estimator == "grpo" else rewards[singleton]
    np.testing.assert_allclose(verl[singleton], verl_singleton, rtol=1e-6, err_msg=rng.seed_for_message)
    reference = reference_group_advantages(rewards[order.numpy()], group_sizes.numpy(), estimator)
    tolerance = np.empty(uids.size)
    tolerance[order.numpy()] = roundoff_tolerance(rewards[order.numpy()], group_sizes.numpy(), estimator, reference,
                                                  2.0**-24)  # verl computes in float32
    # All-equal groups: ours are exactly 0 (tested above), verl's float32 mean leaves roundoff there.
    varied = ~singleton & np.array([len(set(rewards[uids == uid])) > 1 for uid in uids])
    assert_within(ours[varied].astype(np.float64), verl[varied], 2 * tolerance[varied], rng, "vs verl: ")


def test_zero_size_groups_are_tolerated_with_check_false(backend, rng):
    sizes = np.array([0, 3, 0, 0, 2, 1, 0])
    rewards = rng.normal(size=6).astype(np.float32)
    expected = reference_group_advantages(rewards, sizes, "grpo")
    out = vipfast.group_advantages(backend.tensor(rewards), backend.tensor(sizes), check=False)
    assert_within(out, expected, roundoff_tolerance(rewards, sizes, "grpo", expected, backend.roundoff), rng)
    offsets = backend.tensor(np.concatenate([[0], np.cumsum(sizes)]))
    assert torch.equal(vipfast.group_advantages(backend.tensor(rewards), offsets=offsets, check=False), out)
    tokens = vipfast.fused_token_advantages(backend.tensor(rewards), backend.tensor(sizes), backend.tensor([2] * 6),
                                            check=False)
    assert_within(tokens, np.repeat(expected, 2), 1e-5, rng)


def test_check_false_skips_only_the_value_scan(backend):
    """A NaN reward: check=True names it; check=False lets it through as non-finite advantages of its
    group only. The structure is checked either way."""
    rewards = backend.tensor([0.0, 1.0, float("nan"), 2.0, 4.0])
    with pytest.raises(ValueError, match=r"rewards\[2\] = nan"):
        vipfast.group_advantages(rewards, [3, 2])
    out = vipfast.group_advantages(rewards, [3, 2], check=False).cpu()
    assert not torch.isfinite(out[:3]).any() and torch.isfinite(out[3:]).all(), out
    for check in (True, False):
        with pytest.raises(ValueError, match="group_sizes add up to 4 but rewards has 5"):
            vipfast.group_advantages(rewards, [3, 1], check=check)


# ----------------------------------------------------------------------------------------------
# the kernels and the torch reference, called directly


def _offsets(sizes):
    return torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_kernel_launchers_under_the_interpreter(estimator, dtype, rng):
    from vipfast.kernels.group_advantages import group_advantages_triton
    from vipfast.kernels.token_advantages import fused_token_advantages_triton, token_advantages_triton

    sizes = random_sizes(rng)
    rewards = torch.from_numpy(random_rewards(rng, sizes, "normal")).to(dtype)
    lengths = random_lengths(rng, int(sizes.sum()))
    token_offsets = _offsets(lengths)
    exact = rewards.double().numpy()  # the values the kernel sees
    expected = reference_group_advantages(exact, sizes, estimator)
    roundoff = 2.0**-52 if dtype == torch.float64 else 2.0**-24
    tolerance = roundoff_tolerance(exact, sizes, estimator, expected, roundoff)

    got = group_advantages_triton(rewards, _offsets(sizes), estimator=estimator)
    assert got.dtype == torch.float32
    assert_within(got, expected, tolerance, rng)
    packed = token_advantages_triton(got, token_offsets)
    assert torch.equal(packed, got.repeat_interleave(torch.from_numpy(lengths)))
    fused = fused_token_advantages_triton(rewards, _offsets(sizes), token_offsets, estimator=estimator)
    assert_within(fused, np.repeat(expected, lengths), np.repeat(tolerance, lengths), rng)
    width = int(lengths.max()) + 3
    out, mask = fused_token_advantages_triton(rewards, _offsets(sizes), token_offsets, estimator=estimator,
                                              layout="padded", max_len=width)
    expected_out, expected_mask = reference_tokens(expected, lengths, "padded", width)
    assert torch.equal(mask, torch.from_numpy(expected_mask))
    assert_within(out, expected_out, tolerance[:, None] * expected_mask, rng)


@needs_interpreter
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_torch_reference_beside_the_kernel(estimator, rng):
    from vipfast.kernels.group_advantages import group_advantages_ref

    sizes = random_sizes(rng)
    rewards = random_rewards(rng, sizes, "normal")
    expected = reference_group_advantages(rewards, sizes, estimator)
    got = group_advantages_ref(torch.from_numpy(rewards), _offsets(sizes), estimator=estimator)
    assert_within(got, expected, roundoff_tolerance(rewards, sizes, estimator, expected, 2.0**-52), rng)


# ----------------------------------------------------------------------------------------------
# the native entry points in vipfast._core


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_native_core_reads_contiguous_rewards_in_place(dtype, rng):
    """tracemalloc sees numpy's allocations: a copy of 1M rewards would be >= 4 MB; a strided view must be copied."""
    n = 1 << 20
    rewards = rng.normal(size=2 * n).astype(dtype)
    sizes = np.full(n // 16, 16, dtype=np.int64)
    out = np.empty(n, dtype=np.float32)
    peaks = {}
    for layout, values in (("contiguous", rewards[:n]), ("strided", rewards[::2])):
        tracemalloc.start()
        _core.segment_advantages(values, sizes, False, out, "grpo", 1e-6, True, False)
        peaks[layout] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        head = 64 * 16  # the first 64 groups: the values are tested at length elsewhere
        expected = reference_group_advantages(values[:head], sizes[:64], "grpo")
        tolerance = roundoff_tolerance(values[:head], sizes[:64], "grpo", expected, 2.0**-52)
        assert_within(out[:head], expected, tolerance, rng, layout)
    assert peaks["contiguous"] < (1 << 20) <= n * np.dtype(dtype).itemsize <= peaks["strided"], peaks


def test_native_core_copies_unaligned_and_converts_other_dtypes(rng):
    buffer = np.zeros(8 * 33 + 1, dtype=np.uint8)
    unaligned = np.frombuffer(buffer.data, dtype=np.float64, count=33, offset=1)  # not 8-byte aligned
    assert not unaligned.flags.aligned
    unaligned[:] = rng.normal(size=33)
    sizes = np.array([10, 1, 22])
    out = np.empty(33, dtype=np.float32)
    for values in (unaligned, unaligned.astype(np.float16), (unaligned > 0).astype(np.int8), unaligned > 0):
        _core.segment_advantages(values, sizes.astype(np.int32), False, out, "rloo", 1e-6, True, False)
        expected = reference_group_advantages(values.astype(np.float64), sizes, "rloo")
        assert_within(out, expected, roundoff_tolerance(values, sizes, "rloo", expected, 2.0**-52), rng)


THREE = np.array([3])  # one group of three rollouts
NATIVE_ERRORS = [
    ("out-float64", lambda r, o: _core.segment_advantages(r, THREE, False, o.astype(np.float64), "grpo", 1e-6, True,
                                                          False), TypeError, "out must be a C-contiguous"),
    ("out-strided", lambda r, o: _core.segment_advantages(r, THREE, False, np.empty(6, np.float32)[::2], "grpo", 1e-6,
                                                          True, False), TypeError, "out must be a C-contiguous"),
    ("out-readonly", lambda r, o: _core.segment_advantages(r, THREE, False, np.frombuffer(bytes(12), np.float32),
                                                           "grpo", 1e-6, True, False), ValueError, "not writeable"),
    ("out-length", lambda r, o: _core.segment_advantages(r, THREE, False, o[:2], "grpo", 1e-6, True, False),
     ValueError, "out has length 2, expected 3"),
    ("eps", lambda r, o: _core.segment_advantages(r, THREE, False, o, "grpo", -1.0, True, False),
     ValueError, "eps must be finite and >= 0"),
    ("estimator", lambda r, o: _core.indexed_advantages(r, np.zeros(3, np.int32), 1, o, "ppo", 1e-6, True),
     ValueError, "unknown estimator 'ppo'"),
    ("rewards-complex", lambda r, o: _core.segment_advantages(r + 0j, THREE, False, o, "grpo", 1e-6, True, False),
     TypeError, "rewards must hold real numbers"),
    ("bounds-float", lambda r, o: _core.segment_advantages(r, np.array([3.0]), False, o, "grpo", 1e-6, True, False),
     TypeError, "group_sizes must hold integers"),
    ("bounds-uint64", lambda r, o: _core.group_offsets(np.array([2**64 - 1], np.uint64), False, 3, True),
     ValueError, r"group_sizes\[0\] = 18446744073709551615 does not fit in int64"),
    ("group-id-range", lambda r, o: _core.indexed_advantages(r, np.array([0, 2, 1]), 2, o, "grpo", 1e-6, True),
     ValueError, r"group_of\[1\] = 2 is outside \[0, 2\)"),
    ("group-id-negative", lambda r, o: _core.group_order(np.array([0, -1, 0], np.int32), 1),
     ValueError, r"group_of\[1\] = -1 is outside \[0, 1\)"),
    ("num-groups-negative", lambda r, o: _core.group_order(np.zeros(0, np.int32), -1),
     ValueError, "num_groups must be >= 0"),
    ("group-of-length", lambda r, o: _core.indexed_advantages(r, np.zeros(2, np.int64), 1, o, "grpo", 1e-6, True),
     ValueError, "group_of has length 2, expected 3"),
    ("index-float", lambda r, o: _core.dense_groups(r), TypeError, "index must hold integers or Python objects"),
    ("index-unhashable", lambda r, o: _core.dense_groups(np.array([None, [1]], dtype=object)),
     TypeError, r"index\[1\] = \[1\] is not hashable"),
]


@pytest.mark.parametrize("call, error, message", [pytest.param(*case[1:], id=case[0]) for case in NATIVE_ERRORS])
def test_native_entry_points_name_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call(np.array([1.0, 0.0, 1.0], dtype=np.float32), np.empty(3, dtype=np.float32))


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("span", ["short", "wide"])
def test_native_keyed_advantages(estimator, span, rng):
    """Integer keys within a short span index the group state directly; wider ones are numbered first."""
    n = int(rng.integers(1, 2000))
    draw = rng.integers(0, max(1, n // 20) + 1, size=n)
    keys = draw - 7 if span == "short" else draw * (2**40 + 3) - 2**62
    rewards = rng.normal(size=n).astype(np.float32)
    groups = [np.asarray(p) for p in reference_groups_of(keys.tolist())]
    out = np.empty(n, dtype=np.float32)
    _core.keyed_advantages(rewards, keys, out, estimator, 1e-6, True)
    assert_advantages(out, rewards.astype(np.float64), groups, estimator, 1e-6, 2.0**-52, True)
    with pytest.raises(ValueError, match=f"keys has length {n - 1}, expected {n}"):
        _core.keyed_advantages(rewards, keys[:-1], out, estimator, 1e-6, True)


@pytest.mark.parametrize("kind", ["dense", "sparse", "objects"])
def test_native_grouping_matches_a_dict(kind, rng):
    n = int(rng.integers(0, 3000))
    draw = rng.integers(0, max(1, n // 5) + 1, size=n)
    keys = {"dense": draw - 3, "sparse": draw.astype(np.int64) * (2**53 + 1) - 2**62,
            "objects": np.array([(f"u{k}" if k % 3 else k) for k in draw.tolist()], dtype=object)}[kind]
    group_of, num_groups = _core.dense_groups(keys)
    groups = reference_groups_of(keys.tolist())
    assert group_of.dtype == np.int32 and num_groups == len(groups)
    for g, positions in enumerate(groups):
        assert (group_of[positions] == g).all(), rng.seed_for_message
    order, sizes = _core.group_order(group_of, num_groups)
    assert order.tolist() == [i for positions in groups for i in positions], rng.seed_for_message
    assert sizes.tolist() == [len(p) for p in groups]


# ----------------------------------------------------------------------------------------------
# inputs, grouping, dispatch


def test_numpy_arrays_lists_ints_and_bools_are_accepted():
    rewards, sizes = [1, 0, 1, 1, 1], [3, 2]
    expected = vipfast.group_advantages(torch.tensor(rewards, dtype=torch.float32), torch.tensor(sizes))
    for r in (rewards, np.array(rewards), np.array(rewards, dtype=bool), torch.tensor(rewards).bool(),
              np.array(rewards, dtype=np.float16), torch.tensor(rewards, dtype=torch.float64),
              torch.tensor(rewards, dtype=torch.bfloat16), np.array(rewards, dtype=np.uint64),
              torch.tensor(np.repeat(rewards, 2), dtype=torch.float32)[::2]):
        for s in (sizes, np.array(sizes, dtype=np.int32), torch.tensor(sizes, dtype=torch.int16), tuple(sizes),
                  np.array(sizes, dtype=np.uint64)):
            out = vipfast.group_advantages(r, s)
            assert out.dtype == torch.float32 and out.device.type == "cpu"
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert not vipfast.group_advantages(torch.tensor([1.0, 2.0], requires_grad=True), [2]).requires_grad


@pytest.mark.parametrize("kind", ["object", "str", "int-array", "list", "int-tensor", "float-array", "uint64",
                                  "bool"])
def test_group_ids_from_index(kind, rng):
    groups = int(rng.integers(1, 30))
    ids = rng.integers(0, groups, size=int(rng.integers(0, 200)))
    index = {
        "object": np.array([f"u{i}" for i in ids], dtype=object),
        "str": np.array([f"u{i}" for i in ids]),
        "int-array": ids,
        "list": ids.tolist(),
        "int-tensor": torch.from_numpy(ids),
        "float-array": ids / 4 - 1.5,
        "uint64": ids.astype(np.uint64) + np.uint64(2**63),
        "bool": ids % 2 == 0,
    }[kind]
    if kind == "bool":
        ids = ids % 2 == 0
    order, sizes = vipfast.group_ids_from_index(index)
    first_seen = list(dict.fromkeys(ids.tolist()))  # groups in order of first appearance
    expected_order = [i for uid in first_seen for i in np.flatnonzero(ids == uid)]
    assert order.dtype == sizes.dtype == torch.int64
    assert order.tolist() == expected_order, rng.seed_for_message
    assert sizes.tolist() == [int((ids == uid).sum()) for uid in first_seen], rng.seed_for_message


def test_group_ids_from_index_groups_ids_as_a_dict_does():
    order, sizes = vipfast.group_ids_from_index([1, "1", 1, (1,), 1.0, True])
    assert order.tolist() == [0, 2, 4, 5, 1, 3] and sizes.tolist() == [4, 1, 1]
    order, sizes = vipfast.group_ids_from_index([(1, "a"), (2, "b"), (1, "a")])  # tuples are ids, not rows
    assert order.tolist() == [0, 2, 1] and sizes.tolist() == [2, 1]
    order, sizes = vipfast.group_ids_from_index(np.array([0.0, -0.0, 2.5, 0.0]))
    assert order.tolist() == [0, 1, 3, 2] and sizes.tolist() == [3, 1]


NAN_INDEXES = {
    "numpy-float": lambda: np.array([1.0, np.nan, 1.0, np.nan]),
    "numpy-float32": lambda: np.array([1.0, np.nan, 1.0, np.nan], dtype=np.float32),
    "torch-float": lambda: torch.tensor([1.0, float("nan"), 1.0, float("nan")]),
    "list-one-nan-object": lambda: [1.0] + [float("nan")] * 2 + [1.0],  # the same object twice
    "list-two-nan-objects": lambda: [1.0, float("nan"), 1.0, float("nan")],
    "object-numpy-nan": lambda: np.array(["a", np.nan, "a", np.float32("nan")], dtype=object),
}


@pytest.mark.parametrize("make", NAN_INDEXES.values(), ids=NAN_INDEXES.keys())
def test_nan_ids_are_refused_for_every_input(make):
    """One rule: a NaN id names no group (numpy.unique with equal_nan merges NaNs, torch.unique splits them)."""
    with pytest.raises(ValueError, match=r"index\[1\] = .*nan.* is not equal to itself \(NaN\)"):
        vipfast.group_ids_from_index(make())
    with pytest.raises(ValueError, match=r"is not equal to itself \(NaN\)"):
        vipfast.group_advantages([1.0, 0.0, 1.0, 0.5], index=make())


def test_torch_grouping_of_device_tensors_follows_the_same_rules(rng):
    """group_ids_from_index on CUDA tensors runs in torch ops; on CPU tensors here, it must agree with the native path."""
    ids = torch.from_numpy(rng.integers(-5, 5, size=300))
    for index in (ids, ids.double() / 3, torch.tensor([0.0, -0.0, 1.0, 0.0]), ids == 0):
        native = vipfast.group_ids_from_index(index)
        on_device = advantages_module._group_ids_torch(index)
        assert all(torch.equal(a, b) for a, b in zip(native, on_device)), rng.seed_for_message
    with pytest.raises(ValueError, match=r"index\[1\] = nan is not equal to itself"):
        advantages_module._group_ids_torch(torch.tensor([0.0, float("nan")]))


@needs_cuda
@pytest.mark.gpu
def test_group_ids_from_index_keeps_cuda_tensors_on_device():
    order, sizes = vipfast.group_ids_from_index(torch.tensor([5, 3, 5, 9], device="cuda"))
    assert order.is_cuda and sizes.is_cuda
    assert order.tolist() == [0, 2, 1, 3] and sizes.tolist() == [2, 1, 1]


def test_cpu_path_needs_neither_triton_nor_cuda(tmp_path):
    code = ("import sys, torch, vipfast\n"
            "triton_before = 'triton' in sys.modules\n"  # whatever torch itself imports
            "vipfast.fused_token_advantages(torch.tensor([1., 0., 1.]), [2, 1], [3, 1, 2])\n"
            "vipfast.group_advantages(torch.tensor([1., 0., 1.]), index=['a', 'b', 'a'])\n"
            "assert ('triton' in sys.modules) == triton_before, 'the CPU path imported triton'\n"
            "assert not any(name.startswith('vipfast.kernels.') for name in sys.modules), 'kernels imported'\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)  # import the installed package, not the source tree
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# ----------------------------------------------------------------------------------------------
# validation: every problem is named


def _group(**overrides):
    def call():
        arguments = {"rewards": [0.0, 1.0, 1.0], "group_sizes": [2, 1], **overrides}
        return vipfast.group_advantages(arguments.pop("rewards"), arguments.pop("group_sizes"), **arguments)

    return call


def _tokens(**overrides):
    def call():
        arguments = {"advantages": [0.5, -0.5], "response_lengths": [3, 1], **overrides}
        return vipfast.token_advantages(arguments.pop("advantages"), arguments.pop("response_lengths"), **arguments)

    return call


class NoTruthValue:
    """An id whose == gives an object with no truth value, as pandas.NA does."""

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return self

    def __bool__(self):
        raise TypeError("ambiguous")

    def __repr__(self):
        return "no-truth"


ONE_GROUPING = "exactly one of group_sizes, offsets= and index="
BAD_INPUTS = [
    ("nan-reward", _group(rewards=[0.0, float("nan"), 1.0]), ValueError, r"rewards must be finite: rewards\[1\] = nan"),
    ("inf-reward", _group(rewards=[0.0, 1.0, float("-inf")]), ValueError, r"rewards\[2\] = -inf"),
    ("negative-size", _group(group_sizes=[4, -1]), ValueError, r"group_sizes\[1\] = -1 is negative"),
    ("zero-size", _group(group_sizes=[3, 0]), ValueError, r"group_sizes\[1\] = 0 is an empty group"),
    ("sizes-sum-short", _group(group_sizes=[1, 1]), ValueError, "group_sizes add up to 2 but rewards has 3 entries"),
    ("sizes-sum-zero", _group(group_sizes=[]), ValueError, "group_sizes add up to 0 but rewards has 3"),
    ("sizes-sum-wraps", _group(group_sizes=[2**63 - 1, 2**63 - 1, 5]), ValueError, "add up to more than 2"),
    ("sizes-uint64", _group(group_sizes=np.array([2**64 - 1, 4], dtype=np.uint64)),
     ValueError, r"group_sizes\[0\] = 18446744073709551615 does not fit in int64"),
    ("offsets-start", _group(group_sizes=None, offsets=[1, 3]),
     ValueError, r"offsets must start at 0, got offsets\[0\] = 1"),
    ("offsets-repeat", _group(group_sizes=None, offsets=[0, 2, 2, 3]),
     ValueError, r"strictly increasing.*offsets\[2\] = 2"),
    ("offsets-decrease", _group(group_sizes=None, offsets=[0, 2, 1, 3], check=False),
     ValueError, r"offsets must not decrease: offsets\[2\] = 1 after offsets\[1\] = 2"),
    ("offsets-end", _group(group_sizes=None, offsets=[0, 2]), ValueError, "offsets end at 2 but rewards has 3"),
    ("offsets-overshoot", _group(group_sizes=None, offsets=[0, 9, 3], check=False),
     ValueError, r"offsets must not decrease: offsets\[2\] = 3 after offsets\[1\] = 9"),
    ("offsets-empty", _group(group_sizes=None, offsets=[]), ValueError, "offsets must have G"),
    ("sizes-and-offsets", _group(offsets=[0, 3]), TypeError, ONE_GROUPING),
    ("sizes-and-index", _group(index=["a", "b", "a"]), TypeError, ONE_GROUPING),
    ("no-sizes", _group(group_sizes=None), TypeError, ONE_GROUPING),
    ("index-length", _group(group_sizes=None, index=["a", "b"]), ValueError, "index has 2 entries but rewards has 3"),
    ("index-unhashable", _group(group_sizes=None, index=["a", ["b"], "a"]), TypeError, r"index\[1\].*not hashable"),
    ("index-2d", _group(group_sizes=None, index=np.zeros((3, 1))), ValueError, "index must be 1-D"),
    ("index-string", _group(group_sizes=None, index="abc"), TypeError, "got a single str"),
    ("estimator", _group(estimator="ppo"), ValueError,
     f"estimator must be one of {', '.join(map(repr, ESTIMATORS))}, got 'ppo'"),
    ("eps-negative", _group(eps=-1e-6), ValueError, "eps must be finite and >= 0"),
    ("eps-nan", _group(eps=float("nan")), ValueError, "eps must be finite and >= 0"),
    ("eps-string", _group(eps="1e-6"), TypeError, "eps must be a real number"),
    ("eps-beyond-float64", _group(eps=10**400), ValueError, "eps must be finite and >= 0"),
    ("check-string", _group(check="yes"), TypeError, "check must be True or False, got str 'yes'"),
    ("check-none", _group(check=None), TypeError, "check must be True or False, got NoneType None"),
    ("check-int", _group(check=1), TypeError, "check must be True or False, got int 1"),
    ("tokens-check-none", _tokens(check=None), TypeError, "check must be True or False"),
    ("fused-check-none", lambda: vipfast.fused_token_advantages([0.0, 1.0], [2], [1, 1], check=None),
     TypeError, "check must be True or False"),
    ("index-not-iterable", lambda: vipfast.group_ids_from_index(5), TypeError,
     "index must be a 1-D sequence of hashable ids"),
    ("index-id-without-truth", _group(group_sizes=None, index=["a", NoTruthValue(), "a"]), TypeError,
     r"index\[1\] = no-truth cannot tell whether it equals itself \(ambiguous\)"),
    ("rewards-2d", _group(rewards=[[0.0, 1.0, 1.0]]), ValueError, r"rewards must be 1-D, got shape \(1, 3\)"),
    ("rewards-complex", _group(rewards=torch.tensor([0j, 1, 1])),
     TypeError, "rewards must hold real numbers, got dtype torch.complex64"),
    ("rewards-strings", _group(rewards=["0", "1", "1"]), TypeError, "rewards must hold real numbers, got dtype <U1"),
    ("rewards-ragged", _group(rewards=[[0.0], [1.0, 1.0]]), TypeError, "rewards must be a 1-D array of real numbers"),
    ("sizes-float", _group(group_sizes=torch.tensor([2.0, 1.0])),
     TypeError, "group_sizes must hold integers, got dtype torch.float32"),
    ("sizes-bool", _group(group_sizes=np.array([True, True])),
     TypeError, "group_sizes must hold integers, got dtype bool"),
    ("sizes-2d", _group(group_sizes=[[2, 1]]), ValueError, r"group_sizes must be 1-D, got shape \(1, 2\)"),
    ("lengths-count", _tokens(response_lengths=[3, 1, 2]),
     ValueError, "response_lengths has 3 entries but advantages has 2"),
    ("lengths-negative", _tokens(response_lengths=[3, -2]),
     ValueError, r"response_lengths must be >= 0: response_lengths\[1\] = -2"),
    ("lengths-negative-unchecked", _tokens(response_lengths=[3, -2], check=False),
     ValueError, r"response_lengths must be >= 0: response_lengths\[1\] = -2"),
    ("lengths-sum-wraps", _tokens(response_lengths=[2**63 - 1, 2**63 - 1], check=False),
     ValueError, r"response_lengths add up to about 1.845e\+19 tokens"),
    ("lengths-float", _tokens(response_lengths=[3.0, 1.0]), TypeError, "response_lengths must hold integers"),
    ("layout", _tokens(layout="ragged"), ValueError, "layout must be 'packed' or 'padded', got 'ragged'"),
    ("max-len-short", _tokens(layout="padded", max_len=2),
     ValueError, r"max_len = 2 is shorter than the longest response \(3 tokens\)"),
    ("max-len-packed", _tokens(max_len=8), ValueError, "max_len only applies to layout='padded'"),
    ("max-len-float", _tokens(layout="padded", max_len=8.0), TypeError, "max_len must be an integer or None"),
    ("fused-no-lengths", lambda: vipfast.fused_token_advantages([0.0, 1.0], [2]), TypeError, "needs response_lengths"),
    ("fused-lengths-count", lambda: vipfast.fused_token_advantages([0.0, 1.0], [2], [1]), ValueError,
     "response_lengths has 1 entries but rewards has 2"),
    ("fused-nan", lambda: vipfast.fused_token_advantages([0.0, float("nan")], [2], [1, 1]),
     ValueError, "rewards must be finite"),
    ("fused-negative-size", lambda: vipfast.fused_token_advantages([0.0, 1.0], [-2, 4], [1, 1], check=False),
     ValueError, r"group_sizes\[0\] = -2 is negative"),
    ("index-2d", lambda: vipfast.group_ids_from_index(np.zeros((2, 2))), ValueError, "index must be 1-D"),
    ("index-complex", lambda: vipfast.group_ids_from_index(np.array([1j])),
     TypeError, "index must hold integers, floats, strings"),
    ("index-datetime", lambda: vipfast.group_ids_from_index(np.array(["2020-01-01"], dtype="datetime64[D]")),
     TypeError, "index must hold integers, floats, strings"),
]


@pytest.mark.parametrize("call, error, message", [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS])
def test_bad_inputs_are_named(backend, call, error, message):
    with pytest.raises(error, match=message):
        call()


# The calls that killed the interpreter (heap corruption, SIGFPE/SIGSEGV, free(): invalid pointer):
# each must raise ValueError on every path, whatever check= says.
CRASHERS = """
import re, sys, torch, vipfast
from vipfast import advantages
if sys.argv[1] != "native":
    advantages._backend_for = lambda device: sys.argv[1]
calls = [
    (lambda: vipfast.group_advantages([1.0, 0.0], [2**63 - 1, 2**63 - 1, 4]), "add up to more than"),
    (lambda: vipfast.group_advantages([1.0, 0.0], [2**63 - 1, 2**63 - 1, 4], check=False), "add up to more than"),
    (lambda: vipfast.token_advantages([1., 0., 1.], [2**63 - 1, 2**63 - 1, 4]), "add up to about"),
    (lambda: vipfast.token_advantages([1., 0., 1.], [2**63 - 1, 2**63 - 1, 4], layout="padded"), "add up to about"),
    (lambda: vipfast.group_advantages([1, 0, 1, 1, 0, .5], [-2, 8], check=False), "is negative"),
    (lambda: vipfast.group_advantages([1.0, 2.0, 3.0], [2, 5, -1], check=False), "is negative"),
    (lambda: vipfast.group_advantages([1, 0, 1, 1, 0, .5], offsets=[0, 5, 2, 6], check=False), "must not decrease"),
    (lambda: vipfast.group_advantages([1, 0, 1], offsets=[0, 2**62, 3], check=False), "must not decrease"),
    (lambda: vipfast.group_advantages([1, 0, 1], offsets=[-2**63, 0, 3], check=False), "must start at 0"),
    (lambda: vipfast.fused_token_advantages([1, 0, 1, 1, 0, .5], [-2, 8], [1] * 6, check=False), "is negative"),
    (lambda: vipfast.fused_token_advantages([1., 0.], [2], [2**63 - 1, 2], check=False), "add up to about"),
    (lambda: vipfast.fused_token_advantages([1., 0.], offsets=[0, 3, 2], response_lengths=[1, 1], check=False),
     "must not decrease"),
]
for call, message in calls:
    try:
        call()
    except ValueError as error:
        assert re.search(message, str(error)), (message, str(error))
    else:
        raise AssertionError(f"no ValueError for the call expecting {message!r}")
print("all refused")
"""


@pytest.mark.slow
@pytest.mark.parametrize("path", ["native", "torch", pytest.param("triton", marks=needs_interpreter)])
def test_calls_that_used_to_kill_the_interpreter_are_refused(path, tmp_path):
    result = subprocess.run([sys.executable, "-c", CRASHERS, path], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "all refused", (
        f"exit {result.returncode}; stdout {result.stdout[-2000:]!r}; stderr {result.stderr[-2000:]!r}")


# ----------------------------------------------------------------------------------------------
# fuzzing: any input either gives the reference's numbers or a ValueError / TypeError

INT64_EDGES = [-(2**63), -(2**62), -2, -1, 0, 1, 2**31, 2**62, 2**63 - 1]
REWARD_DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint64, np.float16, np.float32, np.float64]
PATH_EXAMPLES = {"native": 300, "torch-cpu": 150, "triton-interpreter": 25}


def _container(draw, values: np.ndarray):
    """The same values as a list, a numpy array or a torch tensor, contiguous or strided."""
    kind = draw(st.sampled_from(["numpy", "list", "torch", "strided-numpy", "strided-torch"]))
    if kind == "list":
        return values.tolist()
    if kind == "numpy" or values.dtype == np.uint64:  # torch has few uint64 ops
        return values
    if kind == "strided-numpy":
        return np.repeat(values, 2)[::2]
    return torch.from_numpy(np.repeat(values, 2))[::2] if kind == "strided-torch" else torch.from_numpy(values.copy())


@st.composite
def reward_arrays(draw, n: int, bounded=False):
    """Rewards of any dtype; floats with NaN, inf and extremes, or (bounded) |r| <= 2^100 besides NaN and inf."""
    from hypothesis.extra import numpy as hnp

    dtype = np.dtype(draw(st.sampled_from(REWARD_DTYPES)))
    elements = None
    if bounded and dtype.itemsize >= 4 and dtype.kind == "f":
        special = st.sampled_from([float("nan"), float("inf"), float("-inf")])
        elements = st.floats(-2.0**100, 2.0**100, width=8 * dtype.itemsize) | special
    return draw(hnp.arrays(dtype, n, elements=elements))


@st.composite
def integer_vectors(draw, values: list[int]):
    """values as a list, or a numpy / torch vector of an integer dtype that holds them."""
    kind = draw(st.sampled_from(["list", "int64", "int32", "int8", "uint64", "torch"]))
    fits = {"int32": (-(2**31), 2**31 - 1), "int8": (-128, 127), "uint64": (0, 2**64 - 1)}
    low, high = fits.get(kind, (-(2**63), 2**63 - 1))
    if kind == "list" or not all(low <= v <= high for v in values):
        return values
    if kind == "torch":
        return torch.tensor(values, dtype=torch.int64)
    return np.array(values, dtype=kind)


@st.composite
def groupings(draw, n_min=0):
    """(form, grouping argument, N): mostly valid groupings of N rollouts, often spoiled on purpose."""
    sizes = draw(st.lists(st.integers(0 if draw(st.booleans()) else 1, 6), min_size=0, max_size=8))
    n = sum(sizes)
    form = draw(st.sampled_from(["sizes", "offsets", "index"]))
    if form == "index":
        ids = draw(st.lists(st.one_of(st.integers(-3, 3), st.sampled_from(INT64_EDGES), st.text(max_size=2),
                                      st.floats(allow_infinity=True, allow_nan=True)), min_size=n, max_size=n))
        kind = draw(st.sampled_from(["list", "object", "numpy"]))
        if kind == "object":
            return form, np.array(ids + [None], dtype=object)[:-1], n
        if kind == "numpy" and ids and all(type(key) is float for key in ids):
            return form, np.array(ids), n
        if kind == "numpy" and ids and all(type(key) is int for key in ids):
            return form, draw(integer_vectors(ids)), n
        return form, ids, n
    values = sizes if form == "sizes" else [0, *np.cumsum(sizes, dtype=np.int64).tolist()]
    if draw(st.integers(0, 3)) == 0:  # spoil one entry
        at = draw(st.integers(0, len(values)))
        spoiled = draw(st.sampled_from(INT64_EDGES + [n + 1, -n - 1]))
        values = values[:at] + [spoiled] + values[at + 1:]
    return form, draw(integer_vectors(values)), n


def _call_grouped(form, grouping, rewards, **options):
    keyword = {"sizes": "group_sizes", "offsets": "offsets", "index": "index"}[form]
    return vipfast.group_advantages(rewards, **{keyword: grouping}, **options)


def _assert_result(out, seen, groups, estimator, eps, roundoff, check):
    assert_advantages(out.detach().cpu().numpy(), seen, groups, estimator, eps, roundoff, check)


@pytest.mark.slow
@pytest.mark.parametrize("path", [pytest.param(p, marks=needs_interpreter if p.startswith("triton") else [])
                                  for p in PATH_EXAMPLES])
def test_group_advantages_fuzz(path):
    @settings(max_examples=PATH_EXAMPLES[path], deadline=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def run(data):
        form, grouping, n = data.draw(groupings())
        values = data.draw(reward_arrays(n, bounded=path.startswith("triton")))
        estimator = data.draw(st.sampled_from(ESTIMATORS))
        eps, check = data.draw(st.sampled_from([0.0, 1e-6, 1.0])), data.draw(st.booleans())
        groups = group_positions(form, grouping, n, check)
        rewards = _container(data.draw, values)
        seen = seen_by_vipfast(rewards)
        with pytest.MonkeyPatch.context() as patch:
            force_backend(patch, path)
            call = lambda: _call_grouped(form, grouping, rewards, estimator=estimator, eps=eps, check=check)  # noqa: E731
            if groups is None or (check and not np.isfinite(seen).all()):
                with pytest.raises((ValueError, TypeError)):
                    call()
                return
            _assert_result(call(), seen, groups, estimator, eps, ROUNDOFF[path], check)

    run()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["native", "torch-cpu"])
def test_token_advantages_fuzz(path):
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def run(data):
        lengths = data.draw(st.lists(st.integers(0, 5), min_size=0, max_size=10))
        n = len(lengths)
        if data.draw(st.integers(0, 2)) == 0 and n:
            lengths[data.draw(st.integers(0, n - 1))] = data.draw(st.sampled_from([-1, -(2**63), 2**63 - 1, 2**62]))
        values = data.draw(reward_arrays(n))
        layout = data.draw(st.sampled_from(LAYOUTS))
        max_len = data.draw(st.sampled_from([None, -1, 0, 3, 7])) if layout == "padded" else None
        width = max(lengths, default=0) if max_len is None else max_len
        valid = min(lengths, default=0) >= 0 and sum(lengths) < 2**61  # float32 tokens: 4 T bytes within int64
        valid = valid and width >= max(lengths, default=0) and (layout == "packed" or n * width < 2**61)
        advantages, response_lengths = _container(data.draw, values), data.draw(integer_vectors(lengths))
        check = data.draw(st.booleans())
        with pytest.MonkeyPatch.context() as patch:
            force_backend(patch, path)
            call = lambda: vipfast.token_advantages(advantages, response_lengths, layout=layout,  # noqa: E731
                                                    max_len=max_len, check=check)
            if not valid:
                with pytest.raises((ValueError, TypeError)):
                    call()
                return
            out = call()
        with np.errstate(over="ignore"):
            seen = seen_by_vipfast(advantages).astype(np.float32).astype(np.float64)
        expected = reference_tokens(seen, lengths, layout, max_len)
        if layout == "padded":
            out, mask = out
            expected, expected_mask = expected
            np.testing.assert_array_equal(mask.numpy(), expected_mask)
        np.testing.assert_array_equal(out.numpy(), expected)

    run()


@pytest.mark.slow
def test_fused_token_advantages_fuzz():
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def run(data):
        form, grouping, n = data.draw(groupings())
        if form == "index":
            form, grouping = "sizes", [n]
        lengths = data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
        if data.draw(st.integers(0, 3)) == 0 and n:
            lengths[0] = data.draw(st.sampled_from([-1, -(2**63), 2**63 - 1]))
        values = data.draw(reward_arrays(n))
        estimator, check = data.draw(st.sampled_from(ESTIMATORS)), data.draw(st.booleans())
        groups = group_positions(form, grouping, n, check)
        keyword = {"sizes": "group_sizes", "offsets": "offsets"}[form]
        rewards = _container(data.draw, values)
        seen = seen_by_vipfast(rewards)
        call = lambda: vipfast.fused_token_advantages(  # noqa: E731
            rewards, response_lengths=lengths, **{keyword: grouping}, estimator=estimator, check=check)
        bad_lengths = min(lengths, default=0) < 0 or sum(lengths) >= 2**61
        if groups is None or bad_lengths or (check and not np.isfinite(seen).all()):
            with pytest.raises((ValueError, TypeError)):
                call()
            return
        group_out = vipfast.group_advantages(rewards, **{keyword: grouping}, estimator=estimator, check=check)
        _assert_result(group_out, seen, groups, estimator, 1e-6, ROUNDOFF["native"], check)
        tokens = group_out.repeat_interleave(torch.tensor(lengths, dtype=torch.int64))
        torch.testing.assert_close(call(), tokens, rtol=0, atol=0, equal_nan=True)

    run()


@pytest.mark.slow
def test_group_ids_from_index_fuzz():
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def run(data):
        form, grouping, n = data.draw(groupings())
        if form != "index":
            return
        groups = group_positions("index", grouping, n, True)
        if groups is None:
            with pytest.raises(ValueError, match="not equal to itself"):
                vipfast.group_ids_from_index(grouping)
            return
        order, sizes = vipfast.group_ids_from_index(grouping)
        assert order.tolist() == [int(i) for positions in groups for i in positions]
        assert sizes.tolist() == [len(positions) for positions in groups]

    run()

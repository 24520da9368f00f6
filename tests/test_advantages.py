"""Ragged group advantages against an independent float64 numpy reference, on fresh random batches.

Every public function runs on three backends: the vectorised torch path on CPU, the Triton
kernels on CPU tensors under TRITON_INTERPRET=1 (conftest sets it when there is no GPU), and
the Triton kernels on CUDA (marker `gpu`). Each test draws a new seed and reports it on failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the advantage functions need torch (the `torch` extra)")

import vipfast  # noqa: E402
from vipfast import advantages as advantages_module  # noqa: E402

ESTIMATORS = ("grpo", "drgrpo", "rloo")
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
    pytest.param("torch-cpu", id="torch-cpu"),
    pytest.param("triton-interpreter", id="triton-interpreter", marks=needs_interpreter),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, needs_cuda]),
]
# Unit roundoff of the arithmetic each backend uses (the torch path accumulates in float64).
ROUNDOFF = {"torch-cpu": 2.0**-52, "triton-interpreter": 2.0**-24, "cuda": 2.0**-24}


class Backend:
    def __init__(self, name: str):
        self.name = name
        self.device = torch.device("cuda" if name == "cuda" else "cpu")
        self.roundoff = ROUNDOFF[name]
        self.dispatched: list[str] = []

    def tensor(self, array, dtype=None):
        return torch.as_tensor(np.asarray(array), dtype=dtype, device=self.device)


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    chosen = Backend(request.param)
    real = advantages_module._backend_for

    def spy(device):
        choice = "triton" if chosen.name == "triton-interpreter" else real(device)
        chosen.dispatched.append(choice)
        return choice

    monkeypatch.setattr(advantages_module, "_backend_for", spy)
    yield chosen
    expected = "torch" if chosen.name == "torch-cpu" else "triton"
    assert set(chosen.dispatched) <= {expected}, f"{chosen.name} dispatched to {chosen.dispatched}"


# ----------------------------------------------------------------------------------------------
# independent references (float64 numpy; verl's loop in torch)


def reference_group_advantages(rewards, sizes, estimator, eps=1e-6):
    """DESIGN.md section 4 group by group in float64; size-1 and all-equal groups give 0."""
    r = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(r)
    start = 0
    for n in np.asarray(sizes, dtype=np.int64):
        group = r[start:start + n]
        if n >= 2 and not np.all(group == group[0]):
            centred = group - group.mean()
            if estimator == "grpo":
                out[start:start + n] = centred / (group.std(ddof=1) + eps)
            elif estimator == "drgrpo":
                out[start:start + n] = centred
            else:
                out[start:start + n] = centred * n / (n - 1)
        start += n
    return out


def roundoff_tolerance(rewards, sizes, estimator, expected, roundoff, eps=1e-6):
    """Per-element bound for an implementation computing in unit roundoff `roundoff` and storing float32.

    The centred reward r - mean carries an absolute error of a few roundoffs of the group's
    largest |r| (M); grpo's std carries the same relative error, which scales A. So
    |error| <= 16 u M scale (1 + |A|) + 2^-24 |A|, with scale = 1/(std+eps), 1 or n/(n-1).
    """
    r = np.asarray(rewards, dtype=np.float64)
    bound = np.zeros_like(r)
    start = 0
    for n in np.asarray(sizes, dtype=np.int64):
        group = r[start:start + n]
        if n >= 2:
            scale = {"grpo": 1 / (group.std(ddof=1) + eps), "drgrpo": 1.0, "rloo": n / (n - 1)}[estimator]
            bound[start:start + n] = 16 * roundoff * np.abs(group).max() * scale
        start += n
    expected = np.abs(expected)
    return bound * (1 + expected) + 2.0**-24 * expected + 1e-300


def assert_within(actual, expected, tolerance, rng, what=""):
    actual = actual.detach().cpu().numpy().astype(np.float64) if isinstance(actual, torch.Tensor) else actual
    assert actual.shape == expected.shape, f"{what}shape {actual.shape} != {expected.shape}; {rng.seed_for_message}"
    error = np.abs(actual - expected)
    bad = ~(error <= tolerance)
    if bad.any():
        first = np.flatnonzero(bad)[:5]
        raise AssertionError(
            f"{what}{bad.sum()} of {bad.size} entries off; first at {first.tolist()}: got {actual[first]}, "
            f"expected {expected[first]}, tolerance {np.broadcast_to(tolerance, expected.shape)[first]}; "
            f"{rng.seed_for_message}")


def reference_tokens(advantages, lengths, layout, max_len=None):
    a, lengths = np.asarray(advantages, dtype=np.float64), np.asarray(lengths, dtype=np.int64)
    if layout == "packed":
        return np.concatenate([np.full(n, value) for value, n in zip(a, lengths)] + [np.zeros(0)])
    width = int(lengths.max(initial=0)) if max_len is None else max_len
    out, mask = np.zeros((a.size, width)), np.zeros((a.size, width), dtype=bool)
    for i, (value, n) in enumerate(zip(a, lengths)):
        out[i, :n], mask[i, :n] = value, True
    return out, mask


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


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("eps", [1e-6, 0.0], ids=["eps=1e-6", "eps=0"])
def test_singletons_and_all_equal_groups_give_exactly_zero(backend, estimator, eps, rng):
    sizes = np.array([1, 3, 1, 64, 2, 1, 17])
    values = rng.normal(size=sizes.size).astype(np.float32) * 10.0 ** rng.integers(-3, 4, size=sizes.size)
    rewards = np.repeat(values, sizes)
    out = vipfast.group_advantages(backend.tensor(rewards), backend.tensor(sizes), estimator=estimator, eps=eps)
    assert torch.count_nonzero(out).item() == 0, f"{out}; {rng.seed_for_message}"


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
    uids = np.array([f"uid-{g}" for g, n in enumerate(sizes) for _ in range(n)], dtype=object)
    shuffle = rng.permutation(uids.size)  # verl's batches interleave groups
    uids, rewards = uids[shuffle], rewards[shuffle]
    verl = verl_style_advantages(torch.from_numpy(rewards), uids, estimator).numpy().astype(np.float64)

    order, group_sizes = vipfast.group_ids_from_index(uids)
    order_on_device = order.to(backend.device)
    grouped = vipfast.group_advantages(backend.tensor(rewards)[order_on_device], group_sizes.to(backend.device),
                                       estimator=estimator)
    ours = np.empty(uids.size)
    ours[order.numpy()] = grouped.cpu().numpy()

    singleton = np.isin(uids, [f"uid-{g}" for g in np.flatnonzero(sizes == 1)])
    assert singleton.any()
    np.testing.assert_array_equal(ours[singleton], 0.0, err_msg=rng.seed_for_message)
    verl_singleton = rewards[singleton] / (1 + 1e-6) if estimator == "grpo" else rewards[singleton]
    np.testing.assert_allclose(verl[singleton], verl_singleton, rtol=1e-6, err_msg=rng.seed_for_message)
    reference = reference_group_advantages(rewards[order.numpy()], group_sizes.numpy(), estimator)
    tolerance = np.empty(uids.size)
    tolerance[order.numpy()] = roundoff_tolerance(rewards[order.numpy()], group_sizes.numpy(), estimator, reference,
                                                  2.0**-24)  # verl computes in float32
    assert_within(ours[~singleton], verl[~singleton], 2 * tolerance[~singleton], rng, "vs verl: ")


def test_zero_size_groups_are_tolerated_with_check_false(backend, rng):
    sizes = np.array([0, 3, 0, 0, 2, 1, 0])
    rewards = rng.normal(size=6).astype(np.float32)
    expected = reference_group_advantages(rewards, sizes, "grpo")
    out = vipfast.group_advantages(backend.tensor(rewards), backend.tensor(sizes), check=False)
    assert_within(out, expected, roundoff_tolerance(rewards, sizes, "grpo", expected, backend.roundoff), rng)
    tokens = vipfast.fused_token_advantages(backend.tensor(rewards), backend.tensor(sizes), backend.tensor([2] * 6),
                                            check=False)
    assert_within(tokens, np.repeat(expected, 2), 1e-5, rng)


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


def test_inconsistent_sizes_with_check_false_stay_in_bounds(backend):
    """With check=False the kernels mask every access: wrong sizes give wrong numbers, not a crash.
    (The torch path refuses such input with torch's own RuntimeError.)"""
    rewards, sizes = backend.tensor([1.0, 2.0, 3.0]), backend.tensor([2, 5, -1])
    if backend.name == "torch-cpu":
        with pytest.raises(RuntimeError):
            vipfast.group_advantages(rewards, sizes, check=False)
        return
    assert vipfast.group_advantages(rewards, sizes, check=False).shape == (3,)
    assert vipfast.fused_token_advantages(rewards, sizes, backend.tensor([4, 0, 2]), check=False).shape == (6,)


# ----------------------------------------------------------------------------------------------
# inputs, grouping, dispatch


def test_numpy_arrays_lists_ints_and_bools_are_accepted():
    rewards, sizes = [1, 0, 1, 1, 1], [3, 2]
    expected = vipfast.group_advantages(torch.tensor(rewards, dtype=torch.float32), torch.tensor(sizes))
    for r in (rewards, np.array(rewards), np.array(rewards, dtype=bool), torch.tensor(rewards).bool(),
              np.array(rewards, dtype=np.float16), torch.tensor(rewards, dtype=torch.float64)):
        for s in (sizes, np.array(sizes, dtype=np.int32), torch.tensor(sizes, dtype=torch.int16), tuple(sizes)):
            out = vipfast.group_advantages(r, s)
            assert out.dtype == torch.float32 and out.device.type == "cpu"
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert not vipfast.group_advantages(torch.tensor([1.0, 2.0], requires_grad=True), [2]).requires_grad


@pytest.mark.parametrize("kind", ["object", "str", "int-array", "list", "int-tensor"])
def test_group_ids_from_index(kind, rng):
    groups = int(rng.integers(1, 30))
    ids = rng.integers(0, groups, size=int(rng.integers(0, 200)))
    index = {
        "object": np.array([f"u{i}" for i in ids], dtype=object),
        "str": np.array([f"u{i}" for i in ids]),
        "int-array": ids,
        "list": ids.tolist(),
        "int-tensor": torch.from_numpy(ids),
    }[kind]
    order, sizes = vipfast.group_ids_from_index(index)
    first_seen = list(dict.fromkeys(ids.tolist()))  # groups in order of first appearance
    expected_order = [i for uid in first_seen for i in np.flatnonzero(ids == uid)]
    assert order.dtype == sizes.dtype == torch.int64
    assert order.tolist() == expected_order, rng.seed_for_message
    assert sizes.tolist() == [int((ids == uid).sum()) for uid in first_seen], rng.seed_for_message


def test_group_ids_from_index_keeps_ids_of_different_types_apart():
    order, sizes = vipfast.group_ids_from_index([1, "1", 1, (1,)])
    assert order.tolist() == [0, 2, 1, 3] and sizes.tolist() == [2, 1, 1]


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
            "assert ('triton' in sys.modules) == triton_before, 'the CPU path imported triton'\n"
            "assert not any(name.startswith('vipfast.kernels.') for name in sys.modules), 'kernels imported'\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)  # import the installed package, not the source tree
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# ----------------------------------------------------------------------------------------------
# validation: every problem is named


def _group(**overrides):
    arguments = dict(rewards=[0.0, 1.0, 1.0], group_sizes=[2, 1])
    arguments.update(overrides)
    return lambda: vipfast.group_advantages(arguments.pop("rewards"), arguments.pop("group_sizes", None), **arguments)


def _tokens(**overrides):
    arguments = dict(advantages=[0.5, -0.5], response_lengths=[3, 1])
    arguments.update(overrides)
    return lambda: vipfast.token_advantages(arguments.pop("advantages"), arguments.pop("response_lengths"), **arguments)


BAD_INPUTS = [
    ("nan-reward", _group(rewards=[0.0, float("nan"), 1.0]), ValueError, r"rewards must be finite: rewards\[1\] = nan"),
    ("inf-reward", _group(rewards=[0.0, 1.0, float("-inf")]), ValueError, r"rewards\[2\] = -inf"),
    ("negative-size", _group(group_sizes=[4, -1]), ValueError, r"group_sizes\[1\] = -1 is negative"),
    ("zero-size", _group(group_sizes=[3, 0]), ValueError, r"group_sizes\[1\] = 0 is an empty group"),
    ("sizes-sum-short", _group(group_sizes=[1, 1]), ValueError, "group_sizes add up to 2 but rewards has 3 entries"),
    ("sizes-sum-zero", _group(group_sizes=[]), ValueError, "group_sizes add up to 0 but rewards has 3"),
    ("offsets-start", _group(group_sizes=None, offsets=[1, 3]),
     ValueError, r"offsets must start at 0, got offsets\[0\] = 1"),
    ("offsets-repeat", _group(group_sizes=None, offsets=[0, 2, 2, 3]),
     ValueError, r"strictly increasing.*offsets\[2\] = 2"),
    ("offsets-end", _group(group_sizes=None, offsets=[0, 2]), ValueError, "offsets end at 2 but rewards has 3"),
    ("offsets-empty", _group(group_sizes=None, offsets=[]), ValueError, "offsets must have G"),
    ("sizes-and-offsets", _group(offsets=[0, 3]), TypeError, "exactly one of group_sizes and offsets"),
    ("no-sizes", _group(group_sizes=None), TypeError, "exactly one of group_sizes and offsets"),
    ("estimator", _group(estimator="ppo"), ValueError, "estimator must be one of 'grpo', 'drgrpo', 'rloo', got 'ppo'"),
    ("eps-negative", _group(eps=-1e-6), ValueError, "eps must be finite and >= 0"),
    ("eps-nan", _group(eps=float("nan")), ValueError, "eps must be finite and >= 0"),
    ("eps-string", _group(eps="1e-6"), TypeError, "eps must be a real number"),
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
    ("index-2d", lambda: vipfast.group_ids_from_index(np.zeros((2, 2))), ValueError, "index must be 1-D"),
    ("index-complex", lambda: vipfast.group_ids_from_index(np.array([1j])),
     TypeError, "index must hold integers, strings"),
]


@pytest.mark.parametrize("call, error, message", [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS])
def test_bad_inputs_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


@needs_cuda
@pytest.mark.gpu
def test_cuda_validation_and_mixed_devices():
    rewards = torch.tensor([0.0, 1.0, 1.0, float("nan")], device="cuda")
    with pytest.raises(ValueError, match=r"rewards\[3\] = nan"):
        vipfast.group_advantages(rewards, [2, 2])
    out = vipfast.group_advantages(rewards[:3], [2, 1])  # sizes from a list follow the rewards to the GPU
    assert out.is_cuda and out.tolist() == pytest.approx([-0.70710, 0.70710, 0.0], abs=1e-4)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_half_precision_rewards_on_cuda(estimator, dtype, rng):
    """The interpreter has no bfloat16; the kernels load half rewards and accumulate in float32."""
    sizes = random_sizes(rng)
    rewards = torch.from_numpy(random_rewards(rng, sizes, "normal")).to(device="cuda", dtype=dtype)
    exact = rewards.double().cpu().numpy()
    expected = reference_group_advantages(exact, sizes, estimator)
    out = vipfast.group_advantages(rewards, sizes, estimator=estimator)
    assert out.dtype == torch.float32
    assert_within(out, expected, roundoff_tolerance(exact, sizes, estimator, expected, 2.0**-24), rng)


@needs_cuda
@pytest.mark.gpu
def test_batch_shapes_do_not_recompile_the_kernels(rng):
    """N, G, T and L are runtime arguments: new batch shapes of the same size class reuse one binary."""
    from vipfast.kernels import group_advantages as group_kernels
    from vipfast.kernels import token_advantages as token_kernels

    kernels = [group_kernels._group_advantages_kernel, token_kernels._token_advantages_kernel,
               token_kernels._fused_token_advantages_kernel]

    def compiled():
        return [sum(len(cache[0]) for cache in kernel.device_caches.values()) for kernel in kernels]

    counts = []
    for groups in (1001, 777, 4095):
        # Block sizes follow the mean group size (12 -> 16) and mean length (45 -> 64): keep both
        # well inside one power-of-two class so only the batch shape changes.
        sizes = rng.integers(10, 15, size=groups)
        rewards = torch.rand(int(sizes.sum()), device="cuda")
        lengths = torch.from_numpy(rng.integers(30, 61, size=int(sizes.sum()))).cuda()
        vipfast.token_advantages(vipfast.group_advantages(rewards, sizes), lengths)
        vipfast.fused_token_advantages(rewards, sizes, lengths)
        torch.cuda.synchronize()
        counts.append(compiled())
    assert counts[0] == counts[-1] == [1, 1, 1], counts

"""Ragged group advantages for GRPO, Dr. GRPO and RLOO.

Rewards come flat, r [N], one group per prompt of n_g >= 1 rollouts, given as sizes [G], as
CSR offsets [G+1] (rollouts of a group contiguous), or as an id per rollout (index=, groups
interleaved, as in verl). For each group with mean m and Bessel-corrected std s:

    grpo    A = (r - m) / (s + eps)
    drgrpo  A = r - m
    rloo    A = n / (n - 1) * (r - m)  =  r - mean of the other n - 1 rewards

For groups of n >= 2 these are verl's compute_grpo_outcome_advantage (norm_adv_by_std_in_grpo
True / False) and compute_rloo_outcome_advantage. One difference, on purpose: a group of one
rollout gets A = 0 here, while verl sets mean 0 and std 1 for it, so its advantage is the raw
reward r. A lone rollout has no baseline; passing r through would reward it for the reward
scale alone. An all-equal group gives exactly 0 for every estimator (also with eps = 0).

The path is chosen once per call from the device of `rewards` / `advantages`: CPU tensors run
the native core (vipfast._core: one pass for the sums, one for the output, float64 sums, no
copy of contiguous input), CUDA tensors the Triton kernels in kernels/ (vipfast.kernels,
imported on first CUDA use), other devices a vectorised torch path (float64 sums, float32 on
MPS). Outputs are float32 on that device.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch

from . import _core
from .allocation import ESTIMATORS as ADVANTAGE_ESTIMATORS

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "fused_token_advantages",
    "group_advantages",
    "group_ids_from_index",
    "token_advantages",
]

LAYOUTS = ("packed", "padded")
INT64_MAX = 2**63 - 1
MAX_TOKENS = 2**61  # float32 outputs of 4 bytes a token stay within int64 byte counts


def group_advantages(
    rewards,
    group_sizes=None,
    *,
    offsets=None,
    index=None,
    estimator: str = "grpo",
    eps: float = 1e-6,
    check: bool = True,
) -> torch.Tensor:
    """Per-rollout advantages of ragged groups, float32 [N] on the device of `rewards`.

    rewards      [N] real numbers (torch tensor, numpy array or sequence); bools and integers of up
                 to 16 bits become float32, wider integers float64 (exact up to 2^53)
    group_sizes  [G] integers >= 1 adding up to N; rollouts of a group are contiguous, in order
    offsets      [G+1] CSR bounds instead of group_sizes (keyword only): 0 = o_0 < ... < o_G = N
    index        [N] a group id per rollout instead (keyword only): verl's uid strings, integers or
                 any hashable ids, grouped as group_ids_from_index groups them; groups may
                 interleave and the output stays in the order of rewards
    estimator    "grpo" | "drgrpo" | "rloo"
    eps          >= 0, added to the std for grpo
    check        check values too: rewards must be finite and groups non-empty. The structure is
                 checked whatever check is (sizes >= 0 adding up to N, offsets from 0 to N that never
                 decrease, one id per reward), so no input reads or writes out of bounds. With
                 check=False empty groups are allowed and a NaN or inf reward gives non-finite
                 advantages in its group; on CUDA it spares the host sync of the value scan, which
                 also sends rewards beyond 2^100 (float64: 2^500) in magnitude to the torch path,
                 as the kernels' unscaled sums could overflow on them.

    float32 output: drgrpo and rloo advantages beyond float32's range (|A| > 3.4e38, only from
    float64 rewards) come out as +-inf.
    """
    estimator, eps, check = _estimator(estimator), _eps(eps), _flag(check, "check")
    r = _real_vector(rewards, "rewards")
    _one_grouping(group_sizes, offsets, index, "group_advantages")
    backend = _backend_for(r.device)
    if backend == "native":
        return _group_advantages_native(r, group_sizes, offsets, index, estimator, eps, check)
    if index is not None:
        order, sizes = _index_order(index, r)
        backend = _scanned_backend(backend, r, check)
        out = torch.empty(r.numel(), dtype=torch.float32, device=r.device)
        out[order] = _group_advantages_on_device(backend, r[order], _offsets_from_sizes(sizes), estimator, eps)
        return out
    offs = _checked_offsets(group_sizes, offsets, r.numel(), r.device, check)
    return _group_advantages_on_device(_scanned_backend(backend, r, check), r, offs, estimator, eps)


def token_advantages(
    advantages,
    response_lengths,
    *,
    layout: str = "packed",
    max_len: int | None = None,
    check: bool = True,
):
    """Write each rollout's advantage to each of its response tokens.

    advantages        [N] real numbers, e.g. the output of group_advantages
    response_lengths  [N] integers >= 0 (a verl response_mask gives them as mask.sum(-1)); always
                      checked (>= 0, a total that int64 holds), whatever check is
    layout="packed"   -> Tensor[T] float32, T = sum of lengths, rollouts one after another
    layout="padded"   -> (Tensor[N, L] float32, mask Tensor[N, L] bool), tokens left-aligned
                         in each row (right padding, as verl's response_mask), padding 0.0;
                         L = max_len, or the longest response when max_len is None
    check             accepted for symmetry with group_advantages; advantages are not scanned
    """
    _flag(check, "check")
    a = _real_vector(advantages, "advantages")
    lengths, width = _token_layout(response_lengths, a.numel(), a.device, layout, max_len, "advantages")
    if _backend_for(a.device) == "triton":
        from vipfast.kernels import token_advantages as kernels

        return kernels.token_advantages_triton(_kernel_floats(a), _offsets_from_sizes(lengths), layout=layout,
                                               max_len=width)
    return _token_advantages_torch(a, lengths, layout, width)


def fused_token_advantages(
    rewards,
    group_sizes=None,
    response_lengths=None,
    *,
    offsets=None,
    estimator: str = "grpo",
    eps: float = 1e-6,
    layout: str = "packed",
    max_len: int | None = None,
    check: bool = True,
):
    """token_advantages(group_advantages(rewards, ...), response_lengths, ...) in one kernel launch on CUDA.

    Arguments and outputs as in group_advantages and token_advantages; response_lengths is
    required (it follows group_sizes, so with offsets= pass it by keyword).
    """
    if response_lengths is None:
        raise TypeError("fused_token_advantages() needs response_lengths")
    estimator, eps, check = _estimator(estimator), _eps(eps), _flag(check, "check")
    r = _real_vector(rewards, "rewards")
    _one_grouping(group_sizes, offsets, None, "fused_token_advantages")
    lengths, width = _token_layout(response_lengths, r.numel(), r.device, layout, max_len, "rewards")
    backend = _backend_for(r.device)
    if backend == "native":
        group = _group_advantages_native(r, group_sizes, offsets, None, estimator, eps, check)
        return _token_advantages_torch(group, lengths, layout, width)
    offs = _checked_offsets(group_sizes, offsets, r.numel(), r.device, check)
    if _scanned_backend(backend, r, check) == "triton":
        from vipfast.kernels import token_advantages as kernels

        return kernels.fused_token_advantages_triton(
            _kernel_floats(r), offs, _offsets_from_sizes(lengths), estimator=estimator, eps=eps, layout=layout,
            max_len=width)
    return _token_advantages_torch(_group_advantages_torch(r, offs, estimator, eps), lengths, layout, width)


def group_ids_from_index(index) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a verl-style group id per rollout (uid strings, ints, any hashable) into CSR groups.

    Returns (order [N] int64, group_sizes [G] int64): index[order] lists each group's rollouts
    contiguously, groups in order of first appearance, rollouts of a group in their original
    order. Tensors stay on their device; anything else gives CPU tensors. Typical use:

        order, sizes = group_ids_from_index(batch.non_tensor_batch["uid"])
        adv = torch.empty_like(rewards)
        adv[order] = group_advantages(rewards[order], sizes)

    (group_advantages(rewards, index=uids) does the same in one call.)

    Ids are grouped by equality, as dict keys are: 1, 1.0 and True are one id, "1" another;
    -0.0 and 0.0 are one id. A NaN id raises ValueError, for numpy, torch and Python inputs
    alike: NaN is not equal to itself, so it names no group, and it almost always stands for a
    missing uid; merging every NaN into one group, or making each its own group, would give
    wrong advantages without a word.
    """
    if isinstance(index, torch.Tensor) and index.device.type != "cpu":
        return _group_ids_torch(index)
    group_of, num_groups = _core.dense_groups(_index_keys(index))
    order, sizes = _core.group_order(group_of, num_groups)
    return torch.from_numpy(order), torch.from_numpy(sizes)


# ----------------------------------------------------------------------------------------------
# native path (CPU tensors)


def _group_advantages_native(r, group_sizes, offsets, index, estimator, eps, check) -> torch.Tensor:
    out = torch.empty(r.numel(), dtype=torch.float32)
    values = (r if r.dtype in (torch.float32, torch.float64) else r.to(torch.float32)).numpy()
    if index is not None:
        keys = _index_keys(index)
        _same_length(keys.shape[0], r.numel(), "index")
        if keys.dtype != object:
            _core.keyed_advantages(values, keys, out.numpy(), estimator, eps, check)
            return out
        group_of, num_groups = _core.dense_groups(keys)
        _core.indexed_advantages(values, group_of, num_groups, out.numpy(), estimator, eps, check)
        return out
    name, bounds = ("offsets", offsets) if offsets is not None else ("group_sizes", group_sizes)
    _core.segment_advantages(values, _host_int64(bounds, name), offsets is not None, out.numpy(), estimator, eps,
                             check, not check)
    return out


def _index_keys(index) -> np.ndarray:
    """A 1-D numpy array the native grouping takes: int64 keys, or Python objects.

    Floats become the bits of their float64 value (-0.0 as 0.0); NaN is refused (see
    group_ids_from_index); numpy strings become Python strings.
    """
    if isinstance(index, torch.Tensor):
        _check_index_tensor(index)
        tensor = index.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float64)
        array = tensor.numpy()
    elif isinstance(index, np.ndarray):
        array = index
    elif isinstance(index, (str, bytes)):
        raise TypeError(f"index must be a 1-D sequence of hashable ids, got a single {type(index).__name__}")
    else:
        # Plain sequences stay objects, one per element: np.asarray([1, "1"]) would merge two
        # different ids, np.asarray([(1,), (2,)]) would make a 2-D array of them.
        try:
            array = np.fromiter(index, dtype=object)
        except TypeError as error:  # not iterable
            raise TypeError(f"index must be a 1-D sequence of hashable ids: {error}") from None
    if array.ndim != 1:
        raise ValueError(f"index must be 1-D, got shape {array.shape}")
    kind = array.dtype.kind
    if array.dtype == np.uint64:
        return array.astype(np.int64)  # wraps, one to one: equal ids stay equal, different ones different
    if kind in "iuO":
        return array
    if kind == "b":
        return array.astype(np.int64)
    if kind == "f":
        values = array.astype(np.float64)
        _refuse_nan(np.isnan(values), values)
        return (values + 0.0).view(np.int64)  # + 0.0 turns -0.0 into 0.0
    if kind in "US":
        return array.astype(object)
    raise TypeError(f"index must hold integers, floats, strings or other hashable ids, got dtype {array.dtype}")


def _refuse_nan(is_nan, values) -> None:
    first = _first_where(torch.as_tensor(is_nan), torch.as_tensor(values))
    if first is not None:
        raise ValueError(f"index[{first[0]}] = nan is not equal to itself (NaN), so it names no group")


def _check_index_tensor(index: torch.Tensor) -> None:
    if index.ndim != 1:
        raise ValueError(f"index must be 1-D, got shape {tuple(index.shape)}")
    if index.dtype.is_complex:
        raise TypeError(f"index must hold integers, strings or other hashable ids, got dtype {index.dtype}")


def _group_ids_torch(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """group_ids_from_index for tensors on any device, in torch ops (no host copy of the ids)."""
    _check_index_tensor(index)
    if index.is_floating_point():
        _refuse_nan(torch.isnan(index), index)
        index = index.to(torch.float64) + 0.0
    unique, inverse = torch.unique(index, sorted=True, return_inverse=True)
    n, g = index.numel(), unique.numel()
    positions = torch.arange(n, device=index.device)
    first = torch.full((g,), n, dtype=torch.int64, device=index.device)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    group_of = _rank(first)[inverse]
    return torch.argsort(group_of, stable=True), torch.bincount(group_of, minlength=g)


def _index_order(index, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order, sizes = group_ids_from_index(index)
    _same_length(order.numel(), r.numel(), "index")
    return order.to(r.device), sizes.to(r.device)


# ----------------------------------------------------------------------------------------------
# torch path (any non-CUDA device)


def _group_advantages_torch(r: torch.Tensor, offsets: torch.Tensor, estimator: str, eps: float) -> torch.Tensor:
    """Vectorised segment statistics in float64 (float32 on MPS), each group scaled by a power of two.

    Scaling group g by unit_g = 2^-e, with max|r| = m 2^e (m in [0.5, 1)), is exact and brings its
    rewards into (-1, 1): neither the sums nor the squares can overflow, even for float64 rewards
    near the largest double. The mean is shifted by the group's first reward, so an all-equal
    group has r - mean == 0 exactly.
    """
    n_rollouts, n_groups = r.numel(), offsets.numel() - 1
    if n_rollouts == 0 or n_groups <= 0:
        return torch.zeros(n_rollouts, dtype=torch.float32, device=r.device)
    dtype = torch.float32 if r.device.type == "mps" else torch.float64  # MPS has no float64
    x = r.to(dtype)
    sizes = offsets.diff()
    group_of = torch.repeat_interleave(torch.arange(n_groups, device=r.device), sizes, output_size=n_rollouts)
    largest = torch.zeros(n_groups, dtype=dtype, device=r.device).scatter_reduce_(0, group_of, x.abs(), reduce="amax")
    lowest = -120 if dtype == torch.float32 else -1000  # 2^-lowest stays finite: tiny groups scale up exactly
    unit = torch.ldexp(torch.ones_like(largest), -torch.frexp(largest).exponent.clamp(min=lowest))
    y = x * unit[group_of]
    shift = y[offsets[:-1].clamp(0, n_rollouts - 1)]
    n = sizes.to(dtype)
    total = torch.zeros_like(n).index_add_(0, group_of, y - shift[group_of])
    mean = shift + total / n.clamp(min=1)
    centred = y - mean[group_of]
    if estimator == "grpo":
        squares = torch.zeros_like(mean).index_add_(0, group_of, centred * centred)
        denom = torch.sqrt(squares / (n - 1).clamp(min=1)) + eps * unit
        scale = torch.where(denom > 0, 1 / torch.where(denom > 0, denom, 1), 0)
    elif estimator == "drgrpo":
        scale = 1 / unit
    else:
        scale = n / (n - 1).clamp(min=1) / unit
    scale = torch.where(sizes >= 2, scale, 0)
    return (centred * scale[group_of]).to(torch.float32)


def _token_advantages_torch(a: torch.Tensor, lengths: torch.Tensor, layout: str, width: int):
    a = a.to(torch.float32)
    if layout == "packed":
        return torch.repeat_interleave(a, lengths)
    mask = torch.arange(width, device=a.device)[None, :] < lengths[:, None]
    return torch.where(mask, a[:, None], torch.zeros((), dtype=torch.float32, device=a.device)), mask


# ----------------------------------------------------------------------------------------------
# dispatch and validation


def _backend_for(device: torch.device) -> str:
    """'native' for CPU tensors, 'triton' for CUDA tensors, 'torch' otherwise (tests point this elsewhere)."""
    if device.type == "cpu":
        return "native"
    return "triton" if device.type == "cuda" else "torch"


def _group_advantages_on_device(backend: str, r: torch.Tensor, offsets: torch.Tensor, estimator: str,
                                eps: float) -> torch.Tensor:
    if backend == "triton":
        from vipfast.kernels import group_advantages as kernels

        return kernels.group_advantages_triton(_kernel_floats(r), offsets, estimator=estimator, eps=eps)
    return _group_advantages_torch(r, offsets, estimator, eps)


def _kernel_floats(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) else x.to(torch.float32)


def _rank(first: torch.Tensor) -> torch.Tensor:
    """rank[u] = position of first[u] among all firsts (groups ordered by first appearance)."""
    rank = torch.empty_like(first)
    rank[torch.argsort(first)] = torch.arange(first.numel(), device=first.device)
    return rank


def _as_vector(value, name: str, integer: bool) -> torch.Tensor:
    what = "integers" if integer else "real numbers"
    if isinstance(value, torch.Tensor):
        tensor = value
        not_integer = tensor.dtype.is_floating_point or tensor.dtype == torch.bool
        if tensor.dtype.is_complex or (integer and not_integer):
            raise TypeError(f"{name} must hold {what}, got dtype {tensor.dtype}")
    else:
        try:
            array = np.asarray(value)
        except Exception as error:  # ragged nested sequences and the like
            raise TypeError(f"{name} must be a 1-D array of {what}: {error}") from None
        if integer and array.size == 0 and array.dtype.kind == "f":
            array = array.astype(np.int64)  # np.asarray([]) is float64
        allowed = "iu" if integer else "biuf"
        if array.dtype.kind not in allowed:
            raise TypeError(f"{name} must hold {what}, got dtype {array.dtype}")
        if array.dtype.kind == "f" and array.dtype.itemsize > 8:
            array = array.astype(np.float64)  # long double has no torch dtype
        if not integer and array.dtype == np.uint64:
            array = array.astype(np.float64)  # uint64 has few torch ops
        if not array.dtype.isnative or any(stride < 0 for stride in array.strides):
            array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))  # torch takes neither
        tensor = torch.as_tensor(array) if array.flags.writeable else _read_only_tensor(array)
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
    return tensor


def _read_only_tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # torch warns that writes would be undefined; vipfast never writes to inputs
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(array)


def _real_vector(value, name: str) -> torch.Tensor:
    tensor = _as_vector(value, name, integer=False).detach()  # advantages are constants for the loss
    if tensor.is_floating_point():
        return tensor
    # float32 holds every bool and 8- or 16-bit integer exactly; wider integers need float64 (MPS has none)
    exact_in_float32 = tensor.element_size() <= 2 or tensor.device.type == "mps"
    return tensor.to(torch.float32 if exact_in_float32 else torch.float64)


def _host_int64(value, name: str) -> np.ndarray:
    """Integers as an int64 numpy array on the host; uint64 above 2^63 - 1 is refused, not wrapped."""
    array = _as_vector(value, name, integer=True).detach().cpu().numpy()
    if array.dtype == np.uint64 and array.size and array.max() > INT64_MAX:
        i = int(np.argmax(array > INT64_MAX))
        raise ValueError(f"{name}[{i}] = {array[i]} does not fit in int64")
    return array.astype(np.int64, copy=False)


def _offsets_from_sizes(sizes: torch.Tensor) -> torch.Tensor:
    offsets = torch.zeros(sizes.numel() + 1, dtype=torch.int64, device=sizes.device)
    torch.cumsum(sizes, 0, out=offsets[1:])
    return offsets


def _first_where(bad: torch.Tensor, values: torch.Tensor) -> tuple[int, object] | None:
    """(index, value) of the first True in bad, or None; one host sync when there is none."""
    if bad.numel() == 0:
        return None
    where = torch.argmax(bad.to(torch.uint8))
    if not bad[where].item():
        return None
    return int(where), values[where].item()


def _largest_finite(x: torch.Tensor, name: str) -> float:
    """max |x|, after checking that every value is finite (one host sync when they are)."""
    if not x.is_floating_point() or x.numel() == 0:
        return 0.0
    largest = float(x.abs().amax())
    if not math.isfinite(largest):
        index, value = _first_where(~torch.isfinite(x), x)
        raise ValueError(f"{name} must be finite: {name}[{index}] = {value}")
    return largest


# Rewards the Triton kernels take without overflow: their sums run unscaled, in float32 for
# float16/32 rewards (n * 2 * 2^100 stays far below 3.4e38) and in float64 for float64 rewards.
_KERNEL_SAFE_MAGNITUDE = {torch.float64: 2.0**500}


def _scanned_backend(backend: str, r: torch.Tensor, check: bool) -> str:
    """The value scan of check=True; rewards too large for the kernels' unscaled sums go to the
    torch path, which scales every group by a power of two."""
    if not check:
        return backend
    largest = _largest_finite(r, "rewards")
    if backend == "triton" and largest > _KERNEL_SAFE_MAGNITUDE.get(r.dtype, 2.0**100):
        return "torch"
    return backend


def _same_length(count: int, n_rollouts: int, name: str) -> None:
    if count != n_rollouts:
        raise ValueError(f"{name} has {count} entries but rewards has {n_rollouts}")


def _one_grouping(group_sizes, offsets, index, caller: str) -> None:
    given = [value is not None for value in (group_sizes, offsets, index)]
    if sum(given) != 1:
        forms = "group_sizes, offsets= and index=" if caller == "group_advantages" else "group_sizes and offsets="
        raise TypeError(f"{caller}() needs exactly one of {forms}")


def _checked_offsets(group_sizes, offsets, n_rollouts: int, device, check: bool) -> torch.Tensor:
    """CSR offsets [G+1] on device, checked on the host by the native core (one copy from a GPU)."""
    name, bounds = ("offsets", offsets) if offsets is not None else ("group_sizes", group_sizes)
    checked = _core.group_offsets(_host_int64(bounds, name), offsets is not None, n_rollouts, not check)
    return torch.from_numpy(checked).to(device)


def _token_layout(response_lengths, n_rollouts: int, device, layout, max_len, against: str):
    """Checked lengths [N] int64 on device and the padded width (0 for packed)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'packed' or 'padded', got {layout!r}")
    lengths = _as_vector(response_lengths, "response_lengths", integer=True)
    if lengths.numel() != n_rollouts:
        raise ValueError(f"response_lengths has {lengths.numel()} entries but {against} has {n_rollouts}")
    if max_len is not None:
        if layout == "packed":
            raise ValueError("max_len only applies to layout='padded'")
        if isinstance(max_len, bool) or not isinstance(max_len, numbers.Integral):
            raise TypeError(f"max_len must be an integer or None, got {type(max_len).__name__}")
        if max_len < 0:
            raise ValueError(f"max_len must be >= 0, got {max_len}")
    lengths = _as_int64_on(lengths, "response_lengths", device)
    longest = _check_lengths(lengths)
    if layout == "packed":
        return lengths, 0
    if max_len is not None and longest > max_len:
        raise ValueError(f"max_len = {max_len} is shorter than the longest response ({longest} tokens)")
    width = longest if max_len is None else int(max_len)
    if n_rollouts * width >= MAX_TOKENS:
        raise ValueError(f"a padded output of {n_rollouts} x {width} tokens would need more than 2^63 bytes")
    return lengths, width


def _as_int64_on(tensor: torch.Tensor, name: str, device) -> torch.Tensor:
    if tensor.dtype == torch.uint64:
        return torch.from_numpy(_host_int64(tensor, name)).to(device)
    return tensor.to(device=device, dtype=torch.int64)


def _check_lengths(lengths: torch.Tensor) -> int:
    """The longest length; every length >= 0 and the float32 output within int64 bytes (one host sync)."""
    if lengths.numel() == 0:
        return 0
    low, high = (int(value) for value in torch.aminmax(lengths))
    if low < 0:
        index, value = _first_where(lengths < 0, lengths)
        raise ValueError(f"response_lengths must be >= 0: response_lengths[{index}] = {value}")
    # Each length is <= high, so the int64 sum cannot wrap unless high * N could.
    total = float(lengths.to(torch.float64).sum()) if high > INT64_MAX // lengths.numel() else int(lengths.sum())
    if total >= MAX_TOKENS:
        raise ValueError(f"response_lengths add up to about {total:.4g} tokens; a float32 output that long "
                         f"would need more than 2^63 bytes")
    return high


def _estimator(estimator) -> str:
    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(map(repr, ADVANTAGE_ESTIMATORS))}, got {estimator!r}")
    return estimator


def _eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    try:
        value = float(eps)
    except OverflowError:  # an int beyond float64's range
        value = math.inf
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    return value


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)

"""Ragged group advantages for GRPO, Dr. GRPO and RLOO (DESIGN.md section 4).

Rewards come flat, r [N], one group per prompt of n_g >= 1 rollouts, given as sizes [G] or
as CSR offsets [G+1]. For each group with mean m and Bessel-corrected std s:

    grpo    A = (r - m) / (s + eps)
    drgrpo  A = r - m
    rloo    A = n / (n - 1) * (r - m)  =  r - mean of the other n - 1 rewards

For groups of n >= 2 these are verl's compute_grpo_outcome_advantage (norm_adv_by_std_in_grpo
True / False) and compute_rloo_outcome_advantage. One difference, on purpose: a group of one
rollout gets A = 0 here, while verl sets mean 0 and std 1 for it, so its advantage is the raw
reward r. A lone rollout has no baseline; passing r through would reward it for the reward
scale alone. An all-equal group gives exactly 0 for every estimator (also with eps = 0).

CUDA tensors run the Triton kernels in kernels/ (vipfast.kernels, imported on first CUDA use);
tensors on any other device run a vectorised torch path (segment sums via index_add_, no
Python loop over groups) that accumulates in float64 (float32 on MPS). The choice is made once per call from
the device of `rewards` / `advantages`. Outputs are float32 on that device.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "fused_token_advantages",
    "group_advantages",
    "group_ids_from_index",
    "token_advantages",
]

ADVANTAGE_ESTIMATORS = ("grpo", "drgrpo", "rloo")
LAYOUTS = ("packed", "padded")


def group_advantages(
    rewards,
    group_sizes=None,
    *,
    offsets=None,
    estimator: str = "grpo",
    eps: float = 1e-6,
    check: bool = True,
) -> torch.Tensor:
    """Per-rollout advantages of ragged groups, float32 [N] on the device of `rewards`.

    rewards      [N] real numbers (torch tensor, numpy array or sequence; int/bool become float)
    group_sizes  [G] integers >= 1 adding up to N; rollouts of a group are contiguous, in order
    offsets      [G+1] CSR bounds instead of group_sizes (keyword only): 0 = o_0 < ... < o_G = N
    estimator    "grpo" | "drgrpo" | "rloo"
    eps          >= 0, added to the std for grpo
    check        validate values (finite rewards, sizes >= 1 adding up to N); costs a few host
                 syncs on CUDA. With check=False nothing data-dependent is checked: bad sizes
                 give wrong numbers (never out-of-bounds access), and empty groups are tolerated.

    Rewards of a verl-style batch (a uid per rollout, groups interleaved) are first grouped
    with group_ids_from_index.
    """
    estimator, eps = _estimator(estimator), _eps(eps)
    r = _real_vector(rewards, "rewards")
    offs = _group_offsets(group_sizes, offsets, r.numel(), r.device, check, "group_advantages")
    if check:
        _check_finite(r, "rewards")
    if _backend_for(r.device) == "triton":
        from vipfast.kernels import group_advantages as kernels

        return kernels.group_advantages_triton(_kernel_floats(r), offs, estimator=estimator, eps=eps)
    return _group_advantages_torch(r, offs, estimator, eps)


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
    response_lengths  [N] integers >= 0 (a verl response_mask gives them as mask.sum(-1))
    layout="packed"   -> Tensor[T] float32, T = sum of lengths, rollouts one after another
    layout="padded"   -> (Tensor[N, L] float32, mask Tensor[N, L] bool), tokens left-aligned
                         in each row (right padding, as verl's response_mask), padding 0.0;
                         L = max_len, or the longest response when max_len is None
    """
    a = _real_vector(advantages, "advantages")
    lengths, width = _token_layout(response_lengths, a.numel(), a.device, layout, max_len, check, "advantages")
    token_offsets = _offsets_from_sizes(lengths)
    if _backend_for(a.device) == "triton":
        from vipfast.kernels import token_advantages as kernels

        return kernels.token_advantages_triton(_kernel_floats(a), token_offsets, layout=layout, max_len=width)
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
    estimator, eps = _estimator(estimator), _eps(eps)
    r = _real_vector(rewards, "rewards")
    offs = _group_offsets(group_sizes, offsets, r.numel(), r.device, check, "fused_token_advantages")
    lengths, width = _token_layout(response_lengths, r.numel(), r.device, layout, max_len, check, "rewards")
    if check:
        _check_finite(r, "rewards")
    token_offsets = _offsets_from_sizes(lengths)
    if _backend_for(r.device) == "triton":
        from vipfast.kernels import token_advantages as kernels

        return kernels.fused_token_advantages_triton(
            _kernel_floats(r), offs, token_offsets, estimator=estimator, eps=eps, layout=layout, max_len=width)
    return _token_advantages_torch(_group_advantages_torch(r, offs, estimator, eps), lengths, layout, width)


def group_ids_from_index(index) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a verl-style group id per rollout (uid strings, ints, any hashable) into CSR groups.

    Returns (order [N] int64, group_sizes [G] int64): index[order] lists each group's rollouts
    contiguously, groups in order of first appearance, rollouts of a group in their original
    order. Tensors stay on their device; anything else gives CPU tensors. Typical use:

        order, sizes = group_ids_from_index(batch.non_tensor_batch["uid"])
        adv = torch.empty_like(rewards)
        adv[order] = group_advantages(rewards[order], sizes)
    """
    if isinstance(index, torch.Tensor):
        if index.ndim != 1:
            raise ValueError(f"index must be 1-D, got shape {tuple(index.shape)}")
        if index.dtype.is_complex:
            raise TypeError(f"index must hold integers, strings or other hashable ids, got dtype {index.dtype}")
        unique, inverse = torch.unique(index, sorted=True, return_inverse=True)
        n, g = index.numel(), unique.numel()
        positions = torch.arange(n, device=index.device)
        first = torch.full((g,), n, dtype=torch.int64, device=index.device)
        first.scatter_reduce_(0, inverse, positions, reduce="amin")
        group_of = _rank(first)[inverse]
    else:
        try:  # plain sequences stay objects: np.asarray([1, "1"]) would merge two different ids
            array = index if isinstance(index, np.ndarray) else np.asarray(index, dtype=object)
        except Exception as error:  # ragged nested sequences
            raise TypeError(f"index must be a 1-D sequence of hashable ids: {error}") from None
        if array.ndim != 1:
            raise ValueError(f"index must be 1-D, got shape {array.shape}")
        if array.dtype.kind == "c":
            raise TypeError(f"index must hold integers, strings or other hashable ids, got dtype {array.dtype}")
        if array.dtype.kind == "O":  # verl keeps uids in object arrays: hash them in one pass
            codes: dict = {}
            group_of = torch.tensor([codes.setdefault(key, len(codes)) for key in array.tolist()], dtype=torch.int64)
            g = len(codes)
        else:
            unique, first, inverse = np.unique(array, return_index=True, return_inverse=True)
            g = unique.size
            inverse = torch.from_numpy(inverse.reshape(-1).astype(np.int64))
            group_of = _rank(torch.from_numpy(first.astype(np.int64)))[inverse]
    order = torch.argsort(group_of, stable=True)
    return order, torch.bincount(group_of, minlength=g)


# ----------------------------------------------------------------------------------------------
# torch path (any non-CUDA device)


def _group_advantages_torch(r: torch.Tensor, offsets: torch.Tensor, estimator: str, eps: float) -> torch.Tensor:
    """Vectorised segment statistics in float64; same shifted-mean / scaled-std as the kernel."""
    n_rollouts, n_groups = r.numel(), offsets.numel() - 1
    if n_rollouts == 0 or n_groups <= 0:
        return torch.zeros(n_rollouts, dtype=torch.float32, device=r.device)
    x = r.to(torch.float32 if r.device.type == "mps" else torch.float64)  # MPS has no float64
    sizes = offsets.diff()
    group_of = torch.repeat_interleave(torch.arange(n_groups, device=r.device), sizes, output_size=n_rollouts)
    # Shift by each group's first reward: an all-equal group then has r - mean == 0 exactly.
    shift = x[offsets[:-1].clamp(0, n_rollouts - 1)]
    n = sizes.to(x.dtype)
    total = torch.zeros_like(n).index_add_(0, group_of, x - shift[group_of])
    mean = shift + total / n.clamp(min=1)
    centred = x - mean[group_of]
    if estimator == "grpo":
        # Sum squares of centred / max|centred| so huge rewards cannot overflow.
        dmax = torch.zeros_like(mean).scatter_reduce_(0, group_of, centred.abs(), reduce="amax")
        inv_dmax = torch.where(dmax > 0, 1 / torch.where(dmax > 0, dmax, 1), 0)
        scaled = centred * inv_dmax[group_of]
        squares = torch.zeros_like(mean).index_add_(0, group_of, scaled * scaled)
        denom = dmax * torch.sqrt(squares / (n - 1).clamp(min=1)) + eps
        scale = torch.where(denom > 0, 1 / torch.where(denom > 0, denom, 1), 0)
    elif estimator == "drgrpo":
        scale = torch.ones_like(mean)
    else:
        scale = n / (n - 1).clamp(min=1)
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
    """'triton' for CUDA tensors, 'torch' otherwise (tests point this at Triton's interpreter)."""
    return "triton" if device.type == "cuda" else "torch"


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
        tensor = torch.as_tensor(array)
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
    return tensor


def _real_vector(value, name: str) -> torch.Tensor:
    tensor = _as_vector(value, name, integer=False).detach()  # advantages are constants for the loss
    return tensor if tensor.is_floating_point() else tensor.to(torch.float32)


def _index_vector(value, name: str, device: torch.device) -> torch.Tensor:
    return _as_vector(value, name, integer=True).to(device=device, dtype=torch.int64)


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


def _check_finite(x: torch.Tensor, name: str) -> None:
    if x.is_floating_point():
        first = _first_where(~torch.isfinite(x), x)
        if first is not None:
            raise ValueError(f"{name} must be finite: {name}[{first[0]}] = {first[1]}")


def _group_offsets(group_sizes, offsets, n_rollouts: int, device, check: bool, caller: str) -> torch.Tensor:
    if (group_sizes is None) == (offsets is None):
        raise TypeError(f"{caller}() needs exactly one of group_sizes and offsets=")
    if group_sizes is not None:
        sizes = _index_vector(group_sizes, "group_sizes", device)
        if check:
            first = _first_where(sizes <= 0, sizes)
            if first is not None:
                index, value = first
                why = "is negative" if value < 0 else "is an empty group (drop it, or pass check=False)"
                raise ValueError(f"group_sizes[{index}] = {value} {why}; every group needs at least one rollout")
            total = int(sizes.sum())
            if total != n_rollouts:
                raise ValueError(f"group_sizes add up to {total} but rewards has {n_rollouts} entries")
        return _offsets_from_sizes(sizes)
    offs = _index_vector(offsets, "offsets", device)
    if offs.numel() == 0:
        raise ValueError("offsets must have G + 1 >= 1 entries (offsets = [0] for an empty batch)")
    if check:
        bounds = offs[[0, -1]].tolist()
        if bounds[0] != 0:
            raise ValueError(f"offsets must start at 0, got offsets[0] = {bounds[0]}")
        first = _first_where(offs.diff() <= 0, offs[1:])
        if first is not None:
            index = first[0] + 1
            raise ValueError(
                f"offsets must be strictly increasing (every group needs at least one rollout): "
                f"offsets[{index}] = {first[1]} after offsets[{index - 1}] = {int(offs[index - 1])}")
        if bounds[1] != n_rollouts:
            raise ValueError(f"offsets end at {bounds[1]} but rewards has {n_rollouts} entries")
    return offs


def _token_layout(response_lengths, n_rollouts: int, device, layout, max_len, check: bool, against: str):
    """Validated lengths [N] int64 and the padded width (0 for packed)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'packed' or 'padded', got {layout!r}")
    lengths = _index_vector(response_lengths, "response_lengths", device)
    if lengths.numel() != n_rollouts:
        raise ValueError(f"response_lengths has {lengths.numel()} entries but {against} has {n_rollouts}")
    if max_len is not None:
        if layout == "packed":
            raise ValueError("max_len only applies to layout='padded'")
        if isinstance(max_len, bool) or not isinstance(max_len, numbers.Integral):
            raise TypeError(f"max_len must be an integer or None, got {type(max_len).__name__}")
        if max_len < 0:
            raise ValueError(f"max_len must be >= 0, got {max_len}")
    if check:
        first = _first_where(lengths < 0, lengths)
        if first is not None:
            raise ValueError(f"response_lengths must be >= 0: response_lengths[{first[0]}] = {first[1]}")
    if layout == "packed":
        return lengths, 0
    if max_len is None:
        return lengths, (int(lengths.max()) if n_rollouts else 0)
    if check and n_rollouts and int(lengths.max()) > max_len:
        raise ValueError(f"max_len = {max_len} is shorter than the longest response ({int(lengths.max())} tokens)")
    return lengths, int(max_len)


def _estimator(estimator) -> str:
    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(map(repr, ADVANTAGE_ESTIMATORS))}, got {estimator!r}")
    return estimator


def _eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    return float(eps)

"""Ragged group advantages: Triton kernel, launcher and a readable torch reference.

Rewards are flat, r [N]; groups are CSR segments offsets [G+1] (offsets[g]..offsets[g+1]).
For each group of n rollouts with mean m:
    grpo    A = (r - m) / (std + eps)      std with Bessel's correction, as torch.std
    drgrpo  A = r - m
    rloo    A = n / (n - 1) * (r - m)       = r - (sum - r) / (n - 1)
A group of one rollout gets A = 0 (no baseline exists).

One program handles BLOCK_G consecutive groups as a [BLOCK_G, BLOCK_N] tile and walks the
longest group of the tile in BLOCK_N steps, so any group size works with one compiled
kernel; N and G are runtime arguments. The launcher does no validation (vipfast.advantages
does) but every global access is bounds-masked, so inconsistent offsets give wrong numbers,
never an out-of-bounds access.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["ESTIMATOR_CODES", "group_advantages_triton", "group_advantages_ref", "group_block_sizes"]

ESTIMATOR_CODES = {"grpo": 0, "drgrpo": 1, "rloo": 2}


@triton.jit
def _load_tile(r_ptr, start, n, j, N, ACC: tl.constexpr):
    """Rewards of the tile's columns j [BLOCK_N] for groups (start, n) [BLOCK_G], and its mask."""
    idx = start[:, None] + j[None, :]
    inside = (j[None, :] < n[:, None]) & (idx >= 0) & (idx < N)
    x = tl.load(r_ptr + idx, mask=inside, other=0.0).to(ACC)
    return x, idx, inside


@triton.jit
def group_stats(r_ptr, start, n, N, eps, ESTIMATOR: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    """Per-group (mean, scale) with A = (r - mean) * scale; start, n: [BLOCK_G] int64, n = 0 for padding.

    The mean is shifted by the group's first reward, so an all-equal group has r - mean == 0
    exactly (A = 0 for any eps, including 0). The grpo sum of squares is taken of
    (r - mean) / max|r - mean|, so it cannot overflow even for rewards near the float32 limit.
    """
    cols = tl.arange(0, BLOCK_N)
    n_max = tl.max(n, axis=0)
    first_ok = (n > 0) & (start >= 0) & (start < N)
    shift = tl.load(r_ptr + start, mask=first_ok, other=0.0).to(ACC)
    total = tl.zeros_like(shift)
    for c0 in range(0, n_max, BLOCK_N):
        x, idx, inside = _load_tile(r_ptr, start, n, c0 + cols, N, ACC)
        total += tl.sum(tl.where(inside, x - shift[:, None], 0.0), axis=1)
    nf = n.to(ACC)
    mean = shift + total / tl.maximum(nf, 1.0)
    if ESTIMATOR == 0:
        dmax = tl.zeros_like(shift)
        for c0 in range(0, n_max, BLOCK_N):
            x, idx, inside = _load_tile(r_ptr, start, n, c0 + cols, N, ACC)
            dmax = tl.maximum(dmax, tl.max(tl.where(inside, tl.abs(x - mean[:, None]), 0.0), axis=1))
        inv_dmax = tl.where(dmax > 0, 1.0 / tl.where(dmax > 0, dmax, 1.0), 0.0)
        ss = tl.zeros_like(shift)
        for c0 in range(0, n_max, BLOCK_N):
            x, idx, inside = _load_tile(r_ptr, start, n, c0 + cols, N, ACC)
            y = tl.where(inside, (x - mean[:, None]) * inv_dmax[:, None], 0.0)
            ss += tl.sum(y * y, axis=1)
        std = dmax * tl.sqrt(ss / tl.maximum(nf - 1.0, 1.0))
        denom = std + eps
        scale = tl.where(denom > 0, 1.0 / tl.where(denom > 0, denom, 1.0), 0.0)
    elif ESTIMATOR == 1:
        scale = tl.full(shift.shape, 1.0, ACC)
    else:
        scale = nf / tl.maximum(nf - 1.0, 1.0)
    scale = tl.where(n > 1, scale, 0.0)
    return mean, scale


@triton.jit(do_not_specialize=["N", "G", "eps"])
def _group_advantages_kernel(
    r_ptr,  # [N] float16/32/64
    off_ptr,  # [G+1] int64
    out_ptr,  # [N] float32
    N,
    G,
    eps,
    ESTIMATOR: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
):
    g = tl.program_id(0).to(tl.int64) * BLOCK_G + tl.arange(0, BLOCK_G)
    g_ok = g < G
    start = tl.load(off_ptr + g, mask=g_ok, other=0)
    n = tl.where(g_ok, tl.load(off_ptr + g + 1, mask=g_ok, other=0) - start, 0)
    mean, scale = group_stats(r_ptr, start, n, N, eps, ESTIMATOR, BLOCK_N, ACC)
    cols = tl.arange(0, BLOCK_N)
    for c0 in range(0, tl.max(n, axis=0), BLOCK_N):
        x, idx, inside = _load_tile(r_ptr, start, n, c0 + cols, N, ACC)
        a = (x - mean[:, None]) * scale[:, None]
        tl.store(out_ptr + idx, a.to(tl.float32), mask=inside)


def _pow2_clamp(value: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(1, int(value)))))


def group_block_sizes(num_rollouts: int, num_groups: int) -> tuple[int, int]:
    """(BLOCK_G, BLOCK_N) from the mean group size: a handful of variants, never one per batch."""
    block_n = _pow2_clamp(-(-num_rollouts // max(num_groups, 1)), 4, 128)
    return max(1, 1024 // block_n), block_n


def accumulator_dtype(rewards: torch.Tensor):
    return tl.float64 if rewards.dtype == torch.float64 else tl.float32


def group_advantages_triton(
    rewards: torch.Tensor,  # [N] float16/bfloat16/float32/float64, contiguous
    offsets: torch.Tensor,  # [G+1] int64, same device
    *,
    estimator: str = "grpo",
    eps: float = 1e-6,
) -> torch.Tensor:  # [N] float32
    """Launch the kernel; inputs must already be validated (see vipfast.group_advantages)."""
    rewards = rewards.contiguous()
    offsets = offsets.to(torch.int64).contiguous()
    n_rollouts, n_groups = rewards.numel(), offsets.numel() - 1
    out = torch.empty(n_rollouts, dtype=torch.float32, device=rewards.device)
    if n_rollouts == 0 or n_groups <= 0:
        return out
    block_g, block_n = group_block_sizes(n_rollouts, n_groups)
    grid = (triton.cdiv(n_groups, block_g),)
    _group_advantages_kernel[grid](
        rewards, offsets, out, n_rollouts, n_groups, float(eps),
        ESTIMATOR=ESTIMATOR_CODES[estimator], BLOCK_G=block_g, BLOCK_N=block_n, ACC=accumulator_dtype(rewards),
    )
    return out


def group_advantages_ref(
    rewards: torch.Tensor,  # [N]
    offsets: torch.Tensor,  # [G+1]
    *,
    estimator: str = "grpo",
    eps: float = 1e-6,
    upcast: bool = True,
) -> torch.Tensor:  # [N] float32
    """Readable per-group loop in torch (float64 when upcast); the definition the kernel implements."""
    x = rewards.to(torch.float64 if upcast else torch.float32)
    out = torch.zeros_like(x)
    bounds = offsets.tolist()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        group, n = x[lo:hi], hi - lo
        if n < 2:
            continue
        centred = group - group.mean()
        if estimator == "grpo":
            out[lo:hi] = centred / (group.std() + eps)
        elif estimator == "drgrpo":
            out[lo:hi] = centred
        elif estimator == "rloo":
            out[lo:hi] = centred * n / (n - 1)
        else:
            raise ValueError(f"unknown estimator {estimator!r}")
    return out.to(torch.float32)

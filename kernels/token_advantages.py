"""Per-rollout advantages written to every response token: broadcast kernels and the fused kernel.

Token layout is CSR over response lengths, token_offsets [N+1] (rollout i owns tokens
token_offsets[i]..token_offsets[i+1]):
    packed   out [T]                    T = token_offsets[N]
    padded   out [N, L], mask [N, L]    row i holds its tokens in columns 0..len_i-1, then 0.0 / False
The broadcast is a store-bound copy, so the kernels are laid out for write bandwidth: a
program owns BLOCK_R consecutive rollouts and writes each row's tokens as contiguous runs of
BLOCK_L (no per-token search, no gather), walking the longest row of the tile. The fused
kernel first computes its groups' statistics (kernels/group_advantages.py) and then writes the
tokens of the same rollouts, so rewards go to token advantages in one launch without an [N]
round trip. Lengths, N, G and L are runtime arguments; every global access is bounds-masked.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .group_advantages import ESTIMATOR_CODES, accumulator_dtype, group_block_sizes, group_stats

__all__ = ["token_advantages_triton", "fused_token_advantages_triton", "token_block_sizes"]


@triton.jit
def _write_rows(out_ptr, mask_ptr, a, rows, row_ok, t0, lens, T, L, PADDED: tl.constexpr,
                BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
    """Write a [BLOCK_R] vector of advantages a to the tokens of rows (CSR starts t0, lengths lens)."""
    cols = tl.arange(0, BLOCK_L)
    value = tl.broadcast_to(a[:, None], (BLOCK_R, BLOCK_L))
    if PADDED:
        for c0 in range(0, L, BLOCK_L):
            c = c0 + cols
            target = row_ok[:, None] & (c[None, :] < L)
            inside = c[None, :] < lens[:, None]
            idx = rows[:, None] * L + c[None, :]
            tl.store(out_ptr + idx, tl.where(inside, value, 0.0), mask=target)
            tl.store(mask_ptr + idx, inside.to(tl.uint8), mask=target)
    else:
        for c0 in range(0, tl.max(lens, axis=0), BLOCK_L):
            c = c0 + cols
            idx = t0[:, None] + c[None, :]
            inside = row_ok[:, None] & (c[None, :] < lens[:, None]) & (idx >= 0) & (idx < T)
            tl.store(out_ptr + idx, value, mask=inside)


@triton.jit
def _row_lengths(tok_ptr, rows, row_ok):
    t0 = tl.load(tok_ptr + rows, mask=row_ok, other=0)
    lens = tl.where(row_ok, tl.load(tok_ptr + rows + 1, mask=row_ok, other=0) - t0, 0)
    return t0, lens


@triton.jit(do_not_specialize=["N", "T", "L"])
def _token_advantages_kernel(
    adv_ptr,  # [N] float
    tok_ptr,  # [N+1] int64
    out_ptr,  # [T] or [N, L] float32
    mask_ptr,  # [N, L] uint8 (padded only)
    N,
    T,
    L,
    PADDED: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < N
    t0, lens = _row_lengths(tok_ptr, rows, row_ok)
    a = tl.load(adv_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    _write_rows(out_ptr, mask_ptr, a, rows, row_ok, t0, lens, T, L, PADDED, BLOCK_R, BLOCK_L)


@triton.jit(do_not_specialize=["N", "G", "T", "L", "eps"])
def _fused_token_advantages_kernel(
    r_ptr,  # [N] float16/32/64
    off_ptr,  # [G+1] int64
    tok_ptr,  # [N+1] int64
    out_ptr,  # [T] or [N, L] float32
    mask_ptr,  # [N, L] uint8 (padded only)
    N,
    G,
    T,
    L,
    eps,
    ESTIMATOR: tl.constexpr,
    PADDED: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_L: tl.constexpr,
    ACC: tl.constexpr,
):
    g0 = tl.program_id(0).to(tl.int64) * BLOCK_G
    g = g0 + tl.arange(0, BLOCK_G)
    g_ok = g < G
    start = tl.load(off_ptr + g, mask=g_ok, other=0)
    n = tl.where(g_ok, tl.load(off_ptr + g + 1, mask=g_ok, other=0) - start, 0)
    mean, scale = group_stats(r_ptr, start, n, N, eps, ESTIMATOR, BLOCK_N, ACC)

    # The tile's rollouts are one contiguous range; each row finds its group among the tile's
    # BLOCK_G starts by counting (padding groups start at r_end, so they never match).
    r_begin = tl.load(off_ptr + g0)
    r_end = tl.load(off_ptr + tl.minimum(g0 + BLOCK_G, G))
    starts = tl.where(g_ok, start, r_end)
    slots = tl.arange(0, BLOCK_G)
    for r0 in range(r_begin, r_end, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        row_ok = (rows < r_end) & (rows >= 0) & (rows < N)
        local = tl.sum((starts[None, :] <= rows[:, None]).to(tl.int32), axis=1) - 1
        pick = local[:, None] == slots[None, :]
        row_mean = tl.sum(tl.where(pick, mean[None, :], 0.0), axis=1)
        row_scale = tl.sum(tl.where(pick, scale[None, :], 0.0), axis=1)
        x = tl.load(r_ptr + rows, mask=row_ok, other=0.0).to(ACC)
        a = ((x - row_mean) * row_scale).to(tl.float32)
        t0, lens = _row_lengths(tok_ptr, rows, row_ok)
        _write_rows(out_ptr, mask_ptr, a, rows, row_ok, t0, lens, T, L, PADDED, BLOCK_R, BLOCK_L)


def token_block_sizes(row_length: float) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_L) for a typical row length: 2048-element tiles, three variants in all."""
    if row_length <= 64:
        return 32, 64
    if row_length <= 256:
        return 8, 256
    return 2, 1024


def _outputs(n_rollouts, num_tokens, padded, max_len, device):
    if padded:
        out = torch.empty((n_rollouts, max_len), dtype=torch.float32, device=device)
        mask = torch.empty((n_rollouts, max_len), dtype=torch.bool, device=device)
        return out, mask, mask.view(torch.uint8)
    out = torch.empty(num_tokens, dtype=torch.float32, device=device)
    return out, None, out  # mask_ptr is unused when not PADDED


def _layout(token_offsets, layout, max_len, num_tokens):
    if layout not in ("packed", "padded"):
        raise ValueError(f"layout must be 'packed' or 'padded', got {layout!r}")
    # Output sizes cost one host sync unless the caller passes num_tokens (packed) or max_len (padded).
    if layout == "packed":
        return False, int(token_offsets[-1]) if num_tokens is None else int(num_tokens), 0
    if max_len is None:
        max_len = int(token_offsets.diff().max()) if token_offsets.numel() > 1 else 0
    return True, 0, int(max_len)


def token_advantages_triton(
    advantages: torch.Tensor,  # [N] float
    token_offsets: torch.Tensor,  # [N+1] int64, same device
    *,
    layout: str = "packed",
    max_len: int | None = None,
    num_tokens: int | None = None,
):
    """Packed: Tensor[T] float32. Padded: (Tensor[N, max_len] float32, mask [N, max_len] bool).

    num_tokens (= token_offsets[-1]) and max_len, when given, spare the host sync that sizes the output.
    """
    padded, num_tokens, width = _layout(token_offsets, layout, max_len, num_tokens)
    advantages = advantages.contiguous()
    token_offsets = token_offsets.to(torch.int64).contiguous()
    n_rollouts = advantages.numel()
    out, mask, mask_arg = _outputs(n_rollouts, num_tokens, padded, width, advantages.device)
    if n_rollouts and (out.numel() if padded else num_tokens):
        block_r, block_l = token_block_sizes(width if padded else num_tokens / n_rollouts)
        _token_advantages_kernel[(triton.cdiv(n_rollouts, block_r),)](
            advantages, token_offsets, out, mask_arg, n_rollouts, num_tokens, width,
            PADDED=padded, BLOCK_R=block_r, BLOCK_L=block_l,
        )
    return (out, mask) if padded else out


def fused_token_advantages_triton(
    rewards: torch.Tensor,  # [N] float
    offsets: torch.Tensor,  # [G+1] int64
    token_offsets: torch.Tensor,  # [N+1] int64
    *,
    estimator: str = "grpo",
    eps: float = 1e-6,
    layout: str = "packed",
    max_len: int | None = None,
    num_tokens: int | None = None,
):
    """Rewards to token advantages in one launch; same outputs as token_advantages_triton."""
    padded, num_tokens, width = _layout(token_offsets, layout, max_len, num_tokens)
    rewards = rewards.contiguous()
    offsets = offsets.to(torch.int64).contiguous()
    token_offsets = token_offsets.to(torch.int64).contiguous()
    n_rollouts, n_groups = rewards.numel(), offsets.numel() - 1
    out, mask, mask_arg = _outputs(n_rollouts, num_tokens, padded, width, rewards.device)
    if n_rollouts and n_groups > 0 and (out.numel() if padded else num_tokens):
        _, block_n = group_block_sizes(n_rollouts, n_groups)
        block_r, block_l = token_block_sizes(width if padded else num_tokens / n_rollouts)
        # About 8k tokens per program, and at most 64 groups (the row-to-group match is R x G).
        tokens_per_group = (n_rollouts * width if padded else num_tokens) / n_groups
        block_g = max(1, min(64, 1024 // block_n, triton.next_power_of_2(int(8192 / max(tokens_per_group, 1.0)))))
        _fused_token_advantages_kernel[(triton.cdiv(n_groups, block_g),)](
            rewards, offsets, token_offsets, out, mask_arg, n_rollouts, n_groups, num_tokens, width, float(eps),
            ESTIMATOR=ESTIMATOR_CODES[estimator], PADDED=padded, BLOCK_G=block_g, BLOCK_N=block_n,
            BLOCK_R=block_r, BLOCK_L=block_l, ACC=accumulator_dtype(rewards),
        )
    return (out, mask) if padded else out

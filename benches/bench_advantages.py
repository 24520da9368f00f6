"""Ragged group advantages: vipfast against verl-style loops and torch eager, in one run.

    python -m pytest benches/bench_advantages.py --benchmark-only --benchmark-json=benches/results/advantages.json

CPU (issue 4): G = 4096 groups of 2..32 rollouts, binary rewards. The baseline is a per-group
Python loop in the style of verl's compute_grpo_outcome_advantage (a dict of lists keyed by
uid, torch.mean / torch.std per group); the vectorised path must be at least 20x faster.

GPU (skipped without CUDA): N = 2^20 rollouts in groups of 2..30, T = 2^26 response tokens
(lengths 1..127, mean 64). Medians and 20/80% quantiles from triton.testing.do_bench go to each
benchmark's extra_info: the token broadcast as GB/s beside a device copy measured in the same
run, group_advantages against torch eager vectorisation and against the verl loop, and the fused
kernel against the two-launch path.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

import numpy as np
import pytest
import torch

import vipfast
from vipfast import advantages as advantages_module

CPU_GROUPS, CPU_MIN_SIZE, CPU_MAX_SIZE = 4096, 2, 32
REQUIRED_CPU_SPEEDUP = 20.0
GPU_ROLLOUTS, GPU_TOKENS, GPU_MEAN_LENGTH = 2**20, 2**26, 64


def verl_style_grpo(scores: torch.Tensor, index, epsilon: float = 1e-6) -> torch.Tensor:
    """The baseline: verl's per-group loop for GRPO outcome advantages, re-typed from its definition."""
    scores = scores.clone()
    id2score = defaultdict(list)
    id2mean, id2std = {}, {}
    with torch.no_grad():
        for i in range(scores.shape[0]):
            id2score[index[i]].append(scores[i])
        for uid in id2score:
            if len(id2score[uid]) == 1:
                id2mean[uid], id2std[uid] = torch.tensor(0.0), torch.tensor(1.0)
            else:
                id2mean[uid] = torch.mean(torch.tensor(id2score[uid]))
                id2std[uid] = torch.std(torch.tensor([id2score[uid]]))
        for i in range(scores.shape[0]):
            scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + epsilon)
    return scores


def cpu_batch():
    rng = np.random.default_rng(4096)
    sizes = rng.integers(CPU_MIN_SIZE, CPU_MAX_SIZE + 1, size=CPU_GROUPS)
    p = rng.beta(0.5, 0.5, size=CPU_GROUPS)
    rewards = (rng.random(int(sizes.sum())) < np.repeat(p, sizes)).astype(np.float32)
    uids = np.array([f"uid-{g}" for g, n in enumerate(sizes) for _ in range(n)], dtype=object)
    return torch.from_numpy(rewards), torch.from_numpy(sizes), uids


def median_seconds(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.fixture
def one_thread():
    """CPU benchmarks run torch single-threaded: the verl loop is (its tensors are tiny), and on a
    shared 2-core machine intra-op threads stall behind any other load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def describe_cpu(benchmark, rewards, sizes):
    benchmark.group = f"cpu group_advantages, G={CPU_GROUPS} groups of {CPU_MIN_SIZE}..{CPU_MAX_SIZE}"
    benchmark.extra_info.update(rollouts=rewards.numel(), groups=sizes.numel(), torch_threads=torch.get_num_threads())


def test_cpu_vipfast_vs_verl_loop(benchmark, one_thread):
    """vipfast's vectorised CPU path (CSR sizes given), with the verl-style loop timed in the same test."""
    rewards, sizes, uids = cpu_batch()
    describe_cpu(benchmark, rewards, sizes)
    ours = benchmark(lambda: vipfast.group_advantages(rewards, sizes))
    verl_median = median_seconds(lambda: verl_style_grpo(rewards, uids), rounds=5)
    speedup = verl_median / benchmark.stats.stats.median
    benchmark.extra_info.update(verl_loop_median_s=verl_median, speedup_vs_verl_loop=speedup)
    torch.testing.assert_close(ours, verl_style_grpo(rewards, uids), rtol=1e-5, atol=1e-5)
    assert speedup >= REQUIRED_CPU_SPEEDUP, f"only {speedup:.1f}x faster than the verl-style loop"


def test_cpu_vipfast_from_uids(benchmark, one_thread):
    """The same, starting from verl's uid strings: group_ids_from_index, gather, advantages, scatter back."""
    rewards, sizes, uids = cpu_batch()
    describe_cpu(benchmark, rewards, sizes)

    def from_uids():
        order, group_sizes = vipfast.group_ids_from_index(uids)
        out = torch.empty_like(rewards)
        out[order] = vipfast.group_advantages(rewards[order], group_sizes)
        return out

    benchmark(from_uids)


def test_cpu_verl_loop(benchmark, one_thread):
    rewards, sizes, uids = cpu_batch()
    describe_cpu(benchmark, rewards, sizes)
    benchmark.pedantic(lambda: verl_style_grpo(rewards, uids), rounds=5, iterations=1)


# ----------------------------------------------------------------------------------------------
# GPU

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="GPU benchmarks need a CUDA device and none is visible to torch (the CPU benchmarks above still run)")


@pytest.fixture(scope="module")
def gpu_batch():
    pytest.importorskip("triton", reason="GPU benchmarks need triton (the `torch` extra)")
    rng = np.random.default_rng(2**20)
    sizes = rng.integers(2, 31, size=GPU_ROLLOUTS // 8)  # mean 16: more than enough groups
    last = int(np.searchsorted(np.cumsum(sizes), GPU_ROLLOUTS))
    sizes = sizes[: last + 1].copy()
    sizes[-1] = GPU_ROLLOUTS - sizes[:-1].sum()
    spread = rng.integers(-(GPU_MEAN_LENGTH - 1), GPU_MEAN_LENGTH, size=GPU_ROLLOUTS // 2)
    lengths = GPU_MEAN_LENGTH + rng.permutation(np.concatenate([spread, -spread]))  # 1..127, sums to exactly T
    assert sizes.sum() == GPU_ROLLOUTS and lengths.sum() == GPU_TOKENS and sizes.min() >= 1
    p = rng.beta(0.5, 0.5, size=sizes.size)
    rewards = (rng.random(GPU_ROLLOUTS) < np.repeat(p, sizes)).astype(np.float32)
    sizes_t = torch.from_numpy(sizes).cuda()
    lengths_t = torch.from_numpy(lengths).cuda()
    return dict(
        rewards=torch.from_numpy(rewards).cuda(),
        rewards_cpu=torch.from_numpy(rewards),
        uids=np.repeat(np.arange(sizes.size), sizes).astype(str).astype(object),
        sizes=sizes_t,
        offsets=advantages_module._offsets_from_sizes(sizes_t),
        lengths=lengths_t,
        token_offsets=advantages_module._offsets_from_sizes(lengths_t),
        device_name=torch.cuda.get_device_name(),
    )


def do_bench(call) -> dict:
    from triton.testing import do_bench as triton_do_bench

    median, low, high = triton_do_bench(call, quantiles=[0.5, 0.2, 0.8])
    return dict(median_ms=median, q20_ms=low, q80_ms=high)


def copy_bandwidth() -> float:
    """GB/s of a device-to-device copy of T floats (read + write), measured in this run."""
    src = torch.empty(GPU_TOKENS, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / (do_bench(lambda: dst.copy_(src))["median_ms"] * 1e-3) / 1e9


def record(benchmark, batch, group, call, bytes_moved, with_copy=False):
    """do_bench figures into extra_info; pytest-benchmark times the synchronised call for its table."""
    stats = do_bench(call)
    stats["GB_per_s"] = bytes_moved / (stats["median_ms"] * 1e-3) / 1e9
    if with_copy:
        stats["copy_GB_per_s"] = copy_bandwidth()
        stats["fraction_of_copy_bandwidth"] = stats["GB_per_s"] / stats["copy_GB_per_s"]
    benchmark.group = group
    benchmark.extra_info.update(device=batch["device_name"], rollouts=GPU_ROLLOUTS, tokens=GPU_TOKENS, **stats)

    def synchronised():
        call()
        torch.cuda.synchronize()

    benchmark.pedantic(synchronised, rounds=20, iterations=1, warmup_rounds=2)


PACKED_BYTES = GPU_TOKENS * 4 + GPU_ROLLOUTS * (4 + 8)  # token writes + advantage and token-offset reads


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("impl", ["triton-kernel", "vipfast-public", "torch-repeat_interleave"])
def test_gpu_token_broadcast_packed(benchmark, gpu_batch, impl):
    from vipfast.kernels.token_advantages import token_advantages_triton

    batch = gpu_batch
    advantages = vipfast.group_advantages(batch["rewards"], batch["sizes"])
    calls = {
        # the launcher with num_tokens given: the kernel alone, no host sync
        "triton-kernel": lambda: token_advantages_triton(advantages, batch["token_offsets"], num_tokens=GPU_TOKENS),
        "vipfast-public": lambda: vipfast.token_advantages(advantages, batch["lengths"], check=False),
        "torch-repeat_interleave": lambda: torch.repeat_interleave(advantages, batch["lengths"],
                                                                   output_size=GPU_TOKENS),
    }
    record(benchmark, batch, "gpu token broadcast, packed, T=2^26", calls[impl], PACKED_BYTES, with_copy=True)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("impl", ["triton-kernel", "torch-where"])
def test_gpu_token_broadcast_padded(benchmark, gpu_batch, impl):
    from vipfast.kernels.token_advantages import token_advantages_triton

    batch = gpu_batch
    width = 2 * GPU_MEAN_LENGTH
    advantages = vipfast.group_advantages(batch["rewards"], batch["sizes"])
    calls = {
        "triton-kernel": lambda: token_advantages_triton(advantages, batch["token_offsets"], layout="padded",
                                                         max_len=width),
        "torch-where": lambda: advantages_module._token_advantages_torch(advantages, batch["lengths"], "padded", width),
    }
    record(benchmark, batch, f"gpu token broadcast, padded [2^20, {width}]", calls[impl],
           GPU_ROLLOUTS * width * (4 + 1), with_copy=True)  # float32 values + bool mask


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("impl", ["triton-kernel", "vipfast-public-checked", "torch-eager-vectorised"])
def test_gpu_group_advantages(benchmark, gpu_batch, impl):
    from vipfast.kernels.group_advantages import group_advantages_triton

    batch = gpu_batch
    calls = {
        "triton-kernel": lambda: group_advantages_triton(batch["rewards"], batch["offsets"]),
        "vipfast-public-checked": lambda: vipfast.group_advantages(batch["rewards"], batch["sizes"]),
        # vipfast's own torch path (segment sums with index_add_ / scatter_reduce) on the GPU:
        # the best eager vectorisation at hand, and what non-CUDA devices run.
        "torch-eager-vectorised": lambda: advantages_module._group_advantages_torch(
            batch["rewards"], batch["offsets"], "grpo", 1e-6),
    }
    record(benchmark, batch, "gpu group_advantages, N=2^20", calls[impl],
           GPU_ROLLOUTS * 8 + batch["offsets"].numel() * 8)


@pytest.mark.gpu
@needs_cuda
def test_gpu_group_advantages_verl_loop(benchmark, gpu_batch):
    """verl runs its loop in the driver on CPU tensors: one timed call, it takes seconds."""
    batch = gpu_batch
    kernel = do_bench(lambda: vipfast.group_advantages(batch["rewards"], batch["sizes"], check=False))
    benchmark.group = "gpu group_advantages, N=2^20"
    benchmark.extra_info.update(device="host CPU (verl computes advantages in the driver)", rollouts=GPU_ROLLOUTS,
                                vipfast_cuda_median_ms=kernel["median_ms"])
    benchmark.pedantic(lambda: verl_style_grpo(batch["rewards_cpu"], batch["uids"]), rounds=1, iterations=1)
    benchmark.extra_info["speedup_of_vipfast_cuda"] = benchmark.stats.stats.median / (kernel["median_ms"] * 1e-3)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("impl", ["fused-kernel", "group-then-token-kernels"])
def test_gpu_fused_rewards_to_tokens(benchmark, gpu_batch, impl):
    from vipfast.kernels.group_advantages import group_advantages_triton
    from vipfast.kernels.token_advantages import fused_token_advantages_triton, token_advantages_triton

    batch = gpu_batch
    calls = {
        "fused-kernel": lambda: fused_token_advantages_triton(
            batch["rewards"], batch["offsets"], batch["token_offsets"], num_tokens=GPU_TOKENS),
        "group-then-token-kernels": lambda: token_advantages_triton(
            group_advantages_triton(batch["rewards"], batch["offsets"]), batch["token_offsets"], num_tokens=GPU_TOKENS),
    }
    record(benchmark, batch, "gpu rewards -> packed token advantages, T=2^26", calls[impl], PACKED_BYTES,
           with_copy=True)

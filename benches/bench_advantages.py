"""Ragged group advantages: vipfast against verl's vectorised functions, in one run.

    pytest benches/bench_advantages.py --benchmark-only --benchmark-timer=time.process_time \
        --benchmark-json=benches/results/advantages.json
    python benches/report_advantages.py benches/results/advantages.json     # the markdown table

CPU, one torch thread: G = 512, 4096 and 65,536 groups of 2..32 rollouts, binary rewards. The peer
is verl 0.9's compute_grpo_vectorized_outcome_advantage (grpo, and drgrpo as
norm_adv_by_std_in_grpo=False) and compute_rloo_vectorized_outcome_advantage, fed as verl feeds
them (token_level_rewards [N, 1], response_mask, index); the verl benchmarks skip when verl is
not installed (it is not in the test environment: see BENCHMARKS.md for its venv). Inputs:
    sizes     vipfast.group_advantages(rewards, sizes), groups contiguous; verl with an int index
    int       rows shuffled (a balanced verl batch), an int id per row: group_advantages(index=ids)
    uid       rows shuffled, verl's uid strings (numpy object array): group_advantages(index=uids)
and the uid handling alone: vipfast.group_ids_from_index(uids) against verl's as_torch_index(uids).
test_cpu_memory_per_rollout measures the peak RSS growth of group_advantages at N = 10^8 in a
subprocess (ru_maxrss).

GPU (skipped without CUDA): N = 2^20 rollouts in groups of 2..30, T = 2^26 response tokens
(lengths 1..127, mean 64). Medians and 20/80% quantiles from triton.testing.do_bench go to each
benchmark's extra_info: the token broadcast as GB/s beside a device copy measured in the same
run, group_advantages against torch eager vectorisation and against the verl loop, and the fused
kernel against the two-launch path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from functools import lru_cache

import numpy as np
import pytest
import torch

import vipfast
from vipfast import advantages as advantages_module
from vipfast import group_advantages, group_ids_from_index  # imported once, as a trainer would

CPU_GROUPS = (512, 4096, 65536)
CPU_MIN_SIZE, CPU_MAX_SIZE = 2, 32
ESTIMATORS = ("grpo", "drgrpo", "rloo")
INPUTS = ("sizes", "int", "uid")
MEMORY_ROLLOUTS = 10**8
MAX_BYTES_PER_ROLLOUT = 16
GPU_ROLLOUTS, GPU_TOKENS, GPU_MEAN_LENGTH = 2**20, 2**26, 64


def verl_style_grpo(scores: torch.Tensor, index, epsilon: float = 1e-6) -> torch.Tensor:
    """verl's per-group loop for GRPO outcome advantages, re-typed from its definition (the GPU
    benchmarks' baseline: verl computes advantages in the driver, on CPU tensors)."""
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


@lru_cache(maxsize=None)
def cpu_batch(groups: int) -> dict:
    """Groups of 2..32 with binary rewards (success rates from Beta(0.5, 0.5)); the rows also shuffled."""
    rng = np.random.default_rng(groups)
    sizes = rng.integers(CPU_MIN_SIZE, CPU_MAX_SIZE + 1, size=groups)
    p = rng.beta(0.5, 0.5, size=groups)
    rewards = (rng.random(int(sizes.sum())) < np.repeat(p, sizes)).astype(np.float32)
    group_of = np.repeat(np.arange(groups), sizes)
    shuffle = rng.permutation(group_of.size)
    uid_of_group = np.array([f"{rng.bytes(16).hex()}" for _ in range(groups)], dtype=object)  # uuid4-like
    return dict(rewards=torch.from_numpy(rewards), sizes=torch.from_numpy(sizes), ids=group_of,
                shuffled_rewards=torch.from_numpy(rewards[shuffle]), shuffled_ids=group_of[shuffle],
                shuffled_uids=uid_of_group[group_of[shuffle]])


@pytest.fixture
def one_thread():
    """CPU benchmarks run torch single-threaded: on a shared 2-core machine intra-op threads stall
    behind any other load, and verl's tensors here are small."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def describe(benchmark, group: str, batch: dict, impl: str):
    benchmark.group = group
    benchmark.extra_info.update(impl=impl, rollouts=batch["rewards"].numel(), groups=batch["sizes"].numel(),
                                torch=torch.__version__, torch_threads=torch.get_num_threads())


def vipfast_call(batch: dict, estimator: str, given: str):
    if given == "sizes":
        return lambda: group_advantages(batch["rewards"], batch["sizes"], estimator=estimator)
    index = batch["shuffled_ids"] if given == "int" else batch["shuffled_uids"]
    return lambda: group_advantages(batch["shuffled_rewards"], index=index, estimator=estimator)


def verl_call(core_algos, batch: dict, estimator: str, given: str):
    """verl's vectorised function on the same rollouts; for `sizes` its fastest input, an int index."""
    rewards, index = ((batch["rewards"], batch["ids"]) if given == "sizes" else
                      (batch["shuffled_rewards"], batch["shuffled_ids"] if given == "int" else batch["shuffled_uids"]))
    token_level_rewards = rewards[:, None]
    mask = torch.ones_like(token_level_rewards)
    if estimator == "rloo":
        return lambda: core_algos.compute_rloo_vectorized_outcome_advantage(token_level_rewards, mask, index)
    normalise = estimator == "grpo"
    return lambda: core_algos.compute_grpo_vectorized_outcome_advantage(
        token_level_rewards, mask, index, norm_adv_by_std_in_grpo=normalise)


def verl_module(name: str):
    return pytest.importorskip(name, reason="verl is not installed here; BENCHMARKS.md gives the venv that has it")


def run(benchmark, call, slow: bool):
    """pytest-benchmark's own calibration for fast calls; three rounds for verl's slow string path."""
    if slow:
        return benchmark.pedantic(call, rounds=3, iterations=1, warmup_rounds=1)
    return benchmark(call)


@pytest.mark.parametrize("given", INPUTS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("groups", CPU_GROUPS)
@pytest.mark.parametrize("impl", ["vipfast", "verl"])
def test_cpu_group_advantages(benchmark, one_thread, impl, groups, estimator, given):
    batch = cpu_batch(groups)
    describe(benchmark, f"cpu {estimator}, G={groups}, {given}", batch, impl)
    if impl == "vipfast":
        run(benchmark, vipfast_call(batch, estimator, given), slow=False)
        return
    call = verl_call(verl_module("verl.trainer.ppo.core_algos"), batch, estimator, given)
    ours = vipfast_call(batch, estimator, given)()
    theirs = call()[0][:, 0]
    if estimator != "rloo":  # rloo: verl leaves a singleton's score as it is; there are none here
        torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=2e-5)
    run(benchmark, call, slow=given == "uid" and groups >= 65536)


@pytest.mark.parametrize("groups", CPU_GROUPS)
@pytest.mark.parametrize("impl", ["vipfast", "verl"])
def test_cpu_uid_grouping(benchmark, one_thread, impl, groups):
    """uid strings to groups alone: group_ids_from_index against verl's as_torch_index."""
    batch = cpu_batch(groups)
    describe(benchmark, f"cpu uid strings to groups, G={groups}", batch, impl)
    uids = batch["shuffled_uids"]
    if impl == "vipfast":
        run(benchmark, lambda: group_ids_from_index(uids), slow=False)
        return
    as_torch_index = verl_module("verl.utils.groupwise").as_torch_index
    run(benchmark, lambda: as_torch_index(uids, device="cpu"), slow=groups >= 65536)


MEMORY_PROBE = """
import json, resource, sys
import numpy as np, torch
import vipfast
torch.set_num_threads(1)
n, given = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
sizes = rng.integers(2, 33, size=n // 16)
sizes = sizes[: np.searchsorted(np.cumsum(sizes), n)]
sizes = np.append(sizes, n - sizes.sum())
rewards = torch.empty(n, dtype=torch.float32)
for start in range(0, n, 1 << 22):  # in chunks: no transient peak before the measurement
    stop = min(n, start + (1 << 22))
    rewards[start:stop] = torch.from_numpy((rng.random(stop - start) < 0.5).astype(np.float32))
index = np.repeat(np.arange(sizes.size), sizes) if given == "int" else None
vipfast.group_advantages(rewards[:1000], [1000])  # first-call setup outside the measurement

def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024

before, peak_before = rss_kb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = (vipfast.group_advantages(rewards, torch.from_numpy(sizes)) if given == "sizes"
       else vipfast.group_advantages(rewards, index=index))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(rss_before_kb=before, peak_before_kb=peak_before, peak_after_kb=peak,
                      growth_bytes=(peak - before) * 1024, groups=int(sizes.size))))
"""


@pytest.mark.parametrize("given", ["sizes", "int"])
def test_cpu_memory_per_rollout(benchmark, given, tmp_path):
    """Peak RSS growth of one grpo call at N = 10^8 (4 bytes in, 4 out), measured in a fresh process.

    The growth is counted from the RSS just before the call, so a higher peak left from building
    the inputs could only inflate it."""
    def probe():
        result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(MEMORY_ROLLOUTS), given],
                                capture_output=True, text=True, timeout=600, cwd=tmp_path)  # the installed vipfast
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout)

    benchmark.group = "cpu memory, N=10^8, grpo"
    measured = benchmark.pedantic(probe, rounds=1, iterations=1)
    per_rollout = measured["growth_bytes"] / MEMORY_ROLLOUTS
    benchmark.extra_info.update(rollouts=MEMORY_ROLLOUTS, bytes_per_rollout=per_rollout, **measured)
    assert per_rollout <= MAX_BYTES_PER_ROLLOUT, f"{per_rollout:.1f} bytes per rollout"


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

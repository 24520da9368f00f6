"""VIPAllocator overhead per training step: plan + update, embeddings cached (issue 5: Q = 512, <= 50 ms).

    python -m pytest benches/bench_allocator.py --benchmark-only --benchmark-json=benches/results/allocator.json

Workload: the SuccessGP benchmark's (tests/gp_reference.Workload): d = 384 (MiniLM width), Q = 512
prompts per step drawn from 8192 keys in 64 clusters, success rates drifting. Each allocator first
plans and learns 40 steps of history (the GP's 4096-key store is full, so "vipfast" runs its fast
engine), then each benchmarked call is one more step: plan(keys, embeddings) for the batch, rewards
drawn from the true p for the planned counts, update(keys, rewards, counts). The embeddings are
passed in, as they are when the EmbeddingCache already holds them; the embedding model's own cost
is not part of the allocator. Baselines in the same run: UniformAllocator (the bookkeeping alone)
and the bare SuccessGP step (observe + advance + predict) the "vipfast" preset wraps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import vipfast
from vipfast.allocator import PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_success_gp import DIM, HISTORY, Q, workload  # noqa: E402  (the same workload, cached once)

ROUNDS = 40
BOUNDS = dict(budget_per_prompt=8.0, min_rollouts=2, max_rollouts=32)


def allocator_step(allocator, t: int) -> None:
    keys, x, p, _, _ = workload().batch(t)
    counts = allocator.plan(keys=keys, embeddings=x)
    rng = np.random.default_rng([t, 7])
    rewards = (rng.random(int(counts.sum())) < np.repeat(p, counts)).astype(np.float64)
    allocator.update(keys, rewards, counts)


def stepping(step, history: int):
    """Warm up on `history` steps, then return a callable that runs the next step on each call."""
    for t in range(history):
        step(t)
    state = {"t": history}

    def next_step():
        step(state["t"])
        state["t"] += 1

    return next_step


@pytest.mark.parametrize("name", ["vipfast", "paper", "knapsack", "uniform"])
def test_allocator_step(benchmark, name):
    allocator = vipfast.make_allocator(name, **BOUNDS)
    benchmark.group = f"allocator plan+update Q={Q}"
    benchmark.extra_info.update(allocator=name, q=Q, dim=DIM, history=HISTORY)
    benchmark.pedantic(stepping(lambda t: allocator_step(allocator, t), HISTORY), rounds=ROUNDS, iterations=1)


def test_bare_gp_step(benchmark):
    """The SuccessGP the "vipfast" preset builds, stepped directly (no embedder, no solver)."""
    gp = vipfast.SuccessGP(DIM, **PRESETS["vipfast"]["gp"])

    def gp_step(t):
        keys, x, _, trials, successes = workload().batch(t)
        gp.predict(keys, x)
        gp.observe(keys, x, successes, trials)
        gp.advance()

    benchmark.group = f"allocator plan+update Q={Q}"
    benchmark.extra_info.update(allocator="bare SuccessGP step", q=Q, dim=DIM, history=HISTORY)
    benchmark.pedantic(stepping(gp_step, HISTORY), rounds=ROUNDS, iterations=1)

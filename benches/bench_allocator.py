"""Allocator overhead per training step: plan + update with embeddings given, every rule in one run.

    pytest benches/bench_allocator.py --benchmark-only --benchmark-json=.benchmarks/allocator.json

Two workloads, both with d = 384 (the MiniLM width) and embeddings passed in, as they are when the
embedding cache already holds them (the embedding model's own cost is not the allocator's):
- "Q=512": tests/gp_reference.Workload, 512 prompts per step from 8,192 keys in 64 clusters, success rates
  drifting; 40 steps of history first.
- "dataset": a 65,536-prompt pool visited epoch by epoch, 1,024 prompts per step (the 64k-pool scale of
  real RLVR datasets); one epoch of history first, so every prompt has been seen once.
Each benchmarked call is one more step: plan the batch, draw rewards from the true p for the planned
counts, update. The peers measured beside the rules are the uniform split (bookkeeping alone) and the
bare SuccessGP step (predict + observe + advance) that the "gp" preset wraps.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import vipfast
from vipfast.allocators.vip import PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gp_reference import Workload  # noqa: E402

DIM = 384
ROUNDS = 20
BOUNDS = dict(budget_per_prompt=8.0, min_rollouts=2, max_rollouts=32, embedder=None)
POOL, DATASET_Q = 65_536, 1024


@lru_cache(maxsize=None)
def drifting_workload() -> Workload:
    return Workload(num_keys=8192, dim=DIM, batch=512, seed=0)


class DatasetPool:
    """65,536 prompts in 256 clusters, each seen once per epoch in a fresh order; fixed success rates."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(256, DIM))
        cluster = rng.integers(256, size=POOL)
        x = centres[cluster] + 0.8 * rng.normal(size=(POOL, DIM))
        self.x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        self.p = 1 / (1 + np.exp(-(rng.normal(0, 3, 256)[cluster] + rng.normal(0, 1, POOL))))
        self.keys = np.arange(POOL, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        self.rng = rng
        self.order, self.position = np.zeros(0, np.int64), 0

    def batch(self, t):
        if self.position >= len(self.order):
            self.order, self.position = self.rng.permutation(POOL), 0
        rows = self.order[self.position:self.position + DATASET_Q]
        self.position += DATASET_Q
        return self.keys[rows], self.x[rows], self.p[rows]


def allocator_step(allocator, batch, t):
    keys, x, p = batch(t)[:3]
    plan = allocator.plan(keys=keys, embeddings=x)
    rng = np.random.default_rng([t, 7])
    allocator.update(plan, (rng.random(plan.total) < np.repeat(p, plan.counts)).astype(np.float64))


def stepping(step, history: int):
    """Warm up on `history` steps, then return a callable that runs the next step on each call."""
    for t in range(history):
        step(t)
    state = {"t": history}

    def next_step():
        step(state["t"])
        state["t"] += 1

    return next_step


@pytest.mark.parametrize("name", ["vipfast", "gp", "paper", "beta", "knapsack", "coba", "greso", "uniform"])
def test_allocator_step(benchmark, name):
    allocator = vipfast.make_allocator(name, embedding_dim=DIM, **BOUNDS)
    workload = drifting_workload()
    benchmark.group = "allocator plan+update Q=512"
    benchmark.extra_info.update(allocator=name, q=512, dim=DIM)
    benchmark.pedantic(stepping(lambda t: allocator_step(allocator, workload.batch, t), 40), rounds=ROUNDS,
                       iterations=1)


@pytest.mark.parametrize("name", ["vipfast", "gp", "beta", "uniform"])
def test_allocator_step_at_dataset_scale(benchmark, name):
    allocator = vipfast.make_allocator(name, embedding_dim=DIM, **BOUNDS)
    pool = DatasetPool()
    benchmark.group = f"allocator plan+update Q={DATASET_Q}, {POOL}-prompt pool"
    benchmark.extra_info.update(allocator=name, q=DATASET_Q, dim=DIM, pool=POOL)
    benchmark.pedantic(stepping(lambda t: allocator_step(allocator, pool.batch, t), POOL // DATASET_Q),
                       rounds=ROUNDS, iterations=1)


def test_bare_gp_step(benchmark):
    """The SuccessGP the "gp" preset builds, stepped directly (no solver, no bookkeeping)."""
    gp = vipfast.SuccessGP(DIM, **PRESETS["gp"]["gp"])
    workload = drifting_workload()

    def gp_step(t):
        keys, x, _, trials, successes = workload.batch(t)
        prediction = gp.predict(keys, x)
        gp.observe(keys, x, successes, trials, prediction=prediction)
        gp.advance()

    benchmark.group = "allocator plan+update Q=512"
    benchmark.extra_info.update(allocator="bare SuccessGP step", q=512, dim=DIM)
    benchmark.pedantic(stepping(gp_step, 40), rounds=ROUNDS, iterations=1)

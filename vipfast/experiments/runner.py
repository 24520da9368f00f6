"""Arms × seeds on one scenario: build each arm, run it, collect the results (in parallel processes if asked).

An arm is an allocator name (vipfast.allocator_names(), or "oracle" / "cluster-oracle") optionally followed by
"+" and a sampling mode (vipfast.sampling.sampler_names()): "uniform", "vipfast", "uniform+dynamic".
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

from tqdm import tqdm

from ..allocators import allocator_names, make_allocator
from ..sampling import make_sampler, sampler_names
from .oracles import ClusterOracleAllocator, OracleAllocator
from .population import Scenario
from .simulator import RunResult, simulate

__all__ = ["ORACLES", "parse_arm", "build_arm", "run_arms"]

ORACLES = {"oracle": OracleAllocator, "cluster-oracle": ClusterOracleAllocator}


def parse_arm(arm: str) -> tuple[str, str]:
    """(allocator name, sampling mode) of "allocator[+mode]", each checked against its registry."""
    allocator, _, mode = arm.partition("+")
    mode = mode or "single"
    if allocator not in allocator_names() and allocator not in ORACLES:
        raise ValueError(f"arm {arm!r}: allocator must be one of {allocator_names() + tuple(ORACLES)}, got {allocator!r}")
    if mode not in sampler_names():
        raise ValueError(f"arm {arm!r}: sampling mode must be one of {sampler_names()}, got {mode!r}")
    return allocator, mode


def build_arm(arm: str, scenario: Scenario, allocator_options: dict | None = None):
    """(allocator, sampler) for one run of `arm` on `scenario`'s budget and bounds."""
    name, mode = parse_arm(arm)
    shared = dict(budget_per_prompt=scenario.budget_per_prompt, min_rollouts=scenario.min_rollouts,
                  max_rollouts=scenario.max_rollouts)
    if name in ORACLES:
        return ORACLES[name](**shared), make_sampler(mode)
    options = dict(shared, embedder=None, embedding_dim=scenario.dim, **(allocator_options or {}))
    return make_allocator(name, **options), make_sampler(mode)


def _run_one(job) -> RunResult:
    arm, scenario, allocator_options = job
    allocator, sampler = build_arm(arm, scenario, allocator_options)
    return simulate(allocator, scenario, sampler=sampler, label=arm, progress=False)


def run_arms(arms: list[str], scenario: Scenario, seeds: list[int], *, jobs: int = 1,
             allocator_options: dict | None = None) -> dict[str, list[RunResult]]:
    """{arm: [result per seed]}; every arm is validated before any run starts."""
    for arm in arms:
        parse_arm(arm)
    work = [(arm, replace(scenario, seed=seed), allocator_options) for arm in arms for seed in seeds]
    bar = tqdm(total=len(work), desc="arms x seeds", unit="run", file=sys.stderr)
    results = []
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for result in pool.map(_run_one, work):
                results.append(result)
                bar.update()
    else:
        for job in work:
            results.append(_run_one(job))
            bar.update()
    bar.close()
    runs = {arm: [] for arm in arms}
    for (arm, _, _), result in zip(work, results):
        runs[arm].append(result)
    return runs

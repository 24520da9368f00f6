"""`vipfast` command line."""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import numpy as np
from tqdm import tqdm

from . import allocate, allocation_objective
from .baselines import bisection_allocate


def _median_seconds(call, min_time=0.2, max_repeats=2000):
    call()
    times = []
    started = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - started < min_time and len(times) < max_repeats):
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def bench(args) -> int:
    """Allocation latency: vipfast's exact solver vs the paper's numpy bisection, same inputs."""
    rng = np.random.default_rng(args.seed)
    rows = []
    for q in tqdm(args.prompts, desc="allocation latency", unit="size", file=sys.stderr):
        p = rng.beta(0.5, 0.5, size=q)
        weights = p * (1 - p)
        budget = args.budget_per_prompt * q
        bounds = dict(min_rollouts=args.min_rollouts, max_rollouts=args.max_rollouts)
        exact = allocate(weights, budget, **bounds)
        rounded = bisection_allocate(weights, budget, args.min_rollouts, args.max_rollouts)
        ours = _median_seconds(lambda: allocate(weights, budget, **bounds))
        numpy = _median_seconds(lambda: bisection_allocate(weights, budget, args.min_rollouts, args.max_rollouts))
        gap = allocation_objective(weights, rounded, min_rollouts=args.min_rollouts) / allocation_objective(
            weights, exact, min_rollouts=args.min_rollouts) - 1
        rows.append((q, ours, numpy, gap))
    print(f"vipfast allocation latency  (budget {args.budget_per_prompt}·Q, n in [{args.min_rollouts}, "
          f"{args.max_rollouts}], w = p(1-p), p ~ Beta(0.5, 0.5); {platform.machine()}, median)")
    print(f"{'Q':>8} {'vipfast exact':>15} {'numpy bisection':>17} {'speed-up':>9} {'numpy objective gap':>20}")
    for q, ours, numpy, gap in rows:
        print(f"{q:>8} {ours * 1e6:>12.1f} µs {numpy * 1e6:>14.1f} µs {numpy / ours:>8.1f}× {gap:>19.2e}")
    return 0


def simulate(args) -> int:
    """Every allocator on the same synthetic population at equal budget: table + PNG."""
    from dataclasses import fields

    from .allocator import make_allocator
    from .sim import Scenario
    from .sim import simulate as run_simulation
    from .sim_report import summary_table, write_plot

    scenario = Scenario(**{f.name: getattr(args, f.name) for f in fields(Scenario)})
    results = []
    for name in tqdm(args.allocators, desc="allocators", unit="run", file=sys.stderr):
        allocator = make_allocator(name, budget_per_prompt=scenario.budget_per_prompt, min_rollouts=scenario.min_rollouts,
                                   max_rollouts=scenario.max_rollouts, embedding_dim=scenario.dim)
        results.append(run_simulation(allocator, scenario, label=name))
    print(summary_table(results, scenario))
    write_plot(results, args.plot)
    print(f"plot: {args.plot}")
    return 0


def _add_scenario_flags(parser) -> None:
    from dataclasses import MISSING, fields

    from .sim import Scenario

    for f in fields(Scenario):
        default = f.default if f.default is not MISSING else None
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(default), default=default,
                            help=f"(default {default})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vipfast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench_parser = commands.add_parser("bench", help="print the allocation latency table")
    bench_parser.add_argument("--prompts", type=int, nargs="+", default=[256, 4096, 65536])
    bench_parser.add_argument("--budget-per-prompt", type=int, default=16)
    bench_parser.add_argument("--min-rollouts", type=int, default=4)
    bench_parser.add_argument("--max-rollouts", type=int, default=64)
    bench_parser.add_argument("--seed", type=int, default=0)
    bench_parser.set_defaults(run=bench)
    sim_parser = commands.add_parser("simulate", help="compare allocators on a synthetic RLVR population")
    sim_parser.add_argument("--allocators", nargs="+", default=["uniform", "vipfast", "paper", "knapsack"])
    sim_parser.add_argument("--plot", default="simulate.png", help="PNG path (default simulate.png)")
    _add_scenario_flags(sim_parser)
    sim_parser.set_defaults(run=simulate)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())

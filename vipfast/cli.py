"""`vipfast` command line."""

from __future__ import annotations

import argparse
import sys
import time

from tqdm import tqdm


def simulate(args) -> int:
    """Every allocator on the same synthetic population at equal budget: table + PNG."""
    from dataclasses import fields, replace

    from .allocator import make_allocator
    from .sim import ClusterOracleAllocator, OracleAllocator, Scenario
    from .sim import simulate as run_simulation
    from .sim_report import summary_table, write_plot

    scenario = Scenario(**{f.name: getattr(args, f.name) for f in fields(Scenario)})
    seeds = args.seeds or [scenario.seed]
    bounds = dict(budget_per_prompt=scenario.budget_per_prompt, min_rollouts=scenario.min_rollouts,
                  max_rollouts=scenario.max_rollouts)
    runs = {name: [] for name in args.allocators}
    jobs = [(name, seed) for name in args.allocators for seed in seeds]
    for name, seed in tqdm(jobs, desc="allocators x seeds", unit="run", file=sys.stderr):
        oracle = {"oracle": OracleAllocator, "cluster-oracle": ClusterOracleAllocator}.get(name)
        allocator = oracle(**bounds) if oracle else make_allocator(name, embedding_dim=scenario.dim, **bounds)
        runs[name].append(run_simulation(allocator, replace(scenario, seed=seed), label=name))
    print(summary_table(runs, scenario, seeds))
    write_plot(runs, args.plot)
    print(f"plot: {args.plot}")
    return 0


def train(args) -> int:
    """One training run (resumed when its run_dir has a checkpoint), then a summary and curves.png."""
    from .train import Trainer, load_config
    from .train.plot import plot_run, time_summary

    config = load_config(args.config, dict(args.set))
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    started = time.perf_counter()
    trainer = Trainer(config, resume=not args.no_resume)
    rows = trainer.run()
    evals = [r["held_out_accuracy"] for r in rows if r.get("held_out_accuracy") is not None]
    times = time_summary(rows)
    print(f"backend {trainer.backend}, allocator {config.allocator.name}, {trainer.step} steps, "
          f"{trainer.rollouts} rollouts, {time.perf_counter() - started:.0f} s")
    if evals:
        print(f"held-out accuracy {evals[0]:.3f} -> {evals[-1]:.3f}")
    if times:
        split = ", ".join(f"{phase} {seconds * 1e3:.0f} ms" for phase, seconds in times.items() if phase != "allocator_overhead")
        print(f"median step: {split}; allocator overhead {100 * times['allocator_overhead']:.2f}% of the run's step time")
    print(f"run directory {config.run_dir} (metrics.jsonl, checkpoint/, curves {plot_run(config.run_dir)})")
    return 0


def plot(args) -> int:
    from .train.plot import plot_run

    print(plot_run(args.run_dir, args.output))
    return 0


def compare(args) -> int:
    from .train.compare import run_comparison

    run_comparison(args.config, dict(args.set), allocators=args.allocators, seeds=args.seeds, out_dir=args.out)
    return 0


def _key_value(text: str) -> tuple[str, object]:
    """`optim.lr=3e-4` -> ("optim.lr", 0.0003); values parsed as YAML, numbers also in 1e-3 form."""
    import yaml

    key, separator, raw = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. optim.lr=3e-4), got {text!r}")
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value


def _add_config_flags(parser) -> None:
    parser.add_argument("--config", help="YAML file; keys it leaves out keep the embedded defaults")
    parser.add_argument("--set", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set steps=20 --set allocator.name=uniform")


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
    sim_parser = commands.add_parser("simulate", help="compare allocators on a synthetic RLVR population")
    sim_parser.add_argument("--allocators", nargs="+",
                            default=["uniform", "vipfast", "paper", "knapsack", "cluster-oracle", "oracle"],
                            help="uniform, vipfast, paper, knapsack; oracle (the solver fed the true p) and "
                                 "cluster-oracle (fed each prompt's cluster skill, not its own offset)")
    sim_parser.add_argument("--plot", default="simulate.png", help="PNG path (default simulate.png)")
    sim_parser.add_argument("--seeds", type=int, nargs="+", help="run every allocator on each seed (overrides --seed)")
    _add_scenario_flags(sim_parser)
    sim_parser.set_defaults(run=simulate)
    train_parser = commands.add_parser("train", help="RLVR training: vLLM/HF generation, VIP allocation, GRPO/RLOO")
    _add_config_flags(train_parser)
    train_parser.add_argument("--no-resume", action="store_true", help="start over even if run_dir has a checkpoint")
    train_parser.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    train_parser.set_defaults(run=train)
    plot_parser = commands.add_parser("plot", help="PNG curves of a training run")
    plot_parser.add_argument("run_dir")
    plot_parser.add_argument("--output", help="PNG path (default RUN_DIR/curves.png)")
    plot_parser.set_defaults(run=plot)
    compare_parser = commands.add_parser("compare", help="allocators x seeds at equal rollouts: table, PNG, RESULTS")
    _add_config_flags(compare_parser)
    compare_parser.add_argument("--allocators", nargs="+", default=["uniform", "vipfast", "paper"])
    compare_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    compare_parser.add_argument("--out", default="runs/compare", help="directory for the runs, table and PNG")
    compare_parser.set_defaults(run=compare)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""`vipfast` command line.

A mistake in what the user asked for (a config key, a file, a missing extra) is one line,
`vipfast: error: ...`, exit status 2; `--debug` shows its traceback. Anything else is a bug and
keeps its traceback. Ctrl-C ends with one line saying where the run can resume from, exit status 130.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from functools import partial

from tqdm import tqdm

from . import __version__


class UserError(Exception):
    """What the user asked for cannot run; printed as one line. The original error is its __cause__."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a sentence saying what was kept."""


@contextmanager
def user_errors():
    """ValueErrors and TypeErrors raised inside are the user's: validation of configs, files and installs."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise UserError(str(error)) from error


@contextmanager
def interrupted(describe):
    """Ctrl-C inside becomes `Interrupted(describe())`."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(describe()) from None


def _import_trainer_modules():
    """vipfast.train, or a UserError naming the missing extra (torch, transformers, pyyaml)."""
    try:
        from . import train
        from .train import compare, plot
    except ModuleNotFoundError as error:
        raise UserError(f"this command needs the train extra ({error.name} is not installed): run "
                        f"`pip install \".[train]\"` in a vipfast checkout") from error
    return train, compare, plot



def simulate(args) -> int:
    """Arms x seeds on one named scenario at equal budget: table (also as RESULTS.md-ready markdown), CSV, PNG."""
    from pathlib import Path

    from .experiments import scenario as named_scenario
    from .experiments.report import summary_table, write_csv, write_plot
    from .experiments.runner import run_arms
    from .experiments.scenarios import DESCRIPTIONS

    overrides = {name: getattr(args, name) for name in _scenario_fields() if getattr(args, name) is not None}
    scenario = named_scenario(args.scenario, **overrides)
    seeds = args.seeds or [scenario.seed]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = run_arms(args.allocators, scenario, seeds, jobs=args.jobs)
    title = (f"scenario {args.scenario} ({DESCRIPTIONS[args.scenario]}){', ' + str(overrides) if overrides else ''}; "
             f"budget {scenario.budget_per_prompt}/prompt, n in [{scenario.min_rollouts}, {scenario.max_rollouts}]; "
             f"seeds {seeds} (mean ± s.e. over seeds)")
    table = summary_table(runs, title)
    print(table)
    (out / "summary.md").write_text(table + "\n")
    write_csv(runs, seeds, out / "summary.csv")
    write_plot(runs, out / "curves.png")
    print(f"written: {out / 'summary.md'}, {out / 'summary.csv'}, {out / 'curves.png'}")
    return 0


def train(args) -> int:
    """One training run (resumed when its run_dir has a checkpoint), then a summary and curves.png."""
    train_module, _, plot_module = _import_trainer_modules()
    with user_errors():
        config = train_module.load_config(args.config, parse_overrides(args.set))
        if args.print_config:
            import yaml

            print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
            return 0
        _require_plotting()
        prepared = train_module.prepare_run(config, resume=not args.no_resume)
    if prepared.finished:
        print(f"{config.run_dir} holds a finished run (checkpoint of step {prepared.checkpoint.step}, this config "
              f"asks for {config.steps} steps): nothing to do. Raise steps (--set steps=N) to continue it, or pass "
              f"--no-resume to start over.")
        return 0
    started = time.perf_counter()
    with interrupted(partial(train_module.describe_last_checkpoint, config.run_dir)):
        trainer = train_module.Trainer(config, resume=not args.no_resume, prepared=prepared)
        rows = trainer.run()
    evals = [r["held_out_accuracy"] for r in rows if r.get("held_out_accuracy") is not None]
    times = plot_module.time_summary(rows)
    print(f"backend {trainer.backend}, allocator {config.allocator.name}, {trainer.step} steps, "
          f"{trainer.rollouts} rollouts, {time.perf_counter() - started:.0f} s")
    if evals:
        print(f"held-out accuracy {evals[0]:.3f} -> {evals[-1]:.3f}")
    if times:
        split = ", ".join(f"{phase} {seconds * 1e3:.0f} ms" for phase, seconds in times.items() if phase != "allocator_overhead")
        print(f"median step: {split}; allocator overhead {100 * times['allocator_overhead']:.2f}% of the run's step time")
    print(f"run directory {config.run_dir} (metrics.jsonl, checkpoint/, curves {plot_module.plot_run(config.run_dir)})")
    return 0


def _require_plotting() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("the curves need matplotlib, which is not installed: run `pip install \".[train]\"` in a "
                         "vipfast checkout")


def plot(args) -> int:
    _, _, plot_module = _import_trainer_modules()
    with user_errors():
        _require_plotting()
        plot_module.read_metrics(args.run_dir)
    print(plot_module.plot_run(args.run_dir, args.output))
    return 0


def compare(args) -> int:
    _, compare_module, _ = _import_trainer_modules()
    with user_errors():
        _require_plotting()
        arms = compare_module.prepare_arms(args.config, parse_overrides(args.set), arms=args.arms, seeds=args.seeds,
                                           out_dir=args.out)
    with interrupted(lambda: f"finished arms and the last checkpoints of the others are in {args.out}; "
                             "run the same command to resume"):
        compare_module.run_prepared_arms(arms, arms=args.arms, out_dir=args.out, jobs=args.jobs)
    return 0


def parse_overrides(pairs: list[str]) -> dict:
    """["optim.lr=3e-4", ...] -> {"optim.lr": 0.0003}; values parsed as YAML, numbers also in 1e-3 form."""
    import yaml

    overrides = {}
    for text in pairs:
        key, separator, raw = text.partition("=")
        if not separator or not key:
            raise ValueError(f"--set {text!r}: expected KEY=VALUE (e.g. optim.lr=3e-4)")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ValueError(f"--set {text!r}: the value is not valid YAML ({problem})") from None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        overrides[key] = value
    return overrides


def _add_config_flags(parser) -> None:
    parser.add_argument("--config", help="YAML file; keys it leaves out keep the embedded defaults")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set steps=20 --set allocator.name=uniform")


def _scenario_fields():
    from .experiments import Scenario

    return Scenario.field_names()


def _add_scenario_flags(parser) -> None:
    from dataclasses import fields

    from .experiments import Scenario

    for f in fields(Scenario):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=None,
                            help=f"(the scenario's value by default; Scenario default {f.default})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vipfast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vipfast {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error")
    commands = parser.add_subparsers(dest="command", required=True)
    sim_parser = commands.add_parser("simulate", help="compare allocators and sampling modes on a synthetic RLVR population")
    sim_parser.add_argument("--scenario", default="default", help="a named scenario (docs/simulator.md)")
    sim_parser.add_argument("--allocators", nargs="+", metavar="ARM",
                            default=["uniform", "beta", "vipfast", "paper", "knapsack", "cluster-oracle", "oracle"],
                            help="allocator names, 'oracle', 'cluster-oracle', each optionally +MODE "
                                 "(a sampling mode, e.g. uniform+dynamic)")
    sim_parser.add_argument("--seeds", type=int, nargs="+", help="run every arm on each seed (default: the scenario's)")
    sim_parser.add_argument("--out", default="runs/simulate", help="directory for summary.md, summary.csv, curves.png")
    sim_parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
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
    compare_parser = commands.add_parser("compare", help="arms x seeds at equal rollouts generated: table, PNGs")
    _add_config_flags(compare_parser)
    compare_parser.add_argument("--arms", "--allocators", dest="arms", nargs="+", default=["uniform", "vipfast", "paper"],
                                metavar="ARM", help="ALLOCATOR[+MODE][@KEY=VALUE...], e.g. uniform, oracle, "
                                                    "uniform+dynamic, vipfast@allocator.embedder=minilm")
    compare_parser.add_argument("--jobs", type=int, default=1, help="arms run at once, in worker processes")
    compare_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    compare_parser.add_argument("--out", default="runs/compare", help="directory for the runs, table and PNG")
    compare_parser.set_defaults(run=compare)
    for command in commands.choices.values():  # also accepted after the command
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UserError as error:
        if args.debug:
            raise error.__cause__ or error
        print(f"vipfast: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        if args.debug:
            raise
        detail = f"; {interrupt}" if isinstance(interrupt, Interrupted) else ""
        print(f"vipfast: interrupted{detail}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

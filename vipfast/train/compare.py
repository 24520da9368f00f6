"""`vipfast compare`: arms x seeds on one config at equal rollouts generated.

An arm is `ALLOCATOR[+MODE][@KEY=VALUE...]`: an allocator name (vipfast.allocator_names(), or "oracle"),
optionally a sampling mode (vipfast.sampling.sampler_names()) and config overrides for that arm alone, e.g.
"uniform", "vipfast+vip_rounds", "uniform+dynamic", "vipfast@allocator.embedder=minilm",
"uniform@optim.aggregation=prompt-mean". Every arm runs the same config otherwise (same warm-started
policy, prompts per step, budget) until it has generated the same number of rollouts (`rollout_budget`,
by default `steps` steps of the single-round budget), so modes that generate more per step take fewer
steps. Seeds are paired: arms of one seed share the pool order, sampling seeds and evaluation draws.
Arms are ordinary runs in OUT/<arm>-seed<k>; an interrupted comparison resumes them, and finished arms are
not run again. Every arm is checked (`prepare_run`) before the first one starts.

Writes OUT/summary.md (table, warnings, the command), OUT/summary.json, OUT/accuracy.png (held-out accuracy
vs rollouts and vs wall-clock) and OUT/families.png (where each arm's rollouts went, by family).
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .._files import atomic_write
from .config import config_from_mapping, load_config
from .plot import accuracy_label, read_metrics, time_summary

# The goal: the reference's final accuracy with this fraction of its rollouts.
SAVING_FRACTION = 0.8
# Minimum detectable effect of a paired comparison: two-sided 5% test with 80% power.
TEST_LEVEL, POWER = 0.05, 0.8
# Steps an arm may take, as a multiple of the config's `steps`, to spend its rollout budget.
STEP_ALLOWANCE = 10


# -- arms ---------------------------------------------------------------------------------------------

def parse_arm(arm: str) -> tuple[str, str | None, dict]:
    """(allocator, sampling mode or None, {dotted key: value}) of "ALLOCATOR[+MODE][@KEY=VALUE...]"."""
    from ..cli import parse_overrides

    head, *settings = arm.split("@")
    allocator, _, mode = head.partition("+")
    if not allocator:
        raise ValueError(f"arm {arm!r}: expected ALLOCATOR[+MODE][@KEY=VALUE...], e.g. 'uniform+dynamic'")
    return allocator, mode or None, parse_overrides(settings) if settings else {}


def arm_config(base, arm: str, seed: int, out_dir):
    """The config of one arm and seed, validated."""
    allocator, mode, overrides = parse_arm(arm)
    raw = base.to_dict()
    raw.update(seed=seed, run_dir=str(Path(out_dir) / f"{arm}-seed{seed}"))
    raw["allocator"]["name"] = allocator
    if mode is not None:  # a mode's options belong to it: another mode starts from its defaults
        raw["sampling"] = {"name": mode, "order": base.sampling.order}
    if base.rollout_budget is None:
        raw["rollout_budget"] = base.steps * base_step_rollouts(base)
        raw["steps"] = STEP_ALLOWANCE * base.steps
    try:
        return config_from_mapping(raw, overrides)
    except ValueError as error:
        raise ValueError(f"arm {arm!r}: {error}") from None


def base_step_rollouts(config) -> int:
    return int(round(config.allocator.prompts_per_step * config.allocator.budget_per_prompt))


def arm_configs(config_path, overrides, arms, seeds, out_dir) -> dict:
    """{(arm, seed): config}, every one validated before any run starts."""
    if len(seeds) < 1 or len(arms) < 1:
        raise ValueError("compare needs at least one arm and one seed")
    if len(set(arms)) != len(arms) or len(set(seeds)) != len(seeds):
        raise ValueError(f"compare needs distinct arms and seeds, got arms {list(arms)} and seeds {list(seeds)}")
    base = load_config(config_path, overrides)
    # Seed by seed, so that a comparison stopped early has every arm of its first seeds.
    return {(arm, seed): arm_config(base, arm, seed, out_dir) for seed in seeds for arm in arms}


def prepare_arms(config_path, overrides, *, arms, seeds, out_dir) -> dict:
    """{(arm, seed): PreparedRun}: every arm's config, installation, checkpoint and data checked."""
    from .trainer import prepare_run

    return {key: prepare_run(config) for key, config in arm_configs(config_path, overrides, arms, seeds,
                                                                    out_dir).items()}


def run_comparison(config_path, overrides, *, arms, seeds, out_dir, jobs: int = 1) -> dict:
    prepared = prepare_arms(config_path, overrides, arms=arms, seeds=seeds, out_dir=out_dir)
    return run_prepared_arms(prepared, arms=arms, out_dir=out_dir, jobs=jobs)


def _run_arm(config) -> None:
    """One arm, from its config alone (what a worker process is sent: a task's scorer does not pickle)."""
    from .trainer import Trainer

    Trainer(config).run(progress=False)


def run_prepared_arms(prepared: dict, *, arms, out_dir, jobs: int = 1) -> dict:
    """Runs the unfinished arms (`jobs` at a time, in worker processes when > 1), then summarises all."""
    from .model import policy_directory
    from .trainer import Trainer

    todo = [(key, p) for key, p in prepared.items() if not p.finished]
    if todo:  # the shared warm start, once, before any arm needs it
        first = todo[0][1]
        policy_directory(first.config.model, first.task.tiny)
    with tqdm(total=len(prepared), initial=len(prepared) - len(todo), desc="arms x seeds", unit="run",
              file=sys.stderr) as bar:
        if jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = {pool.submit(_run_arm, p.config): key for key, p in todo}
                for future in as_completed(futures):
                    future.result()
                    bar.set_postfix_str(f"{futures[future][0]} seed {futures[future][1]} done")
                    bar.update()
        else:
            for (arm, seed), p in todo:
                bar.set_postfix_str(f"{arm} seed {seed}")
                Trainer(p.config, prepared=p).run(progress=False)
                bar.update()
    configs = {key: p.config for key, p in prepared.items()}
    summary = summarise({key: read_metrics(c.run_dir) for key, c in configs.items()}, list(arms))
    first = next(iter(configs.values()))
    summary["accuracy_label"] = accuracy_label(first.eval_samples, first.generation.temperature)
    summary["command"] = "vipfast " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "vipfast compare"
    write_summary(summary, out_dir)
    return summary


def write_summary(summary: dict, out_dir) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("summary.json", json.dumps(summary, indent=1)), ("summary.md", summary_markdown(summary))):
        atomic_write(out / name, lambda handle, text=text: handle.write(text.encode()))
    plot_comparison(summary, out / "accuracy.png")
    plots = [out / "accuracy.png"]
    if any(c["rollouts_by_family"] for c in summary["curves"].values()):
        plot_families(summary, out / "families.png")
        plots.append(out / "families.png")
    print(summary_markdown(summary))
    print("plots: " + ", ".join(map(str, plots)))


# -- statistics ---------------------------------------------------------------------------------------

def t_quantile(probability: float, degrees: int) -> float:
    """Student's t quantile: bisection on the CDF, 1/2 + ∫₀ᵗ density, the integral by Simpson's rule on 2000
    intervals (the density is smooth: errors far below the third decimal an interval is read to)."""
    v = float(degrees)
    log_scale = math.lgamma((v + 1) / 2) - math.lgamma(v / 2) - 0.5 * math.log(v * math.pi)

    def cdf(t: float) -> float:
        x = np.linspace(0.0, abs(t), 2001)
        density = np.exp(log_scale - (v + 1) / 2 * np.log1p(x * x / v))
        area = (x[1] - x[0]) / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())
        return 0.5 + math.copysign(area, t)

    low, high = -1e3, 1e3
    for _ in range(80):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < probability else (low, middle)
    return (low + high) / 2


def paired_statistics(differences) -> dict | None:
    """Mean, standard error, 95% interval and minimum detectable effect of per-seed paired differences."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return None
    se = float(d.std(ddof=1) / math.sqrt(len(d)))
    half = t_quantile(1 - TEST_LEVEL / 2, len(d) - 1) * se
    detectable = (t_quantile(1 - TEST_LEVEL / 2, len(d) - 1) + t_quantile(POWER, len(d) - 1)) * se
    return dict(mean=float(d.mean()), se=se, low=float(d.mean() - half), high=float(d.mean() + half),
                detectable=detectable, seeds=len(d))


def normalised_area(x, y) -> float:
    """Area under y(x) (trapezoids) divided by the x range: the curve's mean height."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y[-1]) if len(y) else math.nan
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def smooth(values) -> np.ndarray:
    """Centred moving average over 3 evaluation points (2 at the ends)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 3:
        return values.copy()
    padded = np.concatenate([[np.nan], values, [np.nan]])
    window = np.stack([padded[:-2], padded[1:-1], padded[2:]])
    return np.nanmean(window, axis=0)


def rollouts_to_reach(rollouts, accuracy, target) -> float | None:
    """First rollout count at which the curve reaches `target`, linear between evaluation points."""
    for i, value in enumerate(accuracy):
        if value >= target:
            if i == 0:
                return float(rollouts[0])
            x0, x1, y0 = rollouts[i - 1], rollouts[i], accuracy[i - 1]
            return float(x0 + (x1 - x0) * (target - y0) / (value - y0))
    return None


# -- summary ------------------------------------------------------------------------------------------

def _evaluations(rows: list[dict]) -> tuple[list[float], list[float], list[float]]:
    """(rollouts, held-out accuracy, training seconds so far) at each evaluation of one run."""
    seconds, rollouts, accuracy, clock = 0.0, [], [], []
    for row in rows:
        seconds += sum(row.get("time_s", {}).values()) + row.get("oracle_s", 0.0)
        if row.get("held_out_accuracy") is not None:
            rollouts.append(row["rollouts"])
            accuracy.append(row["held_out_accuracy"])
            clock.append(seconds)
    return rollouts, accuracy, clock


def _family_rows(rows: list[dict], key: str, which: int) -> dict:
    evaluations = [r for r in rows if key in r]
    return evaluations[which][key] if evaluations else {}


def summarise(metrics: dict, arms) -> dict:
    """Per arm, over seeds: the held-out curve on a common rollout grid, its area, the paired difference to
    the reference arm ("uniform" when present), rollouts to reach the reference's final accuracy on smoothed
    curves, waste, tokens, where the rollouts went by family and the allocator's share of step time."""
    arms = list(arms)
    reference = "uniform" if "uniform" in arms else arms[0]
    runs = {arm: {seed: rows for (name, seed), rows in metrics.items() if name == arm} for arm in arms}
    grid = _common_grid(runs, reference)
    curves = {arm: _arm_curve(seeds_rows, grid) for arm, seeds_rows in runs.items()}
    ref = curves[reference]
    target = float(ref["smoothed"][-1])
    improved = target > ref["smoothed"][0]
    shift = saving_shift(grid, ref["mean"], SAVING_FRACTION)
    for curve in curves.values():
        curve["rollouts_to_reference_final"] = rollouts_to_reach(grid, curve["smoothed"], target) if improved else None
        reached = curve["rollouts_to_reference_final"]
        curve["fraction_of_reference_rollouts"] = None if reached is None else reached / grid[-1]
        shared = sorted(set(curve["seed_ids"]) & set(ref["seed_ids"]))
        mine = dict(zip(curve["seed_ids"], curve["area_per_seed"]))
        theirs = dict(zip(ref["seed_ids"], ref["area_per_seed"]))
        curve["paired_difference"] = [mine[s] - theirs[s] for s in shared]
        curve["paired"] = paired_statistics(curve["paired_difference"])
        curve["too_few_seeds"] = bool(curve["paired"] and shift is not None and curve["paired"]["detectable"] > shift)
    return dict(reference=reference, grid=grid, reference_final_smoothed=target, reference_final_mean=ref["mean"][-1],
                reference_rollouts=grid[-1], reference_improved=bool(improved), curves=curves, saving_shift=shift,
                saving_fraction=SAVING_FRACTION)


def _common_grid(runs: dict, reference: str) -> list[float]:
    """The reference's evaluation points (first seed), up to the last point every run reached."""
    first = next(iter(runs[reference].values()))
    points = _evaluations(first)[0]
    reach = min(_evaluations(rows)[0][-1] for seeds in runs.values() for rows in seeds.values())
    grid = [x for x in points if x <= reach]
    return [float(x) for x in grid]


def _arm_curve(seeds_rows: dict, grid: list[float]) -> dict:
    seed_ids = sorted(seeds_rows)
    per_seed, clock = [], []
    for seed in seed_ids:
        rollouts, accuracy, seconds = _evaluations(seeds_rows[seed])
        per_seed.append(np.interp(grid, rollouts, accuracy))
        clock.append(np.interp(grid, rollouts, seconds))
    accuracy = np.array(per_seed)  # [seeds, points]
    steps = [r for seed in seed_ids for r in seeds_rows[seed] if "time_s" in r]
    generated = sum(r["generated_rollouts"] if "generated_rollouts" in r else sum(
        int(n) * c for n, c in r["allocation_histogram"].items()) for r in steps)
    wasted = sum(r["wasted_rollouts"] for r in steps)
    families: dict[str, int] = {}
    for row in steps:
        for family, count in row.get("rollouts_by_family", {}).items():
            families[family] = families.get(family, 0) + count
    times = time_summary(steps)
    mean = accuracy.mean(0)
    return dict(seeds=len(seed_ids), seed_ids=seed_ids, rollouts=grid, per_seed=accuracy.tolist(), mean=mean.tolist(),
                std=(accuracy.std(0, ddof=1) if len(seed_ids) > 1 else np.zeros(len(grid))).tolist(),
                smoothed=smooth(mean).tolist(), seconds=np.mean(clock, axis=0).tolist(),
                final=accuracy[:, -1].tolist(), gain=(accuracy[:, -1] - accuracy[:, 0]).tolist(),
                area_per_seed=[normalised_area(grid, row) for row in accuracy],
                wasted_fraction=wasted / generated if generated else 0.0,
                tokens=float(np.mean([seeds_rows[s][-1].get("tokens", 0) for s in seed_ids])),
                steps=float(np.mean([seeds_rows[s][-1]["step"] for s in seed_ids])),
                rollouts_by_family=families,
                start_by_family=_mean_family(seeds_rows, seed_ids, 0), final_by_family=_mean_family(seeds_rows, seed_ids, -1),
                step_seconds=float(sum(v for k, v in times.items() if k != "allocator_overhead")),
                allocator_overhead=times.get("allocator_overhead"))


def _mean_family(seeds_rows, seed_ids, which) -> dict:
    values = [_family_rows(seeds_rows[s], "held_out_by_family", which) for s in seed_ids]
    families = list(values[0]) if values and values[0] else []
    return {f: float(np.mean([v[f] for v in values if f in v])) for f in families}


def saving_shift(grid, mean, fraction: float) -> float | None:
    """The paired area difference an arm would show if it reached every accuracy of the reference's mean curve
    with `fraction` of the rollouts: that curve stretched by 1/fraction, held flat past its end (so the shift is,
    if anything, understated), minus the curve."""
    x, y = np.asarray(grid, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    if len(x) < 2:
        return None
    faster = np.interp(x / fraction, x, y)
    return normalised_area(x, faster) - normalised_area(x, y)


# -- report ------------------------------------------------------------------------------------------

def _number(value, pattern: str, missing: str = "—") -> str:
    return missing if value is None else format(value, pattern)


def summary_markdown(summary: dict) -> str:
    reference, curves = summary["reference"], summary["curves"]
    lines = [f"Held-out accuracy over {summary['reference_rollouts']:,.0f} rollouts generated per arm; mean over seeds. "
             f"Area = mean accuracy over the run (area under the accuracy-vs-rollouts curve ÷ rollouts). "
             f"Δ area = per seed, this arm's area minus {reference}'s, mean with its 95% interval; MDE = the smallest "
             f"Δ the seeds could detect (5% two-sided, 80% power). 'To reach' = rollouts this arm's smoothed mean curve "
             f"needs to reach {reference}'s smoothed final accuracy ({summary['reference_final_smoothed']:.3f}).", ""]
    if not summary["reference_improved"]:
        lines += [f"{reference} did not improve on its starting accuracy, so 'to reach' is not measured.", ""]
    lines += ["| arm | seeds | start | final (± sd) | area | Δ area vs " + reference + " [95% interval] | MDE | to reach "
              f"{reference}'s final | fraction | wasted | steps | tokens | step time | allocator share |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in curves.items():
        p = c["paired"]
        delta = "—" if p is None or name == reference else f"{p['mean']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}]"
        detectable = "—" if p is None or name == reference else f"{p['detectable']:.4f}"
        lines.append(f"| {name} | {c['seeds']} | {c['mean'][0]:.3f} | {c['mean'][-1]:.3f} ± {c['std'][-1]:.3f} | "
                     f"{np.mean(c['area_per_seed']):.4f} | {delta} | {detectable} | "
                     f"{_number(c['rollouts_to_reference_final'], ',.0f', 'never')} | "
                     f"{_number(c['fraction_of_reference_rollouts'], '.0%')} | {c['wasted_fraction']:.0%} | "
                     f"{c['steps']:.0f} | {c['tokens']:,.0f} | {c['step_seconds']:.2f} s | "
                     f"{_number(c['allocator_overhead'], '.2%')} |")
    shift = summary.get("saving_shift")
    if shift is not None:
        lines += ["", f"Reaching every accuracy of {reference}'s mean curve with {summary['saving_fraction']:.0%} of its "
                  f"rollouts would show as Δ area ≈ {shift:+.4f}."]
        few = [name for name, c in curves.items() if c["too_few_seeds"] and name != reference]
        if few:
            worst = max(curves[name]["paired"]["detectable"] for name in few)
            lines += ["", f"**Warning: too few seeds.** For {', '.join(few)} the minimum detectable effect (up to "
                      f"{worst:.4f}, from the paired standard error) exceeds the {shift:+.4f} a "
                      f"{1 - summary['saving_fraction']:.0%} saving would show: these seeds cannot tell such a saving "
                      f"from none. More seeds shrink it by 1/√seeds."]
    families = _family_table(curves)
    if families:
        lines += ["", *families]
    lines += ["", f"Command: `{summary['command']}`" if "command" in summary else ""]
    return "\n".join(lines) + "\n"


def _family_table(curves: dict) -> list[str]:
    names = list(dict.fromkeys(f for c in curves.values() for f in c["rollouts_by_family"]))
    if not names:
        return []
    lines = ["Share of rollouts generated by family (held-out accuracy at the start → end, mean over seeds):", "",
             "| arm | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for arm, c in curves.items():
        total = sum(c["rollouts_by_family"].values()) or 1
        cells = [f"{c['rollouts_by_family'].get(f, 0) / total:.1%} ({c['start_by_family'].get(f, math.nan):.2f} → "
                 f"{c['final_by_family'].get(f, math.nan):.2f})" for f in names]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_comparison(summary: dict, path) -> None:
    """Two panels: held-out accuracy vs rollouts generated, and vs training wall-clock (mean ± s.e. over seeds)."""
    plt = _pyplot()
    figure, (by_rollouts, by_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, c in summary["curves"].items():
        mean, std = np.array(c["mean"]), np.array(c["std"])
        band = std / math.sqrt(max(c["seeds"], 1))
        for ax, x in ((by_rollouts, np.array(c["rollouts"])), (by_time, np.array(c["seconds"]))):
            ax.plot(x, mean, marker="o", markersize=2, label=f"{name} ({c['seeds']} seeds)")
            ax.fill_between(x, mean - band, mean + band, alpha=0.15)
    by_rollouts.axhline(summary["reference_final_smoothed"], color="grey", linestyle=":", linewidth=1,
                        label=f"{summary['reference']} final (smoothed)")
    label = summary.get("accuracy_label", "held-out accuracy")
    by_rollouts.set(xlabel="rollouts generated", ylabel=label, title="at equal rollouts (mean ± s.e. over seeds)")
    by_time.set(xlabel="training wall-clock, s (step time; the oracle's measuring included)", ylabel=label,
                title="against wall-clock")
    by_rollouts.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_families(summary: dict, path) -> None:
    """Share of each arm's rollouts by family, beside the reference's held-out accuracy per family at the start."""
    plt = _pyplot()
    curves = summary["curves"]
    names = list(dict.fromkeys(f for c in curves.values() for f in c["rollouts_by_family"]))
    figure, (shares, accuracy) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw=dict(width_ratios=[3, 2]))
    width = 0.8 / max(len(curves), 1)
    x = np.arange(len(names))
    for k, (arm, c) in enumerate(curves.items()):
        total = sum(c["rollouts_by_family"].values()) or 1
        shares.bar(x + k * width, [c["rollouts_by_family"].get(f, 0) / total for f in names], width, label=arm)
    shares.set_xticks(x + width * (len(curves) - 1) / 2, names, rotation=30, ha="right")
    shares.set(ylabel="share of rollouts generated", title="where the rollouts went")
    shares.legend(fontsize=7)
    ref = curves[summary["reference"]]
    accuracy.bar(x - 0.2, [ref["start_by_family"].get(f, 0) for f in names], 0.4, label="start")
    accuracy.bar(x + 0.2, [ref["final_by_family"].get(f, 0) for f in names], 0.4, label=f"end ({summary['reference']})")
    accuracy.set_xticks(x, names, rotation=30, ha="right")
    accuracy.set(ylabel="held-out accuracy", ylim=(0, 1), title="held-out accuracy by family")
    accuracy.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

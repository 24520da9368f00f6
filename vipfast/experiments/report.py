"""Tables, CSV and plots for `vipfast simulate`: per arm, mean ± standard error over seeds of each metric.

Ratios are paired: each seed's value divided by the reference arm's on the same seed (uniform for waste,
rollouts and wall-clock, beta for the variance objective), then averaged.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .simulator import RunResult

__all__ = ["seed_rows", "summary_table", "write_csv", "write_plot"]

# (key, column title, format)
COLUMNS = [
    ("wasted_fraction", "wasted", ".1%"),
    ("wasted_vs_uniform", "wasted vs uniform", ".2f"),
    ("objective_vs_uniform", "objective vs uniform", ".3f"),
    ("objective_vs_beta", "objective vs beta", ".3f"),
    ("fresh_objective_vs_uniform", "first-visit objective vs uniform", ".3f"),
    ("informative_groups", "informative groups/step", ".1f"),
    ("brier_vs_beta", "Brier vs Beta", ".2f"),
    ("p_spread", "spread of p̂", ".3f"),
    ("ece", "ECE", ".3f"),
    ("final_mean_p", "final mean p", ".3f"),
    ("rollouts_to_target", "rollouts to uniform's final p", ".2f"),
    ("wall_to_target", "wall-clock to uniform's final p", ".2f"),
    ("latency_ms", "ms/step", ".1f"),
]


def _to_target(result: RunResult, target: float, key: str) -> float:
    """Cumulative `key` (generated rollouts or wall-clock) at the first step whose mean p reaches `target`; inf if none."""
    total = 0.0
    for row in result.steps:
        total += row["generated"] if key == "generated" else row["wall"]
        if row["mean_p"] >= target - 1e-12:
            return total
    return float("inf")


def seed_rows(runs: dict[str, list[RunResult]]) -> dict[str, list[dict]]:
    """Each run's summary plus its paired ratios against uniform's and beta's runs on the same seed."""
    summaries = {arm: [r.summary() for r in results] for arm, results in runs.items()}
    uniform, beta = runs.get("uniform"), summaries.get("beta")
    table = {}
    for arm, rows in summaries.items():
        for i, row in enumerate(rows):
            row["brier_vs_beta"] = row["brier"] / row["beta_brier"] if row["brier"] is not None else None
            base = summaries["uniform"][i] if uniform else None
            row["wasted_vs_uniform"] = row["wasted_fraction"] / base["wasted_fraction"] if base else None
            ours, theirs = row["objective_vs_uniform"], beta[i]["objective_vs_uniform"] if beta else None
            row["objective_vs_beta"] = ours / theirs if ours is not None and theirs else None
            if uniform:
                target = uniform[i].steps[-1]["mean_p"]
                reference = uniform[i]
                row["rollouts_to_target"] = _to_target(runs[arm][i], target, "generated") / _to_target(
                    reference, target, "generated")
                row["wall_to_target"] = _to_target(runs[arm][i], target, "wall") / _to_target(reference, target, "wall")
            else:
                row["rollouts_to_target"] = row["wall_to_target"] = None
        table[arm] = rows
    return table


def _cell(values, fmt) -> str:
    if any(v is None for v in values):
        return "n/a"
    if any(not np.isfinite(v) for v in values):
        return "not reached" if all(not np.isfinite(v) for v in values) else f"{sum(np.isfinite(values))}/{len(values)} reached"
    if len(values) == 1:
        return format(values[0], fmt)
    standard_error = float(np.std(values, ddof=1) / np.sqrt(len(values)))
    return f"{format(float(np.mean(values)), fmt)} ± {format(standard_error, fmt)}"


def summary_table(runs: dict[str, list[RunResult]], title: str) -> str:
    lines = [title, "", "| arm | " + " | ".join(t for _, t, _ in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for arm, rows in seed_rows(runs).items():
        lines.append(f"| {arm} | " + " | ".join(_cell([r[k] for r in rows], fmt) for k, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def write_csv(runs: dict[str, list[RunResult]], seeds: list[int], path) -> None:
    rows = seed_rows(runs)
    keys = ["allocator", *sorted({k for arm_rows in rows.values() for r in arm_rows for k in r} - {"allocator"})]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["arm", "seed", *keys[1:]])
        writer.writeheader()
        for arm, arm_rows in rows.items():
            for seed, row in zip(seeds, arm_rows):
                writer.writerow({"arm": arm, "seed": seed, **{k: row.get(k) for k in keys[1:]}})


def write_plot(runs: dict[str, list[RunResult]], path) -> None:
    """Four panels, each the mean over seeds: waste, objective vs uniform, Brier per step; mean p vs rollouts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = [(axes[0, 0], "wasted", "wasted rollouts / generated"), (axes[0, 1], "objective_vs_uniform",
              "variance objective vs uniform split"), (axes[1, 0], "brier", "Brier score of the plan's p")]
    for ax, key, title in panels:
        for arm, results in runs.items():
            curves = np.array([[np.nan if r[key] is None else (r[key] / r["generated"] if key == "wasted" else r[key])
                                for r in result.steps] for result in results], dtype=float)
            if np.isfinite(curves).any():
                ax.plot(np.arange(curves.shape[1]), np.nanmean(curves, axis=0), label=arm)
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
    ax = axes[1, 1]
    for arm, results in runs.items():
        rollouts = np.mean([np.cumsum([r["generated"] for r in result.steps]) for result in results], axis=0)
        mean_p = np.mean([[r["mean_p"] for r in result.steps] for result in results], axis=0)
        ax.plot(rollouts, mean_p, label=arm)
    ax.set(title="mean true p (accuracy) vs rollouts generated", xlabel="rollouts generated")
    ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Tables and plots for `vipfast simulate`: per allocator, mean (± std over seeds) of each metric."""

from __future__ import annotations

import numpy as np

from .simulator import RunResult, Scenario

# (summary key, column title, format); "wasted vs uniform" is derived per seed.
_COLUMNS = [
    ("wasted_fraction", "wasted rollouts", ".1%"),
    ("wasted_vs_uniform", "wasted vs uniform", ".2f"),
    ("objective_vs_uniform", "objective vs uniform split", ".3f"),
    ("brier", "Brier", ".4f"),
    ("beta_brier", "Beta(1,1) Brier", ".4f"),
    ("brier_vs_beta", "Brier vs Beta", ".2f"),
    ("ece", "ECE", ".3f"),
    ("final_mean_p", "final mean p", ".3f"),
    ("latency_ms", "latency/step (ms)", ".2f"),
]


def seed_summaries(runs: dict[str, list[RunResult]]) -> dict[str, list[dict]]:
    """Each run's summary plus its ratios against uniform's run on the same seed."""
    uniform = [r.summary() for r in runs["uniform"]] if "uniform" in runs else None
    table = {}
    for name, results in runs.items():
        rows = []
        for i, result in enumerate(results):
            row = result.summary()
            base = uniform[i]["wasted_fraction"] if uniform else None
            row["wasted_vs_uniform"] = row["wasted_fraction"] / base if base else None
            row["brier_vs_beta"] = row["brier"] / row["beta_brier"] if row["brier"] is not None else None
            rows.append(row)
        table[name] = rows
    return table


def _cell(values, fmt) -> str:
    if any(v is None for v in values):
        return "n/a"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(float(np.mean(values)), fmt)} ± {format(float(np.std(values, ddof=1)), fmt)}"


def summary_table(runs: dict[str, list[RunResult]], scenario: Scenario, seeds: list[int]) -> str:
    s = scenario
    lines = [
        f"{s.steps} steps, {s.batch_size} prompts/step from {s.num_prompts}, budget {s.budget_per_prompt}/prompt, "
        f"n in [{s.min_rollouts}, {s.max_rollouts}], seeds {seeds} (mean ± std over seeds)",
        "| allocator | " + " | ".join(title for _, title, _ in _COLUMNS) + " |",
        "|---|" + "---|" * len(_COLUMNS),
    ]
    for name, rows in seed_summaries(runs).items():
        cells = [_cell([row[key] for row in rows], fmt) for key, _, fmt in _COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_plot(runs: dict[str, list[RunResult]], path) -> None:
    """Four panels of per-step curves, each the mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("wasted", "wasted rollouts / rollouts"), ("mean_p", "mean true success p"),
              ("objective_vs_uniform", "variance objective vs uniform split"), ("brier", "Brier score")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (key, title) in zip(axes.flat, panels):
        for name, results in runs.items():
            curves = [[np.nan if r[key] is None else (r[key] / r["rollouts"] if key == "wasted" else r[key])
                       for r in result.steps] for result in results]
            ax.plot([r["step"] for r in results[0].steps], np.mean(curves, axis=0), label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

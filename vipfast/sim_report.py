"""Tables and plots for `vipfast simulate`."""

from __future__ import annotations

import numpy as np

from .sim import RunResult, Scenario


def _cell(value, fmt):
    return "n/a" if value is None else format(value, fmt)


def summary_table(results: list[RunResult], scenario: Scenario) -> str:
    summaries = [r.summary() for r in results]
    uniform = next((s for s in summaries if s["allocator"] == "uniform"), None)
    lines = [
        f"{scenario.steps} steps, {scenario.batch_size} prompts/step from {scenario.num_prompts}, budget "
        f"{scenario.budget_per_prompt}/prompt, n in [{scenario.min_rollouts}, {scenario.max_rollouts}], seed {scenario.seed}",
        "| allocator | wasted rollouts | wasted vs uniform | objective vs uniform split | Brier | Beta(1,1) Brier | "
        "global-mean Brier | ECE | final mean p | latency/step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        ratio = s["wasted_fraction"] / uniform["wasted_fraction"] if uniform and uniform["wasted_fraction"] else None
        lines.append(
            f"| {s['allocator']} | {s['wasted_fraction']:.1%} | {_cell(ratio, '.2f')} | {s['objective_vs_uniform']:.3f} | "
            f"{_cell(s['brier'], '.4f')} | {_cell(s['beta_brier'], '.4f')} | {_cell(s['global_brier'], '.4f')} | "
            f"{_cell(s['ece'], '.3f')} | {s['final_mean_p']:.3f} | {s['latency_ms']:.2f} ms |"
        )
    return "\n".join(lines)


def write_plot(results: list[RunResult], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("wasted", "wasted rollouts / rollouts"), ("mean_p", "mean true success p"),
              ("objective_vs_uniform", "variance objective vs uniform split"), ("brier", "Brier score")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (key, title) in zip(axes.flat, panels):
        for result in results:
            steps = [r["step"] for r in result.steps]
            values = [np.nan if r[key] is None else (r[key] / r["rollouts"] if key == "wasted" else r[key])
                      for r in result.steps]
            ax.plot(steps, values, label=result.allocator)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""`vipfast plot RUN_DIR`: PNG curves from a run's metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from .config import read_yaml_mapping
from .rundir import CONFIG, read_metrics

TIMED_PHASES = ("generate", "update", "sync", "allocate", "reward")


def accuracy_label(eval_samples: int, temperature: float) -> str:
    """What the held-out accuracy of a run with these settings measures."""
    if eval_samples == 0:
        return "held-out accuracy (greedy)"
    return f"held-out accuracy ({eval_samples} samples/prompt, T={temperature:g})"


def _run_accuracy_label(run_dir) -> str:
    path = Path(run_dir) / CONFIG
    saved = read_yaml_mapping(path, "the run's config") if path.is_file() else {}
    try:
        return accuracy_label(saved["eval_samples"], saved["generation"]["temperature"])
    except (KeyError, TypeError, ValueError):
        return "held-out accuracy"


def plot_run(run_dir, output=None) -> Path:
    """One PNG: held-out accuracy and training reward vs rollouts, wasted rollouts per step, and where each
    step's time went; for a task with families also held-out accuracy by family and where the rollouts went."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    steps = [r for r in rows if "reward_mean" in r]
    evals = [r for r in rows if r.get("held_out_accuracy") is not None]
    families = any("held_out_by_family" in r for r in evals)
    figure, axes = plt.subplots(2, 3 if families else 2, figsize=(16 if families else 11, 7), squeeze=False)
    ax = axes[0, 0]
    ax.plot([r["rollouts"] for r in evals], [r["held_out_accuracy"] for r in evals], marker="o")
    ax.set(xlabel="rollouts consumed", ylabel=_run_accuracy_label(run_dir), title="held-out accuracy")
    ax = axes[0, 1]
    ax.plot([r["rollouts"] for r in steps], [r["reward_mean"] for r in steps], label="reward (mean)")
    ax.plot([r["rollouts"] for r in steps], [r["solve_rate"] for r in steps], label="solve rate (≥1 correct)")
    ax.set(xlabel="rollouts consumed", title="training batch")
    ax.legend()
    ax = axes[1, 0]
    ax.plot([r["step"] for r in steps], [r["wasted_fraction"] for r in steps])
    ax.set(xlabel="step", ylabel="fraction", title="wasted rollouts (groups with all-equal rewards)")
    ax = axes[1, 1]
    bottom = [0.0] * len(steps)
    for phase in TIMED_PHASES:
        seconds = [r["time_s"][phase] for r in steps]
        ax.bar([r["step"] for r in steps], seconds, bottom=bottom, label=phase, width=1.0)
        bottom = [b + s for b, s in zip(bottom, seconds)]
    ax.set(xlabel="step", ylabel="seconds", title="time per step")
    ax.legend()
    if families:
        _plot_families(axes[0, 2], axes[1, 2], evals, steps, _run_accuracy_label(run_dir))
    figure.suptitle(str(run_dir))
    figure.tight_layout()
    output = Path(output) if output else Path(run_dir) / "curves.png"
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


def _plot_families(accuracy_ax, share_ax, evals: list[dict], steps: list[dict], label: str) -> None:
    names = list(dict.fromkeys(f for r in evals for f in r.get("held_out_by_family", {})))
    for name in names:
        points = [(r["rollouts"], r["held_out_by_family"][name]) for r in evals if name in r.get("held_out_by_family", {})]
        accuracy_ax.plot(*zip(*points), marker="o", markersize=2, label=name)
    accuracy_ax.set(xlabel="rollouts generated", ylabel=label, title="held-out accuracy by family", ylim=(0, 1))
    accuracy_ax.legend(fontsize=7)
    totals = {name: sum(r.get("rollouts_by_family", {}).get(name, 0) for r in steps) for name in names}
    everything = sum(totals.values()) or 1
    share_ax.bar(range(len(names)), [totals[n] / everything for n in names])
    share_ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    share_ax.set(ylabel="share of rollouts generated", title="where the rollouts went")


def time_summary(rows: list[dict]) -> dict:
    """Median seconds per phase, and the allocator's share of the run's total step time.

    The share is a ratio of totals, not a median of per-step shares: a median would hide the
    steps where the GP rebuilds or still runs on a growing store."""
    import statistics

    steps = [r for r in rows if "time_s" in r]
    if not steps:
        return {}
    summary = {phase: statistics.median(r["time_s"][phase] for r in steps) for phase in TIMED_PHASES}
    total = sum(sum(r["time_s"].values()) for r in steps)
    summary["allocator_overhead"] = sum(r["time_s"]["allocate"] for r in steps) / total if total > 0 else 0.0
    return summary

"""`vipfast compare`: allocators x seeds on one config at equal total rollouts.

Every arm runs the same config (same warm-started policy, prompts per step, rollout budget per
step, steps) and differs only in `allocator.name` and `seed`, so the rollouts consumed after step t
are the same for all arms and held-out accuracy can be compared point by point. Arms are ordinary
runs in OUT/<allocator>-seed<k>; an interrupted comparison resumes them, and finished arms are not
run again. Every arm is checked (`prepare_run`) before the first one starts.

Writes OUT/summary.md (table + the command), OUT/summary.json and OUT/accuracy.png.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from .._files import atomic_write
from .config import load_config, validate
from .plot import accuracy_label, read_metrics, time_summary


def arm_configs(config_path, overrides, allocators, seeds, out_dir) -> dict:
    """{(allocator, seed): config}, every one validated before any run starts."""
    if len(seeds) < 1 or len(allocators) < 1:
        raise ValueError("compare needs at least one allocator and one seed")
    base = load_config(config_path, overrides)
    arms = {}
    for name in allocators:
        for seed in seeds:
            config = replace(base, seed=seed, run_dir=str(Path(out_dir) / f"{name}-seed{seed}"),
                             allocator=replace(base.allocator, name=name))
            validate(config)
            arms[name, seed] = config
    return arms


def prepare_arms(config_path, overrides, *, allocators, seeds, out_dir) -> dict:
    """{(allocator, seed): PreparedRun}: every arm's config, installation, checkpoint and data checked."""
    from .trainer import prepare_run

    return {arm: prepare_run(config) for arm, config in arm_configs(config_path, overrides, allocators, seeds,
                                                                    out_dir).items()}


def run_comparison(config_path, overrides, *, allocators, seeds, out_dir) -> dict:
    arms = prepare_arms(config_path, overrides, allocators=allocators, seeds=seeds, out_dir=out_dir)
    return run_prepared_arms(arms, allocators=allocators, out_dir=out_dir)


def run_prepared_arms(arms: dict, *, allocators, out_dir) -> dict:
    from .trainer import Trainer

    for index, ((name, seed), prepared) in enumerate(arms.items(), 1):
        status = "finished" if prepared.finished else "running"
        print(f"[{index}/{len(arms)}] {name} seed {seed}: {status}", file=sys.stderr)
        if not prepared.finished:
            Trainer(prepared.config, prepared=prepared).run()
    summary = summarise({arm: read_metrics(prepared.config.run_dir) for arm, prepared in arms.items()}, allocators)
    first = next(iter(arms.values())).config
    summary["accuracy_label"] = accuracy_label(first.eval_samples, first.generation.temperature)
    summary["command"] = "vipfast " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "vipfast compare"
    out = Path(out_dir)
    for name, text in (("summary.json", json.dumps(summary, indent=1)), ("summary.md", summary_markdown(summary))):
        atomic_write(out / name, lambda handle, text=text: handle.write(text.encode()))
    plot_comparison(summary, out / "accuracy.png")
    print(summary_markdown(summary))
    print(f"plot: {out / 'accuracy.png'}")
    return summary


def summarise(metrics: dict, allocators) -> dict:
    """Mean ± std (over seeds) of held-out accuracy at each evaluation point, per allocator, and
    the rollouts each allocator's mean curve needs to reach uniform's final mean accuracy."""
    curves = {}
    for name in allocators:
        runs = [rows for (arm, _), rows in metrics.items() if arm == name]
        points = [[(r["rollouts"], r["held_out_accuracy"]) for r in rows if r.get("held_out_accuracy") is not None]
                  for rows in runs]
        length = min(map(len, points))
        rollouts = [p[0] for p in points[0][:length]]
        accuracy = np.array([[acc for _, acc in p[:length]] for p in points])  # [seeds, points]
        steps = [r for rows in runs for r in rows if "time_s" in r]
        times = time_summary(steps)
        curves[name] = dict(rollouts=rollouts, mean=accuracy.mean(0).tolist(), per_seed=accuracy.tolist(),
                            std=(accuracy.std(0, ddof=1) if len(runs) > 1 else np.zeros(length)).tolist(),
                            final=accuracy[:, -1].tolist(), seeds=len(runs),
                            gain=(accuracy[:, -1] - accuracy[:, 0]).tolist(),  # final - start, per seed
                            wasted_fraction=float(np.mean([r["wasted_fraction"] for r in steps])),
                            step_seconds=float(sum(v for k, v in times.items() if k != "allocator_overhead")),
                            allocator_overhead=times.get("allocator_overhead"))
    reference = "uniform" if "uniform" in curves else allocators[0]
    target = curves[reference]["mean"][-1]
    total = curves[reference]["rollouts"][-1]
    improved = target > curves[reference]["mean"][0]
    for curve in curves.values():
        # Reaching a final accuracy no better than the start would measure nothing.
        reached = rollouts_to_reach(curve["rollouts"], curve["mean"], target) if improved else None
        curve["rollouts_to_reference_final"] = reached
        # The same per seed: its spread says how far the mean-curve number can be trusted.
        curve["rollouts_to_reference_final_per_seed"] = [
            rollouts_to_reach(curve["rollouts"], seed_curve, target) if improved else None
            for seed_curve in curve["per_seed"]]
        curve["fraction_of_reference_rollouts"] = None if reached is None else reached / total
        curve["paired_difference"] = paired_difference(curve, curves[reference])
    return dict(reference=reference, reference_final_mean=target, reference_rollouts=total,
                reference_improved=bool(improved), curves=curves,
                saving_shift=shift_for_saving(curves[reference], SAVING_FRACTION))


# The goal: the reference's final accuracy with this fraction of its rollouts.
SAVING_FRACTION = 0.8


def paired_difference(curve: dict, reference: dict) -> list[float]:
    """Per seed: this curve minus the reference's of the same seed, averaged over the evaluations
    after the start. Seeds are paired because they share prompts, samples and evaluation draws, so
    the difference cancels most of what makes single curves noisy."""
    length = min(len(curve["rollouts"]), len(reference["rollouts"]))
    mine, theirs = np.array(curve["per_seed"])[:, 1:length], np.array(reference["per_seed"])[:, 1:length]
    if mine.shape != theirs.shape or mine.shape[1] == 0:
        return []
    return (mine - theirs).mean(1).tolist()


def shift_for_saving(reference: dict, fraction: float) -> float | None:
    """The paired difference an allocator would show if it reached every accuracy of the reference's
    mean curve with `fraction` of the rollouts: that curve stretched by 1/fraction, held flat past
    its end (so the shift is, if anything, understated), minus the curve, over the same evaluations."""
    rollouts, mean = np.array(reference["rollouts"], dtype=float), np.array(reference["mean"])
    if len(rollouts) < 2:
        return None
    faster = np.interp(rollouts / fraction, rollouts, mean)
    return float((faster - mean)[1:].mean())


def rollouts_to_reach(rollouts, accuracy, target) -> float | None:
    """First rollout count at which the curve reaches `target`, linear between evaluation points."""
    for i, value in enumerate(accuracy):
        if value >= target:
            if i == 0:
                return float(rollouts[0])
            x0, x1, y0 = rollouts[i - 1], rollouts[i], accuracy[i - 1]
            return float(x0 + (x1 - x0) * (target - y0) / (value - y0))
    return None


def summary_markdown(summary: dict) -> str:
    reference = summary["reference"]
    lines = [f"Held-out accuracy after {summary['reference_rollouts']} rollouts, mean ± std over seeds; "
             f"'to reach' = rollouts the mean curve needs to reach {reference}'s final mean accuracy "
             f"({summary['reference_final_mean']:.3f}).", ""]
    if not summary["reference_improved"]:
        lines += [f"{reference} did not improve on its starting accuracy, so 'to reach' is not measured.", ""]
    lines += ["| allocator | seeds | start | final accuracy | gain (final − start) | to reach (mean curve) | fraction of rollouts "
              f"| to reach, per seed | Δ vs {reference}, paired (± s.e.) | wasted rollouts | step time | allocator share |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in summary["curves"].items():
        reached = "—" if c["rollouts_to_reference_final"] is None else f"{c['rollouts_to_reference_final']:.0f}"
        fraction = "—" if c["fraction_of_reference_rollouts"] is None else f"{100 * c['fraction_of_reference_rollouts']:.0f}%"
        per_seed = ", ".join("never" if r is None else f"{r:.0f}" for r in c.get("rollouts_to_reference_final_per_seed", []))
        overhead = "—" if c["allocator_overhead"] is None else f"{100 * c['allocator_overhead']:.2f}%"
        gain = np.array(c.get("gain", [c["mean"][-1] - c["mean"][0]]))
        gain_text = f"{gain.mean():+.3f} ± {gain.std(ddof=1) if len(gain) > 1 else 0:.3f}"
        lines.append(f"| {name} | {c['seeds']} | {c['mean'][0]:.3f} | {c['mean'][-1]:.3f} ± {c['std'][-1]:.3f} | {gain_text} | "
                     f"{reached} | {fraction} | {per_seed or '—'} | {paired_text(c.get('paired_difference', []))} | "
                     f"{100 * c['wasted_fraction']:.0f}% | {c['step_seconds']:.2f} s | {overhead} |")
    if summary.get("saving_shift") is not None:
        lines += ["", f"'Δ, paired' = per seed, mean over the evaluations after the start of (allocator − {reference}); "
                  f"mean ± standard error over seeds. Reaching every accuracy of {reference}'s mean curve with "
                  f"{100 * SAVING_FRACTION:.0f}% of its rollouts would show as Δ ≈ {summary['saving_shift']:+.4f}. "
                  "Allocator share = total allocate time ÷ total step time."]
    lines += ["", f"Command: `{summary['command']}`" if "command" in summary else ""]
    return "\n".join(lines) + "\n"


def paired_text(differences: list[float]) -> str:
    if len(differences) < 2:
        return "—"
    d = np.array(differences)
    return f"{d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f}"


def plot_comparison(summary: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 4.5))
    for name, c in summary["curves"].items():
        x, mean, std = np.array(c["rollouts"]), np.array(c["mean"]), np.array(c["std"])
        ax.plot(x, mean, marker="o", markersize=3, label=f"{name} ({c['seeds']} seeds)")
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.axhline(summary["reference_final_mean"], color="grey", linestyle=":", linewidth=1,
               label=f"{summary['reference']} final")
    ax.set(xlabel="rollouts consumed", ylabel=summary.get("accuracy_label", "held-out accuracy"),
           title="VIP vs uniform at equal rollouts (mean ± std over seeds)")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

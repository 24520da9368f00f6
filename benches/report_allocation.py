"""Turn a pytest-benchmark JSON of bench_allocation.py into a markdown table and a PNG plot."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASELINE = "numpy_bisection"


def load(path: Path):
    data = json.loads(path.read_text())
    medians = defaultdict(dict)
    for bench in data["benchmarks"]:
        method = bench["name"].split("[")[0].removeprefix("test_")
        medians[bench["extra_info"]["prompts"]][method] = (bench["stats"]["median"], bench["stats"]["iqr"],
                                                          bench["extra_info"]["objective_vs_exact"])
    return data, medians


def table(data, medians) -> str:
    methods = ["vipfast_exact", "numpy_bisection", "python_heap_greedy", "scipy_slsqp"]
    lines = [
        f"Machine: {data['machine_info']['cpu']['brand_raw']}, {data['machine_info']['cpu']['count']} cores; "
        f"commit {data.get('commit_info', {}).get('id', '?')[:10]}",
        "",
        "| Q | " + " | ".join(f"{m} median (IQR)" for m in methods) + f" | {BASELINE} / vipfast |",
        "|---|" + "---|" * (len(methods) + 1),
    ]
    for q in sorted(medians):
        row = medians[q]
        cells = [f"{row[m][0] * 1e6:,.1f} µs ({row[m][1] * 1e6:,.1f})" if m in row else "not run" for m in methods]
        ratio = f"{row[BASELINE][0] / row['vipfast_exact'][0]:.1f}×" if BASELINE in row and "vipfast_exact" in row else "–"
        lines.append(f"| {q} | " + " | ".join(cells) + f" | {ratio} |")
    lines.append("")
    lines.append("Objective relative to the exact optimum: " + ", ".join(
        f"{m} at Q={q}: {row[m][2]:.9f}" for q, row in sorted(medians.items()) for m in row if m != "vipfast_exact"))
    return "\n".join(lines)


def plot(medians, out: Path):
    fig, ax = plt.subplots(figsize=(6, 4))
    methods = sorted({m for row in medians.values() for m in row})
    for method in methods:
        qs = [q for q in sorted(medians) if method in medians[q]]
        ax.loglog(qs, [medians[q][method][0] for q in qs], marker="o", label=method)
    ax.set_xlabel("prompts per batch Q (budget 16·Q, n in [4, 64])")
    ax.set_ylabel("median latency [s]")
    ax.set_title("Rollout allocation latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    source = Path(sys.argv[1])
    data, medians = load(source)
    print(table(data, medians))
    plot(medians, source.with_suffix(".png"))

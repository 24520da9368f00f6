"""Turn a pytest-benchmark JSON of bench_allocation.py into markdown tables and a PNG plot.

    python benches/report_allocation.py benches/results/allocation.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PEERS = ["numpy_bisection", "heap_greedy", "knapsack_dp", "scipy_slsqp"]
LABELS = {"vipfast": "vipfast", "numpy_bisection": "numpy bisection", "heap_greedy": "heap greedy (CoBA-RL)",
          "knapsack_dp": "DP (Knapsack-RL)", "scipy_slsqp": "SLSQP", "table_read": "table.sum()"}


def load(path: Path):
    data = json.loads(path.read_text())
    runs = defaultdict(dict)  # (form, Q, budget tag) -> method -> (median, iqr, gap)
    for bench in data["benchmarks"]:
        name = bench["name"].split("[")[0].removeprefix("test_")
        info = bench["extra_info"]
        method = "vipfast" if name.startswith("vipfast") else name
        tag = "1e15" if name == "vipfast_budget_1e15" else ""
        runs[(info["form"], info["prompts"], tag)][method] = (
            bench["stats"]["median"], bench["stats"]["iqr"], info.get("objective_gap"))
    return data, runs


def microseconds(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 1e-2 else f"{seconds * 1e3:,.1f} ms"


def form_table(form: str, runs) -> list[str]:
    sizes = sorted(q for (f, q, tag) in runs if f == form and not tag)
    methods = ["vipfast"] + [m for m in PEERS if any(m in runs[(form, q, "")] for q in sizes)]
    if form == "table":
        methods.append("table_read")
    lines = [f"**{form}**", "",
             "| Q | " + " | ".join(f"{LABELS[m]} median (IQR)" for m in methods) + " | fastest peer / vipfast |",
             "|---|" + "---|" * (len(methods) + 1)]
    for q in sizes:
        row = runs[(form, q, "")]
        cells = [f"{microseconds(row[m][0])} ({microseconds(row[m][1])})" if m in row else "not run" for m in methods]
        peers = [row[m][0] for m in PEERS if m in row]
        ratio = f"{min(peers) / row['vipfast'][0]:,.1f}×" if peers and "vipfast" in row else "–"
        lines.append(f"| {q} | " + " | ".join(cells) + f" | {ratio} |")
    gaps = [(m, q, runs[(form, q, "")][m][2]) for q in sizes for m in PEERS if m in runs[(form, q, "")]]
    worst = {m: max(g for mm, _, g in gaps if mm == m) for m in {m for m, _, _ in gaps}}
    lines += ["", "Largest objective gap to vipfast's optimum, (peer − vipfast) / |vipfast|: " + ", ".join(
        f"{LABELS[m]} {g:.2e}" for m, g in sorted(worst.items())), ""]
    return lines


def report(data, runs) -> str:
    machine = data["machine_info"]
    lines = [f"Machine: {machine['cpu'].get('brand_raw', '?')}, {machine['cpu'].get('count', '?')} cores, "
             f"Python {machine.get('python_version', '?')}; commit {data.get('commit_info', {}).get('id', '?')[:10]}", ""]
    for form in sorted({f for (f, _, tag) in runs if not tag}, key=["rloo", "drgrpo", "grpo", "curve", "table"].index):
        lines += form_table(form, runs)
    huge = sorted((f, row["vipfast"][0]) for (f, _, tag), row in runs.items() if tag)
    if huge:
        lines.append("Budget 10^15 (Q = 4096, no upper bound): " + ", ".join(f"{f} {microseconds(t)}" for f, t in huge))
    return "\n".join(lines)


def plot(runs, out: Path):
    forms = sorted({f for (f, _, tag) in runs if not tag})
    fig, axes = plt.subplots(1, len(forms), figsize=(4 * len(forms), 3.6), sharey=True)
    for ax, form in zip(axes, forms):
        sizes = sorted(q for (f, q, tag) in runs if f == form and not tag)
        for method in ["vipfast", *PEERS, "table_read"]:
            qs = [q for q in sizes if method in runs[(form, q, "")]]
            if qs:
                ax.loglog(qs, [runs[(form, q, "")][method][0] for q in qs], marker="o", label=LABELS[method])
        ax.set_title(form)
        ax.set_xlabel("prompts Q (budget 16·Q)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("median latency [s]")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    source = Path(sys.argv[1])
    data, runs = load(source)
    print(report(data, runs))
    plot(runs, source.with_suffix(".png"))

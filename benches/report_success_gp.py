"""Markdown for BENCHMARKS.md from bench_success_gp.py's pytest-benchmark JSON and gp_memory.py's JSON.

    python benches/report_success_gp.py benches/results/success_gp.json benches/results/success_gp_memory.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["vipfast_fast", "vipfast_exact", "numpy_refit", "sklearn_gpr"]
LABEL = {
    "vipfast_fast": "vipfast `fast` (FITC, M = 384)",
    "vipfast_exact": "vipfast `exact` (float64, N = 4096)",
    "numpy_refit": "numpy/scipy exact GP, refit per step",
    "sklearn_gpr": "scikit-learn GaussianProcessRegressor",
}


def report(bench_path: Path, memory_path: Path | None) -> str:
    data = json.loads(bench_path.read_text())
    rows = {b["extra_info"]["method"]: b for b in data["benchmarks"]}
    cpu = data["machine_info"]["cpu"]
    fast = rows["vipfast_fast"]["stats"]["median"]
    lines = [
        f"Machine: {cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} cores; Python {data['machine_info']['python_version']}; "
        f"commit {data.get('commit_info', {}).get('id', '?')[:10]}{' (dirty)' if data.get('commit_info', {}).get('dirty') else ''}",
        "",
        "| method | median step | IQR | rounds | median / vipfast fast |",
        "|---|---|---|---|---|",
    ]
    for method in ORDER:
        if method not in rows:
            continue
        stats = rows[method]["stats"]
        lines.append(f"| {LABEL[method]} | {stats['median'] * 1e3:,.1f} ms | {stats['iqr'] * 1e3:,.1f} ms | "
                     f"{stats['rounds']} | {stats['median'] / fast:,.1f}× |")
    info = rows["vipfast_fast"]["extra_info"]
    lines += [
        "",
        f"Accuracy of `fast` against `exact` on the same history (step {info['steps_run']}, the next 512 prompts): "
        f"mean |Δp| = {info['mean_abs_dp_vs_exact']:.4f} (max {info['max_abs_dp_vs_exact']:.4f}), "
        f"mean |Δw| = {info['mean_abs_dw_vs_exact']:.4f}, mean |Δμ| = {info['mean_abs_dmean_vs_exact']:.4f}, "
        f"mean var ratio fast/exact = {info['var_ratio_vs_exact']:.2f}.",
    ]
    if "numpy_refit" in rows:
        lines.append(f"numpy refit against vipfast `exact`: max relative |Δμ| = "
                     f"{rows['numpy_refit']['extra_info']['max_rel_dmean_vs_vipfast_exact']:.1e}.")
    if memory_path is not None:
        memory = json.loads(memory_path.read_text())
        samples = memory["samples"]
        first, last = samples[0], samples[-1]
        lines += [
            "",
            f"Memory of `{memory['mode']}` over {last['step']} steps (benches/gp_memory.py): RSS "
            f"{first['rss_bytes'] / 2**20:.1f} MiB at step {first['step']} → {last['rss_bytes'] / 2**20:.1f} MiB at step "
            f"{last['step']} (range {memory['rss_range_bytes'] / 2**20:.2f} MiB); vipfast's Python objects "
            f"{first['python_bytes'] / 2**20:.2f} → {last['python_bytes'] / 2**20:.2f} MiB; median step per 100-step block "
            f"{min(s['median_step_ms'] for s in samples):.1f}–{max(s['median_step_ms'] for s in samples):.1f} ms.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None))

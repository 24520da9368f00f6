"""Turn a pytest-benchmark JSON of bench_advantages.py into the markdown tables of BENCHMARKS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def milliseconds(stats: dict) -> str:
    return f"{stats['median'] * 1e3:,.3f} ms"


def report(path: Path) -> str:
    data = json.loads(path.read_text())
    by_group: dict[str, dict[str, dict]] = {}
    memory = []
    for bench in data["benchmarks"]:
        if bench["name"].startswith("test_cpu_memory"):
            memory.append(bench)
        elif (bench["group"] or "").startswith("cpu "):
            by_group.setdefault(bench["group"], {})[bench["extra_info"]["impl"]] = bench
    machine = data["machine_info"]
    torch_version = next(iter(next(iter(by_group.values())).values()))["extra_info"]["torch"] if by_group else "?"
    lines = [f"Machine: {machine['cpu']['brand_raw']}, {machine['cpu']['count']} cores, torch {torch_version}, "
             f"one torch thread; commit {data.get('commit_info', {}).get('id', '?')[:10]}", "",
             "| case | rollouts | vipfast median | verl vectorised median | verl / vipfast |", "|---|---|---|---|---|"]
    for group, impls in by_group.items():
        ours, theirs = impls.get("vipfast"), impls.get("verl")
        if ours is None:
            continue
        ratio = f"**{theirs['stats']['median'] / ours['stats']['median']:.1f}×**" if theirs else "verl not run"
        lines.append(f"| {group.removeprefix('cpu ')} | {ours['extra_info']['rollouts']:,} | "
                     f"{milliseconds(ours['stats'])} | {milliseconds(theirs['stats']) if theirs else '–'} | {ratio} |")
    if memory:
        lines += ["", "| memory, grpo, N = 10^8 | peak RSS growth | bytes per rollout |", "|---|---|---|"]
        for bench in memory:
            info = bench["extra_info"]
            given = "sizes" if "sizes" in bench["name"] else "int index"
            lines.append(f"| {given} | {info['growth_bytes'] / 2**20:,.0f} MiB | {info['bytes_per_rollout']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1] if len(sys.argv) > 1 else "benches/results/advantages.json")))

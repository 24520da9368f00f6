"""Memory and step time of SuccessGP(mode="fast") over a long run: flat from step 100 to 1000.

    python benches/gp_memory.py benches/results/success_gp_memory.json [--steps 1000]

Same workload as bench_success_gp.py (d = 384, Q = 512, 8192 keys, capacity 4096; the generator keeps
no history). Records the process RSS (native allocations included), tracemalloc's total of what
vipfast's Python code holds every 100 steps, and the median step time (observe + advance + predict)
of each 100-step block. Each observe takes back the prediction of its rows (the previous step's).
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

import vipfast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gp_reference import Workload  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--mode", default="fast")
    args = parser.parse_args()

    workload = Workload(keep_history=False)
    gp = vipfast.SuccessGP(workload.dim, mode=args.mode, capacity=4096)
    takes_prediction = "prediction" in inspect.signature(gp.observe).parameters
    tracemalloc.start()
    samples, block = [], []
    batch, plan = workload.batch(0), None
    for t in range(args.steps + 1):
        keys, x, _, trials, successes = batch
        batch = workload.batch(t + 1)  # generated outside the timed region
        start = time.perf_counter()
        gp.observe(keys, x, successes, trials, **({"prediction": plan} if takes_prediction else {}))
        gp.advance()
        plan = gp.predict(*batch[:2])
        block.append(time.perf_counter() - start)
        if t % 100 == 0 and t > 0:
            snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*vipfast*")])
            python_bytes = sum(stat.size for stat in snapshot.statistics("filename"))
            samples.append(dict(step=t, rss_bytes=rss_bytes(), python_bytes=python_bytes,
                                median_step_ms=float(np.median(block) * 1e3), max_step_ms=float(np.max(block) * 1e3),
                                stored=gp.num_stored, inducing=gp.num_inducing_used))
            block = []
            print(json.dumps(samples[-1]), flush=True)
    rss = [s["rss_bytes"] for s in samples]
    python = [s["python_bytes"] for s in samples]
    result = dict(mode=args.mode, machine=platform.processor() or platform.machine(), samples=samples,
                  rss_growth_bytes_100_to_end=rss[-1] - rss[0], rss_range_bytes=max(rss) - min(rss),
                  python_range_bytes=max(python) - min(python))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"RSS {rss[0] / 2**20:.1f} MiB at step 100 -> {rss[-1] / 2**20:.1f} MiB at step {samples[-1]['step']} "
          f"(range {result['rss_range_bytes'] / 2**20:.2f} MiB); vipfast Python objects {python[0]} -> {python[-1]} bytes")


if __name__ == "__main__":
    main()

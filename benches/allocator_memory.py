"""Memory of the "vipfast" allocator over 10 epochs of a 65,536-prompt pool (1,024 prompts per step, d = 384).

    python benches/allocator_memory.py [--epochs 10] [--name vipfast]

Prints the process's resident memory (RSS, from /proc/self/statm) and the allocator's own table bytes at
the end of each epoch: after the first epoch every prompt is held, so both must stay flat.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

import vipfast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_allocator import BOUNDS, DATASET_Q, DIM, POOL, DatasetPool, allocator_step  # noqa: E402


def resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--name", default="vipfast")
    args = parser.parse_args()
    allocator = vipfast.make_allocator(args.name, embedding_dim=DIM, **BOUNDS)
    pool = DatasetPool()
    steps = POOL // DATASET_Q
    print(f"{args.name}: {POOL} prompts, {DATASET_Q} per step, d = {DIM}")
    print("epoch | RSS (MB) | prompts held | table bytes")
    for epoch in tqdm(range(args.epochs), desc="epochs", file=sys.stderr):
        for step in range(steps):
            allocator_step(allocator, pool.batch, epoch * steps + step)
        stats = allocator.stats()
        print(f"{epoch + 1:5d} | {resident_mb():8.1f} | {stats.get('prompts_held', 0):12d} | "
              f"{stats.get('memory_bytes', 0):11d}")


if __name__ == "__main__":
    main()

"""Records what two builds of vipfast.SuccessGP predict on the same plan -> observe -> advance runs,
and compares the recordings bit for bit.

    PYTHONPATH=<build A> python tests/fuzz/compare_success_gp_builds.py record a.npz --steps 300
    PYTHONPATH=<build B> python tests/fuzz/compare_success_gp_builds.py record b.npz --steps 300
    python tests/fuzz/compare_success_gp_builds.py compare a.npz b.npz

Each run draws its configuration (engine, noise model, lengthscale, forgetting, capacity small
enough to evict, recalibration) and its batches (repeated keys, duplicates within a batch,
changed embeddings, zero-trial rows, batches large enough to split across threads) from a seeded
generator; the last runs are steady (no evictions, no zero-trial rows). Every step predicts the batch, observes it (passing the prediction back where the
build's observe takes one) and advances; every prediction's mean, var, proba and weight are kept.
"""

from __future__ import annotations

import argparse
import inspect
import sys

import numpy as np

import vipfast

CONFIGS = [
    dict(mode="exact", noise="binomial"),
    dict(mode="exact", noise="laplace", calibration_window=3),
    dict(mode="exact", noise="fixed", jitter=1e-3, lengthscale=0.7, prior_mean=-1.0, proba="plugin"),
    dict(mode="fast", noise="binomial", num_inducing=24),
    dict(mode="fast", noise="laplace", num_inducing=32, calibration_window=4, signal_var=16.0, forgetting=0.99),
    dict(mode="fast", noise="fixed", jitter=1e-4, lengthscale=0.4, num_inducing=16, proba="plugin"),
    dict(mode="fast", noise="binomial", num_inducing=48, calibration_window=2, forgetting=1.0),
    dict(mode="auto", noise="laplace", auto_exact_max=150, num_inducing=32, calibration_window=5),
    dict(mode="auto", noise="binomial", auto_exact_max=90, num_inducing=20, lengthscale=0.9),
    dict(mode="fast", noise="laplace", num_inducing=64, calibration_window=10, signal_var=64.0, forgetting=0.99),
    # Steady runs: no evictions and no zero-trial rows, so every key a prediction did not know is
    # stored by the observe that follows it.
    dict(mode="fast", noise="laplace", num_inducing=40, calibration_window=10, signal_var=64.0, _steady=True),
    dict(mode="fast", noise="binomial", num_inducing=40, _steady=True),
]


def run(config: dict, steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    config = dict(config)
    steady = config.pop("_steady", False)
    dim = int(rng.integers(6, 20))
    capacity = int(rng.integers(120, 400))
    pool = int(capacity * (rng.uniform(0.5, 1.0) if steady else rng.uniform(1.2, 2.5)))
    keys = rng.permutation(np.iinfo(np.uint64).max - np.arange(pool, dtype=np.uint64))
    centres = rng.normal(size=(8, dim))
    embeddings = centres[rng.integers(8, size=pool)] + 0.6 * rng.normal(size=(pool, dim))
    rates = rng.uniform(0.02, 0.98, size=pool)
    gp = vipfast.SuccessGP(dim, capacity=capacity, **config)
    takes_prediction = "prediction" in inspect.signature(gp.observe).parameters
    out = []
    for _ in range(steps):
        q = int(rng.choice([int(rng.integers(1, 40)), int(rng.integers(130, 260))]))
        index = rng.integers(pool, size=q)  # repeats within a batch are duplicates to merge
        if rng.random() < 0.1:  # some prompts' embeddings change
            moved = rng.integers(pool, size=5)
            embeddings[moved] += 0.3 * rng.normal(size=(5, dim))
        x = embeddings[index].astype(np.float32)
        trials = rng.integers(1 if steady else 0, 9, size=q)
        if not steady:
            trials[rng.random(q) < 0.05] = 0
        successes = rng.binomial(trials, rates[index])
        prediction = gp.predict(keys[index], x)
        out.append(np.stack(prediction[:4]))
        if takes_prediction:
            gp.observe(keys[index], x, successes, trials, prediction=prediction)
        else:
            gp.observe(keys[index], x, successes, trials)
        gp.advance(int(rng.choice([1, 1, 1, 0, 2])))
    return np.concatenate(out, axis=1)


def record(path: str, steps: int) -> None:
    arrays = {f"run{i}": run(config, steps, seed=1000 + i) for i, config in enumerate(CONFIGS)}
    np.savez(path, **arrays)
    print(f"recorded {len(arrays)} runs of {steps} steps ({sum(a.shape[1] for a in arrays.values())} predictions) to {path}")


def compare(a_path: str, b_path: str) -> int:
    a, b = np.load(a_path), np.load(b_path)
    failures = 0
    for name in a.files:
        same = a[name].shape == b[name].shape and np.array_equal(a[name].view(np.uint64), b[name].view(np.uint64))
        detail = "" if same else f" (max |difference| {np.nanmax(np.abs(a[name] - b[name])):.3g})"
        print(f"{name} {CONFIGS[int(name[3:])]}: {a[name].shape[1]} predictions, {'bitwise identical' if same else 'DIFFERENT'}{detail}")
        failures += not same
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    recorder = commands.add_parser("record")
    recorder.add_argument("path")
    recorder.add_argument("--steps", type=int, default=300)
    comparer = commands.add_parser("compare")
    comparer.add_argument("a")
    comparer.add_argument("b")
    args = parser.parse_args()
    if args.command == "record":
        record(args.path, args.steps)
        return 0
    return 1 if compare(args.a, args.b) else 0


if __name__ == "__main__":
    sys.exit(main())

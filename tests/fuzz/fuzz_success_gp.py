"""Fuzzes vipfast.SuccessGP's entry points with valid and invalid input; for CI under ASan/UBSan.

    python tests/fuzz/fuzz_success_gp.py --calls 10000 --seed 0

Entry points: the constructor (random configurations, some invalid), observe (NaN/inf, zero rows,
wrong shapes and dtypes, uint64 extremes, huge or negative counts, empty batches, duplicate keys,
predictions of other rows), predict, advance, and the state round trip (state_dict, then
from_state_dict of it, of its numpy-scalar form or of a corrupted copy). A call is valid when it
returns, invalid when it raises ValueError or TypeError naming the problem; anything else is a
crash: another exception, a broken output invariant (finite mean, var >= 0, p in [0, 1], weight in
[0, 1/4]), or a loaded state that does not predict the same bits. Stores stay small so that each
call is cheap. Exits 1 if any call crashed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter

import numpy as np

import vipfast

UINT64_EXTREMES = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1], dtype=np.uint64)
BAD_REALS = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, 0.0]


def check(prediction):
    mean, var, proba, weight = prediction
    ok = (np.all(np.isfinite(mean)) and np.all(var >= 0) and np.all((proba >= 0) & (proba <= 1))
          and np.all((weight >= 0) & (weight <= 0.25)))
    if not ok:
        raise AssertionError(f"invalid prediction: {mean}, {var}, {proba}, {weight}")


def accepted(valid: bool, fn, *args, **kwargs):
    """fn(...) where `valid` says whether it must accept the input; an invalid one may be accepted
    (a corrupted state can still be a consistent one) but then has to work."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as error:
        if valid:
            raise AssertionError(f"valid input refused: {error}") from None
        raise


class Fuzzer:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.counts: Counter = Counter()
        self.crashes: list[str] = []
        self.gp = None
        self.new_model()

    # -- drawing -----------------------------------------------------------------------------
    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def config(self) -> tuple[dict, bool]:
        """Options for the constructor; the flag says whether they were drawn valid."""
        noise = self.pick(["binomial", "fixed", "laplace"])
        options = dict(
            dim=int(self.rng.integers(1, 7)), mode=self.pick(["exact", "fast", "auto"]), noise=noise,
            lengthscale=self.pick([None, None, 0.05, 0.3, 1.0]), signal_var=self.pick([1.0, 16.0, 1e-3, 1e300]),
            prior_mean=self.pick([None, -3.0, 2.0]), forgetting=self.pick([1.0, 0.9, 0.5, 1e-300]),
            capacity=int(self.rng.integers(1, 13)), num_inducing=int(self.rng.integers(1, 7)),
            auto_exact_max=int(self.rng.integers(0, 6)), calibration_window=int(self.rng.integers(0, 4)),
            jitter=self.pick([1e-4, 1e-2]) if noise == "fixed" else self.pick([0.0, 0.1]),
            proba=self.pick(["moderated", "plugin"]),
        )
        if not self.chance(0.2):
            return options, True  # valid: must be accepted
        name, value = self.pick([
            ("dim", 0), ("dim", 2.5), ("dim", True), ("lengthscale", -1.0), ("lengthscale", np.nan),
            ("lengthscale", 1e-200), ("signal_var", 0.0), ("signal_var", np.inf), ("forgetting", 0.0),
            ("forgetting", 1.5), ("capacity", 0), ("capacity", 2**62), ("mode", "dense"), ("mode", 3),
            ("noise", None), ("jitter", -1.0), ("clip", 0.5), ("num_inducing", 0), ("num_inducing", 10**6),
            ("auto_exact_max", -1), ("calibration_window", 1001), ("calibration_window", -1),
            ("prior_mean", np.inf), ("proba", "median"), ("dim", 2**70),
        ])
        options[name] = value
        return options, False

    def keys(self, q: int):
        kind = self.rng.integers(8)
        if kind == 0:
            return UINT64_EXTREMES[self.rng.integers(len(UINT64_EXTREMES), size=q)]
        if kind == 1:
            return [int(k) for k in self.rng.integers(-3, 3, size=q)] if q else []  # maybe negative
        if kind == 2:
            return self.rng.integers(0, 4, size=q).astype(self.pick([np.float64, np.int8, np.bool_, np.uint32]))
        if kind == 3:
            return [2**64 + int(k) for k in self.rng.integers(0, 3, size=q)]  # too large
        return self.rng.integers(0, 3 * max(1, self.gp_capacity), size=q).astype(np.uint64)  # with duplicates

    def embeddings(self, q: int, dim: int):
        x = self.rng.normal(size=(q, dim))
        kind = self.rng.integers(12)
        if kind == 0 and q:
            x[self.rng.integers(q), self.rng.integers(dim)] = self.pick(BAD_REALS)
        elif kind == 1 and q:
            x[self.rng.integers(q)] = 0.0
        elif kind == 2:
            x = self.rng.normal(size=self.pick([(q, dim + 1), (q,), (q, dim, 1), (q + 1, dim)]))
        elif kind == 3:
            x = x.astype(self.pick([np.float32, np.int64, np.float16, np.complex128, np.bool_, object]))
        elif kind == 4:
            x = x * self.pick([1e300, 1e-300, 1e-320])
        elif kind == 5:
            x = x.tolist()
        return x

    def outcomes(self, q: int):
        trials = self.rng.integers(0, 9, size=q)
        successes = self.rng.binomial(trials, 0.4).astype(np.float64)
        kind = self.rng.integers(12)
        if kind == 0 and q:
            trials[self.rng.integers(q)] = self.pick([2**62, 2**63 - 1, -1])
        elif kind == 1 and q:
            successes[self.rng.integers(q)] = self.pick(BAD_REALS + [-1.0, 1e9])
        elif kind == 2:
            trials = trials.astype(self.pick([np.float64, np.uint64, np.int8])) + self.pick([0, 0.5])
        elif kind == 3:
            successes = successes[: max(0, q - 1)]
        elif kind == 4 and q:
            successes = self.rng.uniform(0, 1, size=q) * trials  # fractional rewards summed
        return successes, trials

    # -- entry points ------------------------------------------------------------------------
    @property
    def gp_capacity(self) -> int:
        return self.gp.config["capacity"] if self.gp is not None else 8

    def new_model(self):
        options, _ = self.config()
        try:
            self.gp = vipfast.SuccessGP(**options)
        except (ValueError, TypeError):
            self.gp = vipfast.SuccessGP(3, capacity=6, num_inducing=3, mode="fast")

    def call(self, entry: str, fn):
        try:
            fn()
        except (ValueError, TypeError):
            self.counts[entry, "invalid"] += 1
        except Exception:  # noqa: BLE001 - every other failure is the finding
            self.crashes.append(f"SuccessGP.{entry}: {traceback.format_exc()}")
        else:
            self.counts[entry, "valid"] += 1

    def constructor(self):
        options, valid = self.config()
        model = accepted(valid, vipfast.SuccessGP, **options)
        if self.chance(0.25):  # the others keep their model long enough to fill and evict
            self.gp = model

    def observe(self):
        dim, q = self.gp.dim, int(self.rng.integers(0, 9))
        keys, x = self.keys(q), self.embeddings(q, dim)
        successes, trials = self.outcomes(q)
        prediction = None
        if self.chance(0.5):
            try:
                prediction = self.gp.predict(keys if self.chance(0.8) else self.keys(q), x)
            except (ValueError, TypeError):
                pass
            if self.chance(0.1):
                self.gp.advance(1)  # a prediction of an older model
        self.gp.observe(keys, x, successes, trials, prediction=prediction)

    def predict(self):
        dim, q = self.gp.dim, int(self.rng.integers(0, 9))
        check(self.gp.predict(self.keys(q), self.embeddings(q, dim)))

    def advance(self):
        self.gp.advance(self.pick([0, 1, 1, 1, 3, -1, 2**62, 2**63 - 1, 2.5, True, "1"]))

    def state_round_trip(self):
        state = self.gp.state_dict()
        if self.chance(0.3):
            state = {k: np.asarray(v) for k, v in state.items()}  # as an .npz stores it
            state = {k: v.item() if v.ndim == 0 else v for k, v in state.items()}
        corrupt = self.chance(0.3)
        if corrupt:
            name = self.pick(sorted(state))
            state[name] = self.pick([None, -1, 2**63 - 1, np.nan, "x", np.zeros((2, 2)), np.zeros(3, np.uint64),
                                     -np.asarray(state[name]) if isinstance(state[name], np.ndarray)
                                     and state[name].dtype.kind == "f" else 1.5])
        clone = accepted(not corrupt, vipfast.SuccessGP.from_state_dict, state)
        keys = np.arange(4, dtype=np.uint64)
        x = self.rng.normal(size=(4, self.gp.dim))
        prediction = clone.predict(keys, x)
        check(prediction)  # a corrupted state that loads is a valid model: it has to keep working
        if not corrupt and not all(np.array_equal(a, b) for a, b in zip(self.gp.predict(keys, x), prediction)):
            raise AssertionError("a loaded state predicts other bits")
        self.gp = clone

    def run(self, calls: int) -> float:
        entries = {"__init__": self.constructor, "observe": self.observe, "predict": self.predict,
                   "advance": self.advance, "state_round_trip": self.state_round_trip}
        start = time.perf_counter()
        for _ in range(calls):
            for entry, fn in entries.items():
                self.call(entry, fn)
            if self.gp.step > 2**61:  # an advance with a huge step count: start over
                self.new_model()
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10000, help="calls per entry point")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fuzzer = Fuzzer(args.seed)
    elapsed = fuzzer.run(args.calls)
    for entry in ("__init__", "observe", "predict", "advance", "state_round_trip"):
        valid, invalid = fuzzer.counts[entry, "valid"], fuzzer.counts[entry, "invalid"]
        crashes = sum(text.startswith(f"SuccessGP.{entry}:") for text in fuzzer.crashes)
        print(f"fuzz SuccessGP.{entry}: {valid + invalid + crashes} calls ({valid} valid, {invalid} invalid), "
              f"{crashes} crashes")
    print(f"{elapsed:.1f} s for {args.calls} calls per entry point (seed {args.seed})")
    for text in fuzzer.crashes[:5]:
        print(text, file=sys.stderr)
    # An entry point that never accepted or never refused a call was not fuzzed (a bug in this script).
    idle = [entry for entry in ("__init__", "observe", "predict", "advance", "state_round_trip")
            if not (fuzzer.counts[entry, "valid"] and fuzzer.counts[entry, "invalid"])]
    if idle:
        print(f"not exercised both ways: {idle}", file=sys.stderr)
    return 1 if fuzzer.crashes or idle else 0


if __name__ == "__main__":
    sys.exit(main())

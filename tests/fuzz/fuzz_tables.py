"""Fuzzes the native helpers of the per-prompt rules and the dataset-scale predictor; for CI under ASan/UBSan.

    python tests/fuzz/fuzz_tables.py --calls 10000 --seed 0

Entry points: KeyIndex (construction from keys, find, insert, against a dict), LogitCalibration
(record, apply, restore, with NaN/inf, huge and negative values, mismatched lengths),
expected_bernoulli_variance (any real inputs), laplace_posterior (any real inputs, counts up to 7e10)
and SuccessGP.stored_sites (keys held or not). A call is valid when it returns a result that matches the
reference, invalid when it raises ValueError or TypeError; anything else (another exception, a wrong
result) is a crash. Exits 1 if any call crashed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter

import numpy as np

from vipfast import SuccessGP, _core

UINT64_EXTREMES = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1], dtype=np.uint64)
ODD_REALS = np.array([np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, -0.0, 0.0, 5e-324])


class Fuzzer:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.crashes: list[str] = []
        self.index, self.reference = _core.KeyIndex(), {}
        self.gp = SuccessGP(3, mode="exact", capacity=16)

    def keys(self, size):
        keys = self.rng.integers(0, 2**64 - 1, size=size, dtype=np.uint64, endpoint=True)
        if size and self.rng.random() < 0.5:
            keys[self.rng.integers(size)] = self.rng.choice(UINT64_EXTREMES)
        if size and self.reference and self.rng.random() < 0.5:
            keys[: size // 2] = self.rng.choice(np.array(list(self.reference), dtype=np.uint64), size // 2)
        return keys

    def reals(self, size, odd):
        values = self.rng.normal(0, 10, size)
        if odd and size:
            values[self.rng.integers(size)] = self.rng.choice(ODD_REALS)
        return values

    # -- entry points ---------------------------------------------------------------------------
    def key_index(self):
        size = int(self.rng.integers(0, 40))
        if self.rng.random() < 0.1:
            bad = [np.zeros((2, 2), np.uint64), np.array(["a", "b"])][int(self.rng.integers(2))]
            self.expect_refusal(lambda: self.index.find(bad))
            return
        keys = self.keys(size)
        if self.rng.random() < 0.5:
            found = self.index.find(keys)
            expected = [self.reference.get(int(k), -1) for k in keys.tolist()]
            assert found.tolist() == expected, "KeyIndex.find differs from the dict"
        else:
            rows = self.index.insert(keys)
            for k in keys.tolist():
                self.reference.setdefault(k, len(self.reference))
            assert rows.tolist() == [self.reference[k] for k in keys.tolist()], "KeyIndex.insert differs"
        if len(self.reference) > 5000:
            self.index, self.reference = _core.KeyIndex(), {}
        if self.rng.random() < 0.05:
            distinct = np.array(list(self.reference), dtype=np.uint64)
            rebuilt = _core.KeyIndex(distinct)
            assert rebuilt.find(distinct).tolist() == list(range(len(distinct))), "KeyIndex from keys"
            if len(distinct) > 1:
                self.expect_refusal(lambda: _core.KeyIndex(np.r_[distinct, distinct[:1]]))

    def calibration(self):
        window = int(self.rng.integers(-2, 6))
        if window < 0:
            self.expect_refusal(lambda: _core.LogitCalibration(window))
            return
        calibration = _core.LogitCalibration(window)
        for step in range(int(self.rng.integers(1, 5))):
            size = int(self.rng.integers(0, 20))
            odd = self.rng.random() < 0.3
            mean, var = self.reals(size, odd), np.abs(self.reals(size, odd))
            trials = self.rng.integers(0, 9, size)
            successes = self.rng.uniform(0, 1, size) * trials
            if self.rng.random() < 0.1:
                self.expect_refusal(lambda: calibration.record(step, mean, np.ones(size + 1), successes, trials))
            calibration.record(step, mean, var, successes, trials)
            mapped_mean, mapped_var = calibration.apply(mean, var)
            scale = np.exp(calibration.log_scale)
            assert np.isfinite(calibration.offset) and np.isfinite(scale) and scale > 0, "map not finite"
            finite = np.isfinite(mean) & np.isfinite(var)
            assert np.allclose(mapped_mean[finite], calibration.offset + scale * mean[finite], rtol=1e-12), "apply"
        restored = _core.LogitCalibration(window)
        restored.restore(calibration.offset, calibration.log_scale, calibration.records())
        assert restored.offset == calibration.offset and restored.log_scale == calibration.log_scale, "restore"

    def quadrature(self):
        size = int(self.rng.integers(0, 30))
        mean = self.reals(size, self.rng.random() < 0.3)
        var = np.abs(self.reals(size, self.rng.random() < 0.3))
        weight = _core.expected_bernoulli_variance(mean, var)
        sane = np.isfinite(mean) & np.isfinite(var)
        assert np.all((weight[sane] >= 0) & (weight[sane] <= 0.25)), "E[p(1-p)] outside [0, 1/4]"
        if self.rng.random() < 0.1:
            self.expect_refusal(lambda: _core.expected_bernoulli_variance(mean, np.ones(size + 1)))

    def laplace(self):
        size = int(self.rng.integers(0, 30))
        mean = self.reals(size, self.rng.random() < 0.2)
        var = np.exp(self.rng.uniform(-30, 30, size))
        trials = np.floor(np.exp(self.rng.uniform(0, 25, size))) * (self.rng.random(size) < 0.9)
        successes = np.floor(self.rng.random(size) * (trials + 1))
        odd = self.rng.random() < 0.3
        if odd and size:
            target = [var, trials, successes][int(self.rng.integers(3))]
            target[self.rng.integers(size)] = self.rng.choice(np.r_[ODD_REALS, -1.0])
        valid = (np.isfinite(mean) & np.isfinite(var) & (var > 0) & np.isfinite(trials) & (trials >= 0)
                 & np.isfinite(successes) & (successes >= 0) & (successes <= trials)).all()
        if not valid:
            self.expect_refusal(lambda: _core.laplace_posterior(mean, var, successes, trials))
        posterior_mean, posterior_var = _core.laplace_posterior(mean, var, successes, trials)
        assert np.all(np.isfinite(posterior_mean)) and np.all(posterior_var > 0), "posterior not finite"
        assert np.all(posterior_var <= var * (1 + 1e-12)), "posterior wider than the prior"
        with np.errstate(over="ignore"):  # exp(1e300) is inf: σ(mean) is then 0, as it should be
            far = mean + var * (successes - trials / (1 + np.exp(-mean)))  # the mode lies between mean and far
        slack = 1e-6 * (1 + np.abs(far))
        assert np.all((posterior_mean >= np.minimum(mean, far) - slack) & (posterior_mean <= np.maximum(mean, far) + slack)), \
            "mode outside its bracket"
        if self.rng.random() < 0.1:
            self.expect_refusal(lambda: _core.laplace_posterior(mean, var, successes, np.ones(size + 1)))

    def stored_sites(self):
        keys = self.keys(int(self.rng.integers(0, 12)))
        if self.rng.random() < 0.5 and len(keys):
            self.gp.observe(keys, self.rng.normal(size=(len(keys), 3)), np.zeros(len(keys)), np.ones(len(keys), int))
        precision, target = self.gp.stored_sites(keys)
        held = set(self.gp.pseudo_observations()["keys"].tolist())
        assert all((p > 0) == (k in held) for p, k in zip(precision, keys.tolist())), "stored_sites vs store"
        assert np.all(np.isfinite(target)), "site target not finite"

    def expect_refusal(self, call):
        try:
            call()
        except (ValueError, TypeError):
            raise _Refused from None
        raise AssertionError("a bad input was accepted")

    def run(self, entry: str, calls: int) -> Counter:
        counts = Counter()
        method = getattr(self, entry)
        for i in range(calls):
            try:
                method()
                counts["valid"] += 1
            except _Refused:
                counts["invalid"] += 1
            except Exception:  # noqa: BLE001  (anything else is a crash to report)
                self.crashes.append(f"{entry} call {i}: {traceback.format_exc(limit=3)}")
        return counts


class _Refused(Exception):
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fuzzer = Fuzzer(args.seed)
    for entry in ("key_index", "calibration", "quadrature", "laplace", "stored_sites"):
        started = time.perf_counter()
        before = len(fuzzer.crashes)
        counts = fuzzer.run(entry, args.calls)
        crashes = len(fuzzer.crashes) - before
        print(f"fuzz {entry}: {args.calls} calls ({counts['valid']} valid, {counts['invalid']} invalid), "
              f"{crashes} crashes, {time.perf_counter() - started:.1f} s", flush=True)
    for crash in fuzzer.crashes[:5]:
        print(crash, file=sys.stderr)
    return 1 if fuzzer.crashes else 0


if __name__ == "__main__":
    sys.exit(main())

"""Fuzz the group-advantage entry points with valid and invalid inputs; a crash ends the run.

    python tests/fuzz/fuzz_advantages.py --calls 2000 --seed 0
    python tests/fuzz/fuzz_advantages.py --calls 2000 --seed 0 --native-only   # numpy only, no torch

Valid inputs must give the independent float64 reference's numbers (tests/advantages_reference.py);
invalid ones must raise ValueError or TypeError. Prints, per entry point,
`fuzz <entry>: N calls (V valid, I invalid), 0 crashes`. --native-only calls only the entry
points of vipfast._core, through numpy arrays, for a sanitizer build whose preload cannot
import torch. Exits non-zero on the first wrong answer or unexpected exception.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for advantages_reference
from advantages_reference import (  # noqa: E402
    assert_advantages,
    group_positions,
    reference_groups_of,
    reference_tokens,
    seen_by_vipfast,
)

from vipfast import _core  # noqa: E402
from vipfast.allocation import ESTIMATORS  # noqa: E402

INT64_EDGES = [-(2**63), -(2**62), -2, -1, 0, 1, 2**31, 2**62, 2**63 - 1]
REWARD_DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint64, np.float16, np.float32, np.float64]
ROUNDOFF = 2.0**-52  # the native core and the torch path sum in float64


class Invalid(Exception):
    """The case is one the entry point must refuse with ValueError or TypeError."""


def rewards(rng, n: int) -> np.ndarray:
    dtype = np.dtype(REWARD_DTYPES[rng.integers(len(REWARD_DTYPES))])
    if dtype.kind != "f":
        info = np.iinfo(dtype) if dtype.kind in "iu" else None
        if info is None:
            return rng.random(n) < 0.5
        return rng.integers(max(info.min, -(2**62)), min(info.max, 2**62), size=n, endpoint=True).astype(dtype)
    scale = {2: [1.0, 1e4], 4: [1.0, 1e-30, 1e30], 8: [1.0, 1e-300, 1e30, 1e300]}[dtype.itemsize]
    values = (rng.normal(size=n) * scale[rng.integers(len(scale))]).astype(dtype)
    if n and rng.random() < 0.3:
        values[rng.integers(n)] = [np.nan, np.inf, -np.inf][rng.integers(3)]
    if n > 1 and rng.random() < 0.2:
        values[: n // 2] = values[0]  # all-equal stretches
    return values


def strided(rng, values: np.ndarray) -> np.ndarray:
    return np.repeat(values, 2)[::2] if rng.random() < 0.3 else values




def integer_array(rng, values: list[int]) -> np.ndarray:
    """values (all within int64) in an integer dtype that holds them."""
    kind = ["int64", "int32", "int8", "uint64"][rng.integers(4)]
    limits = {"int32": (-(2**31), 2**31 - 1), "int8": (-128, 127), "uint64": (0, 2**64 - 1)}
    low, high = limits.get(kind, (-(2**63), 2**63 - 1))
    return np.array(values, dtype=kind if all(low <= v <= high for v in values) else np.int64)


def spoil(rng, values: list[int], n: int) -> list[int]:
    """One entry replaced by an extreme (a quarter of the time), or dropped / added."""
    choice = rng.integers(8)
    if choice == 0:
        at = int(rng.integers(len(values) + 1))
        return values[:at] + [[*INT64_EDGES, n + 1, -n - 1][rng.integers(len(INT64_EDGES) + 2)]] + values[at + 1:]
    if choice == 1 and values:
        return values[:-1]
    return values


def grouping(rng, allow_index=True):
    """(form, argument, N): a grouping of N rollouts, spoiled one time in four."""
    sizes = rng.integers(0 if rng.random() < 0.3 else 1, 7, size=int(rng.integers(0, 9))).tolist()
    n = sum(sizes)
    form = ["sizes", "offsets", "index"][rng.integers(3 if allow_index else 2)]
    if form == "index":
        return form, ids(rng, n), n
    values = sizes if form == "sizes" else [0, *np.cumsum(sizes, dtype=np.int64).tolist()]
    return form, integer_array(rng, spoil(rng, values, n)), n


def ids(rng, n: int):
    kind = ["int", "edges", "str", "float", "mixed"][rng.integers(5)]
    pool = {"int": list(range(-3, 4)), "edges": INT64_EDGES, "str": ["a", "b", "", "uid-1", "1"],
            "float": [0.0, -0.0, 1.5, np.inf, 2.0], "mixed": [1, "1", 1.0, True, (1,), None, "a"]}[kind]
    values = [pool[i] for i in rng.integers(len(pool), size=n)]
    if kind in ("int", "edges") and rng.random() < 0.5:
        return np.array(values, dtype=np.int64)
    if n and rng.random() < 0.1:
        values[rng.integers(n)] = float("nan")
    if kind == "float" and rng.random() < 0.5:
        return np.array(values, dtype=np.float64 if rng.random() < 0.5 else np.float32)
    return np.array(values + [None], dtype=object)[:-1] if rng.random() < 0.5 else values


# ----------------------------------------------------------------------------------------------
# the public functions (torch)


def public_cases(torch, vipfast):
    from vipfast.advantages import LAYOUTS

    def as_input(rng, values: np.ndarray):
        """A list, a (strided) torch tensor or a (strided) numpy array of the values."""
        kind = rng.integers(4)
        if kind == 0:
            return values.tolist()
        if kind == 1 and values.dtype != np.uint64:  # torch has few uint64 ops
            return torch.from_numpy(np.repeat(values, 2))[::2]
        return strided(rng, values)

    def group_advantages(rng):
        form, argument, n = grouping(rng)
        values, check = rewards(rng, n), bool(rng.random() < 0.5)
        estimator, eps = ESTIMATORS[rng.integers(3)], [0.0, 1e-6, 1.0][rng.integers(3)]
        groups = group_positions(form, argument, n, check)
        given = as_input(rng, values)
        seen = seen_by_vipfast(given)
        keyword = {"sizes": "group_sizes", "offsets": "offsets", "index": "index"}[form]
        if form != "index" and rng.random() < 0.3:
            argument = argument.tolist() if rng.random() < 0.5 else torch.from_numpy(argument.astype(np.int64))
        call = lambda: vipfast.group_advantages(given, **{keyword: argument},  # noqa: E731
                                                estimator=estimator, eps=eps, check=check)
        if groups is None or (check and not np.isfinite(seen).all()):
            raise Invalid(call)
        assert_advantages(call().numpy(), seen, groups, estimator, eps, ROUNDOFF, check)

    def lengths_case(rng, n):
        lengths = rng.integers(0, 6, size=n).tolist()
        if n and rng.random() < 0.3:
            lengths[rng.integers(n)] = [-1, -(2**63), 2**63 - 1, 2**62][rng.integers(4)]
        return lengths, min(lengths, default=0) >= 0 and sum(lengths) < 2**61

    def token_advantages(rng):
        n = int(rng.integers(0, 12))
        values = rewards(rng, n)
        lengths, valid = lengths_case(rng, n)
        layout = LAYOUTS[rng.integers(2)]
        max_len = [None, -1, 0, 3, 7][rng.integers(5)] if layout == "padded" else None
        width = max(lengths, default=0) if max_len is None else max_len
        valid = valid and width >= max(lengths, default=0) and (layout == "packed" or n * width < 2**61)
        given = as_input(rng, values)
        call = lambda: vipfast.token_advantages(given, integer_array(rng, lengths),  # noqa: E731
                                                layout=layout, max_len=max_len, check=bool(rng.random() < 0.5))
        if not valid:
            raise Invalid(call)
        with np.errstate(over="ignore"):
            seen = seen_by_vipfast(given).astype(np.float32)
        expected = reference_tokens(seen, lengths, layout, max_len)
        out = call()
        if layout == "padded":
            (out, mask), (expected, expected_mask) = out, expected
            np.testing.assert_array_equal(mask.numpy(), expected_mask)
        np.testing.assert_array_equal(out.numpy(), expected)

    def fused_token_advantages(rng):
        form, argument, n = grouping(rng, allow_index=False)
        values, check = rewards(rng, n), bool(rng.random() < 0.5)
        lengths, lengths_valid = lengths_case(rng, n)
        estimator = ESTIMATORS[rng.integers(3)]
        groups = group_positions(form, argument, n, check)
        given = as_input(rng, values)
        seen = seen_by_vipfast(given)
        keyword = {"sizes": "group_sizes", "offsets": "offsets"}[form]
        call = lambda: vipfast.fused_token_advantages(given, response_lengths=lengths,  # noqa: E731
                                                      **{keyword: argument}, estimator=estimator, check=check)
        if groups is None or not lengths_valid or (check and not np.isfinite(seen).all()):
            raise Invalid(call)
        out = call().numpy()
        per_rollout = vipfast.group_advantages(given, **{keyword: argument}, estimator=estimator, check=check).numpy()
        assert_advantages(per_rollout, seen, groups, estimator, 1e-6, ROUNDOFF, check)
        np.testing.assert_array_equal(out, np.repeat(per_rollout, lengths))

    def group_ids_from_index(rng):
        index = ids(rng, int(rng.integers(0, 30)))
        if rng.random() < 0.2 and isinstance(index, np.ndarray) and index.dtype.kind in "if":
            index = torch.from_numpy(index)
        groups = group_positions("index", index.tolist() if hasattr(index, "tolist") else index, len(index), True)
        call = lambda: vipfast.group_ids_from_index(index)  # noqa: E731
        if groups is None:
            raise Invalid(call)
        order, sizes = call()
        assert order.tolist() == [int(i) for positions in groups for i in positions]
        assert sizes.tolist() == [len(positions) for positions in groups]

    return {"group_advantages": group_advantages, "token_advantages": token_advantages,
            "fused_token_advantages": fused_token_advantages, "group_ids_from_index": group_ids_from_index}


# ----------------------------------------------------------------------------------------------
# the native entry points (numpy only)


def output(rng, n: int):
    """A float32 [N] output, or (one time in ten) one the core must refuse."""
    kind = rng.integers(20)
    if kind == 0:
        return np.empty(n, dtype=np.float64), False
    if kind == 1:
        return np.empty(2 * n + 2, dtype=np.float32)[::2][:n] if n > 1 else np.empty(n + 1, np.float32), False
    if kind == 2:
        return np.empty(max(n - 1, 0) if n else 1, dtype=np.float32), False
    return np.empty(n, dtype=np.float32), True


def scoring(rng):
    estimator = ESTIMATORS[rng.integers(3)] if rng.random() < 0.95 else "ppo"
    eps = [0.0, 1e-6, 1.0, -1e-6, float("nan")][rng.integers(5) if rng.random() < 0.2 else rng.integers(3)]
    return estimator, eps, estimator in ESTIMATORS and np.isfinite(eps) and eps >= 0


def native_case(rng, n: int, grouping_ok: bool, groups, call) -> None:
    """Rewards, an output and options for one call of a native entry point, call(values, out,
    estimator, eps, require_finite): it must refuse what is invalid and match the reference,
    for the groups() the grouping names, otherwise."""
    values = strided(rng, rewards(rng, n))
    out, out_ok = output(rng, n)
    estimator, eps, options_ok = scoring(rng)
    require_finite = bool(rng.random() < 0.5)
    seen = values.astype(np.float64)  # the core reads float32 as it is and anything else as float64
    run = lambda: call(values, out, estimator, eps, require_finite)  # noqa: E731
    if not (grouping_ok and out_ok and options_ok) or (require_finite and not np.isfinite(seen).all()):
        raise Invalid(run)
    run()
    assert_advantages(out, seen, groups(), estimator, eps, ROUNDOFF, require_finite)


def native_cases():
    def segment_advantages(rng):
        form, argument, n = grouping(rng, allow_index=False)
        allow_empty = bool(rng.random() < 0.5)
        groups = group_positions(form, argument, n, not allow_empty)
        native_case(rng, n, groups is not None, lambda: groups,
                    lambda values, out, estimator, eps, require_finite: _core.segment_advantages(
                        values, argument, form == "offsets", out, estimator, eps, require_finite, allow_empty))

    def indexed_advantages(rng):
        n = int(rng.integers(0, 40))
        num_groups = int(rng.integers(0, 8))
        group_of = rng.integers(0, max(num_groups, 1), size=n)
        if n and rng.random() < 0.2:
            group_of[rng.integers(n)] = [-1, num_groups, 2**31 - 1, -(2**31)][rng.integers(4)]
        if rng.random() < 0.1:
            num_groups = -1
        group_of = group_of.astype(np.int32 if rng.random() < 0.5 else np.int64)
        if n and rng.random() < 0.1:
            group_of = group_of[:-1]
        ids_ok = group_of.size == n and num_groups >= 0 and ((group_of >= 0) & (group_of < num_groups)).all()
        native_case(rng, n, ids_ok, lambda: [np.flatnonzero(group_of == g) for g in range(num_groups)],
                    lambda values, out, estimator, eps, require_finite: _core.indexed_advantages(
                        values, group_of, num_groups, out, estimator, eps, require_finite))

    def keyed_advantages(rng):
        n = int(rng.integers(0, 40))
        pool = [rng.integers(-3, 4, size=6), np.array(INT64_EDGES)][rng.integers(2)]
        keys = pool[rng.integers(pool.size, size=n)].astype(np.int64)
        if n and rng.random() < 0.1:
            keys = keys[:-1]
        native_case(rng, n, keys.size == n, lambda: [np.asarray(p) for p in reference_groups_of(keys.tolist())],
                    lambda values, out, estimator, eps, require_finite: _core.keyed_advantages(
                        values, keys, out, estimator, eps, require_finite))

    def group_offsets(rng):
        form, argument, n = grouping(rng, allow_index=False)
        allow_empty = bool(rng.random() < 0.5)
        groups = group_positions(form, argument, n, not allow_empty)
        call = lambda: _core.group_offsets(argument, form == "offsets", n, allow_empty)  # noqa: E731
        if groups is None:
            raise Invalid(call)
        assert call().tolist() == [0, *np.cumsum([len(p) for p in groups], dtype=np.int64).tolist()]

    def dense_groups(rng):
        index = ids(rng, int(rng.integers(0, 30)))
        if isinstance(index, list):
            index = np.array(index + [None], dtype=object)[:-1]
        if index.dtype.kind == "f" or rng.random() < 0.05:
            call = lambda: _core.dense_groups(index if index.dtype.kind == "f" else index.reshape(-1, 1))  # noqa: E731
            raise Invalid(call)  # floats go through group_ids_from_index; 2-D is refused
        keys = index.tolist()
        call = lambda: _core.dense_groups(index)  # noqa: E731
        if any(key != key for key in keys):
            raise Invalid(call)
        group_of, num_groups = call()
        groups = reference_groups_of(keys)
        assert num_groups == len(groups)
        for g, positions in enumerate(groups):
            assert (group_of[positions] == g).all()

    def group_order(rng):
        n, num_groups = int(rng.integers(0, 40)), int(rng.integers(0, 8))
        group_of = rng.integers(0, max(num_groups, 1), size=n).astype(np.int32 if rng.random() < 0.5 else np.int64)
        if n and rng.random() < 0.2:
            group_of[rng.integers(n)] = [-1, num_groups, np.iinfo(group_of.dtype).max][rng.integers(3)]
        call = lambda: _core.group_order(group_of, num_groups)  # noqa: E731
        if not ((group_of >= 0) & (group_of < num_groups)).all():
            raise Invalid(call)
        order, sizes = call()
        assert order.tolist() == np.argsort(group_of, kind="stable").tolist()
        assert sizes.tolist() == np.bincount(group_of, minlength=num_groups).tolist()

    return {"_core.segment_advantages": segment_advantages, "_core.indexed_advantages": indexed_advantages,
            "_core.keyed_advantages": keyed_advantages, "_core.group_offsets": group_offsets, "_core.dense_groups": dense_groups,
            "_core.group_order": group_order}


def fuzz(name: str, case, calls: int, rng) -> None:
    valid = invalid = 0
    for _ in range(calls):
        try:
            case(rng)
            valid += 1
        except Invalid as refused:
            try:
                refused.args[0]()
            except (ValueError, TypeError):
                invalid += 1
            else:
                raise AssertionError(f"{name}: an invalid input was accepted") from None
    print(f"fuzz {name}: {calls} calls ({valid} valid, {invalid} invalid), 0 crashes", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per entry point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--native-only", action="store_true", help="only vipfast._core, through numpy (no torch)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    cases = native_cases()
    if not args.native_only:
        import torch

        import vipfast

        torch.set_num_threads(1)
        cases = {**public_cases(torch, vipfast), **cases}
    start = time.perf_counter()
    with np.errstate(all="ignore"):
        for name, case in cases.items():
            fuzz(name, case, args.calls, rng)
    print(f"fuzz: {len(cases)} entry points, {args.calls} calls each, seed {args.seed}, "
          f"{time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()

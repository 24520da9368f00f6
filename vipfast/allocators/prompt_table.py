"""Per-prompt state for a whole dataset: a native key index plus one numpy column per field.

About 25 bytes per prompt for the index and the recency stamp, plus the rule's columns; when more than
`capacity` prompts have been seen, the least recently touched eighth is dropped in one pass.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _core
from .._validation import _INT64_MAX, as_int64, as_uint64_keys

__all__ = ["PromptTable", "count_bounds", "merge_duplicate_keys", "saved_count"]


def count_bounds(step) -> dict:
    """PromptTable bounds of forgotten counts: 0 <= successes <= trials, 0 <= step <= the owner's `step()`."""
    return {"successes": (0.0, "trials"), "trials": (0.0, np.inf), "step": (0.0, step)}


class PromptTable:
    """Columns of per-prompt values keyed by uint64 prompt keys; absent prompts read as each column's default."""

    def __init__(self, columns: dict[str, float], capacity: int = 1 << 21, dtype=np.float64, optional=(),
                 bounds=None, whole=(), name: str = "table"):
        """optional: columns a saved state may lack (added after states were first saved); they load as
        their defaults. bounds: {column: (low, high)} a loaded state must respect, each a number, another
        column's name or a callable read at load (e.g. the owner's current step); whole: columns that hold
        whole numbers. Values are finite, or NaN in a column whose default is NaN. name: the state's
        entry prefix in error messages."""
        self.capacity = as_int64(capacity, "capacity")
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.defaults = dict(columns)
        self.optional = frozenset(optional)
        self.bounds = dict(bounds or {})
        self.whole = frozenset(whole)
        self.name = name
        self.dtype = np.dtype(dtype)
        self._index = _core.KeyIndex()
        self._columns = {name: np.empty(0, self.dtype) for name in columns}
        self._touched = np.empty(0, np.int64)
        self._clock = 0

    def __len__(self) -> int:
        return len(self._index)

    @property
    def memory_bytes(self) -> int:
        return self._index.memory_bytes + self._touched.nbytes + sum(c.nbytes for c in self._columns.values())

    def rows(self, keys) -> np.ndarray:
        """int64 [Q]: each key's row, -1 for prompts not held."""
        return self._index.find(as_uint64_keys(keys))

    def read(self, name: str, keys=None, rows=None) -> np.ndarray:
        """Column `name` for these keys (or rows), the column's default where a prompt is not held."""
        rows = self.rows(keys) if rows is None else rows
        column = self._columns[name]
        return np.where(rows >= 0, column[np.maximum(rows, 0)] if len(column) else self.defaults[name], self.defaults[name])

    def insert(self, keys) -> np.ndarray:
        """Rows of these keys, adding the absent ones (with default values); marks them as just touched."""
        keys = as_uint64_keys(keys)
        distinct = np.unique(keys)
        if len(distinct) > self.capacity:
            raise ValueError(f"a batch of {len(distinct)} distinct prompts does not fit a table of capacity {self.capacity}")
        absent = distinct[self._index.find(distinct) < 0]
        if len(self) + len(absent) > self.capacity:
            self._evict(keep=keys, room=len(absent))
        rows = self._index.insert(keys)
        grown = len(self._index)
        if grown > len(self._touched):
            self._grow(grown)
        self._clock += 1
        self._touched[rows] = self._clock
        return rows

    def write(self, name: str, rows: np.ndarray, values) -> None:
        self._columns[name][rows] = values

    def column(self, name: str) -> np.ndarray:
        """The column for every held prompt, by row (a view)."""
        return self._columns[name][: len(self)]

    def keys(self) -> np.ndarray:
        return self._index.keys()

    def _grow(self, size: int) -> None:
        new_size = max(size, 2 * len(self._touched), 64)
        for name, column in self._columns.items():
            grown = np.full(new_size, self.defaults[name], self.dtype)
            grown[: len(column)] = column
            self._columns[name] = grown
        touched = np.zeros(new_size, np.int64)
        touched[: len(self._touched)] = self._touched
        self._touched = touched

    def _evict(self, keep: np.ndarray, room: int) -> None:
        """Drop the least recently touched prompts (never those in `keep`) until `room` more fit, with slack."""
        size = len(self)
        stamps = self._touched[:size].copy()
        held = self._index.find(keep)
        held = np.unique(held[held >= 0])
        stamps[held] = np.iinfo(np.int64).max
        target = min(size, max(len(held), self.capacity - room - self.capacity // 8))
        survivors = np.sort(np.argpartition(-stamps, target - 1)[:target]) if target else np.zeros(0, np.int64)
        self._rebuild(survivors)

    def _rebuild(self, rows: np.ndarray) -> None:
        keys = self._index.keys()[rows]
        self._index = _core.KeyIndex(keys)
        for name in self._columns:
            self._columns[name] = self._columns[name][rows].copy()
        self._touched = self._touched[rows].copy()

    # -- checkpoints -----------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        size = len(self)
        arrays = {"keys": self._index.keys(), "touched": self._touched[:size].copy(), "clock": np.array(self._clock)}
        arrays.update({f"column/{name}": column[:size].copy() for name, column in self._columns.items()})
        return arrays

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore a state_arrays() snapshot; a ValueError names the first entry that is not one."""
        keys = as_uint64_keys(arrays["keys"])
        allowed = {"keys", "touched", "clock", *(f"column/{name}" for name in self._columns)}
        required = allowed - {f"column/{name}" for name in self.optional}
        if not required <= set(arrays) <= allowed:
            raise ValueError(f"prompt table entries {sorted(arrays)} must hold {sorted(required)} and may hold "
                             f"{sorted(allowed - required)}, nothing else")
        present = [name for name in arrays if name.startswith("column/")]
        for name in ("touched", *present):
            if arrays[name].shape != keys.shape:
                raise ValueError(f"prompt table entry {name!r} has shape {arrays[name].shape}, expected {keys.shape}")
        clock = saved_count(arrays["clock"], f"{self.name}/clock")
        touched = _saved_column(arrays["touched"], f"{self.name}/touched", ((None, 0.0), (None, float(clock))),
                                whole=True, nan=False, dtype=np.int64)
        columns = {name: arrays.get(f"column/{name}", np.full(len(keys), self.defaults[name], self.dtype))
                   for name in self._columns}
        # a column bounded by another one is checked after it, against its checked values
        for name in sorted(self._columns, key=lambda n: any(isinstance(b, str) for b in self.bounds.get(n, ()))):
            low, high = (self._bound(limit, columns) for limit in self.bounds.get(name, (-np.inf, np.inf)))
            columns[name] = _saved_column(columns[name], f"{self.name}/column/{name}", (low, high),
                                          whole=name in self.whole, nan=bool(np.isnan(self.defaults[name])),
                                          dtype=self.dtype)
        self._index = _core.KeyIndex(keys)
        self._touched = touched
        self._clock = clock
        self._columns = columns

    def _bound(self, limit, columns):
        """(label, limit): another column's entry name and values, or (None, a number or what a callable gives now)."""
        if isinstance(limit, str):
            return (f"{self.name}/column/{limit}", np.asarray(columns[limit], np.float64))
        return (None, float(limit() if callable(limit) else limit))


def saved_count(value, name: str) -> int:
    """A saved scalar that counts something (a step, a clock): a whole number >= 0, as a Python int."""
    array = np.asarray(value)
    if array.shape != () or array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a scalar count, got {array.dtype} array of shape {array.shape}")
    number = array.item()
    if not (math.isfinite(number) and number == int(number) and 0 <= number <= _INT64_MAX):
        raise ValueError(f"{name} must be a whole number >= 0, got {number!r}")
    return int(number)


def _saved_column(values, name: str, bounds, *, whole: bool, nan: bool, dtype=np.float64) -> np.ndarray:
    """`values` as `dtype` once they are real, finite (or NaN where `nan`) and representable there, whole where
    asked and within `bounds`: (low, high), each (None, a number) or (a column's entry name, its values);
    else a ValueError naming the entry."""
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    dtype = np.dtype(dtype)
    array = array.astype(np.float64)
    largest = float(np.finfo(dtype).max) if dtype.kind == "f" else float(np.iinfo(dtype).max) / 2
    finite = np.isfinite(array) & (np.abs(array) <= largest)
    bad = ~finite & ~np.isnan(array) if nan else ~finite
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}] = {array[i]} is not a finite {dtype} value")
    fractional = np.flatnonzero(finite & (array != np.round(array))) if whole else ()
    if len(fractional):
        i = int(fractional[0])
        raise ValueError(f"{name}[{i}] = {array[i]} is not a whole number")
    for (label, limit), word in zip(bounds, ("below", "above")):
        bad = array < limit if word == "below" else array > limit
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = f"{label}[{i}] = {float(limit[i])}" if label else f"{limit}"
            raise ValueError(f"{name}[{i}] = {array[i]} is {word} {what}")
    return array.astype(dtype)


def merge_duplicate_keys(keys: np.ndarray, successes: np.ndarray, trials: np.ndarray):
    """(distinct keys, summed successes, summed trials): a batch may hold a prompt twice."""
    unique, inverse = np.unique(keys, return_inverse=True)
    if len(unique) == len(keys):
        return keys, successes, trials
    return (unique, np.bincount(inverse, weights=successes, minlength=len(unique)),
            np.bincount(inverse, weights=trials, minlength=len(unique)))

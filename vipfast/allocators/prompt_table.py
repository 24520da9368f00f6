"""Per-prompt state for a whole dataset: a native key index plus one numpy column per field.

About 25 bytes per prompt for the index and the recency stamp, plus the rule's columns; when more than
`capacity` prompts have been seen, the least recently touched eighth is dropped in one pass.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from .._validation import as_int64, as_uint64_keys

__all__ = ["PromptTable", "merge_duplicate_keys"]


class PromptTable:
    """Columns of per-prompt values keyed by uint64 prompt keys; absent prompts read as each column's default."""

    def __init__(self, columns: dict[str, float], capacity: int = 1 << 21, dtype=np.float64, optional=()):
        """optional: columns a saved state may lack (added after states were first saved); they load as
        their defaults."""
        self.capacity = as_int64(capacity, "capacity")
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.defaults = dict(columns)
        self.optional = frozenset(optional)
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
        self._index = _core.KeyIndex(keys)
        self._touched = np.asarray(arrays["touched"], np.int64).copy()
        self._clock = int(arrays["clock"])
        self._columns = {name: np.asarray(arrays[f"column/{name}"], self.dtype).copy() if f"column/{name}" in arrays
                         else np.full(len(keys), self.defaults[name], self.dtype) for name in self._columns}


def merge_duplicate_keys(keys: np.ndarray, successes: np.ndarray, trials: np.ndarray):
    """(distinct keys, summed successes, summed trials): a batch may hold a prompt twice."""
    unique, inverse = np.unique(keys, return_inverse=True)
    if len(unique) == len(keys):
        return keys, successes, trials
    return (unique, np.bincount(inverse, weights=successes, minlength=len(unique)),
            np.bincount(inverse, weights=trials, minlength=len(unique)))

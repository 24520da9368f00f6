"""Input conversion shared by the public API: clear TypeErrors before anything native runs."""

from __future__ import annotations

import operator

import numpy as np

_INT64 = np.iinfo(np.int64)


def as_float64_array(value, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """C-contiguous float64 view of `value` (no copy when it already is one)."""
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged nested lists and the like
        raise TypeError(f"{name} must be an array of real numbers: {error}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in ndims:
        expected = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {expected}, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float64)


def as_int64_array(value, name: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind == "f" and array.size and not np.all(np.isfinite(array) & (array == np.round(array))):
        raise ValueError(f"{name} must hold whole numbers, got {array!r}")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.int64)


def as_int64(value, name: str) -> int:
    """A Python int in int64 range; floats such as 16.0 are refused rather than truncated."""
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if not _INT64.min <= number <= _INT64.max:
        raise ValueError(f"{name} = {number} does not fit in int64")
    return number

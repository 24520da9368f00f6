"""Input conversion shared by the public API: clear TypeErrors before anything native runs."""

from __future__ import annotations

import math
import operator

import numpy as np

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # plain ints: np.iinfo's properties build new objects per access
_UINT64_MAX = 2**64 - 1


def as_float64_array(value, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """C-contiguous, aligned float64 view of `value` (no copy when it already is one); a torch tensor is
    read detached and on the host, as the constant it is here."""
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        value = value.detach().cpu()
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
    return _aligned(np.ascontiguousarray(array, dtype=np.float64))


def _aligned(array: np.ndarray) -> np.ndarray:
    # ascontiguousarray keeps a misaligned buffer (e.g. a view at an odd byte offset) as it is.
    return array if array.flags.aligned else array.copy()


def as_int64_array(value, name: str) -> np.ndarray:
    """1-D C-contiguous, aligned int64 array; whole floats and unsigned values are converted only
    when they fit, and an error names the value as given rather than a wrapped one."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (array == np.round(array))
        if not np.all(whole):
            i = int(np.flatnonzero(~whole)[0])
            raise ValueError(f"{name} must hold whole numbers, got {name}[{i}] = {array[i]!r}")
        outside = (array < -(2.0**63)) | (array >= 2.0**63)
    else:
        outside = array > _INT64_MAX if array.dtype.kind == "u" else np.zeros(array.shape, dtype=bool)
    if np.any(outside):
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"{name}[{i}] = {array[i]} does not fit in int64")
    return _aligned(np.ascontiguousarray(array, dtype=np.int64))


def is_real_number(value) -> bool:
    """A Python or numpy int or float, not a bool (nor an array, a string or None)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def as_real(value, name: str, *, finite: bool = False) -> float:
    """A Python float from a Python or numpy int or float; strings, bools and arrays are refused."""
    if not is_real_number(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    if finite and not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}")
    return number


def as_int64(value, name: str) -> int:
    """A Python int in int64 range; floats such as 16.0 and bools are refused rather than converted."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise ValueError(f"{name} = {number} does not fit in int64")
    return number


def as_uint64_keys(keys) -> np.ndarray:
    """uint64 [Q] without loss: Python ints or integer arrays; negatives and > 2**64-1 are refused."""
    if isinstance(keys, np.ndarray):
        array = keys
    else:
        try:
            array = np.asarray(keys)
        except Exception as error:
            raise TypeError(f"keys must be a 1-D sequence of integers: {error}") from None
        if array.dtype.kind in "fO":  # Python ints past int64, or mixed signs numpy turned into floats
            array = np.asarray(keys, dtype=object)
    if array.ndim != 1:
        raise ValueError(f"keys must be 1-D, got shape {array.shape}")
    kind = array.dtype.kind
    if kind == "u":
        return np.ascontiguousarray(array, dtype=np.uint64)
    if kind == "i":
        negative = np.flatnonzero(array < 0)
        if negative.size:
            i = int(negative[0])
            raise ValueError(f"keys[{i}] = {array[i]} is negative; keys must fit in uint64 [0, 2**64 - 1]")
        return np.ascontiguousarray(array, dtype=np.uint64)
    if kind == "O":
        out = np.empty(len(array), dtype=np.uint64)
        for i, value in enumerate(array):
            if isinstance(value, (bool, np.bool_)):
                raise TypeError(f"keys[{i}] is a bool; keys must be integers")
            try:
                number = operator.index(value)
            except TypeError:
                raise TypeError(f"keys[{i}] = {value!r} is not an integer; keys must be uint64") from None
            if not 0 <= number <= _UINT64_MAX:
                raise ValueError(f"keys[{i}] = {number} does not fit in uint64 [0, 2**64 - 1]")
            out[i] = number
        return out
    raise TypeError(f"keys must be integers convertible to uint64 without loss, got dtype {array.dtype}")

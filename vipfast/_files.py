"""Crash-safe file writes shared by every checkpoint: a reader sees the old file or the new one, never half."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "remove_stale_temporaries"]

_TEMPORARY_SUFFIX = ".tmp"


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path) -> None:
    """Delete temporaries that a killed `atomic_write(path, ...)` left beside `path`."""
    path = Path(path)
    prefix = _temporary_prefix(path)
    if path.parent.is_dir():
        for leftover in path.parent.glob(f"{prefix}*{_TEMPORARY_SUFFIX}"):
            leftover.unlink(missing_ok=True)


def _mode_for(path: Path) -> int:
    """The existing file's mode, else what the umask gives a new file (mkstemp would give 0600)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(handle)` on a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    remove_stale_temporaries(path)
    mode = _mode_for(path)
    descriptor, temporary = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=_TEMPORARY_SUFFIX,
                                             dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

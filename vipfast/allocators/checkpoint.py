"""The allocator checkpoint file: one .npz with a JSON header and the rule's state arrays.

    header: {"format": "vipfast-allocator", "version": 2, "allocator": name, "config": {...}, "init": {...}}
    state/<name>    the rule's arrays (state_arrays())
    monitor/<name>  the prediction monitor's arrays

Every way a file can fail to be such a checkpoint (not a zip, truncated, damaged, a plain .npy, a header
that is not JSON or not an object, missing or mistyped entries) is a ValueError that names the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._files import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "Checkpoint", "read_checkpoint", "write_checkpoint"]

CHECKPOINT_FORMAT = "vipfast-allocator"
# Version 2: the Plan API (no planned-embedding cache), monitor arrays. Version 1 still loads.
CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass
class Checkpoint:
    path: Path
    version: int
    allocator: str
    config: dict
    init: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    monitor_arrays: dict[str, np.ndarray] = field(default_factory=dict)


def write_checkpoint(path, allocator: str, config: dict, init: dict, arrays: dict, monitor_arrays: dict) -> None:
    header = dict(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, allocator=allocator, config=config, init=init)
    entries = {f"state/{k}": np.asarray(v) for k, v in arrays.items()}
    entries.update({f"monitor/{k}": np.asarray(v) for k, v in monitor_arrays.items()})
    text = json.dumps(header)  # fails before any file is touched if the header is not JSON
    atomic_write(path, lambda handle: np.savez(handle, header=np.array(text), **entries))


def read_checkpoint(path) -> Checkpoint:
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it is a single array (.npy), not an .npz archive")
        with data:
            if "header" not in data.files:
                raise ValueError("it has no 'header' entry")
            header_text = str(data["header"])
            arrays = {k: data[k] for k in data.files if k != "header"}
    except FileNotFoundError:
        raise ValueError(f"{path}: no such allocator checkpoint") from None
    except Exception as error:  # damaged bytes raise many types in zipfile and numpy (NotImplementedError, ...)
        raise ValueError(f"{path} is not a readable vipfast allocator checkpoint: {error}") from None
    try:
        header = json.loads(header_text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a readable vipfast allocator checkpoint: its header is not JSON ({error})") from None
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise ValueError(f"{path} is not a vipfast allocator checkpoint (format {found!r})")
    version = header.get("version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{path} has checkpoint version {version!r}; this vipfast reads versions {READABLE_VERSIONS}")
    for name, kind in (("allocator", str), ("config", dict), ("init", dict)):
        if name == "init" and name not in header:
            continue
        if not isinstance(header.get(name), kind):
            raise ValueError(f"{path}: header entry {name!r} must be a {kind.__name__}, got {header.get(name)!r}")
    return Checkpoint(path=path, version=version, allocator=header["allocator"], config=header["config"],
                      init=header.get("init", {}),
                      arrays={k.removeprefix("state/"): v for k, v in arrays.items() if k.startswith("state/")},
                      monitor_arrays={k.removeprefix("monitor/"): v for k, v in arrays.items()
                                      if k.startswith("monitor/")})

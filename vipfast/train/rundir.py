"""The run directory: checkpoints that survive a kill at any moment, and resumes that trust nothing they read.

A save writes every file into RUN_DIR/checkpoint.new/, fsyncs them, and writes state.json last
(atomically): the step, the rollouts, and the size and SHA-256 of every other file. state.json is
what makes a directory a checkpoint. checkpoint.new/ then replaces checkpoint/ by two renames
(checkpoint/ -> checkpoint.old/, checkpoint.new/ -> checkpoint/), and checkpoint.old/ is deleted,
its state.json first, so a half-deleted directory is never taken for a checkpoint. A kill leaves
one of these states, and `recover` moves the newest checkpoint into checkpoint/ and deletes the rest:

    killed                          left behind                                       resumes from
    while writing the files         checkpoint/ (step a), checkpoint.new/ (no state)  a
    after state.json                checkpoint/ (a), checkpoint.new/ (b)              b
    between the renames             checkpoint.old/ (a), checkpoint.new/ (b)          b
    while deleting the old copy     checkpoint/ (b), checkpoint.old/ (a or no state)  b

A checkpoint's files must match state.json's list (size and hash) and the row of its step in
metrics.jsonl (rows are appended and fsynced before the checkpoint of their step is written);
anything else is a ValueError naming the file, raised before a model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._files import atomic_write, remove_stale_temporaries

CHECKPOINT, STAGING, PREVIOUS = "checkpoint", "checkpoint.new", "checkpoint.old"
STATE = "state.json"
METRICS, CONFIG = "metrics.jsonl", "config.yaml"
STATE_FORMAT = "vipfast-trainer-checkpoint"
# Version 2: trainer_state.json (the prompt source's position, tokens generated).
STATE_VERSION = 2
TRAINER_STATE = "trainer_state.json"
REQUIRED_FILES = ("policy/config.json", "optimizer.pt", "allocator.npz", TRAINER_STATE)
START_OVER = "use another run_dir, or --no-resume to start over"


@dataclass(frozen=True)
class Checkpoint:
    directory: Path
    step: int
    rollouts: int
    files: dict[str, dict]  # path relative to `directory` -> {"size": bytes, "sha256": hex digest}


# -- saving ----------------------------------------------------------------------------------------

def save_checkpoint(run_dir, step: int, rollouts: int, write_files: Callable[[Path], None]) -> Path:
    """`write_files(directory)` writes the checkpoint's files; they become RUN_DIR/checkpoint/ atomically."""
    run_dir = Path(run_dir)
    staging, current, previous = run_dir / STAGING, run_dir / CHECKPOINT, run_dir / PREVIOUS
    _discard(staging)
    staging.mkdir()
    write_files(staging)
    # Every file gets the mode the umask gives a new file (the new directory's, less execute bits), also
    # those a writer made with mkstemp (0600).
    mode = staging.stat().st_mode & 0o666
    for name in _files_below(staging):
        os.chmod(staging / name, mode)
    files = {name: _describe(staging / name) for name in _files_below(staging)}
    state = dict(format=STATE_FORMAT, version=STATE_VERSION, step=step, rollouts=rollouts, files=files)
    atomic_write(staging / STATE, lambda handle: handle.write(json.dumps(state, indent=1).encode()))
    _fsync_directories(staging)
    _discard(previous)
    if current.exists():
        os.replace(current, previous)
    os.replace(staging, current)
    _fsync_directories(run_dir, recursive=False)
    _discard(previous)
    return current


def start_over(run_dir) -> None:
    """Make run_dir, deleting what an earlier run left there: metrics, every checkpoint copy, temporaries."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / METRICS).unlink(missing_ok=True)
    for name in (CHECKPOINT, STAGING, PREVIOUS):
        _discard(run_dir / name)
    _remove_stale_temporaries(run_dir)


def _remove_stale_temporaries(run_dir: Path) -> None:
    for name in (METRICS, CONFIG):
        remove_stale_temporaries(run_dir / name)


def _discard(directory: Path) -> None:
    """Delete a checkpoint copy, its state.json first: a kill midway leaves no checkpoint that lies."""
    if directory.is_symlink() or directory.is_file():
        directory.unlink()
    elif directory.is_dir():
        (directory / STATE).unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)


def _files_below(directory: Path) -> list[str]:
    return sorted(path.relative_to(directory).as_posix() for path in directory.rglob("*") if path.is_file())


def _describe(path: Path) -> dict:
    """Size and SHA-256 of a file, after fsyncing it (state.json may only list files that are on disk)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return dict(size=path.stat().st_size, sha256=digest.hexdigest())


def _fsync_directories(root: Path, recursive: bool = True) -> None:
    """Make the renames and new entries below `root` durable."""
    directories = [root, *(p for p in root.rglob("*") if p.is_dir())] if recursive else [root]
    for directory in directories:
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# -- resuming --------------------------------------------------------------------------------------

def recover_checkpoint(run_dir, *, verify: bool = True) -> Checkpoint | None:
    """The newest checkpoint any kill left, moved into RUN_DIR/checkpoint/ (other copies and stale
    temporaries deleted), or None. verify: check every file's size and hash against state.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    copies = [read_state(run_dir / name) for name in (CHECKPOINT, STAGING, PREVIOUS)]
    newest = max((c for c in copies if c is not None), key=lambda c: c.step, default=None)  # ties: checkpoint/
    if newest is not None and verify:
        verify_files(newest)
    current = run_dir / CHECKPOINT
    if newest is not None and newest.directory != current:
        _discard(current)
        os.replace(newest.directory, current)
        _fsync_directories(run_dir, recursive=False)
        newest = Checkpoint(current, newest.step, newest.rollouts, newest.files)
    for name in (STAGING, PREVIOUS):
        _discard(run_dir / name)
    _remove_stale_temporaries(run_dir)
    return newest


def read_state(directory: Path) -> Checkpoint | None:
    """The checkpoint state.json in `directory` describes; None when there is none (an unfinished copy)."""
    path = directory / STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is damaged: {error}; {START_OVER}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a vipfast trainer checkpoint state (no format {STATE_FORMAT!r}; an older "
                         f"vipfast writes none); {START_OVER}")
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{path} has version {state.get('version')!r}; this vipfast reads version {STATE_VERSION}")
    for key, least in (("step", 1), ("rollouts", 0)):
        value = state.get(key)
        if type(value) is not int or value < least:
            raise ValueError(f"{path}: '{key}' must be an integer >= {least}, got {value!r}; {START_OVER}")
    return Checkpoint(directory, state["step"], state["rollouts"], _checked_file_list(path, state.get("files")))


def _checked_file_list(path: Path, files) -> dict[str, dict]:
    if not isinstance(files, dict):
        raise ValueError(f"{path}: 'files' must map file names to their size and sha256, got {files!r}")
    for name, entry in files.items():
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts or name in ("", STATE):
            raise ValueError(f"{path}: {name!r} is not a file name inside the checkpoint")
        if not (isinstance(entry, dict) and type(entry.get("size")) is int and isinstance(entry.get("sha256"), str)):
            raise ValueError(f"{path}: the entry of {name!r} must be {{'size': int, 'sha256': str}}, got {entry!r}")
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise ValueError(f"{path} does not list {missing[0]}, which every checkpoint holds; {START_OVER}")
    return files


def verify_files(checkpoint: Checkpoint) -> None:
    """Every file state.json lists, with its size and hash: a ValueError naming the first that differs."""
    for name, expected in checkpoint.files.items():
        path = checkpoint.directory / name
        if not path.is_file():
            raise ValueError(f"checkpoint file {path} is missing; {START_OVER}")
        size = path.stat().st_size
        if size != expected["size"]:
            raise ValueError(f"checkpoint file {path} is damaged: {size} bytes, but {expected['size']} were "
                             f"written (truncated or overwritten); {START_OVER}")
        if _describe(path)["sha256"] != expected["sha256"]:
            raise ValueError(f"checkpoint file {path} is damaged: its content differs from what was written "
                             f"(sha256 mismatch); {START_OVER}")


# -- metrics.jsonl ---------------------------------------------------------------------------------

def read_metrics(run_dir) -> list[dict]:
    """The rows of RUN_DIR/metrics.jsonl. A last line cut short by a kill is dropped; any other
    line that is not a JSON object with an integer 'step' is a ValueError naming its line."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {METRICS}; is it a `vipfast train` run directory?")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (offset {error.start})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # an append the kill cut short
                break
            raise ValueError(f"{path}, line {number}, is not JSON: {line[:80]!r}") from None
        if not isinstance(row, dict) or type(row.get("step")) is not int:
            raise ValueError(f"{path}, line {number}: expected a JSON object with an integer 'step', got {line[:80]!r}")
        rows.append(row)
    return rows


def check_metrics_match(run_dir, checkpoint: Checkpoint) -> None:
    """metrics.jsonl must hold the row of the checkpoint's step, with the same rollouts."""
    where = f"{Path(run_dir) / METRICS} and {checkpoint.directory / STATE}"
    if not (Path(run_dir) / METRICS).is_file():
        raise ValueError(f"{Path(run_dir) / METRICS} is missing beside the checkpoint; {START_OVER}")
    rows = {row["step"]: row for row in read_metrics(run_dir)}
    row = rows.get(checkpoint.step)
    if row is None:
        last = max(rows, default=None)
        raise ValueError(f"{where} disagree: the checkpoint is of step {checkpoint.step}, but the metrics have no "
                         f"row for it (last step {last}); {START_OVER}")
    if row.get("rollouts") != checkpoint.rollouts:
        raise ValueError(f"{where} disagree: {row.get('rollouts')!r} rollouts after step {checkpoint.step} in the "
                         f"metrics, {checkpoint.rollouts} in the checkpoint; {START_OVER}")


def keep_metrics_through(run_dir, step: int) -> None:
    """Drop the rows after `step`: they belong to steps that will be taken again."""
    kept = [row for row in read_metrics(run_dir) if row["step"] <= step]
    text = "".join(json.dumps(row) + "\n" for row in kept)
    atomic_write(Path(run_dir) / METRICS, lambda handle: handle.write(text.encode()))


def read_trainer_state(checkpoint: Checkpoint) -> dict:
    """The trainer's own state in a checkpoint: {"source": {...}, "tokens": int}."""
    path = checkpoint.directory / TRAINER_STATE
    try:
        state = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is damaged: {error}; {START_OVER}") from None
    if not (isinstance(state, dict) and isinstance(state.get("source"), dict) and type(state.get("tokens")) is int):
        raise ValueError(f"{path} must hold {{'source': {{...}}, 'tokens': int}}, got {str(state)[:80]}; {START_OVER}")
    return state


def append_metrics(run_dir, row: dict) -> None:
    """One row, fsynced: a checkpoint written after it can count on it being there."""
    with open(Path(run_dir) / METRICS, "a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# -- TensorBoard -------------------------------------------------------------------------------------

def tensorboard_writer(config, step: int):
    """A SummaryWriter for logging.tensorboard_dir (default RUN_DIR/tensorboard); events after `step` (from a run
    that is being resumed) are dropped."""
    from torch.utils.tensorboard import SummaryWriter

    directory = config.logging.tensorboard_dir or str(Path(config.run_dir) / "tensorboard")
    return SummaryWriter(log_dir=directory, purge_step=step + 1 if step else None)


def write_scalars(writer, row: dict) -> None:
    """Every number of a metrics row as a scalar at its step; nested mappings become "outer/inner" tags."""
    for tag, value in _scalars(row):
        writer.add_scalar(tag, value, global_step=row["step"])
    writer.flush()


def _scalars(mapping: dict, prefix: str = ""):
    for key, value in mapping.items():
        if key == "step":
            continue
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)):
            yield f"{prefix}{key}", float(value)

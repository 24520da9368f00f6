"""Checkpoints and resume: a save killed at any point, damaged files, tampered state, temporaries, file modes.

Every test works on a copy of one finished two-step run (a checkpoint after each step)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("yaml")

from test_train import TINY, no_model, private_cache, read_rows  # noqa: E402,F401 - fixtures

from vipfast.train import Trainer, load_config, prepare_run, train  # noqa: E402

BUDGET = TINY["allocator.prompts_per_step"] * TINY["allocator.budget_per_prompt"]


def config_for(run_dir, **overrides):
    return load_config(None, {**TINY, "run_dir": str(run_dir), "checkpoint_every": 1, **overrides})


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIPFAST_CACHE", str(tmp_path_factory.getbasetemp() / "vipfast-cache"))
        run_dir = tmp_path_factory.mktemp("template") / "run"
        Trainer(config_for(run_dir, steps=2)).run()
    return run_dir


@pytest.fixture
def run_copy(two_step_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(two_step_run, copy)
    return copy


def checkpoint_copies(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint"))


def state_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "checkpoint" / "state.json").read_text())


class Crash(Exception):
    """Stands for the process being killed at this call: the call does nothing and nothing after it runs."""


def crashing(real, calls: list, crash_at: int | None):
    def call(*args, **kwargs):
        calls.append((real.__name__, *(Path(a).name for a in args if isinstance(a, (str, os.PathLike)))))
        if len(calls) - 1 == crash_at:
            raise Crash(calls[-1])
        return real(*args, **kwargs)

    return call


def save_with_crash(monkeypatch, trainer, crash_at: int | None) -> list:
    """trainer.save_checkpoint() with the crash_at-th rename or tree deletion failing; the calls made."""
    calls = []
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", crashing(os.replace, calls, crash_at))
        patch.setattr(shutil, "rmtree", crashing(shutil.rmtree, calls, crash_at))
        if crash_at is None:
            trainer.save_checkpoint()
        else:
            with pytest.raises(Crash):
                trainer.save_checkpoint()
    return calls


# -- a save killed at any point ---------------------------------------------------------------------

def test_a_save_killed_at_any_point_resumes_from_the_newest_complete_checkpoint(run_copy, monkeypatch, tmp_path):
    trainer = Trainer(config_for(run_copy, steps=3))
    assert trainer.step == 2
    trainer._log(trainer.train_step())  # step 3's row, logged before its checkpoint as run() does
    snapshot = tmp_path / "snapshot"
    shutil.copytree(run_copy, snapshot)
    calls = save_with_crash(monkeypatch, trainer, None)
    state_written = next(i for i, call in enumerate(calls) if call[0] == "replace" and call[-1] == "state.json")
    renames = [i for i, call in enumerate(calls) if call[0] == "replace" and call[-1] == "checkpoint"]
    assert len(renames) == 1 and renames[0] > state_written  # the swap comes after the state is on disk
    for crash_at in range(len(calls)):
        shutil.rmtree(run_copy)
        shutil.copytree(snapshot, run_copy)
        save_with_crash(monkeypatch, trainer, crash_at)
        checkpoint = prepare_run(trainer.config).checkpoint
        expected = 3 if crash_at > state_written else 2
        assert (checkpoint.step, checkpoint.rollouts) == (expected, expected * BUDGET), (crash_at, calls[crash_at])
        assert checkpoint.directory == run_copy / "checkpoint"
        assert checkpoint_copies(run_copy) == ["checkpoint"], calls[crash_at]
        assert [r["step"] for r in read_rows(run_copy)] == [0, 1, 2, 3]  # nothing wiped


def test_resume_after_a_kill_between_the_renames_continues_the_run(run_copy, monkeypatch):
    """The window where only checkpoint.old/ (step 2) and checkpoint.new/ (step 3) exist."""
    def kill_at_second_rename(real):
        def call(source, target):
            if Path(source).name == "checkpoint.new":
                raise Crash("killed between the renames")
            return real(source, target)
        return call

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", kill_at_second_rename(os.replace))
        with pytest.raises(Crash):
            Trainer(config_for(run_copy, steps=3)).run()
    assert checkpoint_copies(run_copy) == ["checkpoint.new", "checkpoint.old"]
    resumed = Trainer(config_for(run_copy, steps=4))
    assert (resumed.step, resumed.rollouts) == (3, 3 * BUDGET)
    assert [r["step"] for r in read_rows(run_copy)] == [0, 1, 2, 3]
    resumed.run()
    assert [r["step"] for r in read_rows(run_copy)] == [0, 1, 2, 3, 4]
    assert checkpoint_copies(run_copy) == ["checkpoint"] and state_of(run_copy)["step"] == 4


def test_a_copy_without_state_json_is_never_resumed_from(run_copy, no_model):
    """state.json is written last and deleted first: a copy without it is unfinished or half deleted."""
    old = run_copy / "checkpoint.old"
    shutil.copytree(run_copy / "checkpoint", old)
    state = json.loads((old / "state.json").read_text())
    (old / "state.json").write_text(json.dumps({**state, "step": 99}))  # would win if it counted
    (old / "optimizer.pt").unlink()
    (old / "state.json").unlink()
    assert prepare_run(config_for(run_copy, steps=3)).checkpoint.step == 2
    assert checkpoint_copies(run_copy) == ["checkpoint"]


# -- damaged files and tampered state ---------------------------------------------------------------

def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name, damage, problem", [
    ("allocator.npz", truncate, "bytes, but"),
    ("allocator.npz", flip_a_byte, "sha256 mismatch"),
    ("optimizer.pt", flip_a_byte, "sha256 mismatch"),
    ("optimizer.pt", Path.unlink, "is missing"),
    ("policy/model.safetensors", truncate, "bytes, but"),
], ids=["allocator-truncated", "allocator-flipped", "optimizer-flipped", "optimizer-deleted", "policy-truncated"])
def test_a_damaged_checkpoint_file_is_named_before_any_compute(run_copy, no_model, name, damage, problem):
    path = run_copy / "checkpoint" / name
    metrics = (run_copy / "metrics.jsonl").read_bytes()
    damage(path)
    with pytest.raises(ValueError) as error:
        Trainer(config_for(run_copy, steps=3))
    message = str(error.value)
    assert str(path) in message and problem in message and "--no-resume" in message
    assert (run_copy / "metrics.jsonl").read_bytes() == metrics


def edit_state(edit):
    def apply(run_dir: Path) -> None:
        path = run_dir / "checkpoint" / "state.json"
        state = json.loads(path.read_text())
        edit(state)
        path.write_text(json.dumps(state))
    return apply


def without(key, *inner):
    def edit(state):
        (state[inner[0]] if inner else state).pop(key)
    return edit


def rewrite_listed(run_dir: Path, name: str, content: bytes) -> None:
    """Replace a checkpoint file and list its new size and hash, as a writer with other ideas would."""
    import hashlib

    path = run_dir / "checkpoint" / name
    path.write_bytes(content)
    state = state_of(run_dir)
    state["files"][name] = dict(size=len(content), sha256=hashlib.sha256(content).hexdigest())
    (run_dir / "checkpoint" / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize("tamper, message", [
    (edit_state(lambda s: s.update(step=-5)), "'step' must be an integer >= 1, got -5"),
    (edit_state(lambda s: s.update(step=1e20)), "'step' must be an integer >= 1, got 1e+20"),
    (edit_state(lambda s: s.update(step="2")), "'step' must be an integer >= 1, got '2'"),
    (edit_state(lambda s: s.update(step=True)), "'step' must be an integer >= 1, got True"),
    (edit_state(lambda s: s.update(step=10**20)), "the metrics have no row for it (last step 2)"),
    (edit_state(lambda s: s.update(rollouts=s["rollouts"] + 1)), "rollouts after step 2 in the metrics"),
    (edit_state(lambda s: s.update(rollouts=-1)), "'rollouts' must be an integer >= 0, got -1"),
    (edit_state(lambda s: s.update(version=3)), "has version 3"),
    (edit_state(without("trainer_state.json", "files")), "does not list trainer_state.json"),
    (edit_state(without("format")), "is not a vipfast trainer checkpoint state"),
    (edit_state(without("files")), "'files' must map file names"),
    (edit_state(without("optimizer.pt", "files")), "does not list optimizer.pt"),
    (edit_state(lambda s: s["files"].update({"../metrics.jsonl": {"size": 1, "sha256": ""}})),
     "'../metrics.jsonl' is not a file name inside the checkpoint"),
    (edit_state(lambda s: s["files"].update({"optimizer.pt": 3})), "the entry of 'optimizer.pt' must be"),
    (lambda run: (run / "checkpoint" / "state.json").write_text('{"format": "vipfast'), "state.json is damaged"),
    (lambda run: (run / "checkpoint" / "state.json").write_bytes(b"\xff\xfe\x00"), "state.json is damaged"),
    (lambda run: (run / "metrics.jsonl").unlink(), "metrics.jsonl is missing beside the checkpoint"),
    (lambda run: (run / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 2}\n'),
     "metrics.jsonl, line 2, is not JSON"),
    (lambda run: (run / "config.yaml").write_bytes(b"seed: \xff\n"), "config.yaml is not UTF-8 text"),
    (lambda run: rewrite_listed(run, "trainer_state.json", b'{"source": {}}'), "trainer_state.json must hold"),
    (lambda run: rewrite_listed(run, "trainer_state.json", b'{"source": {"epoch": 1}, "tokens": 5}'),
     "prompt source state must hold the integers []"),
], ids=["negative-step", "float-step", "string-step", "bool-step", "huge-step", "rollouts", "negative-rollouts",
        "version", "unlisted-trainer-state", "no-format", "no-files", "unlisted-optimizer", "path-escape", "bad-entry",
        "cut-json", "not-utf8", "no-metrics", "metrics-line", "config-yaml", "trainer-state-keys",
        "trainer-state-source"])
def test_tampered_state_is_refused_before_any_compute(run_copy, no_model, tamper, message):
    tamper(run_copy)
    metrics = run_copy / "metrics.jsonl"
    before = metrics.read_bytes() if metrics.exists() else None
    with pytest.raises(ValueError) as error:
        Trainer(config_for(run_copy, steps=3))
    assert message in str(error.value)
    assert (metrics.read_bytes() if metrics.exists() else None) == before  # nothing truncated or wiped


def test_optimizer_state_is_read_with_weights_only(run_copy, monkeypatch):
    """A file listed with its true hash that is not an optimizer state: refused by name, nothing unpickled."""
    path = run_copy / "checkpoint" / "optimizer.pt"
    torch.save({"state": Path("/"), "param_groups": []}, path)  # a PosixPath: code, not tensors
    state = state_of(run_copy)
    state["files"]["optimizer.pt"] = dict(size=path.stat().st_size, sha256=__import__("hashlib").sha256(
        path.read_bytes()).hexdigest())
    (run_copy / "checkpoint" / "state.json").write_text(json.dumps(state))
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(kwargs) or real_load(*args, **kwargs))
    with pytest.raises(ValueError, match=f"{path} does not hold this run's optimizer state"):
        Trainer(config_for(run_copy, steps=3))
    assert loads and all(kwargs.get("weights_only") is True for kwargs in loads)


def test_a_metrics_line_cut_short_by_a_kill_is_dropped(run_copy):
    with open(run_copy / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 3, "rollou')
    trainer = Trainer(config_for(run_copy, steps=3))
    trainer.run()
    assert [r["step"] for r in read_rows(run_copy)] == [0, 1, 2, 3]


def test_a_finished_run_returns_at_once(run_copy, no_model):
    assert train(config_for(run_copy, steps=2)) == []
    assert prepare_run(config_for(run_copy, steps=2)).finished


# -- temporaries and file modes ---------------------------------------------------------------------

def leave_what_a_killed_save_leaves(run_dir: Path) -> list[Path]:
    staging = run_dir / "checkpoint.new"
    (staging / "policy").mkdir(parents=True)
    (staging / "policy" / "config.json").write_text("{")
    (staging / ".state.json.k1ll3d.tmp").write_text("{")
    (run_dir / "checkpoint.old").mkdir()
    leftovers = [run_dir / ".metrics.jsonl.k1ll3d.tmp", run_dir / ".config.yaml.k1ll3d.tmp"]
    for path in leftovers:
        path.write_text("half")
    return [staging, run_dir / "checkpoint.old", *leftovers]


@pytest.mark.parametrize("resume", [True, False], ids=["resume", "start-over"])
def test_what_a_killed_save_leaves_is_deleted_on_the_next_start(run_copy, resume):
    leftovers = leave_what_a_killed_save_leaves(run_copy)
    trainer = Trainer(config_for(run_copy, steps=3), resume=resume)
    assert trainer.step == (2 if resume else 0)
    assert [path for path in leftovers if path.exists()] == []
    assert checkpoint_copies(run_copy) == (["checkpoint"] if resume else [])


def test_checkpoint_files_get_the_umask_mode_and_rewrites_keep_the_old_mode(run_copy):
    metrics = run_copy / "metrics.jsonl"
    metrics.chmod(0o604)
    umask = os.umask(0o027)
    try:
        Trainer(config_for(run_copy, steps=3)).run()  # rewrites metrics.jsonl on resume, then saves
    finally:
        os.umask(umask)
    files = [p for p in (run_copy / "checkpoint").rglob("*") if p.is_file()]
    assert {p.relative_to(run_copy).as_posix() for p in files} >= {
        "checkpoint/state.json", "checkpoint/allocator.npz", "checkpoint/optimizer.pt", "checkpoint/policy/config.json"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o640) for p in files}
    assert oct(metrics.stat().st_mode & 0o777) == oct(0o604)

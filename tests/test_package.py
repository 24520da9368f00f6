"""Packaging: the wheel layout users import, and stubs that match the extension."""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vipfast


def test_kernels_are_installed_as_a_subpackage():
    kernels = importlib.import_module("vipfast.kernels")
    assert Path(kernels.__file__).parent.name == "kernels"


def test_type_information_ships_with_the_package():
    package = Path(vipfast.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_core.pyi").exists()


@pytest.mark.skipif(shutil.which("pybind11-stubgen") is None, reason="pybind11-stubgen (test extra) is not installed")
def test_stubs_are_current(tmp_path):
    subprocess.run(["pybind11-stubgen", "vipfast._core", "-o", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path)
    generated = (tmp_path / "vipfast" / "_core.pyi").read_text()
    shipped = (Path(vipfast.__file__).parent / "_core.pyi").read_text()
    assert generated == shipped, "vipfast/_core.pyi is stale: run `pybind11-stubgen vipfast._core -o .`"


def test_cli_version_is_the_package_version(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vipfast.cli", "--version"], check=True, capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.stdout == f"vipfast {vipfast.__version__}\n"
    assert vipfast.__version__ == importlib.metadata.version("vipfast")

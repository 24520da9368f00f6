"""Every ```python block of README.md and docs/**/*.md runs as a user would run it: alone, in a fresh
interpreter, in an empty directory. An HTML comment on the line above a fence may skip the block,
giving the reason (`<!-- not-run: needs a GPU -->`), mark it slow (`<!-- slow: loads MiniLM -->`), or mark it
as a fragment of a larger program, which must still parse (`<!-- fragment: lines of verl's fit loop -->`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MARK = re.compile(r"<!--\s*(?P<mark>not-run|slow|fragment):\s*(?P<reason>.+?)\s*-->")
TIMEOUT_S = 300


def python_blocks(page: Path) -> list[tuple[int, str, dict]]:
    """(line of the opening fence, code, {mark: reason} from the comment above it) per ```python block."""
    lines = page.read_text().splitlines()
    blocks, start = [], None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start = number
        elif start is not None and line.strip() == "```":
            above = next((text for text in reversed(lines[: start - 1]) if text.strip()), "")
            marks = {match["mark"]: match["reason"] for match in MARK.finditer(above)}
            blocks.append((start, "\n".join(lines[start:number - 1]), marks))
            start = None
    assert start is None, f"{page}: the ```python block at line {start} is never closed"
    return blocks


def cases():
    for page in PAGES:
        name = page.relative_to(ROOT).as_posix()
        for line, code, comment in python_blocks(page):
            marks = []
            if "not-run" in comment:
                marks.append(pytest.mark.skip(reason=f"not run: {comment['not-run']}"))
            if "slow" in comment:
                marks.append(pytest.mark.slow)
            yield pytest.param(code, "fragment" in comment, id=f"{name}:{line}", marks=marks)


def test_not_run_marks_are_rare():
    skipped = [comment["not-run"] for page in PAGES for _, _, comment in python_blocks(page) if "not-run" in comment]
    assert len(skipped) <= 2, skipped


@pytest.mark.parametrize("code, fragment", list(cases()))
def test_python_block_runs(code, fragment, tmp_path):
    if fragment:  # lines of a method's loop body: they may use self, continue and return
        body = "\n".join("        " + line for line in code.splitlines())
        compile(f"def fragment(self):\n    for _ in ():\n{body}\n", "<fragment>", "exec")
        return
    environment = {**os.environ, "VIPFAST_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, f"exit status {result.returncode}\n{result.stderr[-4000:]}"


@pytest.mark.parametrize("page", PAGES + [ROOT / name for name in ("BENCHMARKS.md", "RESULTS.md", "CHANGELOG.md")
                                           if (ROOT / name).exists()],
                         ids=lambda page: page.relative_to(ROOT).as_posix())
def test_user_docs_stand_on_their_own(page):
    """Users get the repository, not the design notes; vipfast installs from a checkout, not from PyPI."""
    text = page.read_text()
    assert "DESIGN.md" not in text, f"{page.name} cites DESIGN.md, which users do not have"
    installs = re.findall(r"pip install [^`\n]*vipfast\[", text)
    assert not installs, f"{page.name}: {installs[0]!r} installs from PyPI; write pip install \".[extra]\""

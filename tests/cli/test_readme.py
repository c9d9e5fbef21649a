"""The README's code runs: every Python snippet executes (a block whose first line is ``# not run: <why>`` is only
compiled), and every option of every ``saqt``/``glint`` command in its shell blocks exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import check_options_exist, code_blocks, commands

README = Path(__file__).resolve().parents[2] / "README.md"


BLOCKS = code_blocks(README)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]


def test_the_readme_has_python_snippets():
    assert PYTHON, "no ```python block found: the extraction is broken"


@pytest.mark.slow
@pytest.mark.parametrize("code", PYTHON, ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_python_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a snippet writes stays in the test's folder
    compiled = compile(code, str(README), "exec")
    if not code.startswith("# not run:"):
        exec(compiled, {"__name__": "readme_snippet"})


def test_readme_commands_use_options_that_exist():
    lines = commands(BLOCKS)
    assert len(lines) > 30
    check_options_exist(lines, "README")

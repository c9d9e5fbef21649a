"""The README's code runs: every Python snippet executes (a block whose first line is ``# not run: <why>`` is only
compiled), and every option of every ``saqt``/``glint`` command in its shell blocks exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from pipelines.glint_cli import app as glint_app
from pipelines.saqt_cli import app as saqt_app

README = Path(__file__).resolve().parents[1] / "README.md"
APPS = {"saqt": typer.main.get_command(saqt_app), "glint": typer.main.get_command(glint_app)}


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of each fenced block of a Markdown file, in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```", path.read_text(), re.S | re.M)


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


def commands(blocks: list[tuple[str, str]]) -> list[list[str]]:
    """Each saqt/glint command line of the shell blocks, as words (continuations joined, comments dropped)."""
    lines = []
    for lang, code in blocks:
        if lang == "bash":
            for line in code.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                start = next((i for i, w in enumerate(words) if w in APPS or w == "$(which"), None)
                if start is not None:
                    words = words[start:]
                    lines.append(["glint", *words[2:]] if words[0] == "$(which" else words)
    return lines


def check_options_exist(lines: list[list[str]], where: str) -> None:
    """Every option of every command line is one its saqt/glint command has."""
    for words in lines:
        command, path = APPS[words[0]], [words[0]]
        for word in words[1:]:
            if word in getattr(command, "commands", {}):
                command = command.commands[word]
                path.append(word)
        names = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        unknown = [w.split("=")[0] for w in words if w.startswith("-") and w.split("=")[0] not in names]
        assert not unknown, f"{' '.join(path)}: {unknown} in {where} line {' '.join(words)!r}"


def test_readme_commands_use_options_that_exist():
    lines = commands(BLOCKS)
    assert len(lines) > 30
    check_options_exist(lines, "README")

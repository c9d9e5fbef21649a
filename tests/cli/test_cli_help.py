"""Every command's --help of both apps, as a user's narrow terminal shows it: flags without a value placeholder, no
word or default cut, every default shown, and usage lines that name arguments as click does."""

from __future__ import annotations

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from pipelines.glint_cli import app as glint_app
from pipelines.saqt_cli import app as saqt_app

APPS = {"saqt": saqt_app, "glint": glint_app}


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = [(app, path, command) for app in APPS for path, command in _commands(get_command(APPS[app]))]


def _help(app: str, path: tuple[str, ...], columns: int) -> str:
    env = {"COLUMNS": str(columns), "TERMINAL_WIDTH": str(columns), "NO_COLOR": "1"}
    result = CliRunner().invoke(APPS[app], [*path, "--help"], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def _words(text: str) -> list[str]:
    """The words of ``text`` as a help shows them: glint's markdown help shows `code` without its backticks."""
    return text.replace("│", " ").replace("`", "").split()


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize(("app", "path", "command"), COMMANDS, ids=[" ".join((a, *p)) for a, p, _ in COMMANDS])
def test_help_shows_every_word_and_default_whole(app, path, command, columns):
    text = _help(app, path, columns)
    assert "<bool>" not in text and "…" not in text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage
    for line in text.splitlines():
        opened = line.find("[default:")
        assert opened < 0 or "]" in line[opened:], f"a default cut across lines: {line!r}"
    shown = set(_words(text))
    for param in command.params:
        if getattr(param, "help", None) and not getattr(param, "hidden", False):
            cut = [word for word in _words(param.help) if word not in shown]
            assert not cut, f"{param.name}: {cut} not shown whole"


def test_flags_take_no_value_and_arguments_are_named_in_capitals():
    text = _help("saqt", ("report",), 80)
    assert "Usage: saqt report [OPTIONS] FOLDER" in text
    assert re.search(r"│ --help +Show this message", text)
    fetch = _help("saqt", ("fetch",), 80)
    assert "Usage: saqt fetch [OPTIONS] [NAMES]..." in fetch
    assert re.search(r"│ --dry-run +Show what would be downloaded", fetch) and "--no-dry-run" not in fetch
    assert re.search(r"│ --version +Print the toolkit's version", _help("glint", (), 80))


@pytest.mark.parametrize(("option", "default"), [("--rule", "top1"), ("--normalise", "minmax:0:9")])
def test_label_shows_the_default_rule_and_scale(option, default):
    text = _help("saqt", ("label",), 80)
    row = re.search(rf"│ {option} .*?(?=\n│ --|\n╰)", text, re.DOTALL)
    assert row and f"[default: {default}]" in row[0]

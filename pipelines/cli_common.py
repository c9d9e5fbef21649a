"""Helpers shared by the ``saqt`` and ``glint`` command-line apps."""

from __future__ import annotations

import re
from typing import NoReturn

import click
import typer
from typer.core import TyperGroup

from saqt.errors import SaqtError


class OneLineErrors(TyperGroup):
    """A command group that prints an expected failure (a SaqtError) as one line, ``<app> <command>: <reason>``, and
    exits 2; any other exception is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SaqtError as err:
            root = ctx.find_root()
            names = [root.command.name or root.info_name, *ctx.command_path.split(" ")[1:], ctx.invoked_subcommand]
            typer.echo(f"{' '.join(n for n in names if n)}: {err}", err=True)
            raise typer.Exit(2) from None


def fail_command(app: str, command: str, err: Exception | str, code: int = 2) -> NoReturn:
    """Print ``<app> <command>: <one-line reason>`` and exit with ``code``."""
    typer.echo(f"{app} {command}: {err}", err=True)
    raise typer.Exit(code) from None


UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_int_set(text: str, lo: int, hi: int, what: str) -> list[int]:
    """Parse ``"1-5,10,12"`` into sorted unique ints within [lo, hi]; raise typer.BadParameter otherwise."""
    values: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            first, _, last = part.partition("-")
            a, b = int(first), int(last or first)
            if not lo <= a <= b <= hi:
                raise ValueError
            values.update(range(a, b + 1))
    except ValueError:
        raise typer.BadParameter(
            f"{what} must be numbers or ranges in {lo}..{hi} such as '1-3,7', got {text!r}"
        ) from None
    if not values:
        raise typer.BadParameter(f"no {what} given")
    return sorted(values)


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"512x384"`` into (width, height); raise typer.BadParameter otherwise."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"--size must look like 512x384, got {text!r}") from None
    return w, h


def parse_bytes(text: str, what: str) -> int:
    """Parse ``"500MB"``, ``"1.5GiB"`` or ``"1000000"`` into bytes; raise typer.BadParameter otherwise."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-z]*)\s*", text.lower())
    if not match or match[2] not in UNITS:
        raise typer.BadParameter(f"{what} must look like 500MB, 2GiB or a byte count, got {text!r}")
    try:
        return int(float(match[1]) * UNITS[match[2]])
    except ValueError:
        raise typer.BadParameter(f"{what} must look like 500MB, 2GiB or a byte count, got {text!r}") from None

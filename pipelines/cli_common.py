"""Helpers shared by the ``saqt`` and ``glint`` command-line apps."""

from __future__ import annotations

import typer

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


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


def add_stub(app: typer.Typer, prog: str, name: str, issue: int, help_text: str) -> None:
    """Register a command that exists in the interface but is not built yet: it says so and exits 2."""

    def stub(ctx: typer.Context) -> None:
        typer.echo(f"{prog} {name}: not implemented yet (planned in issue #{issue})", err=True)
        raise typer.Exit(2)

    app.command(name, help=f"[not implemented yet] {help_text}", context_settings=PASS_THROUGH)(stub)

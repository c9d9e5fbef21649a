"""Helpers shared by the ``saqt`` and ``glint`` command-line apps."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Annotated, Any, NoReturn, get_type_hints

import click
import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from saqt.core.config_options import AS_FIELD, option_of
from saqt.core.errors import SaqtError

KEYWORD_ONLY = inspect.Parameter.KEYWORD_ONLY


class PlainHelp:
    """Help of a command or group, as typed: a flag shows no value placeholder (``--json``, not ``--json <bool>``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        for param in self.params:
            _takes_no_value(param)

    def get_help_option(self, ctx: click.Context):
        option = super().get_help_option(ctx)
        if option is not None:
            _takes_no_value(option)
        return option


def _takes_no_value(param: click.Parameter) -> None:
    if getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""


class Command(PlainHelp, TyperCommand):
    """A command of the apps: plain help; a usage line that names its arguments as click does (``FOLDER``,
    ``[IMAGES]...``), not as Typer's ``{folder}``; and in its group's list, its help's first paragraph as one text,
    not broken where the docstring's lines break."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.help and not self.short_help:
            self.short_help = " ".join(inspect.cleandoc(self.help).split("\n\n")[0].split())

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        group = ctx.find_root().command
        if not isinstance(group, OneLineErrors):
            return super().parse_args(ctx, args)
        names = {name for param in self.params for name in getattr(param, "opts", ())}
        return super().parse_args(ctx, [group.current_name(ctx, arg, names) for arg in args])

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or param.name.upper()
                pieces.append((name if param.required else f"[{name}]") + ("..." if param.nargs != 1 else ""))
        return pieces


class App(typer.Typer):
    """A Typer app whose commands are :class:`Command` unless told otherwise."""

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Callable:
        return super().command(*args, cls=cls or Command, **kwargs)


class OneLineErrors(PlainHelp, TyperGroup):
    """A command group that prints an expected failure (a SaqtError) as one line, ``<app> <command>: <reason>``, and
    exits 2; any other exception is a bug and keeps its traceback.

    ``renamed`` (old -> current option name): the deprecated names its commands still accept, hidden from their
    help; a command that has the current option reads the old one as it, after a line from :meth:`warn_renamed`.
    """

    renamed: dict[str, str] = {}

    def current_name(self, ctx: click.Context, arg: str, options: set[str]) -> str:
        """``arg`` with a deprecated option name (``--old`` or ``--old=value``) replaced by the current one, if the
        command (whose ``options`` these are) has it."""
        name, eq, value = arg.partition("=")
        if self.renamed.get(name) not in options:
            return arg
        self.warn_renamed(ctx, name, self.renamed[name])
        return self.renamed[name] + eq + value

    def warn_renamed(self, ctx: click.Context, old: str, new: str) -> None:
        """Say that option ``old`` is read as ``new``: one line on stderr, ``<app> <command>: ...``."""
        command = " ".join([_root_name(ctx), *ctx.command_path.split(" ")[1:]])
        typer.echo(f"{command}: {old} is deprecated; use {new}", err=True)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SaqtError as err:
            names = [_root_name(ctx), *ctx.command_path.split(" ")[1:], ctx.invoked_subcommand]
            typer.echo(f"{' '.join(n for n in names if n)}: {err}", err=True)
            raise typer.Exit(2) from None


def _root_name(ctx: click.Context) -> str:
    """The app's name (saqt, glint), however it was invoked."""
    root = ctx.find_root()
    return root.command.name or root.info_name


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


class Options(dict):
    """The parsed values of a command's config options (see :func:`config_options`), by field name."""

    def make(self, config: type, **given: Any) -> Any:
        """A ``config`` from these values of its option fields, ``given`` replacing any (a value the command line
        takes in another form, such as ``--size 512x384``, is given converted)."""
        values = {f.name: self[f.name] for f in fields(config) if option_of(f) and f.name in self}
        return config(**{**values, **given})


def _parameter(f: Field, hints: dict[str, Any]) -> inspect.Parameter:
    """The Typer option of a config field: its flags, help and panel, and its command-line type and default. A
    boolean field declared without flags, off by default, is one plain flag (``--allow-grey``, no ``--no-...``)."""
    spec = option_of(f)
    kind = hints[f.name] if spec.cli_type is AS_FIELD else spec.cli_type
    default = spec.cli_default
    if default is AS_FIELD:
        default = f.default if f.default_factory is MISSING else f.default_factory()
    flags = spec.flags or ((f"--{f.name.replace('_', '-')}",) if kind is bool and default is False else ())
    info = typer.Option(*flags, help=spec.help, rich_help_panel=spec.panel, **dict(spec.extra))
    empty = inspect.Parameter.empty
    return inspect.Parameter(
        f.name, KEYWORD_ONLY, default=empty if default is MISSING else default, annotation=Annotated[kind, info]
    )


def config_options(*configs: type, before: dict[str, str] | None = None) -> Callable[[Callable], Callable]:
    """Give a Typer command the option fields of ``configs`` (``saqt.core.config_options.option``) as its options, one place to
    add an option. The command's own parameters (what no config holds: ``--out``, ``--workers``) follow the fields,
    or come just before the field ``before`` names for them; the command is called with the fields' parsed values,
    an :class:`Options`, first, and its own parameters by name."""

    def decorate(fn: Callable) -> Callable:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]
        options = [(f, get_type_hints(c)) for c in configs for f in fields(c) if option_of(f)]
        names = [f.name for f, _ in options]
        if len(set(names)) < len(names) or set(names) & {p.name for p in own}:
            raise TypeError(f"{fn.__name__}: an option name is given twice")
        placed = {field: [p for p in own if (before or {}).get(p.name) == field] for field in names}
        params = [q for f, hints in options for q in (*placed[f.name], _parameter(f, hints))]
        params = [p.replace(kind=KEYWORD_ONLY) for p in params + [p for p in own if p not in params]]

        def command(**values: Any) -> Any:
            return fn(Options({name: values.pop(name) for name in names}), **values)

        command.__name__, command.__qualname__, command.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        command.__module__ = fn.__module__
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate

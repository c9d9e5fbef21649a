"""Options: fields of a stage's config that the command line also offers, declared once, on the config.

``option(default, help, panel)`` is a dataclass field whose metadata says how ``saqt``/``glint`` show it: its help,
its help panel, its flags (default ``--field-name``), and, where the command line takes another form than the
config holds (``--size 512x384`` for ``(512, 384)``), that form's type and default. ``pipelines/cli_common.py``
turns the options of a config into a command's Typer options. This module is plain data: no Typer here.

An option that names a local file or folder (``path=True``) is held absolute, links resolved (:func:`resolve_paths`,
called by the config's ``__post_init__``): one folder is one input however it is spelled (``./photos/``,
``photos``, ``/home/me/photos``), so a stage resumes whatever the spelling or working folder. A published set never
shows these paths (``saqt.publish`` records no folder of the publisher's machine).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# Help panels: options grouped by what they decide (`saqt build --help`, `glint finetune --help`).
SOURCE, SELECTION, SCREEN, PLAN, OUTPUT, EXECUTION = "Source", "Selection", "Screen", "Plan", "Output", "Execution"
INPUTS, MATCHING, TRANSFER = "Inputs", "Matching", "Transfer"
DATA, MODEL, TRAINING, EVALUATION = "Data", "Model", "Protocol and training", "Evaluation"
DEVICE_HELP = "auto, cpu or cuda."  # the help of every --device, saqt's and glint's


AS_FIELD: Any = object()  # an Option's cli_type or cli_default that is the field's own
NOT_PATHS = frozenset({"authors"})  # values of path options that name no local file (the bundled selection, matches)


@dataclass(frozen=True)
class Option:
    """How a config field appears on the command line. ``cli_type``/``cli_default``: the command line's form where it
    differs from the field's (AS_FIELD: the field's own); ``recorded``: False for a field that does not change the
    output (a device, a batch size), left out of the stage's manifest; ``key``: the name the manifest records it
    under where that is not the field's (a field renamed since); ``path``: a local file or folder, held absolute
    (see the module's docstring); ``extra``: further Typer option settings."""

    help: str
    panel: str | None = None
    flags: tuple[str, ...] = ()
    cli_type: Any = AS_FIELD
    cli_default: Any = AS_FIELD
    recorded: bool = True
    key: str | None = None
    path: bool = False
    extra: tuple[tuple[str, Any], ...] = ()


def option(
    default: Any = MISSING,
    help: str = "",
    panel: str | None = None,
    *,
    flags: tuple[str, ...] = (),
    cli_type: Any = AS_FIELD,
    cli_default: Any = AS_FIELD,
    recorded: bool = True,
    key: str | None = None,
    path: bool = False,
    default_factory: Any = MISSING,
    **extra: Any,
) -> Any:
    """A dataclass field that is also a command-line option (see :class:`Option`)."""
    spec = Option(help, panel, tuple(flags), cli_type, cli_default, recorded, key, path, tuple(extra.items()))
    return field(default=default, default_factory=default_factory, metadata={"option": spec})


def option_of(f: Field) -> Option | None:
    """The command-line form of a config field, or None for a field the command line does not offer."""
    return f.metadata.get("option")


def recorded(config: Any) -> dict:
    """The config as a stage's manifest records it: JSON-ready, without the fields that do not change the output,
    each under its ``key``."""
    values, kept = asdict(config), {}
    for f in fields(config):
        spec = option_of(f)
        if spec is None or spec.recorded:
            kept[spec.key if spec and spec.key else f.name] = values[f.name]
    return json.loads(json.dumps(kept))


def local_path(value: Any) -> Any:
    """A file or folder as a config holds it: absolute, links resolved; None, "" and NOT_PATHS (``authors``) as given."""
    return value if not value or value in NOT_PATHS else str(Path(value).resolve())


def resolve_paths(config: Any) -> None:
    """Hold the path options of a frozen ``config`` (``option(path=True)``) as :func:`local_path` gives them."""
    for f in fields(config):
        if (spec := option_of(f)) and spec.path:
            object.__setattr__(config, f.name, local_path(getattr(config, f.name)))

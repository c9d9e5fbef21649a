"""Options: fields of a stage's config that the command line also offers, declared once, on the config.

``option(default, help, panel)`` is a dataclass field whose metadata says how ``saqt``/``glint`` show it: its help,
its help panel, its flags (default ``--field-name``), and, where the command line takes another form than the
config holds (``--size 512x384`` for ``(512, 384)``), that form's type and default. ``pipelines/cli_common.py``
turns the options of a config into a command's Typer options. This module is plain data: no Typer here.

Options that several configs share are declared once, on a group (a frozen dataclass of options such as
``ScreenOptions``), that each of those configs includes with :func:`include` where its fields stand: a
:func:`config_class` holds them flat (``config.min_side``, ``BuildConfig(min_side=...)``, one ``--min-side``, one
manifest key), and the group itself is one attribute away (``config.screen_options``), checked as the config is made.

An option that names a local file or folder (``path=True``) is held absolute, links resolved (:func:`resolve_paths`,
called by the config's ``__post_init__``): one folder is one input however it is spelled (``./photos/``,
``photos``, ``/home/me/photos``), so a stage resumes whatever the spelling or working folder. A published set never
shows these paths (``saqt.publish.publish_stage`` records no folder of the publisher's machine).
"""

from __future__ import annotations

import copy
import json
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_type_hints

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


@dataclass(frozen=True)
class Include:
    """Where a config holds the option fields of ``group``, some with this config's own default or help."""

    group: type
    defaults: dict[str, Any]
    helps: dict[str, str]

    def declared(self) -> list[Field]:
        """The group's fields as this config declares them (fresh copies, for ``dataclass`` to take)."""
        own = []
        for f in fields(self.group):
            f = copy.copy(f)
            if f.name in self.defaults:
                f.default = self.defaults[f.name]
            if f.name in self.helps:
                f.metadata = MappingProxyType({**f.metadata, "option": replace(option_of(f), help=self.helps[f.name])})
            own.append(f)
        return own


def include(group: type, defaults: dict[str, Any] | None = None, helps: dict[str, str] | None = None) -> Any:
    """A :func:`config_class` field standing for ``group``'s option fields, held flat in its place, with this
    config's ``defaults`` and ``helps`` (by field name) where they differ from the group's. The field's name is then
    the group built from those fields (``screen_options: ScreenOptions = include(ScreenOptions)``)."""
    unknown = {*(defaults or {}), *(helps or {})} - {f.name for f in fields(group)}
    if unknown:
        raise TypeError(f"{group.__name__} has no option {', '.join(sorted(unknown))}")
    return Include(group, defaults or {}, helps or {})


def config_class(cls: type) -> type:
    """``dataclass(frozen=True)`` for a config, each :func:`include` field replaced in place by its group's fields;
    a config's groups are built (so checked) as it is made, after its own ``__post_init__``."""
    annotations, groups = {}, {}
    declared = cls.__dict__.get("__annotations__", {})
    for name, hint in declared.items():
        marker = cls.__dict__.get(name)
        if not isinstance(marker, Include):
            annotations[name] = hint
            continue
        groups[name] = marker.group
        hints = get_type_hints(marker.group)
        for f in marker.declared():
            if f.name in annotations or f.name in declared:
                raise TypeError(f"{cls.__name__}: option {f.name} is declared twice")
            annotations[f.name] = hints[f.name]
            setattr(cls, f.name, f)
        setattr(cls, name, _group_view(marker.group))
    cls.__annotations__ = annotations
    own = getattr(cls, "__post_init__", None)
    if groups:

        def __post_init__(self) -> None:
            if own:
                own(self)
            for name in groups:
                getattr(self, name)

        cls.__post_init__ = __post_init__
    return dataclass(frozen=True)(cls)


def _group_view(group: type) -> property:
    """A config's attribute that gives its ``group`` fields as one ``group`` (held nowhere else: a config's
    ``__dict__`` is its fields, as ``Config(**vars(config))`` expects)."""
    return property(lambda config: group(**{f.name: getattr(config, f.name) for f in fields(group)}))

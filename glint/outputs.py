"""Where glint commands write, checked before any work: a run folder's own files (the only ones ``--overwrite``
removes) and how a run may start there (fresh, resumed from its ``last.pt``, or replacing an earlier run); every
command's output apart from its inputs, URLs of the local file system included; an output file that can be created.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from saqt.core.errors import ConfigError, OutputError
from saqt.core.stage_contract import check_apart

RUN_FILES = (
    "run.json",
    "last.pt",
    "best.pt",
    "metrics.jsonl",
    "metrics.csv",
    "results.json",
    "summary.json",
    "rounds.csv",
)
TENSORBOARD = "tensorboard"  # the run's TensorBoard event files (events.out.tfevents.*) are in this folder
EVENTS = "events.out.tfevents.*"


def run_files(folder: Path) -> list[Path]:
    """The files an earlier glint run wrote in ``folder`` (RUN_FILES and its TensorBoard events) that are there."""
    folder = Path(folder)
    found = [folder / name for name in RUN_FILES if (folder / name).is_file() or (folder / name).is_symlink()]
    board = folder / TENSORBOARD
    if board.is_dir() and not board.is_symlink():
        found += sorted(board.glob(EVENTS))
    return found


def run_start(folder: Path, resume: bool, overwrite: bool) -> str:
    """How a run starts in ``folder``: ``"resume"`` (from its last.pt), ``"overwrite"`` (an earlier run's files are
    removed first) or ``"fresh"`` (nothing of a run there: with ``resume`` too, which then has nothing to continue);
    ConfigError when an earlier run would be replaced without ``overwrite``, or ``resume`` finds its files but no
    last.pt."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    folder = Path(folder)
    found = run_files(folder)
    if overwrite:
        return "overwrite" if found else "fresh"
    if resume and (folder / "last.pt").is_file():
        return "resume"
    if not found:
        return "fresh"
    names = ", ".join(sorted({p.relative_to(folder).parts[0] for p in found}))
    if resume:
        raise ConfigError(
            f"--resume: {folder} holds an earlier run's files ({names}) but no last.pt to continue from "
            "(no epoch of it ended): start it again with --overwrite"
        )
    raise ConfigError(
        f"{folder} holds an earlier glint run ({names}): --resume to continue it, --overwrite to replace it, "
        "or choose another --out"
    )


def clear_run(folder: Path) -> None:
    """Remove the files an earlier run wrote in ``folder`` (``run_files``), nothing else; its TensorBoard folder too
    once that is empty."""
    for path in run_files(folder):
        path.unlink(missing_ok=True)
    with suppress(OSError):  # absent, a link, or holding files of someone else's
        (Path(folder) / TENSORBOARD).rmdir()


def local_path(location: str | Path | None) -> Path | None:
    """The local path ``location`` names: a path, or a URL of fsspec's local file system (``file://``,
    ``local://``); None for other URLs, whose files are not on this machine's file system."""
    if location is None or "://" not in str(location):
        return None if location is None else Path(location)
    text = str(location)
    try:
        cls = fsspec.get_filesystem_class(text.split("://", 1)[0])
    except (ImportError, ValueError):  # chained or unknown protocols, file systems not installed
        return None
    return Path(cls._strip_protocol(text)) if issubclass(cls, LocalFileSystem) else None


def check_outputs_apart(out: Path, inputs: dict[str, str | Path | None]) -> None:
    """ConfigError if ``out`` is, is inside, or holds one of ``inputs`` (option -> path or URL), local URLs
    resolved to their paths first (``saqt.core.stage_contract.check_apart``)."""
    check_apart(out, {option: local_path(location) for option, location in inputs.items()})


def check_creatable(path: Path, option: str = "--out") -> None:
    """OutputError unless file ``path`` can be created: not a folder, in a folder that exists and this process may
    write in. Checked before the work whose results it receives."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder: name a file")
    if not folder.is_dir():
        raise OutputError(f"{option} {path}: its folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path} cannot be created: {folder} is not writable")

"""The pretraining index: the rated rows of a SAQT-IQA set split into the training and held-out parts, in
memory-mapped columns built once per machine and shared by every DDP rank and loader worker there, and each epoch's
order, shared the same way.

An index folder holds ``names`` (the set's pristine ids), one folder of columns per part, ``train`` and ``holdout``,
with the columns of the set's row index (``saqt.label.row_index``: where each row is, its score, pristine image, cell, seed
and byte range), and ``pristine/`` for a recipe-only build's pristine images. It is split from the row index ``saqt
label`` wrote beside its shards, so that a label folder starts without reading its shards: what starting costs is the
checksum of that index (about 70 bytes a row) and the split, not the set's files. Other sets are indexed here first.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from saqt.core.errors import DatasetError, OutputError
from saqt.core.safe_files import atomic_write, create_new, open_own
from saqt.core.seeding import derive_seed
from saqt.read.api import NO_NEIGHBOURS, ColumnWriter, SaqtFiles, open_columns, write_row_index

PARTS = ("train", "holdout")
INDEX_FOLDER = ".saqt-index"  # in a run folder: one index folder per launch and machine


def session_name() -> str:
    """A name shared by the processes of one launch on this machine: under torchrun, its agent (every local rank's
    parent) and restart count; otherwise this process."""
    host = socket.gethostname().replace("/", "_")
    if "LOCAL_RANK" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ:
        return f"{host}-{os.getppid()}-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return f"{host}-{os.getpid()}-0"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed, never through a link) while the block runs."""
    fd = open_own(path, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _private_folder(parent: Path) -> Path:
    """``parent`` created if needed; OutputError if it is a link (writes must stay where they are asked)."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {parent} ({err.strerror or err})") from None
    if parent.is_symlink() or not parent.is_dir():
        raise OutputError(f"{parent} is a link or not a folder: remove it")
    return parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(parent: Path) -> None:
    """Remove the index folders of launches on this machine whose process has ended (killed runs)."""
    host = socket.gethostname().replace("/", "_")
    for entry in parent.iterdir() if parent.is_dir() else ():
        head, _, rest = entry.name.rpartition("-")[0].rpartition("-")
        if head == host and rest.isdigit() and entry.is_dir() and not entry.is_symlink() and not _alive(int(rest)):
            shutil.rmtree(entry, ignore_errors=True)


class SharedFolder:
    """The index folder of this launch on this machine, under ``parent``: the first process to ask builds it (with
    ``build(folder)``) while the others wait, and it is removed when that process ends. Without ``parent``, a
    private temporary folder of this process."""

    def __init__(self, parent: Path | None, build) -> None:
        self._owner = os.getpid()
        if parent is None:
            self.path = Path(tempfile.mkdtemp(prefix="saqt-index-"))
            build(self.path)
            self._finalizer = weakref.finalize(self, self._remove, self.path, self._owner)
            return
        parent = _private_folder(Path(parent))
        self.path, built = parent / session_name(), False
        with locked(parent / ".lock"):
            if not (self.path / "done").is_file():
                remove_stale(parent)
                staging = Path(tempfile.mkdtemp(dir=parent, prefix=".building-"))
                try:
                    build(staging)
                except BaseException:  # a set refused while indexed leaves nothing behind
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
                create_new(staging / "done").close()
                os.replace(staging, self.path)
                built = True
        self._finalizer = weakref.finalize(self, self._remove, self.path, self._owner) if built else None

    @staticmethod
    def _remove(path: Path, owner: int) -> None:
        if os.getpid() == owner:  # a forked loader worker's copy never removes its parent's folder
            shutil.rmtree(path, ignore_errors=True)

    def __getstate__(self) -> dict:  # a copy in another process never removes the folder
        return {"path": self.path, "_owner": -1, "_finalizer": None}


def shared_order(folder: Path, n: int, seed: int, epoch: int, make) -> np.ndarray:
    """Epoch ``epoch``'s order of ``n`` rows, ``make(n, seed, epoch)``, computed by the first process on this machine
    that asks and memory-mapped by all; the orders of other epochs are removed."""
    path = folder / f"order-{seed}-{epoch}.npy"
    with locked(folder / ".order.lock"):
        if not path.is_file():
            with atomic_write(path) as f:
                np.save(f, make(n, seed, epoch), allow_pickle=False)
            for other in folder.glob("order-*.npy"):
                if other != path:
                    other.unlink(missing_ok=True)
    order = np.load(path, mmap_mode="r", allow_pickle=False)
    if order.shape != (n,):
        raise OutputError(f"{path} holds an order of {order.shape} rows, expected {n}: remove it")
    return order


def write_index(
    files: SaqtFiles, seed: int, percent: float, folder: Path, holdout_refs: Sequence[str] | None = None
) -> None:
    """Split the rated rows of ``files`` into the index folder ``folder`` (see the module's docstring), from the row
    index ``saqt label`` wrote (``files.row_index``, checked when the set was opened), else from one written here,
    each file of the set read once. The held-out part is, with ``holdout_refs`` (the release's rule), the rows whose
    matched reference (first neighbour) is one of those references, compared by name stem; else a published set's
    validation split when it has one, else ``percent`` of the pristine images (at least one) chosen by a seeded
    hash."""
    source = files.row_index
    if source is None:
        source = folder / ".rows"
        write_row_index(files, source)
    columns = open_columns(source / "rows")
    names = open_columns(source / "names")["name"]
    matched = columns.pop("ref")
    if holdout_refs is not None:
        held = _matched_to(matched, open_columns(source / "refs")["stem"], holdout_refs, files)
    elif files.validation:
        held = np.array([p in files.validation for p in files.paths])[columns["file"]]
    else:
        chosen = np.zeros(len(names), bool)
        chosen[holdout_ids([n.decode() for n in names], seed, percent, positions=True)] = True
        held = chosen[columns["pristine"]]
    _split(columns, {"train": ~held, "holdout": held}, folder)
    for part in ("names", "pristine") if files.ranges is not None and files.recipe_only else ("names",):
        shutil.copytree(source / part, folder / part)  # what write_row_index writes for this set, checked
    if source == folder / ".rows":
        shutil.rmtree(source)


def _matched_to(matched: np.ndarray, refs: np.ndarray, holdout_refs: Sequence[str], files: SaqtFiles) -> np.ndarray:
    """Whether each row's matched reference is one of ``holdout_refs`` (by name stem); DatasetError if none is, or
    if some file of the set records no neighbours."""
    stems = {Path(r).stem for r in holdout_refs}
    where, named = next(iter(files.provenance.values())), ", ".join(sorted(stems))
    if not len(refs) or (matched == NO_NEIGHBOURS).any():
        raise DatasetError(
            f"{where} records no matched references (no neighbours): --protocol released holds out the images "
            f"matched to {named} as the release does, which needs each image's matched references"
        )
    held = np.isin(matched, [k for k, ref in enumerate(refs) if ref.decode() in stems])
    if not held.any():
        raise DatasetError(
            f"--protocol released holds out the images matched to {named}, as the release does, and no row of "
            f"{where} is: label with the KADID-10k bank"
        )
    return held


def holdout_ids(pristine_ids: list[str], seed: int, percent: float, positions: bool = False) -> list:
    """``percent`` of the pristine images (at least one, none of a single image), ranked by a seeded hash: their ids,
    or with ``positions`` their positions in ``pristine_ids``."""
    if len(pristine_ids) < 2:
        return []
    ranked = sorted(range(len(pristine_ids)), key=lambda k: derive_seed(seed, "holdout", pristine_ids[k]))
    chosen = ranked[: max(1, round(len(ranked) * percent / 100))]
    return chosen if positions else [pristine_ids[k] for k in chosen]


def _split(columns: dict[str, np.ndarray], masks: dict[str, np.ndarray], folder: Path, chunk: int = 1 << 22) -> None:
    """The rows of ``columns`` that each mask selects, as that part's columns under ``folder``."""
    writers = {part: ColumnWriter(folder / part) for part in masks}
    n = len(columns["score"])
    for start in range(0, n, chunk) if n else [0]:
        for part, mask in masks.items():
            keep = mask[start : start + chunk]
            writers[part].append(**{k: np.asarray(v[start : start + chunk])[keep] for k, v in columns.items()})
    for w in writers.values():
        w.close()

"""The pretraining index: each rated row of a SAQT-IQA set as a few numbers in memory-mapped columns, built once per
machine and shared by every DDP rank and loader worker there, and each epoch's order, shared the same way.

An index folder holds ``names`` (the set's pristine ids, fixed width) and one folder of columns per part, ``train``
and ``holdout``: ``file`` and ``row`` (where the row is: file of the set, row within it), ``score``, ``pristine`` (a
position in ``names``), ``dist_type``, ``level``; ``seed`` where recipes are rendered; ``offset``, ``length`` and
``sha256`` where the build recorded its images' byte ranges (``saqt.ranges``). A recipe-only build's pristine images
have their ranges in ``pristine/``. Each column is a raw little-endian array (``<name>.bin``), described in
``columns.json``. That is 22 bytes a row, 66 with byte ranges: 0.4 GB for the paper's 6.25 million rows, once per
machine, however many processes read it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from glint.data import DatasetError
from glint.saqt_sets import SaqtFiles
from saqt.errors import OutputError
from saqt.ranges import RANGE, read_ranges
from saqt.safe_files import atomic_write, create_new, open_own
from saqt.scores import require_finite
from saqt.seeding import derive_seed

PARTS = ("train", "holdout")
COLUMNS = {
    "file": "<u4",
    "row": "<u4",
    "score": "<f8",
    "pristine": "<u4",
    "dist_type": "u1",
    "level": "u1",
    "seed": "<i8",
    "offset": "<u8",
    "length": "<u8",
    "sha256": "V32",
    "held": "u1",  # while indexing under the release's rule: whether the row is held out
}
INDEX_FOLDER = ".saqt-index"  # in a run folder: one index folder per launch and machine


class ColumnWriter:
    """Columns appended chunk by chunk to raw files in ``folder``; ``close`` describes them in columns.json."""

    def __init__(self, folder: Path):
        self.folder, self.rows, self._files = folder, 0, {}
        folder.mkdir()

    def append(self, **columns: np.ndarray) -> None:
        """Append equally long arrays, one per column (the same columns every time)."""
        lengths = {len(v) for v in columns.values()}
        assert len(lengths) == 1 and (not self._files or set(columns) == set(self._files)), "ragged columns"
        for name, values in columns.items():
            if name not in self._files:
                self._files[name] = create_new(self.folder / f"{name}.bin")  # closed in close()
            self._files[name].write(np.ascontiguousarray(values, COLUMNS.get(name, values.dtype)).tobytes())
        self.rows += lengths.pop()

    def close(self, dtypes: dict[str, str] | None = None) -> None:
        """Close the files and write columns.json (``dtypes`` for columns outside COLUMNS)."""
        described = {}
        for name, f in self._files.items():
            f.close()
            described[name] = (dtypes or {}).get(name, COLUMNS.get(name))
        with create_new(self.folder / "columns.json") as f:
            f.write(json.dumps({"rows": self.rows, "columns": described}).encode())


def open_columns(folder: Path) -> dict[str, np.ndarray]:
    """The columns of ``folder``, memory-mapped read-only (pages shared with every process that maps them)."""
    meta = json.loads((folder / "columns.json").read_text())
    rows = meta["rows"]
    return {
        name: np.memmap(folder / f"{name}.bin", np.dtype(dtype), "r", shape=(rows,)) if rows else np.empty(0, dtype)
        for name, dtype in meta["columns"].items()
    }


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
    """Index the rated rows of ``files`` into ``folder`` (see the module's docstring), reading each file once: its
    columns, image ids and scores (finite numbers) checked as it is read. The held-out part is, with
    ``holdout_refs`` (the release's rule), the rows whose matched reference (first neighbour) is one of those
    references, compared by name stem; else a published set's validation split when it has one, else ``percent`` of
    the pristine images (at least one) chosen by a seeded hash."""
    if not files.paths:
        raise DatasetError(f"{next(iter(files.provenance.values()))} holds no shards")
    stems = None if holdout_refs is None else frozenset(Path(r).stem for r in holdout_refs)
    names: dict[str, int] = {}
    rows = ColumnWriter(folder / ".rows")  # every rated row, before the parts are known
    with ThreadPoolExecutor(2) as pool:  # reading the next file overlaps indexing this one
        for i, table in enumerate(pool.map(lambda i: _read_checked(files, i, stems), range(len(files.paths)))):
            rows.append(**_file_rows(files, i, table, names, stems))
    rows.close()
    _write_names(names, folder / "names")
    if files.ranges is not None and files.recipe_only:
        _write_pristine_ranges(files, names, folder / "pristine")
    columns = open_columns(folder / ".rows")
    if stems is not None:
        held = np.asarray(columns.pop("held")) == 1
        if not held.any():
            raise DatasetError(
                f"--protocol released holds out the images matched to {', '.join(sorted(stems))}, as the release "
                f"does, and no row of {next(iter(files.provenance.values()))} is: label with the KADID-10k bank"
            )
    elif files.validation:
        held = np.array([p in files.validation for p in files.paths])[columns["file"]]
    else:
        chosen = np.zeros(len(names), bool)
        chosen[[names[p] for p in holdout_ids(list(names), seed, percent)]] = True
        held = chosen[columns["pristine"]]
    _split(columns, {"train": ~held, "holdout": held}, folder)
    shutil.rmtree(folder / ".rows")


def holdout_ids(pristine_ids: list[str], seed: int, percent: float) -> list[str]:
    """``percent`` of the pristine images (at least one, none of a single image), ranked by a seeded hash."""
    if len(pristine_ids) < 2:
        return []
    ranked = sorted(pristine_ids, key=lambda p: derive_seed(seed, "holdout", p))
    return ranked[: max(1, round(len(ranked) * percent / 100))]


def _write_names(names: dict[str, int], folder: Path) -> None:
    width = max(1, *(len(p.encode()) for p in names))
    writer = ColumnWriter(folder)
    writer.append(name=np.array(list(names), f"S{width}"))
    writer.close({"name": f"S{width}"})


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


def _read_checked(files: SaqtFiles, i: int, stems: frozenset[str] | None = None) -> pa.Table:
    """The columns of file ``i`` that the index reads (``neighbours`` too under the release's rule, ``stems``);
    DatasetError where it lacks one (or its pixels, where no build holds them)."""
    shard = pq.ParquetFile(files.paths[i] if files.fs is None else files.fs.open(files.paths[i], "rb"))
    needed = _row_columns(files) + (["image"] if files.build is None and files.images is None else [])
    missing = [c for c in needed if c not in shard.schema_arrow.names]
    if missing:
        raise DatasetError(f"{files.paths[i]} has no {', '.join(missing)} column: not a saqt-iqa shard")
    if stems is not None and "neighbours" not in shard.schema_arrow.names:
        raise DatasetError(
            f"{files.paths[i]} has no neighbours column: --protocol released holds out the images matched to "
            f"{', '.join(sorted(stems))} as the release does, which needs each image's matched references"
        )
    return shard.read(columns=_row_columns(files) + (["neighbours"] if stems is not None else []))


def _file_rows(
    files: SaqtFiles, i: int, table: pa.Table, names: dict[str, int], stems: frozenset[str] | None = None
) -> dict[str, np.ndarray]:
    """File ``i``'s rated rows (``table``) as index columns, its scores checked (finite numbers); ``names`` gains
    the file's new pristine ids. Under the release's rule (``stems``), ``held``: whether the row's matched
    reference is one of ``stems``."""
    require_finite(table.column("score"), files.paths[i], table.column("image_id"))
    ids = table.column("pristine_id").combine_chunks().dictionary_encode()
    pristine = np.array([names.setdefault(p, len(names)) for p in ids.dictionary.to_pylist()], np.uint32)
    pristine = pristine[ids.indices.to_numpy()]
    if files.build is None:  # a label folder's ids are its build's, made so; other sets are checked
        _check_image_ids(table, files.paths[i])
    n = table.num_rows
    columns = {
        "file": np.full(n, i),
        "row": np.arange(n),
        "score": table.column("score").to_numpy(zero_copy_only=False),
        "pristine": pristine,
        "dist_type": table.column("dist_type").to_numpy(),
        "level": table.column("level").to_numpy(),
    }
    if files.recipe_only:
        columns["seed"] = table.column("seed").to_numpy()
    if stems is not None:
        columns["held"] = matched_to(table.column("neighbours"), stems)
    if files.ranges is not None and files.ranges.distorted is not None:  # a unit without images has no ranges file
        ranges = read_ranges(Path(files.ranges.distorted[i])) if n else np.zeros(0, RANGE)
        if len(ranges) != n:
            raise DatasetError(f"{files.paths[i]}: {n} rows, but its build's ranges file has {len(ranges)}")
        columns |= {"offset": ranges["offset"], "length": ranges["length"], "sha256": ranges["sha256"]}
    scored = table.column("score").is_valid().to_numpy(zero_copy_only=False)
    return {k: v[scored] for k, v in columns.items()}


def matched_to(neighbours: pa.ChunkedArray, stems: frozenset[str]) -> np.ndarray:
    """Whether each row's matched reference, the first of its ``neighbours``, has a name stem in ``stems``
    (``I13.png``, ``refs/I13.png`` and ``I13`` all name I13); a row without neighbours matches none."""
    first = pc.list_slice(neighbours.combine_chunks(), 0, 1)
    names = pc.replace_substring_regex(pc.list_flatten(first), r"^.*[/\\]", "")
    found = pc.is_in(pc.replace_substring_regex(names, r"\.[^.]*$", ""), pa.array(sorted(stems), pa.string()))
    held = np.zeros(len(neighbours), bool)
    held[pc.list_parent_indices(first).to_numpy()[found.fill_null(False).to_numpy(zero_copy_only=False)]] = True
    return held


def _row_columns(files: SaqtFiles) -> list[str]:
    """The columns of the set's files that the index reads."""
    return ["image_id", "pristine_id", "score", "dist_type", "level"] + (["seed"] if files.recipe_only else [])


def _check_image_ids(table: pa.Table, where: str) -> None:
    """DatasetError unless every image id is ``<pristine_id>_<type:02d>_<level:02d>``, as builds name them (the
    index keeps the parts, not the strings)."""
    two = [pc.utf8_lpad(pc.cast(table.column(c), pa.string()), 2, "0") for c in ("dist_type", "level")]
    expected = pc.binary_join_element_wise(table.column("pristine_id"), *two, "_")
    wrong = pc.invert(pc.equal(table.column("image_id"), expected))
    if pc.any(wrong).as_py():
        first = table.column("image_id").filter(wrong)[0].as_py()
        raise DatasetError(f"{where}: image id {first!r} is not <pristine_id>_<type>_<level>, as saqt build names them")


def _write_pristine_ranges(files: SaqtFiles, names: dict[str, int], folder: Path) -> None:
    """The byte ranges of each pristine image the rows name, from the build's pristine shards."""
    n = len(names)
    columns = {"file": np.zeros(n, np.uint32), **{k: np.zeros(n, RANGE[k]) for k in RANGE.names}}
    found = np.zeros(n, bool)
    shards = files.ranges.pristine_shards
    with ThreadPoolExecutor(2) as pool:
        listed = list(
            pool.map(lambda shard: pq.read_table(shard, columns=["pristine_id"]).column(0).to_pylist(), shards)
        )
    for j, (shard, ids, path) in enumerate(zip(shards, listed, files.ranges.pristine, strict=True)):
        ranges = read_ranges(Path(path))
        if len(ranges) != len(ids):
            raise DatasetError(f"{shard}: {len(ids)} rows, but its ranges file has {len(ranges)}")
        for name, record in zip(ids, ranges, strict=True):
            k = names.get(name)
            if k is not None:
                columns["file"][k] = j
                for field in RANGE.names:
                    columns[field][k] = record[field]
                found[k] = True
    if not found.all():
        missing = next(p for p, k in names.items() if not found[k])
        raise DatasetError(f"pristine image {missing} of the labels is not in the build {files.build.root}")
    writer = ColumnWriter(folder)
    writer.append(**columns)
    writer.close()

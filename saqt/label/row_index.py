"""The row index of a SAQT-IQA set: each rated row as a few numbers in raw column files, read once from the set's
Parquet files, so that training starts without reading them again.

A row index folder holds ``rows`` (one entry per rated row: ``file`` and ``row``, where the row is; ``score``;
``pristine``, a position in ``names``; ``dist_type``, ``level``; ``seed`` where recipes are rendered; ``ref``, a
position in ``refs``, the name stem of the row's matched reference, its first neighbour, where the set records
neighbours; ``offset``, ``length`` and ``sha256`` where the build recorded its images' byte ranges, ``saqt.build.byte_ranges``),
``names`` (the pristine ids, fixed width), ``refs`` (the matched references' stems) and, for a recipe-only build, the
byte ranges of its pristine images (``pristine``, by position in ``names``). Each column is a raw little-endian array
(``<name>.bin``) described in its folder's ``columns.json``: about 70 bytes a row.

``saqt label`` writes one beside its shards (``index/``, listed in label.json with each file's SHA-256), and
pretraining reads it instead of the shards; for other sets pretraining writes one when it starts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from saqt.build.byte_ranges import RANGE, read_ranges
from saqt.core.errors import DatasetError
from saqt.core.safe_files import create_new, in_the_way
from saqt.core.scores import require_finite
from saqt.core.shards import ROW_INDEX
from saqt.core.stage_contract import file_entry, remove_listed
from saqt.label.sets import SaqtFiles

PARTS = ("rows", "names", "refs", "pristine")  # the folders of a row index
COLUMNS = {
    "file": "<u4",
    "row": "<u4",
    "score": "<f8",
    "pristine": "<u4",
    "dist_type": "u1",
    "level": "u1",
    "seed": "<i8",
    "ref": "<u4",
    "offset": "<u8",
    "length": "<u8",
    "sha256": "V32",
}
NO_REF = np.iinfo(np.uint32).max  # a row without neighbours
NO_NEIGHBOURS = NO_REF - 1  # a row of a file that has no neighbours column


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


def write_row_index(files: SaqtFiles, folder: Path) -> None:
    """Index the rated rows of ``files`` into the new folder ``folder`` (see the module's docstring), reading each
    file once: its columns, image ids and scores (finite numbers) checked as it is read."""
    if not files.paths:
        raise DatasetError(f"{next(iter(files.provenance.values()))} holds no shards")
    folder.mkdir()
    names: dict[str, int] = {}
    refs: dict[str, int] = {}
    rows = ColumnWriter(folder / "rows")
    with ThreadPoolExecutor(2) as pool:  # reading the next file overlaps indexing this one
        for i, table in enumerate(pool.map(lambda i: _read_checked(files, i), range(len(files.paths)))):
            rows.append(**_file_rows(files, i, table, names, refs))
    rows.close()
    _write_names(names, folder / "names", "name")
    _write_names(refs, folder / "refs", "stem")
    if files.ranges is not None and files.recipe_only:
        _write_pristine_ranges(files, names, folder / "pristine")


def replace_row_index(out: Path, files: SaqtFiles, listed: dict[str, dict], record) -> dict[str, dict]:
    """Write the row index of ``files`` to ``out/index`` and return its manifest entries (path -> entry), replacing
    the one an earlier run wrote there (``listed``: its manifest entries; nothing else is removed). The new index
    is written in a new folder beside, ``record(entries)`` then lists it in the manifest (so that a kill leaves
    nothing there unlisted), the old one is removed and the new one renamed into place, never through a link or
    over a foreign file."""
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".index-"))
    try:
        write_row_index(files, staging / ROW_INDEX)
        written = sorted(p for p in (staging / ROW_INDEX).rglob("*") if p.is_file())
        entries = {e["path"]: e for e in (file_entry(staging, p) for p in written)}  # index/...: as it will lie
        record({**listed, **entries})  # the old files still there, the new ones about to be
        remove_listed(out, [e["path"] for e in listed.values()])
        try:
            os.rename(staging / ROW_INDEX, out / ROW_INDEX)  # onto nothing, or an empty folder
        except OSError:
            raise in_the_way(out / ROW_INDEX) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entries


def check_index_place(out: Path, listed: dict[str, dict]) -> None:
    """OutputError (one line) if ``out/index`` holds anything the manifest does not list, before any work: saqt
    replaces only what it wrote."""
    folder = out / ROW_INDEX
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise in_the_way(folder)
    own = {e["path"] for e in listed.values()}
    foreign = [p for p in (folder.rglob("*") if folder.is_dir() else ()) if not p.is_dir() or p.is_symlink()]
    foreign = [p for p in foreign if p.relative_to(out).as_posix() not in own]
    if foreign:
        raise in_the_way(foreign[0])


def _write_names(names: dict[str, int], folder: Path, column: str) -> None:
    width = max(1, *(len(p.encode()) for p in names)) if names else 1
    writer = ColumnWriter(folder)
    writer.append(**{column: np.array([p.encode() for p in names], f"S{width}")})  # UTF-8, as read back
    writer.close({column: f"S{width}"})


def _row_columns(files: SaqtFiles) -> list[str]:
    """The columns of the set's files that the index reads."""
    return ["image_id", "pristine_id", "score", "dist_type", "level"] + (["seed"] if files.recipe_only else [])


def _read_checked(files: SaqtFiles, i: int) -> pa.Table:
    """The columns of file ``i`` that the index reads (``neighbours`` too where it has them); DatasetError where it
    lacks one (or its pixels, where no build holds them)."""
    shard = pq.ParquetFile(files.paths[i] if files.fs is None else files.fs.open(files.paths[i], "rb"))
    needed = _row_columns(files) + (["image"] if files.build is None and files.images is None else [])
    missing = [c for c in needed if c not in shard.schema_arrow.names]
    if missing:
        raise DatasetError(f"{files.paths[i]} has no {', '.join(missing)} column: not a saqt-iqa shard")
    return shard.read(
        columns=_row_columns(files) + (["neighbours"] if "neighbours" in shard.schema_arrow.names else [])
    )


def _file_rows(
    files: SaqtFiles, i: int, table: pa.Table, names: dict[str, int], refs: dict[str, int]
) -> dict[str, np.ndarray]:
    """File ``i``'s rated rows (``table``) as index columns, its scores checked (finite numbers); ``names`` and
    ``refs`` gain the file's new pristine ids and matched references."""
    require_finite(table.column("score"), files.paths[i], table.column("image_id"))
    if files.build is None:  # a label folder's ids are its build's, made so; other sets are checked
        _check_image_ids(table, files.paths[i])
    n = table.num_rows
    columns = {
        "file": np.full(n, i),
        "row": np.arange(n),
        "score": table.column("score").to_numpy(zero_copy_only=False),
        "pristine": _positions(table.column("pristine_id"), names),
        "dist_type": table.column("dist_type").to_numpy(),
        "level": table.column("level").to_numpy(),
    }
    if files.recipe_only:
        columns["seed"] = table.column("seed").to_numpy()
    neighbours = table.column("neighbours") if "neighbours" in table.column_names else None
    columns["ref"] = np.full(n, NO_NEIGHBOURS, np.uint32) if neighbours is None else matched_refs(neighbours, refs)
    if files.ranges is not None and files.ranges.distorted is not None:  # a unit without images has no ranges file
        ranges = read_ranges(Path(files.ranges.distorted[i])) if n else np.zeros(0, RANGE)
        if len(ranges) != n:
            raise DatasetError(f"{files.paths[i]}: {n} rows, but its build's ranges file has {len(ranges)}")
        columns |= {"offset": ranges["offset"], "length": ranges["length"], "sha256": ranges["sha256"]}
    scored = table.column("score").is_valid().to_numpy(zero_copy_only=False)
    return {k: v[scored] for k, v in columns.items()}


def _positions(values: pa.ChunkedArray | pa.Array, table: dict[str, int]) -> np.ndarray:
    """Each value's position in ``table``, which gains the values it lacks (in order of first appearance)."""
    encoded = (values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values).dictionary_encode()
    known = np.array([table.setdefault(v, len(table)) for v in encoded.dictionary.to_pylist()], np.uint32)
    return known[encoded.indices.to_numpy()] if len(known) else np.zeros(len(values), np.uint32)


def matched_refs(neighbours: pa.ChunkedArray, refs: dict[str, int]) -> np.ndarray:
    """Each row's matched reference, the first of its ``neighbours``, as a position in ``refs`` (which gains the
    new ones) of its name stem (``I13.png``, ``refs/I13.png`` and ``I13`` all name I13); NO_REF for a row without
    neighbours."""
    first = pc.list_slice(neighbours.combine_chunks(), 0, 1)
    stems = pc.replace_substring_regex(pc.list_flatten(first), r"^.*[/\\]", "")
    stems = pc.replace_substring_regex(stems, r"\.[^.]*$", "")
    matched = np.full(len(neighbours), NO_REF, np.uint32)
    matched[pc.list_parent_indices(first).to_numpy()] = _positions(stems, refs)
    return matched


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

"""Parquet shards: schemas, an atomic writer, checksums, and the file names of the stages' manifests.

A shard is written under a unique hidden temporary name (``.part-00000.parquet.<random>.tmp``, which Parquet
readers skip; see ``saqt.core.safe_files``) and renamed into place only when complete, so a crash never leaves a
partial shard visible.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from saqt.core.safe_files import NewFile, atomic_write, writing
from saqt.core.safe_files import write_bytes_atomic as write_bytes_atomic  # re-exported: the stages import it from here

SCHEMA_VERSION = "saqt-build/1"

PRISTINE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("pristine_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_key", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("orig_width", pa.int32(), nullable=False),
        pa.field("orig_height", pa.int32(), nullable=False),
        pa.field("jpeg_quality", pa.int16()),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
    ],
    metadata={"saqt.schema": SCHEMA_VERSION, "saqt.table": "pristine", "saqt.image_format": "png"},
)

DISTORTED_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("pristine_id", pa.string(), nullable=False),
        pa.field("source_key", pa.string(), nullable=False),
        pa.field("dist_type", pa.int8(), nullable=False),
        pa.field("dist_name", pa.string(), nullable=False),
        pa.field("level", pa.int8(), nullable=False),
        pa.field("param", pa.float64(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("random_params", pa.string()),  # JSON of replayable draws (types 3, 5, 20, 23), else null
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("image", pa.binary()),  # null in a recipe-only build: render it from the recipe instead
    ],
    metadata={"saqt.schema": SCHEMA_VERSION, "saqt.table": "distorted", "saqt.image_format": "png"},
)


BUILD_MANIFEST = "build.json"
BUILD_ERRORS = "errors.jsonl"
LABEL_MANIFEST = "label.json"
ROW_INDEX = "index"  # a label folder's row index (saqt.label.row_index), written once every unit is done
BANK_MANIFEST = "bank.json"
PROVENANCE_FIELDS = [
    pa.field("score", pa.float64()),  # null where no neighbour has a score for this cell
    pa.field("score_scale", pa.string(), nullable=False),
    pa.field("bank", pa.string(), nullable=False),
    pa.field("bank_proxy", pa.bool_(), nullable=False),
    pa.field("encoder", pa.string(), nullable=False),
    pa.field("encoder_weights", pa.string(), nullable=False),
    pa.field("rule", pa.string(), nullable=False),
    pa.field("k", pa.int16(), nullable=False),
    pa.field("temperature", pa.float64()),
    pa.field("neighbours", pa.list_(pa.string()), nullable=False),
    pa.field("similarities", pa.list_(pa.float32()), nullable=False),
    pa.field("weights", pa.list_(pa.float32()), nullable=False),
]
LABEL_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("pristine_id", pa.string(), nullable=False),
        pa.field("dist_type", pa.int8(), nullable=False),
        pa.field("level", pa.int8(), nullable=False),
        *PROVENANCE_FIELDS,
    ],
    metadata={"saqt.schema": "saqt-label/1", "saqt.table": "labels"},
)
# The labelled set: each distorted image's recipe and its label. Its pixels are not copied: row r of row group g
# of a unit's saqt-iqa shard is row r of row group g of the build's distorted shard of the same unit.
SAQT_IQA_SCHEMA = pa.schema(
    [f for f in DISTORTED_SCHEMA if f.name != "image"] + PROVENANCE_FIELDS,
    metadata={"saqt.schema": "saqt-iqa/2", "saqt.table": "saqt-iqa", "saqt.images": "build"},
)


# Where an image's encoded bytes are: a file path, or (Parquet shard, row group, column) of a build shard.
Locator = str | tuple[str, int, str]


def read_locator(locator: Locator) -> bytes:
    """The encoded bytes at ``locator``."""
    if isinstance(locator, str):
        return Path(locator).read_bytes()
    return _read_cell(*locator)


_OPEN_SHARDS: OrderedDict[str, pq.ParquetFile] = OrderedDict()


def _read_cell(path: str, row_group: int, column: str) -> bytes:
    shard = _OPEN_SHARDS.pop(path, None) or pq.ParquetFile(path)
    _OPEN_SHARDS[path] = shard
    while len(_OPEN_SHARDS) > 8:
        _OPEN_SHARDS.popitem(last=False)
    return shard.read_row_group(row_group, columns=[column]).column(0)[0].as_py()


def sha256_stream(f: BinaryIO) -> str:
    """Hex SHA-256 of what is left to read in a binary file object (local or fsspec)."""
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return sha256_stream(f)


def write_json_atomic(path: Path, data: dict | list, lines: bool = False) -> None:
    """Write JSON (or JSON lines) to ``path`` through ``saqt.core.safe_files.atomic_write``."""
    with atomic_write(path, text=True) as f:
        if lines:
            f.writelines(json.dumps(row, sort_keys=True) + "\n" for row in data)
        else:
            json.dump(data, f, indent=2, sort_keys=True)


class ShardWriter:
    """One Parquet shard, written row group by row group under a temporary name; ``commit`` publishes it. With
    ``root``, the folders between ``root`` and ``path`` are created, none of them a link."""

    def __init__(self, path: Path, schema: pa.Schema, root: Path | None = None):
        self.path = path
        self.schema = schema
        self.rows = 0
        leaves = _leaf_columns(schema)
        images = {"image", "image.bytes"}  # encoded images: already compressed, and unique
        compression = {c: ("none" if c in images else "zstd") for c in leaves}
        if root is None:
            with writing(path):
                path.parent.mkdir(parents=True, exist_ok=True)
        self._file = NewFile(path, root)
        try:
            with writing(path):
                self._writer = pq.ParquetWriter(
                    self._file.file,
                    schema,
                    compression=compression,
                    use_dictionary=[c for c in leaves if c not in images],
                )
        except BaseException:
            self._file.discard()
            raise

    def write(self, rows: list[dict]) -> None:
        """Append rows (dicts keyed by the schema's field names) as one row group."""
        if rows:
            self.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def write_table(self, table: pa.Table) -> None:
        """Append a table of this schema as one row group."""
        with writing(self.path):
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.rows += table.num_rows

    def commit(self, root: Path) -> dict:
        """Close, checksum and rename into place; returns the manifest entry (path relative to root)."""
        f = self._file.file
        with writing(self.path):
            self._writer.close()
            f.flush()
            f.seek(0)
            entry = {
                "path": self.path.relative_to(root).as_posix(),
                "rows": self.rows,
                "sha256": sha256_stream(f),
                "bytes": f.tell(),
            }
        self._file.commit()
        return entry

    def abort(self) -> None:
        """Discard the temporary file."""
        with suppress(OSError):  # a full disk fails the close too; the file goes either way
            self._writer.close()
        self._file.discard()


@contextmanager
def aborting(*writers) -> Iterator[None]:
    """Abort every writer (anything with ``abort()``, which removes its temporary files) if the block fails."""
    try:
        yield
    except BaseException:
        for w in writers:
            w.abort()
        raise


def _leaf_columns(schema: pa.Schema) -> list[str]:
    """Parquet's dotted paths of the leaf columns (``image.bytes``, ``neighbours.list.element``)."""

    def leaves(name: str, kind: pa.DataType) -> list[str]:
        if pa.types.is_struct(kind):
            return [
                p for i in range(kind.num_fields) for p in leaves(f"{name}.{kind.field(i).name}", kind.field(i).type)
            ]
        if pa.types.is_list(kind):
            return leaves(f"{name}.list.element", kind.value_type)
        return [name]

    return [p for f in schema for p in leaves(f.name, f.type)]

"""Where each image's bytes lie inside a build shard, and reading one image by its byte range.

A build writes, beside each shard that holds images, a *ranges* file (``ranges/<table>/part-00000.npy``): one record
per shard row, in row order, with the byte offset and length of the row's encoded image inside the shard and the
SHA-256 of those bytes. The shard's image column is stored uncompressed and PLAIN-encoded, so each image is one
contiguous run of bytes in the file. A reader then reads the one image it needs (``os.pread``), not the 125 of its
row group, and checks it against the recorded digest before decoding: a changed byte is refused, naming the row,
without hashing the whole shard first. The ranges files are small (48 bytes a row) and listed, with their
checksums, in the build's manifest.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from saqt.core.errors import SaqtError
from saqt.core.shards import write_bytes_atomic

RANGE = np.dtype([("offset", "<u8"), ("length", "<u8"), ("sha256", "V32")])
RANGES = "ranges"  # the folder of the ranges files under a build's root
_PNG = b"\x89PNG\r\n\x1a\n"
OPEN_FILES = 64  # shard files one reader keeps open


class RangeError(SaqtError, ValueError):
    """Image bytes that differ from their recorded range or digest, or a shard whose images cannot be located."""


def ranges_path(table: str, shard: Path) -> str:
    """The ranges file of ``shard`` (a shard of ``table``), relative to the build's root."""
    return f"{RANGES}/{table}/{shard.stem}.npy"


def locate_images(shard: Path, column: str, lengths: list[int]) -> np.ndarray:
    """The ranges (offset, length, SHA-256) of the non-null values of the binary ``column`` of a finished ``shard``,
    whose encoded images have ``lengths``, in row order. Each value is found as the 4-byte length that PLAIN
    encoding puts before it followed by the PNG signature, searched from the end of the previous one."""
    meta = pq.read_metadata(shard)
    leaf = meta.schema.to_arrow_schema().get_field_index(column)
    found, k = np.zeros(len(lengths), RANGE), 0
    with open(shard, "rb") as f:
        for g in range(meta.num_row_groups):
            chunk_meta = meta.row_group(g).column(leaf)
            if chunk_meta.compression != "UNCOMPRESSED" or chunk_meta.has_dictionary_page:
                raise RangeError(
                    f"{shard}: column {column} is compressed or dictionary-encoded; its images cannot be located"
                )
            start = chunk_meta.data_page_offset
            f.seek(start)
            chunk, cursor = f.read(chunk_meta.total_compressed_size), 0
            while k < len(lengths) and cursor < len(chunk):
                at = chunk.find(struct.pack("<I", lengths[k]) + _PNG, cursor)
                if at < 0:
                    break
                value = chunk[at + 4 : at + 4 + lengths[k]]
                found[k] = (start + at + 4, lengths[k], hashlib.sha256(value).digest())
                cursor, k = at + 4 + lengths[k], k + 1
    if k != len(lengths):
        raise RangeError(f"{shard}: found {k} of its {len(lengths)} images in column {column}")
    return found


def write_ranges(root: Path, table: str, shard: Path, lengths: list[int]) -> dict:
    """Locate the images of ``shard`` and write its ranges file under ``root``; returns the manifest entry."""
    ranges = locate_images(shard, "image", lengths)
    path = root / ranges_path(table, shard)
    buffer = io.BytesIO()
    np.save(buffer, ranges, allow_pickle=False)
    data = buffer.getvalue()
    write_bytes_atomic(path, data, root)
    return {
        "path": path.relative_to(root).as_posix(),
        "rows": len(ranges),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }


def read_ranges(path: Path) -> np.ndarray:
    """The records of a ranges file; RangeError if it is not one."""
    try:
        ranges = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise RangeError(f"{path} is not a ranges file ({err})") from None
    if ranges.dtype != RANGE or ranges.ndim != 1:
        raise RangeError(f"{path} is not a ranges file (dtype {ranges.dtype}, shape {ranges.shape})")
    return ranges


class RangeReader:
    """Reads images by byte range from a list of shard files, each checked against its recorded SHA-256; a few files
    stay open per process (none travel to another process)."""

    def __init__(self, paths: list[str]):
        self.paths = paths
        self._open: OrderedDict[int, int] = OrderedDict()

    def read(self, file: int, offset: int, length: int, sha256: bytes) -> bytes:
        """The ``length`` bytes at ``offset`` of file ``file``; RangeError if they differ from ``sha256``."""
        data = os.pread(self._fd(file), length, offset)
        if len(data) != length or hashlib.sha256(data).digest() != sha256:
            raise RangeError(
                f"its bytes in {self.paths[file]} (offset {offset}, {length} bytes) differ from the build's record; "
                "the build changed since it was written (`saqt verify` checks it whole)"
            )
        return data

    def _fd(self, file: int) -> int:
        fd = self._open.pop(file, None)
        if fd is None:
            try:
                fd = os.open(self.paths[file], os.O_RDONLY)
            except OSError as err:
                raise RangeError(f"cannot read {self.paths[file]} ({err.strerror or err})") from None
            while len(self._open) >= OPEN_FILES:
                os.close(self._open.popitem(last=False)[1])
        self._open[file] = fd
        return fd

    def close(self) -> None:
        """Close the open files."""
        while self._open:
            os.close(self._open.popitem()[1])

    def __getstate__(self) -> dict:
        return {"paths": self.paths, "_open": OrderedDict()}

    def __del__(self) -> None:
        self.close()

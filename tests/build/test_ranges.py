"""Byte ranges of stored images: located in the shard exactly, read back one at a time, and refused when changed."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saqt.build.byte_ranges import RangeError, RangeReader, locate_images, read_ranges, write_ranges
from saqt.core.images import encode_png
from saqt.core.shards import DISTORTED_SCHEMA, ShardWriter


def _pngs(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode_png(rng.integers(0, 256, (16 + i, 24, 3), dtype=np.uint8)) for i in range(n)]


def _shard(path, groups: list[list[bytes]]):
    writer = ShardWriter(path, DISTORTED_SCHEMA)
    for g, images in enumerate(groups):
        rows = [
            {
                "image_id": f"p{g}_{i:02d}_01",
                "pristine_id": f"p{g}",
                "source_key": "k",
                "dist_type": 1,
                "dist_name": "blur",
                "level": 1,
                "param": 0.0,
                "seed": i,
                "random_params": None,
                "width": 24,
                "height": 16,
                "image": image,
            }
            for i, image in enumerate(images)
        ]
        writer.write(rows)
    writer.commit(path.parent)


def test_every_image_is_found_at_its_own_bytes_across_row_groups_and_repeats(tmp_path):
    """Several row groups, and the same PNG stored twice in a row: each row gets its own range, in row order."""
    images = _pngs(5)
    groups = [images[:3], [images[3], images[3], images[4]]]
    _shard(tmp_path / "part-00000.parquet", groups)
    flat = [png for group in groups for png in group]
    entry = write_ranges(tmp_path, "distorted", tmp_path / "part-00000.parquet", [len(p) for p in flat])
    ranges = read_ranges(tmp_path / entry["path"])
    assert entry["path"] == "ranges/distorted/part-00000.npy" and entry["rows"] == 6
    assert entry["sha256"] == hashlib.sha256((tmp_path / entry["path"]).read_bytes()).hexdigest()
    data = (tmp_path / "part-00000.parquet").read_bytes()
    offsets = [int(r["offset"]) for r in ranges]
    assert offsets == sorted(offsets) and len(set(offsets)) == 6  # the repeated PNG: two places, in order
    for record, png in zip(ranges, flat, strict=True):
        assert data[record["offset"] : record["offset"] + record["length"]] == png
        assert bytes(record["sha256"]) == hashlib.sha256(png).digest()
    reader = RangeReader([str(tmp_path / "part-00000.parquet")])
    assert reader.read(0, int(ranges[4]["offset"]), int(ranges[4]["length"]), bytes(ranges[4]["sha256"])) == flat[4]


def test_a_changed_byte_or_a_wrong_length_is_refused(tmp_path):
    images = _pngs(2)
    path = tmp_path / "part-00000.parquet"
    _shard(path, [images])
    ranges = locate_images(path, "image", [len(p) for p in images])
    data = bytearray(path.read_bytes())
    data[int(ranges[1]["offset"]) + 10] ^= 0x40
    path.write_bytes(bytes(data))
    reader = RangeReader([str(path)])
    first = (0, int(ranges[0]["offset"]), int(ranges[0]["length"]), bytes(ranges[0]["sha256"]))
    assert reader.read(*first) == images[0]
    with pytest.raises(RangeError, match=f"its bytes in {path} \\(offset {int(ranges[1]['offset'])}, "):
        reader.read(0, int(ranges[1]["offset"]), int(ranges[1]["length"]), bytes(ranges[1]["sha256"]))
    with pytest.raises(RangeError, match="differ from the build's record"):
        reader.read(0, path.stat().st_size - 5, 100, bytes(ranges[0]["sha256"]))  # past the end: short read


def test_images_that_cannot_be_located_are_refused_in_one_line(tmp_path):
    images = _pngs(2)
    path = tmp_path / "part-00000.parquet"
    _shard(path, [images])
    with pytest.raises(RangeError, match="found 1 of its 2 images"):
        locate_images(path, "image", [len(images[0]), len(images[1]) + 1])
    compressed = tmp_path / "zstd.parquet"
    pq.write_table(pq.read_table(path), compressed, compression="zstd", use_dictionary=False)
    with pytest.raises(RangeError, match="compressed or dictionary-encoded"):
        locate_images(compressed, "image", [len(p) for p in images])
    not_ranges = tmp_path / "x.npy"
    np.save(not_ranges, np.zeros(3))
    with pytest.raises(RangeError, match="is not a ranges file"):
        read_ranges(not_ranges)
    pickled = tmp_path / "p.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RangeError, match="is not a ranges file"):
        read_ranges(pickled)
    assert pa.types.is_binary(DISTORTED_SCHEMA.field("image").type)

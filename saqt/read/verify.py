"""``saqt verify``: check a published set (or a build or label folder) and name the first problem found.

A published set is checked in this order: its card and SHA256SUMS are readable; the card is listed, every listed
file is present and nothing unlisted sits in ``data/``; every checksum matches; each split's shards are numbered completely;
every shard opens, has the published schema and this set's id, and scores that are finite numbers; row counts
match the card; and a seeded sample of images decodes to the size its row states.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from saqt.build.byte_ranges import read_ranges
from saqt.core.errors import SaqtError
from saqt.core.images import ImageDecodeError, decode_image
from saqt.core.scores import ScoreError, shard_scores
from saqt.core.shards import sha256_stream
from saqt.core.stage_contract import CARD, SUMS, StageError, identify, open_stage, read_card, read_sums
from saqt.label.reference_bank import BankError, read_scores
from saqt.label.sets import SCHEMA_VERSION, filesystem, publish_schema

SHARD_NAME = re.compile(r"data/(?P<split>[a-z]+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.parquet")


class VerifyError(SaqtError):
    """The first problem found, as one line."""


@dataclass
class Verified:
    """What was checked."""

    kind: str
    files: int  # the files checked against the digests ``listed_in`` records (that file itself not counted)
    rows: int
    decoded: int = 0
    listed_in: str = SUMS


def verify_published(url: str, sample: int = 64, seed: int = 0) -> Verified:
    """Check the published set at ``url`` (a folder or an fsspec URL); raise VerifyError at the first problem."""
    fs, root = filesystem(url, "verify")
    for name in (CARD, SUMS):
        if not fs.isfile(f"{root}/{name}"):
            raise VerifyError(f"{name} is missing: not a published saqt set, or an interrupted publish")
    try:
        sums = read_sums(fs.cat_file(f"{root}/{SUMS}").decode())
    except (StageError, UnicodeDecodeError) as err:
        raise VerifyError(f"{SUMS} is malformed ({err})" if isinstance(err, UnicodeDecodeError) else str(err)) from None
    if CARD not in sums:  # a publish always lists it: else the card could be edited at will
        raise VerifyError(f"{CARD} is not listed in {SUMS}")
    present = {p[len(root) + 1 :] for p in fs.find(f"{root}/data")}
    for path in sorted(sums):
        if not fs.isfile(f"{root}/{path}"):
            raise VerifyError(f"{path} is missing")
    for path in sorted(present - set(sums)):
        raise VerifyError(f"{path} is not listed in {SUMS}")
    for path, expected in sorted(sums.items()):
        with fs.open(f"{root}/{path}", "rb") as f:
            actual = sha256_stream(f)
        if actual != expected:
            raise VerifyError(f"{path}: SHA-256 mismatch (listed {expected[:12]}..., file {actual[:12]}...)")
    try:
        meta, _ = read_card(fs.cat_file(f"{root}/{CARD}").decode())
        dataset_id, splits = meta["saqt"]["dataset_id"], meta["dataset_info"]["splits"]
        card_rows = {s["name"]: s["num_examples"] for s in splits}
    except (SaqtError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise VerifyError(f"{CARD}: not a saqt dataset card ({type(err).__name__}: {err})") from None
    if meta["saqt"].get("schema") != SCHEMA_VERSION:
        raise VerifyError(f"{CARD}: schema {meta['saqt'].get('schema')!r}, this toolkit reads {SCHEMA_VERSION!r}")
    shards = _shards_by_split(sorted(p for p in sums if p.startswith("data/")))
    expected_schema = publish_schema(dataset_id)
    counts = {
        path: _check_shard(fs, f"{root}/{path}", path, expected_schema, dataset_id)
        for split in sorted(shards)
        for path in shards[split]
    }
    rows = {split: sum(counts[p] for p in paths) for split, paths in shards.items()}
    if rows != card_rows:
        raise VerifyError(f"row counts {rows} differ from the card's {card_rows}")
    decoded = _decode_sample(fs, root, counts, sample, seed, meta["saqt"].get("recipe_only", False))
    return Verified("published", len(sums), sum(rows.values()), decoded)


def _shards_by_split(paths: list[str]) -> dict[str, list[str]]:
    """Shard paths per split, after checking each split is numbered 0..n-1 of n."""
    found: dict[str, dict[int, tuple[int, str]]] = {}
    for path in paths:
        match = SHARD_NAME.fullmatch(path)
        if not match:
            raise VerifyError(f"{path}: not a shard name like data/train-00000-of-00004.parquet")
        found.setdefault(match["split"], {})[int(match["i"])] = (int(match["n"]), path)
    shards = {}
    for split, entries in found.items():
        totals = {n for n, _ in entries.values()}
        if len(totals) != 1:
            raise VerifyError(f"split {split}: shards disagree on their count ({sorted(totals)})")
        total = totals.pop()
        for i in range(total):
            if i not in entries:
                raise VerifyError(f"data/{split}-{i:05d}-of-{total:05d}.parquet is missing")
        shards[split] = [entries[i][1] for i in range(total)]
    return shards


def _check_shard(fs: fsspec.AbstractFileSystem, full: str, path: str, schema, dataset_id: str) -> int:
    """The shard's row count, after checking its schema, its set's id and that every score is a finite number."""
    with fs.open(full, "rb") as f:
        try:
            shard = pq.ParquetFile(f)
            found = shard.metadata.schema.to_arrow_schema()
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise VerifyError(f"{path}: not a readable Parquet file ({err})") from None
        if not found.remove_metadata().equals(schema.remove_metadata()):
            raise VerifyError(f"{path}: schema differs from {SCHEMA_VERSION}")
        other = (found.metadata or {}).get(b"saqt.dataset_id", b"").decode()
        if other != dataset_id:
            raise VerifyError(f"{path}: belongs to another dataset (id {other or 'none'}, this card's is {dataset_id})")
        _finite(shard, path)
        return shard.metadata.num_rows


def _finite(shard: pq.ParquetFile | Path, where: str) -> int:
    """How many of the shard's labels have no score, after checking every score is a finite number."""
    try:
        return shard_scores(shard, where).null_count
    except ScoreError as err:
        raise VerifyError(str(err)) from None


def _decode_sample(fs, root: str, counts: dict[str, int], sample: int, seed: int, recipe_only: bool) -> int:
    """Decode ``sample`` seeded random images of the shards (path -> rows, in order); each must match its row's
    size."""
    paths = list(counts)
    total = sum(counts.values())
    if recipe_only or not total or sample <= 0:
        return 0
    picks = np.sort(np.random.default_rng(seed).choice(total, min(sample, total), replace=False))
    starts = np.cumsum([0, *counts.values()])
    decoded = 0
    for k, path in enumerate(paths):
        local = picks[(picks >= starts[k]) & (picks < starts[k + 1])] - starts[k]
        if not len(local):
            continue
        with fs.open(f"{root}/{path}", "rb") as f:
            for row in _read_rows(pq.ParquetFile(f), local, ["image_id", "width", "height", "image"]):
                _check_image(path, row)
                decoded += 1
    return decoded


def _check_image(path: str, row: dict) -> None:
    """The row's image must decode to the size the row states."""
    if row["image"] is None:
        raise VerifyError(f"{path}: {row['image_id']} has no image")
    try:
        pixels = decode_image(row["image"]["bytes"])
    except ImageDecodeError as err:
        raise VerifyError(f"{path}: {row['image_id']} does not decode ({err})") from None
    if pixels.shape[:2] != (row["height"], row["width"]):
        raise VerifyError(
            f"{path}: {row['image_id']} is {pixels.shape[1]}x{pixels.shape[0]}, "
            f"its row says {row['width']}x{row['height']}"
        )


def _read_rows(shard: pq.ParquetFile, indices: np.ndarray, columns: list[str]) -> Iterator[dict]:
    """Rows ``indices`` (sorted) of a shard, reading one row group at a time and only those that hold them."""
    meta = shard.metadata
    starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
    for g in np.unique(np.searchsorted(starts, indices, side="right") - 1):
        group = shard.read_row_group(int(g), columns=columns)
        wanted = indices[(indices >= starts[g]) & (indices < starts[g + 1])] - starts[g]
        yield from group.take(pa.array(wanted)).to_pylist()


def verify_stage(folder: Path) -> Verified:
    """Check a build, label or bank folder against its manifest: every file present and unchanged, every shard
    with its row count, every label scored and every score (a label's, a bank's) a finite number, the stage
    complete."""
    try:
        stage = open_stage(folder, checksums=True)
    except StageError as err:
        raise VerifyError(str(err)) from None
    entries = stage.entries()
    shards = [e for e in entries if "rows" in e and e["path"].endswith(".parquet")]
    for entry in entries:
        if "rows" in entry and _rows(folder / entry["path"]) != entry["rows"]:
            raise VerifyError(f"{entry['path']}: row count differs from {stage.name}'s")
    if stage.kind == "label":
        unscored = sum(_finite(p, p.relative_to(folder).as_posix()) for p in stage.paths("labels"))
        for path in stage.paths("saqt-iqa"):
            _finite(path, path.relative_to(folder).as_posix())
        if unscored:
            raise VerifyError(f"{folder}: {unscored} labels have no score")
    if stage.kind == "bank":
        try:
            read_scores(folder, str(stage.manifest.get("kind", "synth")))
        except BankError as err:
            raise VerifyError(str(err)) from None
    if not stage.manifest["complete"]:
        raise VerifyError(f"{stage.name}: the {stage.kind} is unfinished; rerun its command to complete it")
    return Verified(stage.kind, len(entries), sum(e["rows"] for e in shards), listed_in=stage.name)


def _rows(path: Path) -> int:
    """Rows of a stage's Parquet shard or of a build's ranges file (one record per image of its shard)."""
    return len(read_ranges(path)) if path.suffix == ".npy" else pq.ParquetFile(path).metadata.num_rows


def verify(target: str, sample: int = 64, seed: int = 0) -> Verified:
    """Verify a published set (a folder or an fsspec URL), or a local build, label or bank folder."""
    if "://" in target:
        return verify_published(target, sample, seed)
    try:
        kind = identify(Path(target))
    except StageError as err:
        raise VerifyError(f"{err}: nothing to verify") from None
    return verify_published(target, sample, seed) if kind == "published" else verify_stage(Path(target))

"""SAQT-IQA sets as the later stages read them: a label folder checked and opened with the build that holds its
pixels (``label_files``, ``open_labels``), the byte ranges that build recorded, a published set's row schema and
where it lives, and ``SaqtFiles``, the Parquet files of one set as pretraining reads them. ``saqt.read.api`` opens a
set of any form (a label folder, a published set's folder, URL or Hub id, a folder of shards) through these.

What is checked on opening a label folder is proportional to the metadata, not to the pixels, where the folder
allows it: its manifests and label shards are checked whole, its build's files by size, and the build's byte-range
records (``saqt.build.byte_ranges``) by SHA-256, so that each image is checked against its own recorded digest when it is read.
A build written before byte ranges were recorded is checked whole (every file's SHA-256) before training starts.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from saqt.build.build_reader import BuildReader
from saqt.core.errors import DatasetError, PublishError
from saqt.core.scores import shard_scores
from saqt.core.shards import DISTORTED_SCHEMA, PROVENANCE_FIELDS, ROW_INDEX
from saqt.core.stage_contract import Stage, StageError, open_stage

OPEN_FILES = 8  # Parquet files a process keeps open
SCHEMA_VERSION = "saqt-iqa-publish/2"  # a published set's rows (``publish_schema``)
IMAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])  # the Hub's Image feature
# Label columns that hold one value for a whole labelling run: the card records them once (``saqt.run_constants``).
RUN_CONSTANTS = ("score_scale", "bank", "bank_proxy", "encoder", "encoder_weights", "rule", "k", "temperature")
# Per-row columns taken from the build's pristine record of the row's source image.
PRISTINE_FIELDS = [
    pa.field("source_class", pa.string()),
    pa.field("orig_width", pa.int32(), nullable=False),
    pa.field("orig_height", pa.int32(), nullable=False),
    pa.field("jpeg_quality", pa.int16()),
    pa.field("upscale_factor", pa.float32(), nullable=False),
]


@dataclass(frozen=True)
class BuildRanges:
    """Where a label folder's build recorded its images' byte ranges, checked against build.json: the ranges file
    of each label file's distorted shard (None for a recipe-only build), and each pristine shard with its own."""

    distorted: list[str] | None
    pristine_shards: list[str]
    pristine: list[str]


@dataclass
class SaqtFiles:
    """The Parquet files of one SAQT-IQA set, where they live, and what holds or renders their pixels."""

    paths: list[str]
    fs: fsspec.AbstractFileSystem | None  # None: local files
    build: BuildReader | None
    provenance: dict
    validation: frozenset[str] = frozenset()  # paths of a published set's validation split
    images: list[str] | None = None  # per file, the build shard whose rows hold its pixels (label folders)
    ranges: BuildRanges | None = None  # the build's byte ranges (label folders of builds that recorded them)
    row_index: Path | None = None  # the row index ``saqt label`` wrote, checked (``saqt.label.row_index``)
    pristine_cache: int = 64  # decoded pristine images a process keeps for rendering recipes
    _open: OrderedDict = field(default_factory=OrderedDict, repr=False)

    @property
    def recipe_only(self) -> bool:
        """Whether the rows are recipes that the build's pristine images render."""
        return self.build is not None and bool(self.build.manifest["config"]["recipe_only"])

    def parquet(self, i: int | str) -> pq.ParquetFile:
        """File ``i`` (or the local file at path ``i``), opened once per process (the last few stay open)."""
        if i not in self._open:
            if self.fs is None or isinstance(i, str):  # memory-mapped: a row group is read without copying its pages
                self._open[i] = pq.ParquetFile(i if isinstance(i, str) else self.paths[i], memory_map=True)
            else:
                self._open[i] = pq.ParquetFile(self.fs.open(self.paths[i], "rb"))
            while len(self._open) > OPEN_FILES:
                self._open.popitem(last=False)
        self._open.move_to_end(i)
        return self._open[i]

    def __getstate__(self) -> dict:  # open files stay in the process that opened them
        return {**self.__dict__, "_open": OrderedDict()}


def label_files(root: Path, pristine_cache: int) -> SaqtFiles:
    """A label folder and the build that holds its pixels and renders its recipes: still the build that was
    labelled, every file present with its size, and its byte-range records checked (or, for a build without them,
    every file's SHA-256). A label folder with a row index (``saqt.label.row_index``) has that index checked by SHA-256
    and its shards by size, as training reads the index, not the shards; one without has its shards checked whole."""
    stage = finished_labels(root, checksums=False)  # finished, every file there at its size
    label = stage.manifest
    indexed = bool(row_index_entries(label))
    if not indexed:  # a label folder of 0.3.0: its shards are read, so checked as `saqt publish` checks them
        check_labels(stage)
    build_root = Path(label["inputs"]["build"]["root"])
    if not build_root.is_dir():
        raise DatasetError(f"{root}: its build {build_root}, which holds the images, is not here")
    build = BuildReader(build_root, checksums=False, cache=pristine_cache)
    if build.stage.digest() != label["inputs"]["build"]["digest"]:
        raise DatasetError(f"the build {build_root} changed since {root} was labelled; rerun `saqt label`")
    units = stage.units()
    ranges = build_ranges(build, units, checksums=not indexed)  # the index holds the ranges it read when written
    if ranges is None:
        build.stage.verify()  # a build without byte ranges: every file's SHA-256, as `saqt publish` checks it
    for entry in row_index_entries(label).values():
        problem = stage.problem(entry)
        if problem:
            raise StageError(f"{root}: {problem}; the label output changed since it was written (rerun `saqt label`)")
    provenance = {
        "labels": str(root),
        "bank": label["inputs"]["bank"],
        "encoder": label.get("encoder"),
        "rule": label.get("rule"),
        "score_scale": label.get("score_scale"),
    }
    return SaqtFiles(
        [str(stage.path(u, "saqt-iqa")) for u in units],
        None,
        build,
        provenance,
        images=[str(build.stage.path(u, "distorted")) for u in units],
        ranges=ranges,
        pristine_cache=pristine_cache,
        row_index=root / ROW_INDEX if indexed else None,
    )


def row_index_entries(manifest: dict) -> dict[str, dict]:
    """The files of the row index a label manifest lists (none before 0.4.0)."""
    return {k: e for k, e in manifest["files"].items() if k.startswith(f"{ROW_INDEX}/")}


def build_ranges(build: BuildReader, units: list[str], checksums: bool = True) -> BuildRanges | None:
    """The byte ranges ``build`` recorded, with ``checksums`` each ranges file checked against build.json's SHA-256
    (StageError otherwise; opening the build checked their sizes), with the distorted ones of ``units`` in that
    order; None when some unit holds images but no ranges (a build of an earlier version)."""
    recipe_only = bool(build.manifest["config"]["recipe_only"])
    tables = ("pristine",) if recipe_only else ("pristine", "distorted")
    files = {u: build.manifest["done"][u]["files"] for u in build.stage.units()}
    if any(f[t]["rows"] and f"{t}-ranges" not in f for f in files.values() for t in tables):
        return None
    for entry in (f[f"{t}-ranges"] for f in files.values() for t in tables if f"{t}-ranges" in f and checksums):
        problem = build.stage.problem(entry)
        if problem:
            raise StageError(
                f"{build.root}: {problem}; the build output changed since it was written "
                "(rerun its `saqt build` command to repair it)"
            )
    with_pristine = [u for u, f in files.items() if "pristine-ranges" in f]

    def located(unit: str, table: str) -> str:  # "" for a unit without images
        entry = files[unit].get(f"{table}-ranges")
        return str(build.root / entry["path"]) if entry else ""

    return BuildRanges(
        None if recipe_only else [located(u, "distorted") for u in units],
        [str(build.stage.path(u, "pristine")) for u in with_pristine],
        [located(u, "pristine") for u in with_pristine],
    )


def publish_schema(dataset_id: str) -> pa.Schema:
    """The published rows: the build's distorted columns and the labels' per-row provenance, the source image's
    record after ``source_key``, ``image`` as the Hub's Image struct; tagged with the set's id."""
    fields = []
    for f in [*DISTORTED_SCHEMA, *PROVENANCE_FIELDS]:
        if f.name not in RUN_CONSTANTS:
            fields.append(pa.field("image", IMAGE) if f.name == "image" else f)
        if f.name == "source_key":
            fields += PRISTINE_FIELDS
    hub = {"info": {"features": {"image": {"_type": "Image"}}}}  # the rest is inferred from the Arrow types
    return pa.schema(
        fields,
        metadata={
            "saqt.schema": SCHEMA_VERSION,
            "saqt.dataset_id": dataset_id,
            "saqt.image_format": "png",
            "huggingface": json.dumps(hub),
        },
    )


def filesystem(url: str, option: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec file system and path of ``url``; PublishError (one line, naming the package to install) where
    this Python cannot reach it."""
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        raise PublishError(f"{option} {url} needs an fsspec file system this Python lacks: {err}") from None
    except ValueError as err:
        raise PublishError(f"{option} {url}: {err}") from None


def finished_labels(labels: Path, checksums: bool = True) -> Stage:
    """A finished ``saqt label`` folder, every listed file present with its size and, with ``checksums``, its
    SHA-256 and every label scored (:func:`require_scored`); PublishError (or StageError, ScoreError) otherwise.
    What publishing reads; pretraining, which reads the row index instead of the shards, checks the rest itself."""
    stage = open_stage(labels, "label", checksums)  # one pass over the files
    if not stage.manifest["complete"]:
        raise PublishError(f"{labels} is an unfinished labelling run: rerun `saqt label` to complete it first")
    if checksums:
        require_scored(stage)
    return stage


def check_labels(stage: Stage) -> None:
    """Every file of a label folder opened without checksums against its SHA-256, and every label scored."""
    stage.verify()
    require_scored(stage)


def require_scored(stage: Stage) -> None:
    """PublishError unless every label of the folder has a score (ScoreError where one is not a finite number)."""
    unscored = sum(shard_scores(p).null_count for p in stage.paths("saqt-iqa"))
    if unscored:
        raise PublishError(f"{stage.root}: {unscored} labels have no score; relabel with a bank that scores every cell")


def open_labels(labels: Path) -> tuple[Stage, BuildReader]:
    """A finished ``saqt label`` folder (:func:`finished_labels`) and its build, checked against its manifest's
    checksums and still the one labelled; PublishError (or StageError) otherwise."""
    stage = finished_labels(labels)
    reader = BuildReader(Path(stage.manifest["config"]["build"]))
    if reader.stage.digest() != stage.manifest["inputs"]["build"]["digest"]:
        raise PublishError(f"the build {reader.root} changed since {labels} was labelled; rerun `saqt label`")
    return stage, reader

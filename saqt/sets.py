"""SAQT-IQA sets as pretraining reads them, in every form they come in, checked before use.

``open_saqt`` takes a ``saqt label`` folder, a folder of saqt-iqa shards, a ``saqt publish`` folder, an fsspec URL of a
published set (``s3://...``, ``file://...``, ``memory://...``) or a Hugging Face Hub id (``ORG/NAME``, read through
huggingface_hub's ``hf://datasets/ORG/NAME`` file system). What is checked at the start is proportional to the
metadata, not to the pixels, where the set allows it: a label folder's manifests and label shards are checked whole,
its build's files by size, and the build's byte-range records (``saqt.ranges``) by SHA-256, so that each image is
checked against its own recorded digest when it is read. A build written before byte ranges were recorded, and a
published set, are checked whole (every file's SHA-256) before training starts.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pyarrow.parquet as pq

from saqt.card import read_card
from saqt.errors import DatasetError, SaqtError
from saqt.publish import check_labels, filesystem, finished_labels
from saqt.reader import BuildReader
from saqt.shards import LABEL_MANIFEST, ROW_INDEX
from saqt.stage import CARD, SUMS, StageError
from saqt.verify import verify_published

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
OPEN_FILES = 8  # Parquet files a process keeps open


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
    row_index: Path | None = None  # the row index ``saqt label`` wrote, checked (``saqt.row_index``)
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


def open_saqt(data: str, pristine_cache: int = 64) -> SaqtFiles:
    """The SAQT-IQA set ``data`` names (see the module's docstring), checked; DatasetError (one line) when it is
    none of these forms."""
    if "://" in data:
        return _published(data, data)
    root = Path(data)
    if root.is_dir():
        if (root / LABEL_MANIFEST).is_file():
            return _label_folder(root, pristine_cache)
        if (root / SUMS).is_file() or (root / CARD).is_file():
            return _published(str(root), data)
        shards = sorted(root.glob("*.parquet"))
        if shards:
            return SaqtFiles([str(p) for p in shards], None, None, {"labels": data})
        raise DatasetError(
            f"{data} is neither a `saqt label` output (label.json), a published set (README.md and "
            f"{SUMS}) nor a folder of saqt-iqa shards"
        )
    if HUB_ID.fullmatch(data):
        return _published(f"hf://datasets/{data}", data)
    raise DatasetError(f"--data {data}: no such folder, and not an fsspec URL or a Hub id (ORG/NAME)")


def _label_folder(root: Path, pristine_cache: int) -> SaqtFiles:
    """A label folder and the build that holds its pixels and renders its recipes: still the build that was
    labelled, every file present with its size, and its byte-range records checked (or, for a build without them,
    every file's SHA-256). A label folder with a row index (``saqt.row_index``) has that index checked by SHA-256
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


def _published(url: str, given: str) -> SaqtFiles:
    """A published set: every file checked against SHA256SUMS, the shards against the publish schema."""
    try:
        verify_published(url, sample=0)
    except SaqtError as err:
        raise DatasetError(f"--data {given}: {err}") from None
    except Exception as err:  # file systems (the Hub's among them) raise their own network and access errors
        raise DatasetError(f"--data {given}: cannot read {url} ({type(err).__name__}: {err})") from None
    fs, root = filesystem(url, "--data")
    paths = sorted(p for p in fs.find(f"{root}/data") if p.endswith(".parquet"))
    validation = frozenset(p for p in paths if Path(p).name.startswith("validation-"))
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    constants = read_card(fs.cat_file(f"{root}/{CARD}").decode())[0]["saqt"].get("run_constants")
    constants = constants if isinstance(constants, dict) else {}  # a hand-edited card: no scale recorded
    provenance = {"published": given, "score_scale": constants.get("score_scale")}
    return SaqtFiles(paths, None if local else fs, None, provenance, validation)

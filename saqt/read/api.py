"""The reading API: one way to open what the stages wrote and read it back.

``open_set`` opens a build folder, a label folder, a bank folder or a published set (a folder or an fsspec URL) as a
``SaqtSet``, which knows its kind, its manifest or card, the Parquet files of its rows, the pixels of a row (stored,
or rendered from its recipe by the build) and how to check itself (``saqt verify``). ``open_saqt`` opens a set for
pretraining, checked, as ``glint pretrain --data`` names it: a label folder, a published set's folder, fsspec URL
(``s3://...``, ``file://...``, ``memory://...``) or Hugging Face Hub id (``ORG/NAME``, read through
huggingface_hub's ``hf://datasets/ORG/NAME`` file system), or a folder of saqt-iqa shards. A published set is
checked whole (every file's SHA-256) before training starts; a label folder as ``saqt.label.sets.label_files`` describes.

Code outside the stages that wrote a set (publish, report, info, glint) reads it through this module. It also
names the reading parts that have no object of their own here: the row index (``saqt.label.row_index``), the byte ranges
(``saqt.build.byte_ranges``), the recipe renderer (``saqt.build.distortions``), a score cell's value (``saqt.core.scores``) and the
published set's schema and file system (``saqt.label.sets``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq

from saqt.build.build_reader import BuildReader, with_build_images
from saqt.build.byte_ranges import RangeError, RangeReader
from saqt.build.distortions import PreparedImage, distort
from saqt.core.errors import DatasetError, SaqtError
from saqt.core.images import decode_image
from saqt.core.scores import score_value
from saqt.core.shards import LABEL_MANIFEST
from saqt.core.stage_contract import CARD, SUMS, Stage, StageError, identify, open_stage, read_card, read_sums
from saqt.label.row_index import NO_NEIGHBOURS, ColumnWriter, open_columns, write_row_index
from saqt.label.sets import (
    IMAGE,
    PRISTINE_FIELDS,
    SCHEMA_VERSION,
    SaqtFiles,
    filesystem,
    label_files,
    open_labels,
    publish_schema,
)
from saqt.read.verify import Verified, VerifyError, verify_published, verify_stage

__all__ = [  # the names of other modules that are read through this one
    "IMAGE",
    "NO_NEIGHBOURS",
    "PRISTINE_FIELDS",
    "SCHEMA_VERSION",
    "BuildReader",
    "ColumnWriter",
    "PreparedImage",
    "RangeError",
    "RangeReader",
    "SaqtFiles",
    "SaqtSet",
    "Verified",
    "VerifyError",
    "distort",
    "filesystem",
    "open_columns",
    "open_labels",
    "open_saqt",
    "open_set",
    "publish_schema",
    "score_value",
    "verify",
    "with_build_images",
    "write_row_index",
]

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
TABLES = {"build": "distorted", "label": "saqt-iqa"}  # the table whose files hold a stage's rows


@dataclass
class SaqtSet:
    """What a stage wrote, opened for reading: ``kind`` is build, label, bank or published; ``given`` names it as
    the user did, ``location`` is its folder or fsspec URL. Opening checks nothing; ``verify`` checks it all."""

    kind: str
    given: str
    location: str = ""

    def __post_init__(self) -> None:
        self.location = self.location or self.given

    @cached_property
    def stage(self) -> Stage:
        """A build, label or bank folder's stage, its files listed at their sizes (no checksums)."""
        return open_stage(Path(self.location), self.kind, checksums=False)

    @cached_property
    def file_system(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """A published set's file system and root path in it."""
        return filesystem(self.location, "--data")

    def card(self) -> dict:
        """A published set's card: its front matter (CardError where it has none that reads)."""
        fs, root = self.file_system
        return read_card(fs.cat_file(f"{root}/{CARD}").decode())[0]

    def shards(self, table: str | None = None) -> list[str]:
        """The Parquet files of ``table`` (by default the one holding the rows: a build's distorted images, a label
        folder's saqt-iqa labels, a published set's splits as its SHA256SUMS lists them), in order."""
        if self.kind != "published":
            if not (table or self.kind in TABLES):
                raise DatasetError(f"{self.given} is a {self.kind}: it has no rows to read")
            return [str(p) for p in self.stage.paths(table or TABLES[self.kind])]
        fs, root = self.file_system
        listed = read_sums(fs.cat_file(f"{root}/{SUMS}").decode())  # paths that stay inside the folder
        return [f"{root}/{p}" for p in sorted(listed) if p.startswith("data/") and p.endswith(".parquet")]

    def rows(self, columns: list[str] | None = None) -> Iterator[dict]:
        """Every row (of ``columns``) as a dict, file by file, a batch at a time."""
        for path in self.shards():
            with self.file_system[0].open(path, "rb") if self.kind == "published" else open(path, "rb") as f:
                for batch in pq.ParquetFile(f).iter_batches(columns=columns):
                    yield from batch.to_pylist()

    @cached_property
    def build(self) -> BuildReader | None:
        """The build that holds (or renders) the rows' pixels, its files at their sizes; None for a published set.
        StageError where a label folder's build is gone or not a build."""
        if self.kind == "build":
            return BuildReader(Path(self.location), checksums=False)
        if self.kind == "label":
            return BuildReader(Path(self.stage.manifest["config"]["build"]), checksums=False)
        return None

    def pixels(self, row: dict) -> np.ndarray:
        """The pixels of a row: decoded where the row holds them, else rendered from its recipe by the build."""
        image = row.get("image")
        if isinstance(image, dict):  # a published row: the Hub's Image struct
            image = image.get("bytes")
        if image is not None:
            return decode_image(image)
        if self.build is None:
            raise DatasetError(f"{self.given}: a recipe-only published set; its build renders the pixels")
        return self.build.image(row)

    def verify(self, sample: int = 64, seed: int = 0) -> Verified:
        """Check everything: a published set's files and a sample of its images, a stage folder against its
        manifest (``saqt.read.verify``); VerifyError at the first problem."""
        if self.kind == "published":
            return verify_published(self.location, sample, seed)
        return verify_stage(Path(self.location))

    def files(self, pristine_cache: int = 64) -> SaqtFiles:
        """The set's rows as pretraining reads them, checked (see the module's docstring); DatasetError (one line)
        where they cannot be read or do not check."""
        if self.kind == "label":
            return label_files(Path(self.location), pristine_cache)
        if self.kind != "published":
            raise DatasetError(f"{self.given} is a {self.kind}: pretraining reads a label folder or a published set")
        try:
            verify_published(self.location, sample=0)
        except SaqtError as err:
            raise DatasetError(f"--data {self.given}: {err}") from None
        except Exception as err:  # file systems (the Hub's among them) raise their own network and access errors
            raise DatasetError(
                f"--data {self.given}: cannot read {self.location} ({type(err).__name__}: {err})"
            ) from None
        fs, _ = self.file_system
        paths = self.shards()
        validation = frozenset(p for p in paths if Path(p).name.startswith("validation-"))
        local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        constants = self.card()["saqt"].get("run_constants")
        constants = constants if isinstance(constants, dict) else {}  # a hand-edited card: no scale recorded
        provenance = {"published": self.given, "score_scale": constants.get("score_scale")}
        return SaqtFiles(paths, None if local else fs, None, provenance, validation)


def open_set(target: str | Path) -> SaqtSet:
    """The set at ``target``: a published set's fsspec URL, or a folder a stage wrote (StageError, one line, if no
    stage did: ``saqt.core.stage_contract.identify``). Nothing is checked: see ``SaqtSet.verify``."""
    target = str(target)
    if "://" in target:
        return SaqtSet("published", target)
    return SaqtSet(identify(Path(target)), target)


def open_saqt(data: str, pristine_cache: int = 64) -> SaqtFiles:
    """The SAQT-IQA set ``data`` names (see the module's docstring), checked; DatasetError (one line) when it is
    none of these forms."""
    if "://" in data:
        return SaqtSet("published", data).files(pristine_cache)
    root = Path(data)
    if root.is_dir():
        if (root / LABEL_MANIFEST).is_file():
            return SaqtSet("label", data).files(pristine_cache)
        if (root / SUMS).is_file() or (root / CARD).is_file():
            return SaqtSet("published", data).files(pristine_cache)
        shards = sorted(root.glob("*.parquet"))
        if shards:
            return SaqtFiles([str(p) for p in shards], None, None, {"labels": data})
        raise DatasetError(
            f"{data} is neither a `saqt label` output (label.json), a published set (README.md and "
            f"{SUMS}) nor a folder of saqt-iqa shards"
        )
    if HUB_ID.fullmatch(data):
        return SaqtSet("published", data, f"hf://datasets/{data}").files(pristine_cache)
    raise DatasetError(f"--data {data}: no such folder, and not an fsspec URL or a Hub id (ORG/NAME)")


def verify(target: str, sample: int = 64, seed: int = 0) -> Verified:
    """``saqt verify``: check a published set (a folder or an fsspec URL), or a build, label or bank folder."""
    try:
        found = open_set(target)
    except StageError as err:
        raise VerifyError(f"{err}: nothing to verify") from None
    return found.verify(sample, seed)

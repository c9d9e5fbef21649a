"""SAQT-IQA for pretraining, in every form it comes in, read in a fresh random order each epoch.

``open_saqt`` takes a ``saqt label`` folder, a folder of saqt-iqa shards, a ``saqt publish`` folder, an fsspec URL
of a published set (``s3://...``, ``file://...``, ``memory://...``) or a Hugging Face Hub id (``ORG/NAME``, read
through huggingface_hub's ``hf://datasets/ORG/NAME`` file system), checks it against its manifest (the checksums
of label.json and of its build's build.json, or the published set's SHA256SUMS and schema) and indexes its rated
rows: a few numbers per row, never the pixels: 16 bytes per image in the index and 8 in an epoch's order, however
large the images are.

Each epoch visits every training row once, in a permutation drawn from (seed, epoch), as the official release
shuffles its whole dataset every epoch (``DataLoader(shuffle=True)``). The permutation is cut into global batches;
each DDP rank takes its slice of every global batch, and the DataLoader hands whole batches to its workers in turn,
so ranks and workers read disjoint rows and together cover the epoch. A worker reads each batch's rows by Parquet
row group and decodes their PNGs, or renders recipe rows from the build's pristine images with
``saqt.reader.BuildReader`` (the function ``saqt build --render`` uses, with its bounded cache of decoded pristine
images).
"""

from __future__ import annotations

import random
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, Sampler

from glint.data import DatasetError, prepare, random_view, to_tensor
from saqt.card import read_card
from saqt.errors import SaqtError
from saqt.images import decode_image
from saqt.publish import filesystem, finished_labels
from saqt.reader import BuildReader, with_build_images
from saqt.seeding import derive_seed
from saqt.shards import LABEL_MANIFEST
from saqt.stage import CARD, SUMS
from saqt.verify import verify_published

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
COLUMNS = ["image_id", "pristine_id", "dist_type", "level", "seed", "image", "score"]
OPEN_FILES = 8  # Parquet files a worker keeps open


@dataclass
class SaqtFiles:
    """The Parquet files of one SAQT-IQA set, where they live, and what renders its recipe rows."""

    paths: list[str]
    fs: fsspec.AbstractFileSystem | None  # None: local files
    build: BuildReader | None
    provenance: dict
    validation: frozenset[str] = frozenset()  # paths of a published set's validation split
    images: list[str] | None = None  # per file, the build shard whose rows hold its pixels (label folders)
    _open: OrderedDict = field(default_factory=OrderedDict, repr=False)

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
    """The SAQT-IQA set ``data`` names (see the module's docstring), checked against its manifest; DatasetError
    (one line) when it is none of these forms."""
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
    """A label folder (its shards checked against label.json's checksums) and the build that holds its pixels and
    renders its recipes (still the build that was labelled, every file checked against build.json's checksums)."""
    stage = finished_labels(root)  # as `saqt publish` reads labels: finished, every label scored
    label = stage.manifest
    build_root = Path(label["inputs"]["build"]["root"])
    if not build_root.is_dir():
        raise DatasetError(f"{root}: its build {build_root}, which holds the images, is not here")
    build = BuildReader(build_root, checksums=False, cache=pristine_cache)
    if build.stage.digest() != label["inputs"]["build"]["digest"]:
        raise DatasetError(f"the build {build_root} changed since {root} was labelled; rerun `saqt label`")
    build.stage.verify()  # every build file's SHA-256, as `saqt label` and `saqt publish` check it; after the digest
    provenance = {
        "labels": str(root),
        "bank": label["inputs"]["bank"],
        "encoder": label.get("encoder"),
        "rule": label.get("rule"),
        "score_scale": label.get("score_scale"),
    }
    units = stage.units()
    return SaqtFiles(
        [str(stage.path(u, "saqt-iqa")) for u in units],
        None,
        build,
        provenance,
        images=[str(build.stage.path(u, "distorted")) for u in units],
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


def _pixels(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """PNG bytes of an image column: plain binary (label shards) or the Hub's Image struct (published sets)."""
    return pc.struct_field(column, "bytes") if pa.types.is_struct(column.type) else column


class SaqtIndex:
    """Where each rated row of a SAQT-IQA set lives (file, row group, row) and its pristine image; the rows of
    training (``holdout=False``) or of the held-out part that chooses the epoch (``holdout=True``).

    The held-out part is a published set's validation split when it has one, else ``percent`` of the pristine
    images (at least one) chosen by a seeded hash."""

    def __init__(self, files: SaqtFiles, seed: int, holdout: bool = False, percent: float = 5.0):
        if not files.paths:
            raise DatasetError(f"{next(iter(files.provenance.values()))} holds no shards")
        where, pristine, scored, in_validation = [], [], [], []
        for i, path in enumerate(files.paths):
            meta = files.parquet(i).metadata
            table = files.parquet(i).read(columns=["pristine_id", "score"])
            groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            where.append(
                np.stack(
                    [
                        np.full(table.num_rows, i),
                        np.repeat(np.arange(len(groups)), groups),
                        np.concatenate([np.arange(n) for n in groups] or [[]]),
                    ],
                    1,
                )
            )
            pristine.append(table.column("pristine_id").combine_chunks())
            scored.append(table.column("score").is_valid().to_numpy(zero_copy_only=False))
            in_validation.append(np.full(table.num_rows, path in files.validation))
        ids = pa.chunked_array(pristine, pa.string()).combine_chunks().dictionary_encode()
        names = ids.dictionary.to_pylist()
        if files.validation:
            held = np.concatenate(in_validation)
        else:
            chosen = _holdout_ids(names, seed, percent)
            held = np.isin(ids.indices.to_numpy(), [k for k, p in enumerate(names) if p in chosen])
        keep = np.concatenate(scored) & (held == holdout)
        self.files = files
        self.where = np.concatenate(where).astype(np.int32)[keep]  # (file, row group, row)
        self.pristine = ids.indices.to_numpy()[keep].astype(np.int32)
        self.pristine_names = names

    def __len__(self) -> int:
        return len(self.where)

    def rows(self, indices, columns: list[str] = COLUMNS) -> list[dict]:
        """The rows at ``indices`` (``columns`` of them), in that order, each row group read once."""
        out: dict[int, dict] = {}
        groups: dict[tuple[int, int], list[int]] = {}
        for k in indices:
            f, g, _ = self.where[k]
            groups.setdefault((int(f), int(g)), []).append(int(k))
        for (f, g), members in groups.items():
            table = self._read(f, g, columns).take([int(self.where[k][2]) for k in members])
            out.update(zip(members, table.to_pylist(), strict=True))
        return [out[int(k)] for k in indices]

    def _read(self, f: int, g: int, columns: list[str]) -> pa.Table:
        """Row group ``g`` of file ``f``, its PNG bytes (if asked) in column ``image``: from the file itself, or
        from the same row group of the build shard its rows mirror."""
        if "image" not in columns:
            return self.files.parquet(f).read_row_group(g, columns=columns)
        if self.files.images is None:
            table = self.files.parquet(f).read_row_group(g, columns=columns)
            return table.set_column(columns.index("image"), "image", _pixels(table.column("image")))
        table = self.files.parquet(f).read_row_group(g, columns=[c for c in columns if c != "image"])
        return with_build_images(table, self.files.parquet(self.files.images[f]), g, self.files.paths[f])

    def pixels(self, row: dict) -> np.ndarray:
        """A row's uint8 RGB pixels: its PNG, or its recipe rendered from the build's pristine image."""
        if row["image"] is not None:
            return decode_image(row["image"])
        if self.files.build is None:
            raise DatasetError(
                f"{row['image_id']} is a recipe without pixels, and its build (which renders it) is "
                "not here: train on a label folder whose build is present, or a rendered set"
            )
        return self.files.build.image(row)


def _holdout_ids(pristine_ids: list[str], seed: int, percent: float) -> frozenset[str]:
    ids = sorted(pristine_ids, key=lambda p: derive_seed(seed, "holdout", p))
    return frozenset(ids[: max(1, round(len(ids) * percent / 100))]) if len(ids) > 1 else frozenset()


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``n`` rows that epoch ``epoch`` visits, drawn from (seed, epoch)."""
    return np.random.Generator(np.random.PCG64(derive_seed(seed, epoch, "epoch-order"))).permutation(n)


def rank_batches(n: int, seed: int, epoch: int, rank: int, world: int, batch: int) -> list[np.ndarray]:
    """Rank ``rank``'s batches of epoch ``epoch``: the epoch's permutation cut into global batches of
    ``batch * world`` rows, of which this rank takes the ``rank``-th slice. Every rank gets the same number of
    batches; under DDP the last global batch is shared evenly and the fewer than ``world`` rows it cannot share
    are left to the next epoch's order."""
    order = epoch_order(n, seed, epoch)
    out = []
    for start in range(0, n, batch * world):
        shares = np.array_split(order[start : start + batch * world], world)
        if len(shares[-1]) == 0:
            break
        out.append(shares[rank])
    return out


class EpochBatches(Sampler):
    """A DataLoader ``batch_sampler``: one rank's batches of one epoch (``rank_batches``)."""

    def __init__(self, n: int, seed: int, epoch: int, rank: int, world: int, batch: int):
        self.batches = rank_batches(n, seed, epoch, rank, world, batch)

    def __iter__(self):
        return (b.tolist() for b in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class SaqtTraining(Dataset):
    """The training rows of a SAQT-IQA set as a map-style dataset read a batch at a time (``__getitems__``): one
    random 224 crop with flips per image, drawn from (seed, epoch, image_id), and its score."""

    def __init__(self, files: SaqtFiles, seed: int = 0):
        self.index, self.seed, self.epoch = SaqtIndex(files, seed), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def batch_sampler(self, epoch: int, rank: int, world: int, batch: int) -> EpochBatches:
        """The batches rank ``rank`` of ``world`` reads in epoch ``epoch``."""
        return EpochBatches(len(self), self.seed, epoch, rank, world, batch)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self._sample(row) for row in self.index.rows(indices)]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([i])[0]

    def _sample(self, row: dict) -> tuple[torch.Tensor, torch.Tensor]:
        image = prepare(self.index.pixels(row))
        view = random_view(image, random.Random(derive_seed(self.seed, self.epoch, row["image_id"])))
        return to_tensor(view), torch.tensor(row["score"], dtype=torch.float32)

    def image_ids(self, indices) -> list[str]:
        """The image ids of rows ``indices``, in that order."""
        return [r["image_id"] for r in self.index.rows(indices, ["image_id"])]


def held_out_rows(files: SaqtFiles, seed: int, limit: int) -> tuple[list[dict], list[float], SaqtIndex]:
    """Up to ``limit`` held-out rows in file order, their scores, and the index that turns a row into pixels."""
    index = SaqtIndex(files, seed, holdout=True)
    rows = index.rows(range(min(limit, len(index))))
    return rows, [r["score"] for r in rows], index

"""SAQT-IQA for pretraining: its rows through the shared index, read one image per sample, in a fresh random order
each epoch.

The set (``saqt.read.api.open_saqt``, checked there) is indexed once per machine (``glint.pretrain_index``): a few
numbers per row in memory-mapped columns that every rank and loader worker shares. Each epoch visits every training
row once, in a permutation drawn from (seed, epoch), as the official release shuffles its whole dataset every epoch
(``DataLoader(shuffle=True)``); the permutation too is computed once per machine and shared. It is cut into global
batches; each DDP rank takes its slice of every global batch, and the DataLoader hands whole batches to its workers in
turn, so ranks and workers read disjoint rows and together cover the epoch.

A sample reads its own image only: the byte range the build recorded (``saqt.build.byte_ranges``), checked against the recorded
SHA-256 before it is decoded; a recipe renders from its pristine image, read the same way (the last few decoded
pristine images stay in memory). Sets without byte ranges (published sets, builds of earlier versions) are read a
Parquet row group at a time.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset, Sampler

from glint.data import DatasetError, prepare, random_view, to_tensor
from glint.pretrain_index import SharedFolder, shared_order, write_index
from saqt.core.images import decode_image
from saqt.core.seeding import derive_seed
from saqt.read.api import PreparedImage, RangeError, RangeReader, SaqtFiles, distort, open_columns, open_saqt

__all__ = ["EpochBatches", "SaqtIndex", "SaqtTraining", "epoch_order", "open_saqt", "rank_batches"]

RELEASE_VAL_SEED, RELEASE_VAL_SIZE, RELEASE_SAQT_INDICES = 12345, 1000, 50000  # train_distributed.py's hold-out
HOLDOUT_PERCENT = 5.0  # of the pristine images, held out to choose the epoch where a set has no validation split


class SaqtIndex:
    """The rows of one part (``train`` or ``holdout``) of an index folder, and how to read each one's pixels."""

    def __init__(self, files: SaqtFiles, folder: Path, part: str):
        self.files, self.folder, self.part = files, Path(folder), part
        self._open()

    def _open(self) -> None:
        self.columns = open_columns(self.folder / self.part)
        self.names = open_columns(self.folder / "names")["name"]
        pristine = self.folder / "pristine"
        self.pristine_ranges = open_columns(pristine) if pristine.is_dir() else None
        self._images = RangeReader(self.files.images) if "offset" in self.columns else None
        ranges = self.files.ranges
        self._pristine_images = RangeReader(ranges.pristine_shards) if self.pristine_ranges is not None else None
        self._decoded: OrderedDict[int, PreparedImage] = OrderedDict()
        self._group_starts: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict:  # memory maps and open files are made again in the process that unpickles
        return {"files": self.files, "folder": self.folder, "part": self.part}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return len(self.columns["score"])

    def pristine_id(self, k: int) -> str:
        """The id of row ``k``'s pristine image."""
        return self.names[self.columns["pristine"][k]].decode()

    def image_id(self, k: int) -> str:
        """Row ``k``'s image id."""
        c = self.columns
        return f"{self.pristine_id(k)}_{int(c['dist_type'][k]):02d}_{int(c['level'][k]):02d}"

    def score(self, k: int) -> float:
        """Row ``k``'s score."""
        return float(self.columns["score"][k])

    def pixels(self, k: int) -> np.ndarray:
        """Row ``k``'s uint8 RGB pixels: its image, or its recipe rendered from the build's pristine image."""
        c = self.columns
        if self._images is not None:
            where = (int(c["file"][k]), int(c["offset"][k]), int(c["length"][k]), bytes(c["sha256"][k]))
            return decode_image(_named(self._images, where, lambda: self.image_id(k)))
        if "seed" in c:
            source = self._pristine(int(c["pristine"][k]))
            return distort(source, int(c["dist_type"][k]), int(c["level"][k]), seed=int(c["seed"][k]))
        return decode_image(self._stored_image(k))

    def _pristine(self, p: int) -> PreparedImage:
        """Pristine image ``p``, decoded (the last few are kept)."""
        if self._pristine_images is None:  # a build without byte ranges: its reader's row-group path
            return self.files.build.pristine(self.names[p].decode())
        if p not in self._decoded:
            r = self.pristine_ranges
            where = (int(r["file"][p]), int(r["offset"][p]), int(r["length"][p]), bytes(r["sha256"][p]))
            self._decoded[p] = PreparedImage(decode_image(_named(self._pristine_images, where, self.names[p].decode)))
            while len(self._decoded) > max(1, self.files.pristine_cache):
                self._decoded.popitem(last=False)
        self._decoded.move_to_end(p)
        return self._decoded[p]

    def _stored_image(self, k: int) -> bytes:
        """Row ``k``'s PNG bytes read with its Parquet row group: from the set's file, or from the same row group of
        the build shard that a label file's rows mirror."""
        f, row = int(self.columns["file"][k]), int(self.columns["row"][k])
        starts = self._starts(f)
        g = int(np.searchsorted(starts, row, side="right")) - 1
        shard = self.files.parquet(f) if self.files.images is None else self.files.parquet(self.files.images[f])
        table = shard.read_row_group(g, columns=["image_id", "image"])
        at = row - int(starts[g])
        if table.column("image_id")[at].as_py() != self.image_id(k):
            raise DatasetError(f"{self.files.paths[f]}: row {row} does not match its build's distorted shard")
        image = _pixels(table.column("image"))[at].as_py()
        if image is None:
            raise DatasetError(
                f"{self.image_id(k)} is a recipe without pixels, and its build (which renders it) is "
                "not here: train on a label folder whose build is present, or a rendered set"
            )
        return image

    def _starts(self, f: int) -> np.ndarray:
        """The first row of each row group of file ``f``."""
        if f not in self._group_starts:
            meta = self.files.parquet(f).metadata
            sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            self._group_starts[f] = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return self._group_starts[f]


def _named(reader: RangeReader, where: tuple[int, int, int, bytes], name) -> bytes:
    """``reader.read(*where)``; its RangeError names the row (``name()``, computed only then)."""
    try:
        return reader.read(*where)
    except RangeError as err:
        raise RangeError(f"{name()}: {err}") from None


def _pixels(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """PNG bytes of an image column: plain binary (build shards) or the Hub's Image struct (published sets)."""
    return pc.struct_field(column, "bytes") if pa.types.is_struct(column.type) else column


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``n`` rows that epoch ``epoch`` visits, drawn from (seed, epoch)."""
    return np.random.Generator(np.random.PCG64(derive_seed(seed, epoch, "epoch-order"))).permutation(n)


def released_holdout_references(kadid_references: int = 81) -> list[str]:
    """The KADID-10k references whose matched SAQT-IQA images the release holds out when pretraining
    (train_distributed.py): ``random.Random(12345).sample`` of 1,000 of its 50,000 indices, index k naming the
    reference ``I{k+1:02d}.png``; only indices below 81 name a reference (I13 and I76)."""
    drawn = random.Random(RELEASE_VAL_SEED).sample(range(RELEASE_SAQT_INDICES), RELEASE_VAL_SIZE)
    return [f"I{k + 1:02d}.png" for k in sorted(drawn) if k < kadid_references]


class EpochBatches(Sampler):
    """A DataLoader ``batch_sampler``: rank ``rank``'s batches of an epoch's ``order``, cut into global batches of
    ``batch * world`` rows of which this rank takes the ``rank``-th slice. Every rank gets the same number of batches;
    under DDP the last global batch is shared evenly and the fewer than ``world`` rows it cannot share are left to
    the next epoch's order. ``drop_last`` (the release's pretraining: ``drop_last=True`` in its DistributedSampler and
    DataLoader) leaves out the last global batch unless it is full. Slices are taken as they are read: the order may
    be a memory map."""

    def __init__(self, order: np.ndarray, rank: int, world: int, batch: int, drop_last: bool = False):
        self.order, self.rank, self.world, self.batch, self.drop_last = order, rank, world, batch, drop_last

    def arrays(self):
        """The batches as arrays of row indices."""
        step = self.batch * self.world
        end = len(self.order) - len(self.order) % step if self.drop_last else len(self.order)
        for start in range(0, end, step):
            shares = np.array_split(np.asarray(self.order[start : start + step]), self.world)
            if len(shares[-1]) == 0:
                break
            yield shares[self.rank]

    def __iter__(self):
        return (b.tolist() for b in self.arrays())

    def __len__(self) -> int:
        full, rest = divmod(len(self.order), self.batch * self.world)
        return full + (rest >= self.world and not self.drop_last)


def rank_batches(n: int, seed: int, epoch: int, rank: int, world: int, batch: int) -> list[np.ndarray]:
    """Rank ``rank``'s batches of epoch ``epoch`` of ``n`` rows (see ``EpochBatches``)."""
    return list(EpochBatches(epoch_order(n, seed, epoch), rank, world, batch).arrays())


class SaqtTraining(Dataset):
    """The training rows of a SAQT-IQA set as a map-style dataset read a batch at a time (``__getitems__``): one
    random 224 crop with flips per image, drawn from (seed, epoch, image_id), and its score.

    The index lives in ``index_dir``'s folder for this launch on this machine, shared by every process of the launch
    there (``glint.pretrain_index.SharedFolder``), or, without ``index_dir``, in a private temporary folder.
    ``released``: as the release pretrains, holding out the images matched to its references
    (``released_holdout_references``) and dropping the last partial batch."""

    def __init__(self, files: SaqtFiles, seed: int = 0, index_dir: Path | None = None, released: bool = False):
        refs = released_holdout_references() if released else None
        self.shared = SharedFolder(index_dir, lambda folder: write_index(files, seed, HOLDOUT_PERCENT, folder, refs))
        self.index, self.seed, self.epoch = SaqtIndex(files, self.shared.path, "train"), seed, 0
        self.drop_last = released

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def held_out(self) -> SaqtIndex:
        """The held-out rows, which choose the epoch."""
        return SaqtIndex(self.index.files, self.shared.path, "holdout")

    def batch_sampler(self, epoch: int, rank: int, world: int, batch: int) -> EpochBatches:
        """The batches rank ``rank`` of ``world`` reads in epoch ``epoch``."""
        order = shared_order(self.shared.path, len(self), self.seed, epoch, epoch_order)
        return EpochBatches(order, rank, world, batch, self.drop_last)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self._sample(int(k)) for k in indices]

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sample(int(k))

    def _sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = prepare(self.index.pixels(k))
        view = random_view(image, random.Random(derive_seed(self.seed, self.epoch, self.index.image_id(k))))
        return to_tensor(view), torch.tensor(self.index.score(k), dtype=torch.float32)

    def image_ids(self, indices) -> list[str]:
        """The image ids of rows ``indices``, in that order."""
        return [self.index.image_id(int(k)) for k in indices]

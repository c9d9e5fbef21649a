"""Training data: standard IQA datasets (one manifest each), seeded splits, crops, and SAQT-IQA shards.

Augmentation follows the authors: one random 224 crop with horizontal and vertical flips per image per step,
normalised with mean = std = 0.5; testing averages 25 random crops. Every random draw comes from a seed
derived from (seed, epoch, image), so data do not depend on the number of loader workers.
"""

from __future__ import annotations

import csv
import itertools
import random
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import torch
import yaml
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from saqt.distortions import distort
from saqt.images import decode_image
from saqt.reader import BuildReader
from saqt.seeding import derive_seed
from saqt.shards import LABEL_MANIFEST
from saqt.stage import open_stage

CROP = 224


class DatasetError(ValueError):
    """A dataset that cannot be read as asked; one line naming the file and the problem."""


@cache
def dataset_spec(name: str) -> dict:
    """The manifest of dataset ``name``."""
    path = files("manifests").joinpath("datasets", f"{name}.yaml")
    if not path.is_file():
        names = sorted(p.name.removesuffix(".yaml") for p in files("manifests").joinpath("datasets").iterdir())
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(names)}")
    return yaml.safe_load(path.read_text())


@dataclass(frozen=True)
class Sample:
    """One rated image: its file, its score, its group (reference image for synthetic datasets) and official split."""

    path: str
    score: float
    group: str
    split: str | None = None


@dataclass
class IQATable:
    """A dataset's rated images and how to treat them."""

    name: str
    kind: str
    samples: list[Sample]
    higher_is_better: bool
    resize_shorter: int | None = None


def _pick(candidates: list[str], columns: list[str], what: str, path: Path, required: bool = True) -> str | None:
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise DatasetError(f"{path} has no {what} column (one of {candidates}; found {columns})")
    return found


def _image_path(root: Path, spec: dict, name: str, index: dict[str, Path] | None) -> Path:
    name = name if Path(name).suffix or "image_suffix" not in spec else name + spec["image_suffix"]
    for folder in spec["image_dirs"]:
        candidate = root / folder / name
        if candidate.is_file():
            return candidate
        if index is not None and (folder, name.lower()) in index:
            return index[(folder, name.lower())]
    return root / spec["image_dirs"][0] / name


def load_table(name: str, root: Path, label_file: Path | None = None) -> IQATable:
    """Rated images of dataset ``name`` under ``root`` (``label_file`` overrides the manifest's label files)."""
    spec = dataset_spec(name)
    root = Path(root)
    if label_file is None:
        label_file = next((root / f for f in spec.get("label_files", []) if (root / f).is_file()), None)
        if label_file is None:
            raise DatasetError(
                f"no label file of {name} under {root} (looked for {spec.get('label_files', ['--csv'])})"
            )
    try:
        with open(label_file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows, columns = list(reader), list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"cannot read {label_file} ({err})") from None
    image_col = _pick(spec["image_columns"], columns, "image", label_file)
    score_col = _pick(spec["score_columns"], columns, "score", label_file)
    ref_col = _pick(
        spec.get("reference_columns", []), columns, "reference", label_file, required=spec["kind"] == "synthetic"
    )
    split_col = _pick([spec["split_column"]], columns, "split", label_file, False) if "split_column" in spec else None
    index = None
    if spec.get("case_insensitive"):
        index = {
            (d, p.name.lower()): p for d in spec["image_dirs"] if (root / d).is_dir() for p in (root / d).iterdir()
        }
    samples = []
    for i, row in enumerate(rows, start=2):
        try:
            score = float(row[score_col])
        except (TypeError, ValueError):
            raise DatasetError(f"{label_file}:{i}: score {row[score_col]!r} is not a number") from None
        image = _image_path(root, spec, row[image_col].strip(), index)
        group = row[ref_col].strip() if ref_col else row[image_col].strip()
        samples.append(Sample(str(image), score, group, row[split_col].strip() if split_col else None))
    if not samples:
        raise DatasetError(f"{label_file} lists no images")
    kind = "synthetic" if ref_col else spec["kind"]
    return IQATable(name, kind, samples, spec["higher_is_better"], spec.get("resize_shorter"))


def split_table(table: IQATable, round_: int = 0, seed: int = 0, test_frac: float = 0.2, val_frac: float = 0.1):
    """{"train", "val", "test"} sample lists: the official split when the table has one, else 80/20 by group
    (reference image for synthetic datasets, image for authentic ones), with ``val_frac`` of the training
    groups held out for choosing the epoch. Seeded by (seed, round)."""
    if all(s.split for s in table.samples):
        parts = {name: [s for s in table.samples if s.split == name] for name in ("train", "val", "test")}
        if all(parts.values()):
            return parts
    groups = sorted({s.group for s in table.samples})
    if len(groups) < 3:
        raise DatasetError(f"{table.name}: {len(groups)} {'references' if table.kind == 'synthetic' else 'images'} "
                           "are too few for train, validation and test splits")  # fmt: skip
    random.Random(derive_seed(seed, table.name, round_, "split")).shuffle(groups)
    n_test = max(1, round(test_frac * len(groups)))
    n_val = max(1, round(val_frac * (len(groups) - n_test)))
    assign = {g: "test" for g in groups[:n_test]} | {g: "val" for g in groups[n_test : n_test + n_val]}
    return {
        name: [s for s in table.samples if assign.get(s.group, "train") == name] for name in ("train", "val", "test")
    }


def prepare(image: np.ndarray, resize_shorter: int | None = None) -> np.ndarray:
    """Resize so the shorter side is ``resize_shorter`` (if given) and at least 224."""
    h, w = image.shape[:2]
    target = max(CROP, resize_shorter or min(h, w))
    if min(h, w) != target:
        scale = target / min(h, w)
        image = cv2.resize(
            image, (max(CROP, round(w * scale)), max(CROP, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    return image


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 -> float (3, H, W) normalised with mean = std = 0.5."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def random_view(image: np.ndarray, rng: random.Random, flips: bool = True) -> np.ndarray:
    """One random 224 x 224 crop, flipped horizontally and vertically with probability 1/2 each."""
    h, w = image.shape[:2]
    top, left = rng.randrange(h - CROP + 1), rng.randrange(w - CROP + 1)
    view = image[top : top + CROP, left : left + CROP]
    if flips and rng.random() < 0.5:
        view = view[:, ::-1]
    if flips and rng.random() < 0.5:
        view = view[::-1]
    return view


def crop_views(image: np.ndarray, crops: int, seed: int) -> torch.Tensor:
    """(crops, 3, 224, 224): the random crops whose predictions are averaged at test time."""
    rng = random.Random(seed)
    return torch.stack([to_tensor(random_view(image, rng, flips=False)) for _ in range(crops)])


class TrainingImages(Dataset):
    """Map-style training set: one augmented view per image, drawn from (seed, epoch, index)."""

    def __init__(self, samples: list[Sample], seed: int = 0, resize_shorter: int | None = None):
        self.samples, self.seed, self.resize_shorter, self.epoch = samples, seed, resize_shorter, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.samples[i]
        image = prepare(decode_image(s.path), self.resize_shorter)
        view = random_view(image, random.Random(derive_seed(self.seed, self.epoch, i)))
        return to_tensor(view), torch.tensor(s.score, dtype=torch.float32)


# --- SAQT-IQA shards --------------------------------------------------------------------------------------------


@dataclass
class SaqtSource:
    """The SAQT-IQA shards of a ``saqt label`` output, the build that renders its recipes, and its provenance."""

    shards: list[Path]
    build: BuildReader | None
    provenance: dict
    _holdout: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, root: Path) -> SaqtSource:
        """``root`` is a ``saqt label`` output folder (label.json) or a folder of saqt-iqa shards."""
        root = Path(root)
        if (root / LABEL_MANIFEST).is_file():
            stage = open_stage(root, "label")  # the shards are checked against the manifest's checksums
            label = stage.manifest
            build_root = Path(label["inputs"]["build"]["root"])
            build = BuildReader(build_root, checksums=False) if build_root.is_dir() else None  # renders recipes only
            provenance = {"labels": str(root), "bank": label["inputs"]["bank"], "encoder": label.get("encoder"),
                          "rule": label.get("rule"), "score_scale": label.get("score_scale")}  # fmt: skip
            return cls(stage.paths("saqt-iqa"), build, provenance)
        shards = sorted(root.glob("*.parquet"))
        if not shards:
            raise DatasetError(f"{root} is neither a `saqt label` output (label.json) nor a folder of saqt-iqa shards")
        return cls(shards, None, {"labels": str(root)})

    def holdout(self, seed: int, percent: float = 5.0) -> frozenset[str]:
        """The pristine images held out to choose the epoch: ``percent`` of them (at least one), by seeded hash."""
        if (seed, percent) not in self._holdout:
            self._holdout[(seed, percent)] = self._choose_holdout(seed, percent)
        return self._holdout[(seed, percent)]

    def _choose_holdout(self, seed: int, percent: float) -> frozenset[str]:
        ids = sorted(
            {p for path in self.shards for p in pq.read_table(path, columns=["pristine_id"]).column(0).to_pylist()}
        )
        ids.sort(key=lambda p: derive_seed(seed, "holdout", p))
        return frozenset(ids[: max(1, round(len(ids) * percent / 100))]) if len(ids) > 1 else frozenset()

    def units(self) -> list[tuple[str, int]]:
        """(shard, row group) pairs: the unit of reading and shuffling."""
        return [(str(p), rg) for p in self.shards for rg in range(pq.ParquetFile(p).num_row_groups)]

    def image(self, row: dict) -> np.ndarray:
        """A row's pixels: its PNG, or its recipe rendered from the build's pristine image."""
        if row["image"] is not None:
            return decode_image(row["image"])
        if self.build is None:
            raise DatasetError("recipe rows need their build folder, which label.json names but is not present")
        return distort(self.build.pristine(row["pristine_id"]), row["dist_type"], row["level"], seed=row["seed"])


class SaqtStream(IterableDataset):
    """Labelled SAQT-IQA images as a stream: row groups shuffled per epoch and split over DDP ranks and loader
    workers, rows mixed in a buffer of ``buffer`` row groups; scored images with score null are skipped."""

    COLUMNS = ["image_id", "pristine_id", "dist_type", "level", "seed", "image", "score"]

    def __init__(self, source: SaqtSource, seed: int = 0, holdout: bool = False, buffer: int = 8):
        self.source, self.seed, self.holdout, self.buffer, self.epoch = source, seed, holdout, buffer, 0
        self.units = source.units()
        self.held_out = source.holdout(seed)

    def _mine(self, row: dict) -> bool:
        return row["score"] is not None and (row["pristine_id"] in self.held_out) == self.holdout

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_units(self, rank: int, world: int) -> list[tuple[str, int]]:
        units = list(self.units)
        random.Random(derive_seed(self.seed, self.epoch, "units")).shuffle(units)
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return units[rank * workers + worker :: world * workers]

    def _rows(self):
        """This worker's rows. Under DDP the share is repeated without end: ranks may hold unequal shares, so the
        training loop stops every rank after the same number of steps."""
        distributed = torch.distributed.is_initialized()
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
        units = self._my_units(rank, world)
        for _ in itertools.count() if world > 1 else range(1):
            for path, rg in units:
                for row in pq.ParquetFile(path).read_row_group(rg, columns=self.COLUMNS).to_pylist():
                    if self._mine(row):
                        yield row

    def __iter__(self):
        rng = random.Random(
            derive_seed(self.seed, self.epoch, "buffer", get_worker_info().id if get_worker_info() else 0)
        )
        buffer, limit = [], self.buffer * 125
        for row in self._rows():
            buffer.append(row)
            if len(buffer) >= limit:
                yield self._sample(buffer.pop(rng.randrange(len(buffer))))
        rng.shuffle(buffer)
        for row in buffer:
            yield self._sample(row)

    def _sample(self, row: dict) -> tuple[torch.Tensor, torch.Tensor]:
        image = prepare(self.source.image(row))
        view = random_view(image, random.Random(derive_seed(self.seed, self.epoch, row["image_id"])))
        return to_tensor(view), torch.tensor(row["score"], dtype=torch.float32)

    def count(self) -> int:
        """Rated images in this part (held out or not)."""
        total = 0
        for path in self.source.shards:
            table = pq.read_table(path, columns=["pristine_id", "score"]).to_pylist()
            total += sum(map(self._mine, table))
        return total

    def rated_images(self, limit: int | None = None) -> list[tuple[dict, float]]:
        """(row, score) of the images in this part, in unit order (for evaluation)."""
        out = []
        for path, rg in self.units:
            for row in pq.ParquetFile(path).read_row_group(rg, columns=self.COLUMNS).to_pylist():
                if self._mine(row):
                    out.append((row, row["score"]))
                    if limit and len(out) >= limit:
                        return out
        return out

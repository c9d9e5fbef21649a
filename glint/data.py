"""Training data: standard IQA datasets (one manifest each), their splits and crops (SAQT-IQA: ``glint.pretrain_data``).

Augmentation follows the official release: one random 224 crop with horizontal and vertical flips per image per
step, normalised with mean = std = 0.5; testing averages 25 random crops (fixed per image; under the release's
protocol redrawn every epoch as its ``RandomCrop`` draws them). Every random draw comes from a seed derived from
(seed, epoch, image), so data do not depend on the number of loader workers.

Two kinds of split: the toolkit's (80/20 by reference or image, seeded by (seed, dataset, round), 10% of the
training part held out for choosing the epoch; KonIQ-10k's official split when the table has it) and the release's
(``released_split``: its index order per dataset, ``random.Random(round * seed).shuffle``, the first
``round(0.8 n)`` indices train, the rest test).
"""

from __future__ import annotations

import csv
import hashlib
import random
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from saqt.core.columns import pick_column
from saqt.core.errors import DatasetError
from saqt.core.images import decode_image
from saqt.core.seeding import derive_seed
from saqt.core.yaml_manifests import manifest_names, named_manifest
from saqt.read.api import score_value

CROP = 224
RELEASE_TRAIN_FRACTION = 0.8


def dataset_spec(name: str) -> dict:
    """The manifest of dataset ``name``."""
    return named_manifest("datasets", name, DatasetError, "dataset")


def dataset_names() -> list[str]:
    return manifest_names("datasets")


@dataclass(frozen=True)
class Sample:
    """One rated image: its file, its score, its group (reference image for synthetic datasets), its official split
    if the table has one, and its name as the label table gives it."""

    path: str
    score: float
    group: str
    split: str | None = None
    name: str = ""


@dataclass
class IQATable:
    """A dataset's rated images and how to treat them."""

    name: str
    kind: str
    samples: list[Sample]
    higher_is_better: bool
    label_file: Path | None = None
    spec: dict = field(default_factory=dict)
    entry: dict = field(default_factory=dict)  # the manifest's description of the label file read

    @property
    def resize(self) -> tuple[int, int] | None:
        """(height, width) every image is resized to first, as the release does for some datasets."""
        return tuple(self.spec["resize"]) if self.spec.get("resize") else None


def _read_rows(path: Path) -> tuple[list[str], list[list]]:
    """Header and data rows of a CSV or an XLSX (first sheet) label file."""
    try:
        if path.suffix.lower() == ".xlsx":
            from openpyxl import load_workbook

            book = load_workbook(path, read_only=True, data_only=True)
            rows = [list(r) for r in book.active.iter_rows(values_only=True)]
            book.close()
        else:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f))
    except Exception as err:  # csv, unicode, zip and openpyxl errors all mean an unreadable label file
        raise DatasetError(f"cannot read {path} ({type(err).__name__}: {err})") from None
    rows = [r for r in rows if any(c not in (None, "") for c in r)]
    if not rows:
        raise DatasetError(f"{path} is empty")
    return ["" if c is None else str(c).strip() for c in rows[0]], rows[1:]


def _entry_for(spec: dict, header: list[str], path: Path) -> dict:
    """The manifest entry whose image and score columns this label file has."""
    for entry in spec["labels"]:
        if all(
            pick_column(entry.get(k), header, k, path, DatasetError, required=False) is not None
            for k in ("image", "score")
        ):
            return entry
    wanted = "; or ".join(f"{e['image']} and {e['score']}" for e in spec["labels"])
    raise DatasetError(f"{path} has no image and score columns of {spec['name']} (expected {wanted}; found {header})")


def _image_name(cell, entry: dict, where: str) -> str:
    if cell is None or str(cell).strip() == "":
        raise DatasetError(f"{where}: no image name")
    if "image_format" in entry:
        try:
            return entry["image_format"].format(int(float(cell)))
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: image number {cell!r} is not a number") from None
    name = str(cell).strip().replace("\\", "/")
    if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
        raise DatasetError(f"{where}: image {name!r} lies outside the dataset folder")
    return name


def _image_path(root: Path, spec: dict, name: str, index: dict[tuple[str, str], Path] | None) -> Path:
    name = name if PurePosixPath(name).suffix or "image_suffix" not in spec else name + spec["image_suffix"]
    for folder in spec["image_dirs"]:
        candidate = root / folder / name
        if candidate.is_file():
            return candidate
        if index is not None and (folder, name.lower()) in index:
            return index[(folder, name.lower())]
    return root / spec["image_dirs"][0] / name


def _group(row: list, name: str, ref_col: int | None, entry: dict) -> str:
    if ref_col is not None and ref_col < len(row) and row[ref_col] not in (None, ""):
        return str(row[ref_col]).strip()
    if entry.get("reference_rule") == "name-prefix":  # the scene's name: "babygirl_blur1.bmp" -> "babygirl.bmp"
        path = PurePosixPath(name)
        return path.name.split("_")[0] + path.suffix
    return name


def released_labels(spec: dict, root: Path) -> Path | None:
    """The label file the release's protocol reads where the release has its own labels (LIVE's
    ``LIVE_realigned.csv``: the realigned DMOS of dmos_realigned.mat); DatasetError when it is not under ``root``."""
    name = spec.get("released", {}).get("labels")
    if name is None:
        return None
    if not (Path(root) / name).is_file():
        raise DatasetError(
            f"--protocol released reads {spec['name']}'s labels from {name}, as the release does; it is not in "
            f"{root}: run `saqt fetch {spec['name']}` on an archive that has the release's label files"
        )
    return Path(root) / name


def load_table(name: str, root: Path, label_file: Path | None = None, protocol: str = "honest") -> IQATable:
    """Rated images of dataset ``name`` under ``root`` (``label_file`` overrides the manifest's label files; under
    the ``released`` protocol, the release's own labels where the manifest names them)."""
    spec, root = dataset_spec(name), Path(root)
    if label_file is None and protocol == "released":
        label_file = released_labels(spec, root)
    if label_file is None:
        found = [root / e["file"] for e in spec["labels"] if "file" in e and (root / e["file"]).is_file()]
        if not found:
            looked = [e["file"] for e in spec["labels"] if "file" in e] or ["--csv FILE"]
            raise DatasetError(f"no label file of {name} under {root} (looked for {', '.join(looked)})")
        label_file = found[0]
    label_file = Path(label_file)
    header, rows = _read_rows(label_file)
    entry = _entry_for(spec, header, label_file)
    image_col = pick_column(entry["image"], header, "image", label_file, DatasetError)
    score_col = pick_column(entry["score"], header, "score", label_file, DatasetError)
    ref_col = pick_column(
        entry.get("reference"),
        header,
        "reference",
        label_file,
        DatasetError,
        required=not entry.get("reference_optional"),
    )
    split_col = pick_column(entry.get("split"), header, "split", label_file, DatasetError, required=False)
    index = None
    if spec.get("case_insensitive"):
        index = {
            (d, p.name.lower()): p for d in spec["image_dirs"] if (root / d).is_dir() for p in (root / d).iterdir()
        }
    exclude = set(spec.get("exclude", []))
    samples = []
    for line, row in enumerate(rows, start=2):
        where = f"{label_file}:{line}"
        if max(image_col, score_col) >= len(row):
            raise DatasetError(f"{where}: has {len(row)} columns")
        image = _image_name(row[image_col], entry, where)
        if image in exclude:
            continue
        score = score_value(row[score_col], where)
        split = str(row[split_col]).strip() if split_col is not None and split_col < len(row) else None
        path = _image_path(root, spec, image, index)
        samples.append(Sample(str(path), score, _group(row, image, ref_col, entry), split or None, image))
    if not samples:
        raise DatasetError(f"{label_file} lists no images")
    synthetic = ref_col is not None or entry.get("reference_rule") is not None
    kind = "synthetic" if synthetic else spec["kind"]
    return IQATable(name, kind, samples, spec["higher_is_better"], label_file, spec, entry)


def check_image_files(samples: list[Sample], root: Path, dataset: str) -> None:
    """DatasetError naming the first image that leads outside ``root`` (through a link) or is not a regular file, or
    how many are missing: every image checked before any is read."""
    inside = Path(root).resolve()
    missing = []
    for s in samples:
        real = Path(s.path).resolve()
        if not real.is_relative_to(inside):
            raise DatasetError(f"image {s.path} of {dataset} leads outside --root {root} (to {real})")
        try:
            mode = real.stat().st_mode
        except FileNotFoundError:
            missing.append(s.path)
            continue
        if not stat.S_ISREG(mode):
            raise DatasetError(f"image {s.path} of {dataset} is not a regular file")
    if missing:
        raise DatasetError(f"{len(missing)} images of {dataset} are missing, e.g. {missing[0]}")


def check_released_images(table: IQATable, root: Path) -> None:
    """DatasetError when the release reads this dataset's images from one folder (KonIQ-10k: ``512x384/``) and an
    image of the table lies elsewhere (such as ``1024x768/``): another size changes every crop and score."""
    folder = table.spec.get("released", {}).get("image_dir")
    if not folder:
        return
    inside = Path(root) / folder
    other = next((s for s in table.samples if Path(s.path).parent != inside / Path(s.name).parent), None)
    if other is not None:
        raise DatasetError(
            f"--protocol released reads {table.name}'s images from {folder}/ as the release does; "
            f"{other.name} is not in {inside} (found as {other.path}): put the {folder} set there"
        )


def split_table(table: IQATable, round_: int = 0, seed: int = 0, test_frac: float = 0.2, val_frac: float = 0.1):
    """The toolkit's split, {"train", "val", "test"} sample lists: the official split when the table has one, else
    80/20 by group (reference image for synthetic datasets, image for authentic ones), with ``val_frac`` of the
    training groups held out for choosing the epoch. Seeded by (seed, dataset, round)."""
    if all(s.split for s in table.samples):
        parts = {name: [s for s in table.samples if s.split == name] for name in ("train", "val", "test")}
        if all(parts.values()):
            return parts
    groups = sorted({s.group for s in table.samples})
    if len(groups) < 3:
        raise DatasetError(
            f"{table.name}: {len(groups)} {'references' if table.kind == 'synthetic' else 'images'} "
            "are too few for train, validation and test splits"
        )
    random.Random(derive_seed(seed, table.name, round_, "split")).shuffle(groups)
    n_test = max(1, round(test_frac * len(groups)))
    n_val = max(1, round(val_frac * (len(groups) - n_test)))
    assign = {g: "test" for g in groups[:n_test]} | {g: "val" for g in groups[n_test : n_test + n_val]}
    return {
        name: [s for s in table.samples if assign.get(s.group, "train") == name] for name in ("train", "val", "test")
    }


def release_units(table: IQATable) -> list[str]:
    """The units the release indexes (references of synthetic datasets, images of authentic ones) in its order."""
    groups = list(dict.fromkeys(s.group for s in table.samples))  # label-file order
    order = table.spec.get("released", {}).get("order", "sorted" if table.kind == "synthetic" else "file")
    if order == "sorted":
        return sorted(groups)
    if order == "reverse-sorted":
        return sorted(groups, reverse=True)
    if order == "sorted-digits":  # TID2013 and KADID-10k: the two digits after the first letter (I01 ... i25)
        return sorted(groups, key=lambda g: g[1:3])
    return groups


def count_mismatch(table: IQATable) -> str | None:
    """Why the release's split rule cannot give the release's split on this table: it lists another number of units
    than the release indexes (a subset, such as the 627 CLIVE images of ``../shared``); None when the counts agree."""
    expected, units = table.spec.get("released", {}).get("units"), len(release_units(table))
    if expected is None or units == expected:
        return None
    what = "references" if table.kind == "synthetic" else "images"
    return (
        f"the release indexes {expected} {what} of {table.name}, {table.label_file} gives {units}: the release's "
        "split rule is applied to these, which is not the release's split"
    )


def released_split(table: IQATable, round_: int, seed: int) -> dict[str, list[Sample]]:
    """The release's split rule for its round ``round_`` (1-10) and seed: the units in its order, shuffled by
    ``random.Random(round_ * seed)``, the first ``round(0.8 n)`` for training, the rest for testing; no validation.
    It is the release's split when the table lists the release's units in its order (``count_mismatch``)."""
    units = release_units(table)
    order = list(range(len(units)))
    random.Random(round_ * seed).shuffle(order)
    train = {units[i] for i in order[: int(round(RELEASE_TRAIN_FRACTION * len(order)))]}
    return {
        "train": [s for s in table.samples if s.group in train],
        "val": [],
        "test": [s for s in table.samples if s.group not in train],
    }


def make_split(table: IQATable, protocol: str, round_: int, seed: int) -> dict[str, list[Sample]]:
    """The split a protocol uses (see ``glint.protocol``)."""
    return released_split(table, round_, seed) if protocol == "released" else split_table(table, round_, seed)


def names_digest(samples: list[Sample]) -> str:
    """A digest of a split part's image names (order-free), to recognise the same split later."""
    return hashlib.sha256("\n".join(sorted(s.name for s in samples)).encode()).hexdigest()


def split_record(table: IQATable, parts: dict[str, list[Sample]], protocol: str, round_: int, seed: int) -> dict:
    """How a run's split was made, enough to make it again and check it: what evaluation reads back."""
    return {
        "dataset": table.name,
        "label_file": str(table.label_file),
        "protocol": protocol,
        "round": round_,
        "seed": seed,
        "counts": {k: len(v) for k, v in parts.items()},
        "digests": {k: names_digest(v) for k, v in parts.items()},
    }


def prepare(image: np.ndarray, resize: tuple[int, int] | None = None) -> np.ndarray:
    """Resize to (height, width) ``resize`` if given (bilinear, as torchvision's Resize on a PIL image), then
    enlarge so that the shorter side is at least 224."""
    if resize:
        image = np.asarray(Image.fromarray(image).resize((resize[1], resize[0]), Image.BILINEAR))
    h, w = image.shape[:2]
    if min(h, w) < CROP:
        scale = CROP / min(h, w)
        image = cv2.resize(
            image, (max(CROP, round(w * scale)), max(CROP, round(h * scale))), interpolation=cv2.INTER_LINEAR
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


def released_crop_corners(height: int, width: int, crops: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """(top, left) of ``crops`` 224 crops drawn as torchvision's ``RandomCrop(224)`` draws each (the release's test
    transform): top, then left, each ``torch.randint`` over every position; nothing drawn for an image of exactly
    224 x 224."""
    if (height, width) == (CROP, CROP):
        return [(0, 0)] * crops
    return [
        (
            int(torch.randint(0, height - CROP + 1, (1,), generator=generator)),
            int(torch.randint(0, width - CROP + 1, (1,), generator=generator)),
        )
        for _ in range(crops)
    ]


def crop_views(image: np.ndarray, crops: int, seed: int, released: bool = False) -> torch.Tensor:
    """(crops, 3, 224, 224): the random crops whose predictions are averaged at test time, drawn from ``seed``;
    ``released``: as the release's ``RandomCrop`` draws them (``released_crop_corners``)."""
    if not released:
        rng = random.Random(seed)
        return torch.stack([to_tensor(random_view(image, rng, flips=False)) for _ in range(crops)])
    corners = released_crop_corners(*image.shape[:2], crops, torch.Generator().manual_seed(seed))
    return torch.stack([to_tensor(image[t : t + CROP, left : left + CROP]) for t, left in corners])


def score_map(values: list[float] | None):
    """The release's linear rescaling of training scores, [a, b] -> [c, d] (CLIVE: [0, 100] -> [-50, 150])."""
    if not values:
        return None
    a, b, c, d = values
    return lambda s: (s - a) / (b - a) * (d - c) + c


class TrainingImages(Dataset):
    """Map-style training set: one augmented view per image, drawn from (seed, epoch, index); images read by
    ``load`` (``decode_image``, or ``decode_as_released`` under the release's protocol)."""

    def __init__(
        self,
        samples: list[Sample],
        seed: int = 0,
        resize: tuple[int, int] | None = None,
        train_score_map: list[float] | None = None,
        load: Callable[[str], np.ndarray] = decode_image,
    ):
        self.samples, self.seed, self.resize, self.epoch = samples, seed, resize, 0
        self.train_score_map, self.load = train_score_map, load

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.samples[i]
        image = prepare(self.load(s.path), self.resize)
        view = random_view(image, random.Random(derive_seed(self.seed, self.epoch, i)))
        mapping = score_map(self.train_score_map)
        return to_tensor(view), torch.tensor(mapping(s.score) if mapping else s.score, dtype=torch.float32)

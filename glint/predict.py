"""Scoring image files with a trained (or, for a smoke run, random) GlintIQA model."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from glint.model import GlintIQA
from glint.train import predict_images
from saqt.encoders import pick_device
from saqt.images import ImageDecodeError, decode_image
from saqt.seeding import derive_seed

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def image_paths(inputs: list[Path]) -> list[Path]:
    """Image files named directly, plus those found (recursively, by extension) in named folders."""
    out = []
    for p in inputs:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        else:
            out.append(p)
    return out


def score_files(model: GlintIQA, paths: list[Path], crops: int = 25, device: str = "auto", seed: int = 0):
    """(path, score or None, error or None) for each file, one image in memory at a time; unreadable files get
    their one-line reason. Each image's crops are seeded by its file name, so its score does not depend on order."""
    dev = pick_device(device)
    model.to(dev)
    out = []
    for p in tqdm(paths, desc="predict", unit="img", disable=len(paths) < 10):
        try:
            image = decode_image(p)
        except ImageDecodeError as err:
            out.append((p, None, str(err)))
            continue
        out.append((p, predict_images(model, [image], crops, derive_seed(seed, p.name), dev)[0], None))
    return out

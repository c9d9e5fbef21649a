"""Scoring image files with a trained (or, for a smoke run, random) GlintIQA model, and writing the scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tqdm import tqdm

from glint.model import GlintIQA
from glint.train import predict_images
from saqt.encoders import pick_device
from saqt.images import ImageDecodeError, decode_image
from saqt.seeding import derive_seed

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
MIN_SIDE = 32  # smaller images would be enlarged more than 7x to give a 224 crop: nothing left to judge
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet reads a cell starting so as a formula


def image_paths(inputs: list[Path]) -> list[Path]:
    """Image files named directly, plus those found (recursively, by extension) in named folders."""
    out = []
    for p in inputs:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        else:
            out.append(p)
    return out


def score_files(model: GlintIQA, paths: list[Path], crops: int = 25, device: str = "auto", seed: int = 0,
                min_side: int = MIN_SIDE):  # fmt: skip
    """(path, score or None, reason or None) for each file, one image in memory at a time. Unreadable files and
    images under ``min_side`` pixels on a side get their one-line reason instead of a score. Each image's crops
    are seeded by its file name, so its score does not depend on order."""
    dev = pick_device(device)
    model.to(dev)
    out = []
    for p in tqdm(paths, desc="predict", unit="img", disable=len(paths) < 10):
        try:
            image = decode_image(p)
        except ImageDecodeError as err:
            out.append((p, None, str(err)))
            continue
        h, w = image.shape[:2]
        if min(h, w) < min_side:
            out.append((p, None, f"{p}: {w}x{h} is too small to score (under {min_side} px on a side)"))
            continue
        out.append((p, predict_images(model, [image], crops, derive_seed(seed, p.name), dev)[0], None))
    return out


def spreadsheet_safe(text: str) -> str:
    """``text`` as a CSV cell that spreadsheets show as text: a leading ``'`` where it would start a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def write_scores(rows: list[tuple[Path, float | None, str | None]], out: Path) -> None:
    """Scores as JSON (``.json``) or CSV (path, score, error; cells that would run as formulas escaped)."""
    if out.suffix == ".json":
        out.write_text(json.dumps([{"path": str(p), "score": s, "error": e} for p, s, e in rows], indent=2))
        return
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "score", "error"])
        writer.writerows([spreadsheet_safe(str(p)), "" if s is None else f"{s:.6f}", spreadsheet_safe(e or "")]
                         for p, s, e in rows)  # fmt: skip

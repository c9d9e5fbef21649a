"""Scoring image files with a trained (or, for a smoke run, random) GlintIQA model, and writing the scores with
their scale named."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from glint.model import GlintIQA
from glint.scoring import BATCH_IMAGES, MIN_SIDE, UnscorableImageError, checked, crop_seed, predict_images, scoring_amp
from saqt.core.context import pick_device
from saqt.core.images import ImageDecodeError, decode_image
from saqt.core.progress import Progress
from saqt.core.safe_files import atomic_write

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}  # an animation: its first frame
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet reads a cell starting so as a formula


def image_paths(inputs: list[Path]) -> list[Path]:
    """Image files named directly, plus those found (recursively, by extension) in named folders: every entry but a
    folder, so that a FIFO, socket or device of an image's name is listed with its reason (it is never opened)."""
    out = []
    for p in inputs:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir())
        else:
            out.append(p)
    return out


def score_files(
    model: GlintIQA,
    paths: list[Path],
    crops: int = 25,
    device: str = "auto",
    seed: int = 0,
    min_side: int = MIN_SIDE,
    batch_size: int = BATCH_IMAGES,
):
    """(path, score or None, reason or None) for each file, ``batch_size`` images in memory at a time. Unreadable
    files and images under ``min_side`` pixels on a side get their one-line reason instead of a score. Each image's
    crops are seeded by its file name, so its score does not depend on order (``GlintIQA.score`` gives the same)."""
    dev = pick_device(device)
    model.to(dev)
    reasons: dict[int, str] = {}

    def readable():
        for i, p in enumerate(paths):
            try:
                yield checked(decode_image(p), str(p), min_side), crop_seed(seed, p.name)
            except (ImageDecodeError, UnscorableImageError) as err:
                reasons[i] = str(err)

    with Progress(total=len(paths), desc="predict", unit="img", disable=len(paths) < 10) as bar:
        scores = iter(predict_images(model, readable(), crops, dev, None, batch_size, scoring_amp(model), bar))
    return [(p, None, reasons[i]) if i in reasons else (p, next(scores), None) for i, p in enumerate(paths)]


def spreadsheet_safe(text: str) -> str:
    """``text`` as a CSV cell that spreadsheets show as text: a leading ``'`` where it would start a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def write_table(rows: list[dict], out: Path, meta: dict, columns: list[str], key: str = "rows") -> None:
    """Rows as JSON (``.json``: ``meta`` and the rows under ``key``) or CSV (``columns``, taken from each row or from
    ``meta``; numbers to 6 decimals, cells that would run as formulas escaped)."""
    with atomic_write(out, text=True) as f:  # never through a link at --out, and never half written
        if out.suffix == ".json":
            f.write(json.dumps({**meta, key: rows}, indent=2))
            return
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([_cell({**meta, **row}.get(c)) for c in columns] for row in rows)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return spreadsheet_safe(str(value))


def write_scores(rows: list[tuple[Path, float | None, str | None]], out: Path, meta: dict) -> None:
    """Scores as JSON (``.json``: ``meta``, such as the scale, and the scores) or CSV (path, score, score_scale,
    error)."""
    table = [{"path": str(p), "score": s, "error": e} for p, s, e in rows]
    write_table(table, out, meta, ["path", "score", "score_scale", "error"], key="scores")

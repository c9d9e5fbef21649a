"""A labelled contact sheet: one row per distortion type, the pristine image and its five levels; and the files
``saqt distortions render`` writes, each render and the sheet of each image."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from saqt.build.distortions.catalogue import spec
from saqt.build.distortions.engine import distort
from saqt.build.distortions.prepared import PreparedImage
from saqt.core.images import ImageDecodeError, decode_image, encode_png
from saqt.core.progress import Progress
from saqt.core.safe_files import atomic_write, write_bytes_atomic
from saqt.core.seeding import derive_seed

LABEL_W = 250
HEADER_H = 26
CAPTION_H = 18
PAD = 4


def _fmt(value: float) -> str:
    return f"{value:g}"


def contact_sheet(
    pristine: np.ndarray, renders: dict[tuple[int, int], np.ndarray], thumb_width: int = 192
) -> Image.Image:
    """Grid image of ``renders`` keyed by (type, level): rows = types, columns = pristine then levels."""
    types = sorted({t for t, _ in renders})
    levels = sorted({lv for _, lv in renders})
    h, w = pristine.shape[:2]
    tw, th = thumb_width, max(1, round(thumb_width * h / w))
    cell_h = th + CAPTION_H
    sheet = Image.new(
        "RGB", (LABEL_W + (len(levels) + 1) * (tw + PAD), HEADER_H + len(types) * (cell_h + PAD)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    small = ImageFont.load_default(size=11)

    def thumb(a: np.ndarray) -> Image.Image:
        return Image.fromarray(a).resize((tw, th), Image.Resampling.BOX)

    for j, title in enumerate(["pristine"] + [f"level {lv}" for lv in levels]):
        draw.text((LABEL_W + j * (tw + PAD) + tw // 2, HEADER_H // 2), title, fill="black", font=font, anchor="mm")
    for i, t in enumerate(types):
        entry = spec(t)
        y = HEADER_H + i * (cell_h + PAD)
        draw.text((6, y + th // 2 - 16), f"{t:02d} {entry.name}", fill="black", font=font)
        draw.text((6, y + th // 2 + 2), f"{entry.group} / {entry.parameter}", fill="dimgray", font=small)
        sheet.paste(thumb(pristine), (LABEL_W, y))
        for j, lv in enumerate(levels, start=1):
            x = LABEL_W + j * (tw + PAD)
            if (t, lv) in renders:
                sheet.paste(thumb(renders[(t, lv)]), (x, y))
            draw.text(
                (x + tw // 2, y + th + CAPTION_H // 2),
                f"{entry.parameter} = {_fmt(entry.value(lv))}",
                fill="black",
                font=small,
                anchor="mm",
            )
    return sheet


def render_sheets(
    paths: Iterable[Path], out: Path, types: list[int], levels: list[int], seed: int = 0, thumb_width: int = 192
) -> Iterator[tuple[Path, Path | ImageDecodeError]]:
    """Render each of ``types`` x ``levels`` of each image to ``out/<stem>_<TT>_<LL>.png`` (type T at level L seeded
    by ``derive_seed(seed, T, L)``) and its contact sheet to ``out/<stem>_contact.png``; yield each image's path with
    its sheet, or with the ImageDecodeError that skipped it."""
    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        try:
            src = PreparedImage(decode_image(path))
        except ImageDecodeError as err:
            yield path, err
            continue
        renders = {}
        cells = [(t, lv) for t in types for lv in levels]
        for t, lv in Progress(cells, desc=path.stem, unit="img", leave=False):
            renders[(t, lv)] = distort(src, t, lv, seed=derive_seed(seed, t, lv))
            write_bytes_atomic(out / f"{path.stem}_{t:02d}_{lv:02d}.png", encode_png(renders[(t, lv)]))
        sheet = out / f"{path.stem}_contact.png"
        with atomic_write(sheet) as f:
            contact_sheet(src.u8, renders, thumb_width).save(f, format="PNG")
        yield path, sheet

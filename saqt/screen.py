"""The pristine-quality screen: transferred labels assume the reference image is pristine."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

# ITU-T T.81 Annex K tables in natural (row-major) order, the base of the IJG quality scaling.
_LUMA = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ]  # fmt: skip
)
_QUALITIES = np.arange(1, 101)
_SCALES = np.where(_QUALITIES < 50, 5000 // _QUALITIES, 200 - 2 * _QUALITIES)
_IJG_TABLES = np.clip((_LUMA[None, :] * _SCALES[:, None] + 50) // 100, 1, 255)


def jpeg_quality(data: bytes) -> int | None:
    """The IJG quality (1..100) whose luminance table is closest to the file's; None if not a JPEG."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            tables = getattr(img, "quantization", None) if img.format == "JPEG" else None
    except Exception:  # an undecodable file is reported by the decoder, not here
        return None
    if not tables or len(tables[0]) != 64:
        return None
    error = np.abs(_IJG_TABLES - np.asarray(tables[0])[None, :]).sum(axis=1)
    return int(_QUALITIES[np.argmin(error)])


GREY_SPREAD = 8  # an image whose channels never differ by more than this is greyscale


@dataclass(frozen=True)
class Screen:
    """What a pristine image must pass: shorter side in pixels, estimated JPEG quality (0 = off), colour.

    Greyscale images are refused unless ``allow_grey``: the colour distortions would inherit the scores
    of colourful references.
    """

    min_side: int = 128
    min_jpeg_quality: int = 0
    allow_grey: bool = False

    def reason_to_reject(self, data: bytes, image: np.ndarray) -> str | None:
        """Why the decoded RGB ``image`` (from encoded ``data``) fails the screen, or None if it passes."""
        height, width = image.shape[:2]
        if min(width, height) < self.min_side:
            return f"too small ({width}x{height}; shorter side under {self.min_side} px)"
        if not self.allow_grey and int((image.max(axis=2) - image.min(axis=2)).max()) <= GREY_SPREAD:
            return "greyscale (no colour; pass --allow-grey to keep)"
        if self.min_jpeg_quality > 0:
            quality = jpeg_quality(data)
            if quality is not None and quality < self.min_jpeg_quality:
                return f"JPEG quality {quality} under {self.min_jpeg_quality}"
        return None

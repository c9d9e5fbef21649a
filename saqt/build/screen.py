"""The pristine-quality screen: transferred labels assume the reference image is pristine."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

# ITU-T T.81 Annex K tables in natural (row-major) order, the base of the IJG quality scaling.
# fmt: off
_LUMA = np.array(
    [
         16,  11,  10,  16,  24,  40,  51,  61,
         12,  12,  14,  19,  26,  58,  60,  55,
         14,  13,  16,  24,  40,  57,  69,  56,
         14,  17,  22,  29,  51,  87,  80,  62,
         18,  22,  37,  56,  68, 109, 103,  77,
         24,  35,  55,  64,  81, 104, 113,  92,
         49,  64,  78,  87, 103, 121, 120, 101,
         72,  92,  95,  98, 112, 100, 103,  99,
    ]
)
# fmt: on
_QUALITIES = np.arange(1, 101)
_SCALES = np.where(_QUALITIES < 50, 5000 // _QUALITIES, 200 - 2 * _QUALITIES)
_IJG_TABLES = np.clip((_LUMA[None, :] * _SCALES[:, None] + 50) // 100, 1, 255)


def jpeg_quality(data: bytes) -> int | None:
    """The IJG quality (1..100) whose luminance table is closest to the file's; None if not a JPEG."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return quality_of(img)
    except Exception:  # an undecodable file is reported by the decoder, not here
        return None


def quality_of(img: Image.Image) -> int | None:
    """``jpeg_quality`` of an opened image, from the tables Pillow reads with the header."""
    tables = getattr(img, "quantization", None) if img.format == "JPEG" else None
    if not tables or len(tables[0]) != 64:
        return None
    error = np.abs(_IJG_TABLES - np.asarray(tables[0])[None, :]).sum(axis=1)
    return int(_QUALITIES[np.argmin(error)])


PALETTE_MODES = ("P", "PA", "1")  # at most 256 colours: a palette PNG, BMP or TIFF, every GIF, a 1-bit image


def lossy_encoding(img: Image.Image, data: bytes) -> str | None:
    """What, beside a JPEG's quality, makes an opened image's encoding lossy: a palette of at most 256 colours or
    lossy (VP8) WebP compression; None for a full-colour lossless file or a JPEG. Read from the header (``data`` is
    the file): nothing is decoded."""
    if img.mode in PALETTE_MODES:
        return f"{img.format} of at most 256 colours (mode {img.mode})"
    if img.format == "WEBP" and _holds_vp8(data, 12, len(data)):
        return "lossy WebP"
    return None


def _holds_vp8(data: bytes, pos: int, end: int) -> bool:
    """Whether the RIFF chunks of ``data[pos:end]`` hold a lossy VP8 bitstream, or a frame of an animation does."""
    while pos + 8 <= end:
        kind, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if kind == b"VP8 ":
            return True
        if kind == b"ANMF" and _holds_vp8(data, pos + 24, min(end, pos + 8 + size)):  # a frame: 16 bytes, then chunks
            return True
        pos += 8 + size + (size & 1)
    return False


GREY_SPREAD = 8  # an image whose channels never differ by more than this is greyscale
UPSCALE_TOLERANCE = 1e-9  # a cover scale this close to the limit passes (float rounding of exact fits)


def cover_scale(width: int, height: int, size: tuple[int, int]) -> float:
    """The factor by which a width x height image is resized to cover ``size`` = (width, height)."""
    return max(size[0] / width, size[1] / height)


@dataclass(frozen=True)
class Screen:
    """What a pristine image must pass: no upscaling beyond ``max_upscale`` to reach the working size, an estimated
    JPEG quality of at least ``min_jpeg_quality``, no other lossy encoding (``lossy_encoding``: a palette, lossy
    WebP) unless ``min_jpeg_quality`` is 0 (the compression checks off), a shorter side of ``min_side`` pixels, and
    colour.

    Transferred labels assume a pristine reference: an upscaled or compressed image is already degraded, and its
    distorted versions would inherit the scores of clean references. Greyscale images are refused unless
    ``allow_grey``: the colour distortions would inherit the scores of colourful references.
    """

    min_side: int = 128
    min_jpeg_quality: int = 90
    allow_grey: bool = False
    max_upscale: float = 1.0

    @classmethod
    def off(cls) -> Screen:
        """A screen that passes every decodable image (for a selection taken as given)."""
        return cls(min_side=1, min_jpeg_quality=0, allow_grey=True, max_upscale=float("inf"))

    @property
    def applied(self) -> bool:
        """Whether the screen refuses anything beyond undecodable images."""
        return self != Screen.off()

    def looser_than_default(self) -> dict:
        """The settings less strict than the defaults, as {name: [value, default]} (JSON-ready)."""
        default = Screen()
        looser = {
            "max_upscale": self.max_upscale > default.max_upscale,
            "min_jpeg_quality": self.min_jpeg_quality < default.min_jpeg_quality,
            "min_side": self.min_side < default.min_side,
            "allow_grey": self.allow_grey and not default.allow_grey,
        }
        return {k: [self._json(k), getattr(default, k)] for k, loose in looser.items() if loose}

    def describe(self) -> dict:
        """JSON-ready settings, as recorded in manifests and dataset cards (no upscaling limit: null)."""
        return {
            "applied": self.applied,
            **{k: self._json(k) for k in ("min_side", "min_jpeg_quality", "max_upscale", "allow_grey")},
            "looser_than_default": self.looser_than_default(),
        }

    def _json(self, name: str):
        value = getattr(self, name)
        return None if value == float("inf") else value

    def reason_to_reject(
        self,
        width: int,
        height: int,
        quality: int | None,
        size: tuple[int, int],
        grey: Callable[[], bool],
        lossy: str | None = None,
    ) -> str | None:
        """Why a ``width`` x ``height`` image (as displayed) of estimated JPEG ``quality`` (None: not a JPEG) and
        other ``lossy`` encoding (``lossy_encoding``), to be canonicalised to ``size``, fails the screen, or None if
        it passes.

        The checks, in this order: shorter side, upscaling, JPEG quality, other lossy encoding, colour (``grey()``,
        called only when the others pass and greyscale is refused). All but colour are known from a file's header.
        """
        if min(width, height) < self.min_side:
            return f"too small ({width}x{height}; shorter side under {self.min_side} px)"
        scale = cover_scale(width, height, size)
        if scale > self.max_upscale + UPSCALE_TOLERANCE:
            return (
                f"needs upscaling ({width}x{height} by {scale:.3g}x to cover {size[0]}x{size[1]}; "
                f"--max-upscale {self.max_upscale:g})"
            )
        if quality is not None and quality < self.min_jpeg_quality:
            return f"low JPEG quality (estimated {quality}; --min-jpeg-quality {self.min_jpeg_quality})"
        if lossy is not None and self.min_jpeg_quality > 0:
            return f"not pristine: {lossy} (--min-jpeg-quality 0 turns the compression checks off)"
        if not self.allow_grey and grey():
            return "greyscale (no colour; pass --allow-grey to keep)"
        return None


def is_grey(image: np.ndarray) -> bool:
    """Whether no pixel of the RGB ``image`` has channels more than GREY_SPREAD apart."""
    return int((image.max(axis=2) - image.min(axis=2)).max()) <= GREY_SPREAD

"""A pristine image prepared once for all its distortions, and the result forms the types return."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numba
import numpy as np

from saqt.build.distortions.primitives import (
    linear_rows_to_lab,
    mapmm_to_uint8,
    simd_pixels,
    srgb_to_linear,
    stretch,
    to_uint8,
)

T = TypeVar("T")
MIN_SIDE = 48  # type 20 moves 16 px patches by up to 8 px inside a 16 px margin


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Check that ``image`` is uint8 RGB (grey H x W is replicated to three channels); raise ValueError if not."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}; convert to 8-bit RGB first")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        what = (
            "RGBA (drop or composite the alpha channel first)"
            if image.ndim == 3 and image.shape[2] == 4
            else str(image.shape)
        )
        raise ValueError(f"image must be H x W x 3 RGB, got {what}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(
            f"image must be at least {MIN_SIDE} x {MIN_SIDE} pixels, got {image.shape[1]} x {image.shape[0]}"
        )
    return np.ascontiguousarray(image)


class PreparedImage:
    """A uint8 RGB pristine image with its min-max normalised float form and memoised derived arrays."""

    def __init__(self, image: np.ndarray):
        self.u8 = as_rgb_uint8(image)
        lo, hi = int(self.u8.min()), int(self.u8.max())
        self.constant = lo == hi
        # The reference stretches the input's global min/max to [0, 1]; a uint8 image has at most 256
        # values, so the stretch is a 256-entry table and pointwise distortions can work on that table.
        self.x_lut = (np.arange(256, dtype=np.float64) - lo) / max(hi - lo, 1)
        self._memo: dict[Callable, object] = {}

    @property
    def shape(self) -> tuple[int, int]:
        """Height and width."""
        return self.u8.shape[0], self.u8.shape[1]

    @property
    def x(self) -> np.ndarray:
        """The normalised float64 image in [0, 1] (read-only, shared)."""
        return self.shared(_normalised)

    @property
    def rgb8(self) -> np.ndarray:
        """The normalised image quantised back to uint8 as MATLAB's imwrite does (equal to ``u8`` for a full-range image)."""
        return self.shared(_normalised_uint8)

    @property
    def lab(self) -> np.ndarray:
        """CIE Lab of the normalised image (read-only, shared)."""
        return self.shared(_lab)

    @property
    def colours(self) -> ColourTable:
        """The image's distinct colours (read-only, shared)."""
        return self.shared(_colour_table)

    @property
    def colour_lab(self) -> np.ndarray:
        """CIE Lab of each distinct colour, K x 3, the values its pixels have in :attr:`lab` (read-only, shared)."""
        return self.shared(_colour_lab)

    def identity(self) -> Indexed:
        """The normalised image itself as an :class:`Indexed` result."""
        return Indexed(self.u8, self.x_lut)

    def shared(self, fn: Callable[[PreparedImage], T]) -> T:
        """``fn(self)``, computed once per image and reused by every level and type that asks for it."""
        if fn not in self._memo:
            value = fn(self)
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            self._memo[fn] = value
        return self._memo[fn]


def _normalised(src: PreparedImage) -> np.ndarray:
    return src.x_lut[src.u8]


def _normalised_uint8(src: PreparedImage) -> np.ndarray:
    return to_uint8(src.x_lut)[src.u8]


def _colour_lab(src: PreparedImage) -> np.ndarray:
    # The transfer curve on the 256 table values (clipped: values of codes absent from the image fall outside [0, 1]).
    linear = srgb_to_linear(np.clip(src.x_lut, 0.0, 1.0))[src.colours.codes]
    return linear_rows_to_lab(linear, src.colours.simd_rows)


def _lab(src: PreparedImage) -> np.ndarray:
    return _per_pixel(src.colour_lab, src.colours.rows)


@numba.njit(cache=True, nogil=True)
def _distinct_rows(px: np.ndarray, simd_end: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Row of each pixel and first pixel of each row; one row per colour before ``simd_end``, one per pixel after."""
    n = px.shape[0]
    size = 1
    while size < 2 * min(n, 1 << 24):  # at most half full: there are at most 2^24 colours
        size *= 2
    slot_row = np.full(size, -1, np.int32)  # open addressing with linear probing on the packed 24-bit colour
    slot_key = np.empty(size, np.int32)
    row_of = np.empty(n, np.int32)
    first = np.empty(n, np.int64)
    rows = 0
    for p in range(simd_end):
        key = (np.int32(px[p, 0]) << 16) | (np.int32(px[p, 1]) << 8) | np.int32(px[p, 2])
        h = ((np.int64(key) * 2654435761) >> 7) & (size - 1)
        while slot_row[h] >= 0 and slot_key[h] != key:
            h = (h + 1) & (size - 1)
        if slot_row[h] < 0:
            slot_row[h], slot_key[h], first[rows] = rows, key, p
            rows += 1
        row_of[p] = slot_row[h]
    simd_rows = rows
    for p in range(simd_end, n):
        row_of[p], first[rows] = rows, p
        rows += 1
    return row_of, first[:rows], simd_rows


@dataclass(frozen=True)
class ColourTable:
    """The distinct colours of an image, for types whose output at a pixel depends only on its colour.

    ``rows`` numbers each pixel's colour (H x W) and ``codes`` holds each colour's uint8 RGB (K x 3).
    The last pixels of the image, which ``cv2.transform`` computes on its scalar path (see
    :func:`~saqt.build.distortions.primitives.simd_pixels`), have a row each, from ``simd_rows`` on: their
    Lab values, and the colours made from them, round differently from the same colour elsewhere.
    """

    rows: np.ndarray
    codes: np.ndarray
    simd_rows: int


def _colour_table(src: PreparedImage) -> ColourTable:
    n = src.shape[0] * src.shape[1]
    rows, first, simd_rows = _distinct_rows(src.u8.reshape(n, 3), simd_pixels(n))
    return ColourTable(rows.reshape(src.shape), src.u8.reshape(n, 3)[first], simd_rows)


@dataclass(frozen=True)
class PerColour:
    """A distorted float image stored as ``values[rows]``: a row of a :class:`ColourTable` per pixel, K x 3 values."""

    rows: np.ndarray
    values: np.ndarray


@numba.njit(cache=True, nogil=True)
def _per_pixel(rgb: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rgb[rows]``: each pixel's row of a K x 3 table (H x W x 3); 20x faster than numpy's fancy indexing."""
    h, w = rows.shape
    out = np.empty((h, w, 3), rgb.dtype)
    for r in range(h):
        for c in range(w):
            out[r, c, 0], out[r, c, 1], out[r, c, 2] = rgb[rows[r, c], 0], rgb[rows[r, c], 1], rgb[rows[r, c], 2]
    return out


@dataclass(frozen=True)
class Indexed:
    """A distorted float image stored as ``lut[codes]``: 8-bit codes and a 256-entry value table.

    Types that only move pixels or map values pointwise return this form, which lets the final
    min-max stretch and quantisation run on 256 values instead of every pixel.
    """

    codes: np.ndarray
    lut: np.ndarray


@numba.njit(cache=True, nogil=True)
def present_codes(codes: np.ndarray) -> np.ndarray:
    """Which of the 256 byte values occur in ``codes``."""
    seen = np.zeros(256, np.bool_)
    for c in codes.ravel():
        seen[c] = True
    return seen


def quantised_output(result: np.ndarray | Indexed | PerColour) -> np.ndarray:
    """The reference's last steps: global min-max stretch, then ``floor(255 x + 0.5)`` to uint8."""
    if isinstance(result, PerColour):  # every row is some pixel's colour, so the rows have the image's min and max
        return _per_pixel(mapmm_to_uint8(np.ascontiguousarray(result.values, dtype=np.float64)), result.rows)
    if isinstance(result, Indexed):
        present = result.lut[present_codes(result.codes)]
        return cv2.LUT(result.codes, to_uint8(stretch(result.lut, present.min(), present.max())))
    return mapmm_to_uint8(np.ascontiguousarray(result, dtype=np.float64))

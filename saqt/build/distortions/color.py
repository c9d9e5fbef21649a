"""Colour types: 4 diffusion, 5 shift, 6 quantisation, 7 HSV saturation, 8 Lab saturation."""

from __future__ import annotations

import numba
import numpy as np
from PIL import Image

from saqt.build.distortions.palette import colour_moments, wu_palette
from saqt.build.distortions.prepared import Indexed, PerColour, PreparedImage
from saqt.build.distortions.primitives import (
    gaussian_filter,
    lab_pixel_to_srgb,
    lab_rows_to_srgb,
    mapmm,
    mround,
    rgb2gray,
    simd_pixels,
)
from saqt.build.distortions.registry import renderer

BYTE_LUT = np.arange(256, dtype=np.float64) / 255.0


def chroma_float32(src: PreparedImage) -> np.ndarray:
    """a* and b* as float32, which blurs 3.6x faster than float64 (< 1e-5 apart in a*, b*)."""
    return np.ascontiguousarray(src.lab[..., 1:], dtype=np.float32)


@numba.njit(cache=True, nogil=True)
def _diffused_to_srgb(lab: np.ndarray, chroma: np.ndarray, amount: np.float32, simd_end: int) -> np.ndarray:
    px, ab = lab.reshape(-1, 3), chroma.reshape(-1, 2)
    out = np.empty(px.shape)
    for i in range(px.shape[0]):  # the chroma is scaled in float32, as numpy scales a float32 array
        lab_pixel_to_srgb(px[i, 0], np.float64(ab[i, 0] * amount), np.float64(ab[i, 1] * amount), i < simd_end, out, i)
    return out.reshape(lab.shape)


@renderer(4)
def color_diffusion(src: PreparedImage, amount: float) -> np.ndarray:
    """Blur a* and b* with sigma 1.5 a + 2 and scale them by a; L* unchanged."""
    chroma = gaussian_filter(src.shared(chroma_float32), 1.5 * amount + 2)
    n = src.shape[0] * src.shape[1]
    return _diffused_to_srgb(src.lab, chroma, np.float32(amount), simd_pixels(n))


def edge_weights(src: PreparedImage) -> np.ndarray:
    """Per-pixel blend weight of type 5: smoothed gradient magnitude, floored at 0.1, 1 %-99 % stretched."""
    gy, gx = np.gradient(rgb2gray(src.x))
    e = mapmm(gaussian_filter(np.hypot(gx, gy), 4))
    e = mapmm(np.maximum(e, 0.1))
    n = e.size
    k = int(min(max(mround(0.99 * n), 1), n))
    lo, hi = np.partition(e.ravel(), (n - k, k - 1))[[n - k, k - 1]]
    return mapmm(np.clip(e, lo, hi))


@numba.njit(cache=True, nogil=True)
def _blend_shifted_green(x: np.ndarray, weight: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``x`` with green ``weight g' + (1 - weight) g``, g' the green plane shifted by (dy, dx), edges replicated."""
    h, w, _ = x.shape
    out = np.empty((h, w, 3))
    for r in range(h):
        src_r = min(max(r - dy, 0), h - 1)
        for c in range(w):
            wt = weight[r, c]
            out[r, c, 0] = x[r, c, 0]
            out[r, c, 1] = wt * x[src_r, min(max(c - dx, 0), w - 1), 1] + (1 - wt) * x[r, c, 1]
            out[r, c, 2] = x[r, c, 2]
    return out


def draw_direction(rng: np.random.Generator, shape: tuple[int, int], amount: float) -> dict:
    """The shift direction: two uniform draws (row, column), normalised later."""
    return {"direction": rng.random(2).tolist()}


@renderer(5, draw=draw_direction)
def color_shift(src: PreparedImage, amount: float, params: dict) -> np.ndarray:
    """Shift the green channel down-right by ``round(amount * u / |u|)`` px and blend it in at edges."""
    u = np.asarray(params["direction"], dtype=np.float64)
    dy, dx = (int(v) for v in mround(amount * u / np.sqrt(np.sum(u * u))))
    return _blend_shifted_green(src.x, src.shared(edge_weights), dy, dx)


def _moments(src: PreparedImage) -> np.ndarray:
    return colour_moments(src.rgb8)


@renderer(6)
def color_quantization(src: PreparedImage, colors: float) -> Indexed:
    """Reduce to an n-colour minimum-variance palette, then map with Floyd-Steinberg error diffusion."""
    palette = Image.new("P", (1, 1))
    palette.putpalette(wu_palette(src.shared(_moments), int(colors)).ravel().tolist())
    dithered = Image.fromarray(src.rgb8).quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    return Indexed(np.asarray(dithered.convert("RGB")), BYTE_LUT)


def channel_max(src: PreparedImage) -> np.ndarray:
    """V of HSV: the per-pixel maximum over R, G, B."""
    return src.x.max(axis=2, keepdims=True)


@numba.vectorize(["float64(float64, float64, float64)"], cache=True)
def _towards(v: float, factor: float, c: float) -> float:
    """``v - factor (v - c)``: from v towards the channel value c, ``factor`` of the way."""
    return v - factor * (v - c)


@renderer(7)
def color_saturation_hsv(src: PreparedImage, factor: float) -> np.ndarray:
    """Scale HSV saturation by ``factor`` with no clipping.

    With H and V fixed, ``hsv2rgb(h, f s, v)`` is ``v - f (v - c)`` for each channel c; MATLAB's
    extra division by the global maximum is undone by the final min-max stretch.
    """
    return _towards(src.shared(channel_max), factor, src.x)


@renderer(8)
def color_saturation_lab(src: PreparedImage, factor: float) -> PerColour:
    """Scale a* and b* by ``factor``; back to sRGB, clipped (once per distinct colour)."""
    lab = src.colour_lab.copy()
    lab[:, 1:] *= factor
    return PerColour(src.colours.rows, lab_rows_to_srgb(lab, src.colours.simd_rows))

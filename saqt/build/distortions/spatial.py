"""Spatial types: 19 jitter, 20 non-eccentricity patches, 21 pixelate, 22 quantisation, 23 colour blocks."""

from __future__ import annotations

import numba
import numpy as np

from saqt.build.distortions.multithresh import multithresh
from saqt.build.distortions.pcg64_draws import standard_normal
from saqt.build.distortions.prepared import Indexed, PreparedImage
from saqt.build.distortions.primitives import mround
from saqt.build.distortions.registry import renderer

JITTER_PASSES = 5
PATCH = 16
BLOCK = 32


@numba.njit(cache=True, nogil=True, inline="always")
def _keys_weights(t: float) -> tuple[float, float, float, float]:
    """Keys cubic-convolution weights (a = -0.5) of the samples at offsets -1, 0, 1, 2 for fraction t."""
    s = 1.0 - t
    return -0.5 * t * s * s, 1.0 + t * t * (1.5 * t - 2.5), 1.0 + s * s * (1.5 * s - 2.5), -0.5 * s * t * t


@numba.njit(cache=True, nogil=True, inline="always")
def _keys_taps(i: int, n: int) -> tuple[int, int, int, int]:
    """The sample indices i - 1 .. i + 2 of a Keys neighbourhood, clamped to 0..n - 1 (replicated edges)."""
    return min(max(i - 1, 0), n - 1), min(max(i, 0), n - 1), min(max(i + 1, 0), n - 1), min(max(i + 2, 0), n - 1)


@numba.njit(cache=True, nogil=True, inline="always")
def _keys_line(line: np.ndarray, starts: tuple, weights: tuple, ch: int) -> float:
    """One row of a 4 x 4 neighbourhood, weighted and summed left to right; ``line`` is an image row as R, G, B, R..."""
    return (
        0.0
        + weights[0] * line[starts[0] + ch]
        + weights[1] * line[starts[1] + ch]
        + weights[2] * line[starts[2] + ch]
        + weights[3] * line[starts[3] + ch]
    )


@numba.njit(cache=True, nogil=True, inline="always")
def _keys_sample(lines: np.ndarray, row: float, col: float, out: np.ndarray, at: int) -> None:
    """Write the RGB image ``lines`` (H x 3W) interpolated at the real position (row, col) to ``out[at:at + 3]``."""
    r0 = np.floor(row)
    c0 = np.floor(col)
    wy = _keys_weights(row - r0)
    wx = _keys_weights(col - c0)
    ri = _keys_taps(int(r0), lines.shape[0])
    ci = _keys_taps(int(c0), lines.shape[1] // 3)
    starts = (3 * ci[0], 3 * ci[1], 3 * ci[2], 3 * ci[3])
    for ch in range(3):
        out[at + ch] = (
            0.0
            + wy[0] * _keys_line(lines[ri[0]], starts, wx, ch)
            + wy[1] * _keys_line(lines[ri[1]], starts, wx, ch)
            + wy[2] * _keys_line(lines[ri[2]], starts, wx, ch)
            + wy[3] * _keys_line(lines[ri[3]], starts, wx, ch)
        )


@numba.njit(cache=True, nogil=True)
def keys_remap(img: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample ``img`` (C-contiguous H x W x 3) at real positions with bicubic (Keys) interpolation, edges replicated."""
    h, w, _ = img.shape
    lines = img.reshape(h, 3 * w)
    out = np.empty((h, 3 * w))
    for r in range(h):
        for c in range(w):
            _keys_sample(lines, rows[r, c], cols[r, c], out[r], 3 * c)
    return out.reshape(h, w, 3)


@numba.njit(cache=True, nogil=True)
def keys_shift(img: np.ndarray, strength: float, draws: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``keys_remap`` backward by per-pixel shifts, into ``out`` (not ``img``).

    Pixel (r, c) samples (r, c) - strength * draws[:, r, c].
    """
    h, w, _ = img.shape
    lines = img.reshape(h, 3 * w)
    out_lines = out.reshape(h, 3 * w)
    for r in range(h):
        for c in range(w):
            row, col = r - strength * draws[0, r, c], c - strength * draws[1, r, c]
            _keys_sample(lines, row, col, out_lines[r], 3 * c)
    return out


@renderer(19, noise=True)
def jitter(src: PreparedImage, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Five passes of backward warping by per-pixel Gaussian shifts of std ``strength`` px (bicubic).

    The passes alternate between two buffers and refill one array of draws (fresh large arrays cost page faults).
    """
    y, images, draws = src.x, np.empty((2, *src.shape, 3)), np.empty((2, *src.shape))
    for k in range(JITTER_PASSES):
        y = keys_shift(y, strength, standard_normal(rng, draws.shape, out=draws), images[k % 2])
    return y


def draw_patches(rng: np.random.Generator, shape: tuple[int, int], count: float) -> dict:
    """Source and destination corners (0-based row, col) of each 16 x 16 patch, in copy order."""
    h, w = shape
    patches = []
    for u1, u2, u3, u4 in rng.random((int(count), 4)):
        c0 = int(mround(u1 * (w - 3 * PATCH))) + PATCH
        r0 = int(mround(u2 * (h - 3 * PATCH))) + PATCH
        c1 = int(mround((u3 - 0.5) * PATCH + c0))
        r1 = int(mround((u4 - 0.5) * PATCH + r0))
        patches.append([r0 - 1, c0 - 1, r1 - 1, c1 - 1])
    return {"patches": patches}


@renderer(20, draw=draw_patches)
def non_eccentricity_patch(src: PreparedImage, count: float, params: dict) -> Indexed:
    """Copy 16 x 16 patches to positions up to 8 px away, one after another on the current image."""
    codes = src.u8.copy()
    for r0, c0, r1, c1 in params["patches"]:
        codes[r1 : r1 + PATCH, c1 : c1 + PATCH] = codes[r0 : r0 + PATCH, c0 : c0 + PATCH]
    return Indexed(codes, src.x_lut)


def nearest_indices(n_out: int, n_in: int, scale: float) -> np.ndarray:
    """Source indices of ``imresize(..., 'nearest')``: floor((u + 0.5) / scale), clamped."""
    return np.clip(np.floor((np.arange(n_out) + 0.5) / scale).astype(np.intp), 0, n_in - 1)


@renderer(21)
def pixelate(src: PreparedImage, strength: float) -> Indexed:
    """Nearest-neighbour downscale by 0.95 - s^0.6, then nearest-neighbour back to full size."""
    h, w = src.shape
    z = 0.95 - strength**0.6
    lh, lw = int(np.ceil(z * h)), int(np.ceil(z * w))
    rows = nearest_indices(lh, h, z)[nearest_indices(h, lh, h / lh)]
    cols = nearest_indices(lw, w, z)[nearest_indices(w, lw, w / lw)]
    return Indexed(np.take(np.take(src.u8, rows, axis=0), cols, axis=1), src.x_lut)


def grey_histogram(src: PreparedImage) -> np.ndarray:
    """256-bin histogram of round(255 x) over all samples of the normalised image."""
    counts = np.bincount(src.u8.ravel(), minlength=256)
    bins = np.clip(mround(255.0 * src.x_lut), 0, 255).astype(np.intp)  # values absent from the image fall outside
    return np.bincount(bins, weights=counts, minlength=256)


@renderer(22)
def quantization(src: PreparedImage, levels: float) -> Indexed:
    """Posterise all channels with ``levels`` multi-Otsu thresholds shared by R, G, B."""
    hist = src.shared(grey_histogram)
    if np.count_nonzero(hist) <= levels:  # MATLAB's degenerate case: the image's own values are the thresholds
        return src.identity()
    tau = multithresh(hist, int(levels)) / 255.0
    values = np.concatenate([[0.0], tau[1:], [1.0]])
    return Indexed(src.u8, values[np.searchsorted(tau, src.x_lut, side="left")])


def draw_blocks(rng: np.random.Generator, shape: tuple[int, int], count: float) -> dict:
    """Top-left corner (0-based row, col, may be -1) and RGB colour of each 32 x 32 block, in paint order."""
    h, w = shape
    blocks = []
    for r, g, b, ux, uy in rng.random((int(count), 5)):
        col = int(mround(ux * (w - BLOCK))) - 1
        row = int(mround(uy * (h - BLOCK))) - 1
        blocks.append([row, col, float(r), float(g), float(b)])
    return {"blocks": blocks}


@renderer(23, draw=draw_blocks)
def color_block(src: PreparedImage, count: float, params: dict) -> np.ndarray:
    """Paint opaque 32 x 32 squares of random colours; later squares cover earlier ones."""
    y = src.x.copy()
    for row, col, *rgb in params["blocks"]:
        y[max(row, 0) : row + BLOCK, max(col, 0) : col + BLOCK] = rgb
    return y

"""Minimum-variance colour palettes (Wu's box-splitting quantiser), the method behind MATLAB's rgb2ind."""

from __future__ import annotations

import numba
import numpy as np

BITS = 5
SIDE = (1 << BITS) + 1  # cells 1..32 per axis; index 0 is the zero row of the prefix sums
MOMENTS = 5  # count, sum R, sum G, sum B, sum of squares


@numba.njit(cache=True, nogil=True)
def colour_moments(rgb: np.ndarray) -> np.ndarray:
    """Prefix sums over the 5-bit colour cube of (count, sum R, sum G, sum B, sum of squares)."""
    m = np.zeros((MOMENTS, SIDE, SIDE, SIDE))
    px = rgb.reshape(-1, 3)
    for i in range(px.shape[0]):
        r, g, b = np.int64(px[i, 0]), np.int64(px[i, 1]), np.int64(px[i, 2])
        cell = (r >> (8 - BITS)) + 1, (g >> (8 - BITS)) + 1, (b >> (8 - BITS)) + 1
        m[0][cell] += 1.0
        m[1][cell] += r
        m[2][cell] += g
        m[3][cell] += b
        m[4][cell] += r * r + g * g + b * b
    for i in range(1, SIDE):  # prefix sums along R, then G, then B
        m[:, i] += m[:, i - 1]
    for i in range(1, SIDE):
        m[:, :, i] += m[:, :, i - 1]
    for i in range(1, SIDE):
        m[:, :, :, i] += m[:, :, :, i - 1]
    return m


@numba.njit(cache=True, nogil=True)
def _volume(m: np.ndarray, box: np.ndarray, k: int) -> float:
    """Moment ``k`` of the box (r0, r1] x (g0, g1] x (b0, b1] by inclusion-exclusion."""
    r0, r1, g0, g1, b0, b1 = box
    return (
        m[k, r1, g1, b1]
        - m[k, r1, g1, b0]
        - m[k, r1, g0, b1]
        + m[k, r1, g0, b0]
        - m[k, r0, g1, b1]
        + m[k, r0, g1, b0]
        + m[k, r0, g0, b1]
        - m[k, r0, g0, b0]
    )


@numba.njit(cache=True, nogil=True)
def _variance(m: np.ndarray, box: np.ndarray) -> float:
    """Summed squared distance of the box's pixels from their mean colour."""
    w = _volume(m, box, 0)
    sr, sg, sb = _volume(m, box, 1), _volume(m, box, 2), _volume(m, box, 3)
    return 0.0 if w == 0 else _volume(m, box, 4) - (sr * sr + sg * sg + sb * sb) / w


@numba.njit(cache=True, nogil=True)
def _slab(m: np.ndarray, box: np.ndarray, axis: int, c: int, k: int) -> float:
    """Moment ``k`` of the box's cells up to and including position ``c`` on ``axis``, from the prefix origin."""
    lo = box.copy()
    lo[2 * axis + 1] = c
    lo[2 * axis] = 0
    return _volume(m, lo, k)


@numba.njit(cache=True, nogil=True)
def _squared_sum(moments: np.ndarray) -> float:
    """Squared norm of a part's colour sum, summed R, G, B in that order."""
    return moments[1] * moments[1] + moments[2] * moments[2] + moments[3] * moments[3]


@numba.njit(cache=True, nogil=True)
def _best_cut(m: np.ndarray, box: np.ndarray) -> tuple[int, int]:
    """(axis, position) of the cut of ``box`` maximising the summed squared part means x counts; axis -1 if none."""
    whole = np.array([_volume(m, box, k) for k in range(4)])
    best, best_axis, best_cut = -np.inf, -1, -1
    part = np.empty(4)
    for axis in range(3):
        lo, hi = box[2 * axis], box[2 * axis + 1]
        base = np.array([_slab(m, box, axis, lo, k) for k in range(4)])
        for c in range(lo + 1, hi):
            for k in range(4):
                part[k] = _slab(m, box, axis, c, k) - base[k]
            rest = whole - part
            if part[0] <= 0 or rest[0] <= 0:
                continue
            score = _squared_sum(part) / part[0] + _squared_sum(rest) / rest[0]
            if score > best:
                best, best_axis, best_cut = score, axis, c
    return best_axis, best_cut


@numba.njit(cache=True, nogil=True)
def _split_boxes(m: np.ndarray, colors: int) -> np.ndarray:
    """Greedily split the colour cube, always the box of largest variance, into at most ``colors`` boxes."""
    boxes = np.zeros((colors, 6), np.int64)
    boxes[0] = (0, SIDE - 1, 0, SIDE - 1, 0, SIDE - 1)
    variances = np.zeros(colors)
    variances[0] = _variance(m, boxes[0])
    count = 1
    while count < colors:
        target = np.argmax(variances[:count])
        if variances[target] <= 0:
            break
        axis, cut = _best_cut(m, boxes[target])
        if axis < 0:
            variances[target] = 0.0
            continue
        boxes[count] = boxes[target]
        boxes[target, 2 * axis + 1] = cut
        boxes[count, 2 * axis] = cut
        variances[target] = _variance(m, boxes[target])
        variances[count] = _variance(m, boxes[count])
        count += 1
    return boxes[:count]


@numba.njit(cache=True, nogil=True)
def _box_sums(m: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Pixel count and R, G, B sums of each box."""
    return np.array([[_volume(m, box, k) for k in range(4)] for box in boxes])


def wu_palette(m: np.ndarray, colors: int) -> np.ndarray:
    """At most ``colors`` uint8 RGB colours: the means of greedily variance-split boxes of ``colour_moments``."""
    sums = _box_sums(m, _split_boxes(m, colors))
    sums = sums[sums[:, 0] > 0]
    return np.floor(sums[:, 1:4] / sums[:, :1] + 0.5).clip(0, 255).astype(np.uint8)

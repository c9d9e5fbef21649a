"""Minimum-variance colour palettes (Wu's box-splitting quantiser), the method behind MATLAB's rgb2ind."""

from __future__ import annotations

import numpy as np

BITS = 5
SIDE = (1 << BITS) + 1  # cells 1..32 per axis; index 0 is the zero row of the prefix sums


def colour_moments(rgb: np.ndarray) -> np.ndarray:
    """Prefix sums over the 5-bit colour cube of (count, sum R, sum G, sum B, sum of squares)."""
    px = rgb.reshape(-1, 3).astype(np.int64)
    cell = px >> (8 - BITS)
    idx = ((cell[:, 0] + 1) * SIDE + cell[:, 1] + 1) * SIDE + cell[:, 2] + 1
    n = SIDE**3
    weights = (None, px[:, 0], px[:, 1], px[:, 2], (px * px).sum(axis=1))
    m = np.stack([np.bincount(idx, weights=w, minlength=n).reshape(SIDE, SIDE, SIDE) for w in weights])
    return m.cumsum(axis=1).cumsum(axis=2).cumsum(axis=3)


def _volume(m: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    """Moments of the box (r0, r1] x (g0, g1] x (b0, b1] by inclusion-exclusion."""
    r0, r1, g0, g1, b0, b1 = box
    return (
        m[:, r1, g1, b1]
        - m[:, r1, g1, b0]
        - m[:, r1, g0, b1]
        + m[:, r1, g0, b0]
        - m[:, r0, g1, b1]
        + m[:, r0, g1, b0]
        + m[:, r0, g0, b1]
        - m[:, r0, g0, b0]
    )


def _variance(m: np.ndarray, box: tuple[int, ...]) -> float:
    w, sr, sg, sb, s2 = _volume(m, box)
    return 0.0 if w == 0 else s2 - (sr * sr + sg * sg + sb * sb) / w


def _prefix_along(m: np.ndarray, box: tuple[int, ...], axis: int) -> np.ndarray:
    """Moments of (lo, c] on ``axis`` x the box's extent on the other axes, for every c from lo to hi."""
    lo, hi = box[2 * axis], box[2 * axis + 1]
    planes = np.moveaxis(m, axis + 1, 1)[:, lo : hi + 1]
    (a0, a1), (b0, b1) = [(box[2 * k], box[2 * k + 1]) for k in range(3) if k != axis]
    v = planes[:, :, a1, b1] - planes[:, :, a1, b0] - planes[:, :, a0, b1] + planes[:, :, a0, b0]
    return v - v[:, :1]


def _best_cut(m: np.ndarray, box: tuple[int, ...]) -> tuple[float, int, int]:
    """(score, axis, position) of the cut of ``box`` that minimises the summed within-part variance."""
    best = (-np.inf, -1, -1)
    for axis in range(3):
        part = _prefix_along(m, box, axis)[:, 1:-1]
        rest = _volume(m, box)[:, None] - part
        ok = (part[0] > 0) & (rest[0] > 0)
        if not ok.any():
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            score = (part[1:4] ** 2).sum(axis=0) / part[0] + (rest[1:4] ** 2).sum(axis=0) / rest[0]
        score[~ok] = -np.inf
        i = int(np.argmax(score))
        if score[i] > best[0]:
            best = (float(score[i]), axis, box[2 * axis] + 1 + i)
    return best


def wu_palette(m: np.ndarray, colors: int) -> np.ndarray:
    """At most ``colors`` uint8 RGB colours: the means of greedily variance-split boxes of ``colour_moments``."""
    boxes = [(0, SIDE - 1, 0, SIDE - 1, 0, SIDE - 1)]
    variances = [_variance(m, boxes[0])]
    while len(boxes) < colors:
        target = int(np.argmax(variances))
        if variances[target] <= 0:
            break
        score, axis, cut = _best_cut(m, boxes[target])
        if axis < 0:
            variances[target] = 0.0
            continue
        first, second = list(boxes[target]), list(boxes[target])
        first[2 * axis + 1] = cut
        second[2 * axis] = cut
        boxes[target], variances[target] = tuple(first), _variance(m, tuple(first))
        boxes.append(tuple(second))
        variances.append(_variance(m, tuple(second)))
    sums = np.array([_volume(m, box) for box in boxes])
    sums = sums[sums[:, 0] > 0]
    return np.floor(sums[:, 1:4] / sums[:, :1] + 0.5).clip(0, 255).astype(np.uint8)

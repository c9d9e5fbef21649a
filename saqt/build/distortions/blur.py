"""Blur types: 1 Gaussian blur, 2 lens blur, 3 motion blur."""

from __future__ import annotations

import numpy as np

from saqt.build.distortions.prepared import PreparedImage
from saqt.build.distortions.primitives import disk_kernel, filter2d, gaussian_filter, motion_kernel
from saqt.build.distortions.registry import renderer


@renderer(1)
def gaussian_blur(src: PreparedImage, sigma: float) -> np.ndarray:
    """``imgaussfilt`` with radius ceil(2 sigma) and replicate padding."""
    return gaussian_filter(src.x, sigma)


@renderer(2)
def lens_blur(src: PreparedImage, radius: float) -> np.ndarray:
    """Correlation with the anti-aliased disk ``fspecial('disk', radius)``."""
    return filter2d(src.x, disk_kernel(radius))


def draw_motion(rng: np.random.Generator, shape: tuple[int, int], length: float) -> dict:
    """The blur direction: an integer angle in degrees, uniform on 0..180 (``randi([0, 180])``)."""
    return {"angle": int(rng.integers(0, 181))}


@renderer(3, draw=draw_motion)
def motion_blur(src: PreparedImage, length: float, params: dict):
    """Correlation with the line kernel ``fspecial('motion', length, angle)``."""
    k = motion_kernel(length, float(params["angle"]))
    return src.identity() if k.size == 1 else filter2d(src.x, k)

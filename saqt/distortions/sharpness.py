"""Sharpness and contrast types: 24 high sharpen, 25 contrast change."""

from __future__ import annotations

import numpy as np

from saqt.distortions.prepared import Indexed, PreparedImage
from saqt.distortions.primitives import curve_spline, gaussian_filter, lab2rgb_clipped
from saqt.distortions.registry import renderer

SHARPEN_SIGMA = 3.0  # imsharpen's default Radius, used as the Gaussian sigma (13 x 13 kernel)


def blurred_lightness(src: PreparedImage) -> np.ndarray:
    """L* smoothed by the unsharp mask's Gaussian."""
    return gaussian_filter(np.ascontiguousarray(src.lab[..., 0]), SHARPEN_SIGMA)


@renderer(24)
def high_sharpen(src: PreparedImage, amount: float) -> np.ndarray:
    """Unsharp mask on L* only: ``L + amount (L - G * L)``; back to sRGB, clipped."""
    lab = src.lab.copy()
    lightness = src.lab[..., 0]
    lab[..., 0] = lightness + amount * (lightness - src.shared(blurred_lightness))
    return lab2rgb_clipped(lab)


@renderer(25)
def contrast_change(src: PreparedImage, amount: float) -> Indexed:
    """S-shaped (a > 0) or inverse-S (a < 0) spline tone curve with knots 0.25 - a/4 and 0.75 + a/4."""
    return Indexed(src.u8, curve_spline(src.x_lut, 0.25 - amount / 4, 0.75 + amount / 4))

"""Sharpness and contrast types: 24 high sharpen, 25 contrast change."""

from __future__ import annotations

import numba
import numpy as np

from saqt.build.distortions.prepared import Indexed, PreparedImage
from saqt.build.distortions.primitives import curve_spline, gaussian_filter, lab_pixel_to_srgb, simd_pixels
from saqt.build.distortions.registry import renderer

SHARPEN_SIGMA = 3.0  # imsharpen's default Radius, used as the Gaussian sigma (13 x 13 kernel)


def blurred_lightness(src: PreparedImage) -> np.ndarray:
    """L* smoothed by the unsharp mask's Gaussian."""
    return gaussian_filter(np.ascontiguousarray(src.lab[..., 0]), SHARPEN_SIGMA)


@numba.njit(cache=True, nogil=True)
def _sharpened_to_srgb(lab: np.ndarray, blurred: np.ndarray, amount: float, simd_end: int) -> np.ndarray:
    px, smooth = lab.reshape(-1, 3), blurred.reshape(-1)
    out = np.empty(px.shape)
    for i in range(px.shape[0]):
        lightness = px[i, 0]
        lab_pixel_to_srgb(lightness + amount * (lightness - smooth[i]), px[i, 1], px[i, 2], i < simd_end, out, i)
    return out.reshape(lab.shape)


@renderer(24)
def high_sharpen(src: PreparedImage, amount: float) -> np.ndarray:
    """Unsharp mask on L* only: ``L + amount (L - G * L)``; back to sRGB, clipped (one compiled pass)."""
    n = src.shape[0] * src.shape[1]
    return _sharpened_to_srgb(src.lab, src.shared(blurred_lightness), amount, simd_pixels(n))


@renderer(25)
def contrast_change(src: PreparedImage, amount: float) -> Indexed:
    """S-shaped (a > 0) or inverse-S (a < 0) spline tone curve with knots 0.25 - a/4 and 0.75 + a/4."""
    return Indexed(src.u8, curve_spline(src.x_lut, 0.25 - amount / 4, 0.75 + amount / 4))

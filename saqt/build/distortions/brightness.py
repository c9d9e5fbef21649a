"""Brightness types: 16 brighten, 17 darken, 18 mean shift."""

from __future__ import annotations

import numba
import numpy as np

from saqt.build.distortions.prepared import Indexed, PerColour, PreparedImage
from saqt.build.distortions.primitives import curve_parabola, lab_rows_to_srgb
from saqt.build.distortions.registry import renderer


@numba.vectorize(["float64(float64, float64)"], cache=True)
def _two_to_one(a: float, b: float) -> float:
    """The weighted mean (2 a + b) / 3."""
    return (2.0 * a + b) / 3.0


@renderer(16)
def brighten(src: PreparedImage, amount: float) -> PerColour:
    """Mean of two tone curves with midpoint 0.5 + a/2: twice on R, G, B, once on L* (once per distinct colour)."""
    mid = 0.5 + amount / 2
    rgb_curve = curve_parabola(src.x_lut, mid)[src.colours.codes]
    lab = src.colour_lab.copy()
    lab[:, 0] = 100.0 * curve_parabola(lab[:, 0] / 100.0, mid)
    return PerColour(src.colours.rows, _two_to_one(rgb_curve, lab_rows_to_srgb(lab, src.colours.simd_rows)))


@renderer(17)
def darken(src: PreparedImage, amount: float) -> Indexed:
    """Tone curve with midpoint 0.5 - a/2 on R, G, B."""
    return Indexed(src.u8, curve_parabola(src.x_lut, 0.5 - amount / 2))


@renderer(18)
def mean_shift(src: PreparedImage, offset: float) -> Indexed:
    """Add ``offset`` to every sample and clip (the final stretch turns this into a gain or a crush)."""
    return Indexed(src.u8, np.clip(src.x_lut + offset, 0.0, 1.0))

"""Noise types: 11 white, 12 white in YCbCr, 13 impulse, 14 multiplicative, 15 denoised noise.

Each follows MATLAB ``imnoise`` on double data: independent draws per pixel and channel, output
clipped to [0, 1].
"""

from __future__ import annotations

import cv2
import numba
import numpy as np

from saqt.distortions.normals import standard_normal
from saqt.distortions.prepared import PreparedImage
from saqt.distortions.primitives import rgb2ycbcr, ycbcr2rgb
from saqt.distortions.registry import renderer

GUIDED_RADIUS = 3  # the denoiser's windows are 7 x 7 pixels
GUIDED_EPS_GAIN = 6.0  # its regularisation is 6 x the noise variance


@numba.vectorize(["float64(float64, float64, float64)"], cache=True)
def _add_clipped(x: float, scale: float, draw: float) -> float:
    """``x + scale * draw`` clipped to [0, 1]."""
    return min(max(x + scale * draw, 0.0), 1.0)


def gaussian_noise(x: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """``imnoise(x, 'gaussian', 0, variance)``."""
    return _add_clipped(x, np.sqrt(variance), standard_normal(rng, x.shape))


@renderer(11, noise=True)
def white_noise(src: PreparedImage, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise on R, G, B."""
    return gaussian_noise(src.x, variance, rng)


@renderer(12, noise=True)
def white_noise_color_component(src: PreparedImage, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise on Y, Cb and Cr (BT.601), back to RGB, clipped."""
    return ycbcr2rgb(gaussian_noise(rgb2ycbcr(src.x), variance, rng))


@numba.vectorize(["float64(float64, float64, float64)"], cache=True)
def _salt_and_pepper(x: float, draw: float, density: float) -> float:
    """0 if the uniform draw is below d/2, 1 if below d, else the sample unchanged."""
    if draw < density / 2:
        return 0.0
    return 1.0 if draw < density else x


@renderer(13, noise=True)
def impulse_noise(src: PreparedImage, density: float, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: each sample becomes 0 with probability d/2 and 1 with probability d/2."""
    return _salt_and_pepper(src.x, rng.random(src.x.shape), density)


@numba.vectorize(["float64(float64, float64, float64)"], cache=True)
def _speckle(x: float, scale: float, draw: float) -> float:
    """``x + x n`` with ``n = scale (draw - 0.5)``, clipped to [0, 1]."""
    return min(max(x + x * (scale * (draw - 0.5)), 0.0), 1.0)


@renderer(14, noise=True)
def multiplicative_noise(src: PreparedImage, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Speckle: ``x + x n`` with n uniform, zero mean, variance ``variance``."""
    return _speckle(src.x, np.sqrt(12 * variance), rng.random(src.x.shape))


@numba.vectorize(["float64(float64, float64, float64)"], cache=True)
def _guided_gain(mean: float, mean_sq: float, eps: float) -> float:
    """Slope of the least-squares fit of a window onto itself, shrunk by ``eps``: var / (var + eps)."""
    var = mean_sq - mean * mean
    return var / (var + eps)


@numba.vectorize(["float64(float64, float64, float64)"], cache=True)
def _guided_output(gain: float, x: float, offset: float) -> float:
    """The window-averaged linear model applied to a sample, clipped to [0, 1]."""
    return min(max(gain * x + offset, 0.0), 1.0)


def guided_denoise(x: np.ndarray, variance: float) -> np.ndarray:
    """Each channel smoothed by the guided filter with itself as guide (He, Sun and Tang, 2010).

    In every (2r+1)^2 window the channel is fitted as ``a x + b`` with ``a = var / (var + eps)``; the
    output averages the fits of the windows covering each pixel. Flat areas (var << eps) are averaged,
    edges (var >> eps) kept. ``eps`` is GUIDED_EPS_GAIN times the noise variance.
    """
    size = (2 * GUIDED_RADIUS + 1, 2 * GUIDED_RADIUS + 1)

    def box(a: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(a, -1, size, borderType=cv2.BORDER_REPLICATE)

    mean = box(x)
    gain = _guided_gain(mean, box(x * x), GUIDED_EPS_GAIN * variance)
    return _guided_output(box(gain), x, box(mean - gain * mean))


@renderer(15, noise=True)
def denoise(src: PreparedImage, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise, then each channel denoised on its own.

    The reference uses MATLAB's pretrained DnCNN, which is not available outside MATLAB; this port
    substitutes a classical edge-preserving denoiser, :func:`guided_denoise`, given the true noise level.
    """
    return guided_denoise(gaussian_noise(src.x, variance, rng), variance)

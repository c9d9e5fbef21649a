"""Noise types: 11 white, 12 white in YCbCr, 13 impulse, 14 multiplicative, 15 denoised noise.

Each follows MATLAB ``imnoise`` on double data: independent draws per pixel and channel, output
clipped to [0, 1].
"""

from __future__ import annotations

import cv2
import numba
import numpy as np

from saqt.distortions.prepared import PreparedImage
from saqt.distortions.primitives import rgb2ycbcr, to_uint8, ycbcr2rgb
from saqt.distortions.registry import kernel

NLM_PATCH, NLM_SEARCH = 5, 11  # non-local means template and search window, in pixels


@numba.vectorize(["float64(float64, float64, float64)"], cache=True)
def _add_clipped(x: float, scale: float, draw: float) -> float:
    """``x + scale * draw`` clipped to [0, 1]."""
    return min(max(x + scale * draw, 0.0), 1.0)


def gaussian_noise(x: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """``imnoise(x, 'gaussian', 0, variance)``."""
    return _add_clipped(x, np.sqrt(variance), rng.standard_normal(x.shape))


@kernel(11, noise=True)
def white_noise(src: PreparedImage, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise on R, G, B."""
    return gaussian_noise(src.x, variance, rng)


@kernel(12, noise=True)
def white_noise_color_component(src: PreparedImage, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise on Y, Cb and Cr (BT.601), back to RGB, clipped."""
    return ycbcr2rgb(gaussian_noise(rgb2ycbcr(src.x), variance, rng))


@numba.vectorize(["float64(float64, float64, float64)"], cache=True)
def _salt_and_pepper(x: float, draw: float, density: float) -> float:
    """0 if the uniform draw is below d/2, 1 if below d, else the sample unchanged."""
    if draw < density / 2:
        return 0.0
    return 1.0 if draw < density else x


@kernel(13, noise=True)
def impulse_noise(src: PreparedImage, density: float, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: each sample becomes 0 with probability d/2 and 1 with probability d/2."""
    return _salt_and_pepper(src.x, rng.random(src.x.shape), density)


@numba.vectorize(["float64(float64, float64, float64)"], cache=True)
def _speckle(x: float, scale: float, draw: float) -> float:
    """``x + x n`` with ``n = scale (draw - 0.5)``, clipped to [0, 1]."""
    return min(max(x + x * (scale * (draw - 0.5)), 0.0), 1.0)


@kernel(14, noise=True)
def multiplicative_noise(src: PreparedImage, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Speckle: ``x + x n`` with n uniform, zero mean, variance ``variance``."""
    return _speckle(src.x, np.sqrt(12 * variance), rng.random(src.x.shape))


@kernel(15, noise=True)
def denoise(src: PreparedImage, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise, then each channel denoised on its own.

    The reference uses MATLAB's pretrained DnCNN, which is not available outside MATLAB; this port
    substitutes non-local means (OpenCV), given the true noise level, per channel.
    """
    noisy = to_uint8(gaussian_noise(src.x, variance, rng))  # OpenCV's non-local means works on 8-bit planes
    h = 255.0 * np.sqrt(variance)  # filter strength = the noise std in grey levels
    planes = [
        cv2.fastNlMeansDenoising(np.ascontiguousarray(noisy[..., c]), None, h, NLM_PATCH, NLM_SEARCH) for c in range(3)
    ]
    return np.stack(planes, axis=-1) / 255.0

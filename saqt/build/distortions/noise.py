"""Noise types: 11 white, 12 white in YCbCr, 13 impulse, 14 multiplicative, 15 denoised noise.

Each follows MATLAB ``imnoise`` on double data: independent draws per pixel and channel, output
clipped to [0, 1].
"""

from __future__ import annotations

import cv2
import numba
import numpy as np

from saqt.build.distortions.pcg64_draws import next_double, next_normal, read_state, write_state
from saqt.build.distortions.prepared import PreparedImage
from saqt.build.distortions.primitives import RGB_FROM_YCC_AFFINE, YCC_FROM_RGB_AFFINE, simd_pixels, transform_pixel
from saqt.build.distortions.registry import renderer

GUIDED_RADIUS = 3  # the denoiser's windows are 7 x 7 pixels
GUIDED_EPS_GAIN = 6.0  # its regularisation is 6 x the noise variance


@numba.njit(cache=True, nogil=True)
def _add_clipped_normals(x: np.ndarray, scale: float, state: tuple) -> tuple[np.ndarray, tuple]:
    """``x + scale * n`` clipped to [0, 1], n drawn per sample in C order; the noisy array and the new state."""
    flat = x.reshape(-1)
    out = np.empty(flat.size)
    for i in range(flat.size):
        state, draw = next_normal(state)
        out[i] = min(max(flat[i] + scale * draw, 0.0), 1.0)
    return out.reshape(x.shape), state


def gaussian_noise(x: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """``imnoise(x, 'gaussian', 0, variance)``."""
    noisy, state = _add_clipped_normals(np.ascontiguousarray(x), np.sqrt(variance), read_state(rng))
    write_state(rng, state)
    return noisy


@numba.njit(cache=True, nogil=True)
def _noisy_ycbcr_to_rgb(x: np.ndarray, scale: float, state: tuple, simd_end: int) -> tuple[np.ndarray, tuple]:
    """Per pixel: :func:`rgb2ycbcr`, ``+ scale * n`` clipped to [0, 1] (n in C order), :func:`ycbcr2rgb`."""
    px = x.reshape(-1, 3)
    out = np.empty(px.shape)
    for p in range(px.shape[0]):
        simd = p < simd_end
        ycc = transform_pixel(YCC_FROM_RGB_AFFINE, px[p, 0], px[p, 1], px[p, 2], simd)
        state, n0 = next_normal(state)
        state, n1 = next_normal(state)
        state, n2 = next_normal(state)
        y0 = min(max(ycc[0] + scale * n0, 0.0), 1.0)
        y1 = min(max(ycc[1] + scale * n1, 0.0), 1.0)
        y2 = min(max(ycc[2] + scale * n2, 0.0), 1.0)
        rgb = transform_pixel(RGB_FROM_YCC_AFFINE, y0, y1, y2, simd)
        for ch in range(3):
            out[p, ch] = min(max(rgb[ch], 0.0), 1.0)
    return out.reshape(x.shape), state


@renderer(11, noise=True)
def white_noise(src: PreparedImage, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise on R, G, B."""
    return gaussian_noise(src.x, variance, rng)


@renderer(12, noise=True)
def white_noise_color_component(src: PreparedImage, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise on Y, Cb and Cr (BT.601), back to RGB, clipped."""
    n = src.shape[0] * src.shape[1]
    rgb, state = _noisy_ycbcr_to_rgb(src.x, np.sqrt(variance), read_state(rng), simd_pixels(n))
    write_state(rng, state)
    return rgb


# Each draw-per-sample noise has its own compiled loop: a compiled function passed as an argument to a cached one
# made numba compile and append a new cache entry in every process (its type differs between processes), and two
# processes appending at once broke the cache ("underlying object has vanished") mid-build.


def uniform_noise(x: np.ndarray, loop, param: float, rng: np.random.Generator) -> np.ndarray:
    """``loop(x, param, state)``: a noise that draws one uniform per sample in C order, without the array of draws;
    ``rng`` advances as ``rng.random(x.shape)`` would."""
    out, state = loop(np.ascontiguousarray(x), param, read_state(rng))
    write_state(rng, state)
    return out


@numba.njit(cache=True, nogil=True)
def _salt_and_pepper(x: np.ndarray, density: float, state: tuple) -> tuple[np.ndarray, tuple]:
    """Each sample 0 if its uniform draw is below d/2, 1 if below d, else unchanged; the new array and state."""
    flat, out = x.reshape(-1), np.empty(x.size)
    for i in range(flat.size):
        state, draw = next_double(state)
        out[i] = 0.0 if draw < density / 2 else (1.0 if draw < density else flat[i])
    return out.reshape(x.shape), state


@renderer(13, noise=True)
def impulse_noise(src: PreparedImage, density: float, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: each sample becomes 0 with probability d/2 and 1 with probability d/2."""
    return uniform_noise(src.x, _salt_and_pepper, density, rng)


@numba.njit(cache=True, nogil=True)
def _speckle(x: np.ndarray, scale: float, state: tuple) -> tuple[np.ndarray, tuple]:
    """Each sample ``x + x n`` with ``n = scale (draw - 0.5)``, clipped to [0, 1]; the new array and state."""
    flat, out = x.reshape(-1), np.empty(x.size)
    for i in range(flat.size):
        state, draw = next_double(state)
        out[i] = min(max(flat[i] + flat[i] * (scale * (draw - 0.5)), 0.0), 1.0)
    return out.reshape(x.shape), state


@renderer(14, noise=True)
def multiplicative_noise(src: PreparedImage, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Speckle: ``x + x n`` with n uniform, zero mean, variance ``variance``."""
    return uniform_noise(src.x, _speckle, np.sqrt(12 * variance), rng)


@numba.vectorize(["float64(float64, float64, float64)"], cache=True)
def _guided_gain(mean: float, mean_sq: float, eps: float) -> float:
    """Slope of the least-squares fit of a window onto itself, shrunk by ``eps``: var / (var + eps)."""
    var = mean_sq - mean * mean
    return var / (var + eps)


@numba.vectorize(["float64(float64, float64)"], cache=True)
def _guided_offset(gain: float, mean: float) -> float:
    """Intercept of the shrunk fit: ``mean - gain mean``."""
    return mean - gain * mean


@numba.vectorize(["float64(float64, float64, float64)"], cache=True)
def _guided_output(gain: float, x: float, offset: float) -> float:
    """The window-averaged linear model applied to a sample, clipped to [0, 1]."""
    return min(max(gain * x + offset, 0.0), 1.0)


def guided_denoise(x: np.ndarray, variance: float) -> np.ndarray:
    """Each channel smoothed by the guided filter with itself as guide (He, Sun and Tang, 2010).

    In every (2r+1)^2 window the channel is fitted as ``a x + b`` with ``a = var / (var + eps)``; the
    output averages the fits of the windows covering each pixel. Flat areas (var << eps) are averaged,
    edges (var >> eps) kept. ``eps`` is GUIDED_EPS_GAIN times the noise variance. Three buffers are
    reused throughout (fresh large arrays cost page faults).
    """
    size = (2 * GUIDED_RADIUS + 1, 2 * GUIDED_RADIUS + 1)

    def box(a: np.ndarray, out: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(a, -1, size, dst=out, borderType=cv2.BORDER_REPLICATE)

    x = np.ascontiguousarray(x, dtype=np.float64)
    mean, gain, work = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    box(x, mean)
    box(np.multiply(x, x, out=gain), work)  # the mean of squares
    _guided_gain(mean, work, GUIDED_EPS_GAIN * variance, out=gain)
    _guided_offset(gain, mean, out=work)
    mean_gain, mean_offset = box(gain, mean), box(work, gain)
    return _guided_output(mean_gain, x, mean_offset, out=work)


@renderer(15, noise=True)
def denoise(src: PreparedImage, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise, then each channel denoised on its own.

    The reference uses MATLAB's pretrained DnCNN, which is not available outside MATLAB; this port
    substitutes a classical edge-preserving denoiser, :func:`guided_denoise`, given the true noise level.
    """
    return guided_denoise(gaussian_noise(src.x, variance, rng), variance)

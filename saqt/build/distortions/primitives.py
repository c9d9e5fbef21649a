"""Numerical building blocks with the semantics of the MATLAB functions the reference generator calls.

Images are float64 H x W x C arrays in [0, 1]. Every spatial filter uses replicate (edge) padding.
"""

from __future__ import annotations

from functools import cache

import cv2
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic
from scipy.integrate import quad
from scipy.interpolate import CubicSpline

EPS = np.finfo(np.float64).eps


def mround(x):
    """MATLAB ``round``: half away from zero (``np.round`` rounds half to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def stretch(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] linearly onto [0, 1]; returned unchanged when lo == hi."""
    return a if hi == lo else (a - lo) / (hi - lo)


def mapmm(a: np.ndarray) -> np.ndarray:
    """Global min-max stretch to [0, 1] over all pixels and channels; a constant array is returned as is."""
    return stretch(a, a.min(), a.max())


def to_uint8(a: np.ndarray) -> np.ndarray:
    """Quantise [0, 1] values as MATLAB's ``im2uint8``/``imwrite`` do: ``floor(255 x + 0.5)``."""
    return np.floor(255.0 * a + 0.5).clip(0, 255).astype(np.uint8)


@numba.njit(cache=True, nogil=True)
def mapmm_to_uint8(a: np.ndarray) -> np.ndarray:
    """``to_uint8(mapmm(a))`` with the same floating-point steps, in two passes (for arrays without NaN)."""
    flat = a.ravel()
    lo = hi = flat[0]
    for v in flat:
        lo = min(lo, v)
        hi = max(hi, v)
    out = np.empty(flat.size, np.uint8)
    if hi == lo:
        for i in range(flat.size):
            out[i] = min(max(np.floor(255.0 * flat[i] + 0.5), 0.0), 255.0)
    else:
        span = hi - lo
        for i in range(flat.size):
            out[i] = min(max(np.floor(255.0 * ((flat[i] - lo) / span) + 0.5), 0.0), 255.0)
    return out.reshape(a.shape)


def filter2d(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``imfilter(a, kernel, 'replicate', 'same')``: per-channel correlation with edge replication."""
    return cv2.filter2D(a, cv2.CV_64F, kernel, borderType=cv2.BORDER_REPLICATE)


def gaussian_kernel_1d(sigma: float, radius: int | None = None) -> np.ndarray:
    """Normalised sampled Gaussian on integer offsets; default radius ``ceil(2 sigma)`` as ``imgaussfilt``."""
    r = int(np.ceil(2 * sigma)) if radius is None else radius
    d = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(d * d) / (2 * sigma * sigma))
    return k / k.sum()


def gaussian_filter(a: np.ndarray, sigma: float) -> np.ndarray:
    """``imgaussfilt(a, sigma)``: separable Gaussian, radius ``ceil(2 sigma)``, replicate padding, in a's dtype."""
    k = gaussian_kernel_1d(sigma).astype(a.dtype)
    return cv2.sepFilter2D(a, -1, k, k, borderType=cv2.BORDER_REPLICATE)


def _square_disk_area(x0: float, x1: float, y0: float, y1: float, r: float) -> float:
    """Area of the rectangle [x0, x1] x [y0, y1] that lies inside the disk of radius r at the origin."""

    def height(x: float) -> float:
        h = np.sqrt(max(r * r - x * x, 0.0))
        return max(0.0, min(y1, h) - max(y0, -h))

    a, b = max(x0, -r), min(x1, r)
    if a >= b:
        return 0.0
    kinks = [x for y in (y0, y1) if abs(y) < r for x in (-np.sqrt(r * r - y * y), np.sqrt(r * r - y * y)) if a < x < b]
    return quad(height, a, b, points=kinks or None, epsabs=1e-13, epsrel=1e-12, limit=200)[0]


@cache
def disk_kernel(radius: float) -> np.ndarray:
    """``fspecial('disk', r)``: each cell weighted by the exact area of the pixel square inside the disk."""
    half = int(np.ceil(radius - 0.5))
    k = np.empty((2 * half + 1, 2 * half + 1))
    for i, dy in enumerate(range(-half, half + 1)):
        for j, dx in enumerate(range(-half, half + 1)):
            k[i, j] = _square_disk_area(dx - 0.5, dx + 0.5, dy - 0.5, dy + 0.5, radius)
    k /= k.sum()
    k.setflags(write=False)
    return k


@cache
def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """``fspecial('motion', len, theta)``: an anti-aliased line of the given length through the centre."""
    length = max(1.0, float(length))
    half = (length - 1) / 2
    phi = np.deg2rad(angle_deg % 180)
    c, s = np.cos(phi), np.sin(phi)
    sx = 1.0 if c >= 0 else -1.0
    nx = int(np.trunc(half * c + sx - length * EPS))
    ny = int(np.trunc(half * s + 1 - length * EPS))
    xs = np.arange(0, nx + sx, sx) if nx != 0 else np.zeros(1)
    x, y = np.meshgrid(xs, np.arange(0, ny + 1, dtype=np.float64))
    d = y * c - x * s
    rho = np.hypot(x, y)
    past_end = (rho >= half) & (np.abs(d) <= 1)
    t = half - np.abs((x + d * s) / c)
    d = np.where(past_end, np.hypot(d, t), d)
    quarter = np.maximum(0.0, 1 + EPS - np.abs(d))
    rows, cols = quarter.shape
    k = np.zeros((2 * rows - 1, 2 * cols - 1))
    k[rows - 1 :, cols - 1 :] = quarter
    k[:rows, :cols] = quarter[::-1, ::-1]
    k /= k.sum() + EPS * length * length
    if c > 0:
        k = k[::-1, :]
    k = np.ascontiguousarray(k)
    k.setflags(write=False)
    return k


@numba.vectorize(["float64(float64, float64)"], cache=True)
def curve_parabola(x: float, mid: float) -> float:
    """``curves(x, c)`` with a scalar c: the spline through (0,0), (0.5,c), (1,1), clipped to [0, 1]."""
    return min(max((2 - 4 * mid) * x * x + (4 * mid - 1) * x, 0.0), 1.0)


def curve_spline(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """``curves(x, [c1 c2])``: not-a-knot cubic spline through (0,0), (.3,c1), (.5,.5), (.7,c2), (1,1), clipped."""
    spline = CubicSpline([0.0, 0.3, 0.5, 0.7, 1.0], [0.0, low, 0.5, high, 1.0], bc_type="not-a-knot")
    return np.clip(spline(x), 0.0, 1.0)


# sRGB (D65) <-> CIE Lab with the white point of Octave's rgb2lab / skimage (0.95047, 1, 1.08883).
_XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_LAB_FROM_LINEAR = _XYZ_FROM_RGB / _WHITE[:, None]
_LINEAR_FROM_LAB = np.linalg.inv(_XYZ_FROM_RGB) * _WHITE[None, :]


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """Undo the sRGB transfer curve of values in [0, 1]."""
    return np.where(rgb <= 0.04045, rgb / 12.92, np.power((rgb + 0.055) / 1.055, 2.4))


@numba.njit(cache=True, nogil=True, inline="always")
def _compand(t: float) -> float:
    """CIE Lab's companding of a white-normalised tristimulus value (cube root with a linear toe)."""
    return np.cbrt(t) if t > 0.008856 else 7.787 * t + 16.0 / 116.0


_lab_compand = numba.vectorize(["float64(float64)"], cache=True)(_compand.py_func)


def linear_to_lab(lin: np.ndarray) -> np.ndarray:
    """Linear-light RGB (H x W x 3) to CIE Lab (L in [0, 100]), D65."""
    f = _lab_compand(cv2.transform(lin, _LAB_FROM_LINEAR))
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def rgb2lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] to CIE Lab (L in [0, 100]), D65."""
    return linear_to_lab(srgb_to_linear(rgb))


_F_FROM_LAB = np.array([[1 / 116, 1 / 500, 0, 16 / 116], [1 / 116, 0, 0, 16 / 116], [1 / 116, 0, -1 / 200, 16 / 116]])


OPENCV_FLOAT64_LANES = 4


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's fma), as OpenCV's kernels compute it on CPUs with FMA."""

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float64(types.float64, types.float64, types.float64), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _affine_row(m: np.ndarray, k: int, x0: float, x1: float, x2: float, simd: bool) -> float:
    """Row k of ``cv2.transform`` with a 3 x 4 matrix on one pixel, bit for bit, on the SIMD path or the scalar tail."""
    if simd:
        return _fma(m[k, 0], x0, _fma(m[k, 1], x1, _fma(m[k, 2], x2, m[k, 3])))
    return _fma(m[k, 2], x2, _fma(m[k, 0], x0, m[k, 1] * x1)) + m[k, 3]


@numba.njit(cache=True, nogil=True, inline="always")
def transform_pixel(m: np.ndarray, x0: float, x1: float, x2: float, simd: bool) -> tuple[float, float, float]:
    """One pixel of ``cv2.transform`` with a 3 x 4 matrix (see :func:`simd_pixels` for ``simd``)."""
    return _affine_row(m, 0, x0, x1, x2, simd), _affine_row(m, 1, x0, x1, x2, simd), _affine_row(m, 2, x0, x1, x2, simd)


def simd_pixels(n: int) -> int:
    """How many of the n pixels of one ``cv2.transform`` call take its SIMD path (AVX2: whole groups of 4).

    The rest, at the end, take its scalar code, which rounds differently.
    """
    return n - n % OPENCV_FLOAT64_LANES


@numba.njit(cache=True, nogil=True, inline="always")
def _lab_expand(f: float) -> float:
    """Inverse of :func:`_lab_compand`."""
    return f * f * f if f > 0.2068966 else (f - 16.0 / 116.0) / 7.787


@numba.njit(cache=True, nogil=True, inline="always")
def _linear_to_srgb_clipped(lin: float) -> float:
    """The sRGB transfer curve of a linear value floored at 0, clipped to [0, 1]."""
    if lin > 1.000001:  # the curve exceeds 1 + 1e-7 there, so clips to 1 whatever the rounding of pow
        return 1.0
    lin = max(lin, 0.0)
    c = 1.055 * lin ** (1 / 2.4) - 0.055 if lin > 0.0031308 else 12.92 * lin
    return min(max(c, 0.0), 1.0)


_LINEAR_FROM_LAB_AFFINE = np.hstack([_LINEAR_FROM_LAB, np.zeros((3, 1))])
_LAB_FROM_LINEAR_AFFINE = np.hstack([_LAB_FROM_LINEAR, np.zeros((3, 1))])


@numba.njit(cache=True, nogil=True, inline="always")
def lab_pixel_to_srgb(lightness: float, a: float, b: float, simd: bool, out: np.ndarray, i: int) -> None:
    """Write one Lab pixel as sRGB clipped to [0, 1] to ``out[i, :3]`` (``simd``: see :func:`simd_pixels`)."""
    f = transform_pixel(_F_FROM_LAB, lightness, a, b, simd)
    lin = transform_pixel(_LINEAR_FROM_LAB_AFFINE, _lab_expand(f[0]), _lab_expand(f[1]), _lab_expand(f[2]), simd)
    for ch in range(3):
        out[i, ch] = _linear_to_srgb_clipped(lin[ch])


@numba.njit(cache=True, nogil=True)
def lab_rows_to_srgb(lab: np.ndarray, simd_end: int) -> np.ndarray:
    """Lab rows (N x 3) to sRGB clipped to [0, 1], rows from ``simd_end`` on as ``cv2.transform``'s scalar tail."""
    out = np.empty_like(lab)
    for i in range(lab.shape[0]):
        lab_pixel_to_srgb(lab[i, 0], lab[i, 1], lab[i, 2], i < simd_end, out, i)
    return out


def lab2rgb_clipped(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (H x W x 3) to sRGB, clipped to [0, 1] (every use in the reference clips right after ``lab2rgb``)."""
    n = lab.shape[0] * lab.shape[1]
    return lab_rows_to_srgb(np.ascontiguousarray(lab).reshape(n, 3), simd_pixels(n)).reshape(lab.shape)


@numba.njit(cache=True, nogil=True)
def linear_rows_to_lab(lin: np.ndarray, simd_end: int) -> np.ndarray:
    """:func:`linear_to_lab` of rows (N x 3), rows from ``simd_end`` on as ``cv2.transform``'s scalar tail."""
    out = np.empty_like(lin)
    for i in range(lin.shape[0]):
        t = transform_pixel(_LAB_FROM_LINEAR_AFFINE, lin[i, 0], lin[i, 1], lin[i, 2], i < simd_end)
        f0, f1, f2 = _compand(t[0]), _compand(t[1]), _compand(t[2])
        out[i, 0] = 116.0 * f1 - 16.0
        out[i, 1] = 500.0 * (f0 - f1)
        out[i, 2] = 200.0 * (f1 - f2)
    return out


# BT.601 studio-range YCbCr on [0, 1] data, as MATLAB's rgb2ycbcr / ycbcr2rgb for double images.
_YCC_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0
_YCC_FROM_RGB = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
_RGB_FROM_YCC = np.linalg.inv(_YCC_FROM_RGB)
YCC_FROM_RGB_AFFINE = np.hstack([_YCC_FROM_RGB, _YCC_OFFSET[:, None]])
RGB_FROM_YCC_AFFINE = np.hstack([_RGB_FROM_YCC, -_RGB_FROM_YCC @ _YCC_OFFSET[:, None]])


def rgb2ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] to BT.601 YCbCr in [0, 1] (Y in [16, 235]/255)."""
    return cv2.transform(rgb, YCC_FROM_RGB_AFFINE)


def ycbcr2rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb2ycbcr`, clipped to [0, 1] as MATLAB does for double data."""
    return np.clip(cv2.transform(ycc, RGB_FROM_YCC_AFFINE), 0.0, 1.0)


def rgb2gray(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2gray`` weights."""
    return rgb @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])

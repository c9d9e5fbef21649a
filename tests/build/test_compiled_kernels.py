"""The compiled kernels that replace numpy and OpenCV steps of the engine give the same bits as those steps."""

import math

import cv2
import numpy as np
import pytest

from saqt.build.distortions import PreparedImage, distort
from saqt.build.distortions.noise import gaussian_noise
from saqt.build.distortions.pcg64_draws import standard_normal
from saqt.build.distortions.primitives import (
    gaussian_filter,
    lab2rgb_clipped,
    mapmm,
    rgb2lab,
    rgb2ycbcr,
    to_uint8,
    ycbcr2rgb,
)
from saqt.build.distortions.registry import RENDERERS

# The engine rounds as OpenCV's cv2.transform does with AVX2 (4 float64 lanes, FMA, a scalar tail) on every CPU; the
# comparisons with live OpenCV below hold where OpenCV runs that code: '*AVX2' dispatched and available, AVX-512 not
# available ('?' marks a dispatched feature this CPU lacks). Elsewhere the pinned render digests still hold.
_FEATURES = cv2.getCPUFeaturesLine().split()
follows_opencv_here = pytest.mark.skipif(
    "*AVX2" not in _FEATURES or "*AVX512-SKX" in _FEATURES,
    reason=f"OpenCV does not run its AVX2 cv2.transform on this CPU ({' '.join(_FEATURES)})",
)


@pytest.mark.parametrize("seed", [0, 1, 2024])
def test_standard_normal_is_numpys_stream_bit_for_bit(seed):
    """A million draws reach the ziggurat's rejection and tail branches; the state after them matches too."""
    ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
    for shape in [(1,), (2, 37, 41), (1_000_003,)]:
        assert np.array_equal(standard_normal(ours, shape), theirs.standard_normal(shape))
    assert np.array_equal(ours.random(5), theirs.random(5))
    assert np.array_equal(standard_normal(ours, (7,)), theirs.standard_normal(7))


def test_standard_normal_with_another_bit_generator_defers_to_it():
    ours, theirs = np.random.Generator(np.random.Philox(5)), np.random.Generator(np.random.Philox(5))
    assert np.array_equal(standard_normal(ours, (3, 4)), theirs.standard_normal((3, 4)))


def test_noise_kernels_refuse_another_bit_generator():
    with pytest.raises(TypeError, match="PCG64"):
        gaussian_noise(np.zeros((4, 4, 3)), 0.01, np.random.Generator(np.random.Philox(5)))


_F_FROM_LAB = np.array([[1 / 116, 1 / 500, 0, 16 / 116], [1 / 116, 0, 0, 16 / 116], [1 / 116, 0, -1 / 200, 16 / 116]])
_XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_LINEAR_FROM_LAB = np.linalg.inv(_XYZ_FROM_RGB) * np.array([0.95047, 1.0, 1.08883])


def lab2rgb_with_opencv(lab: np.ndarray) -> np.ndarray:
    """Lab -> f -> XYZ/white -> linear RGB -> sRGB, clipped, with OpenCV for the two matrix products."""
    f = cv2.transform(lab, _F_FROM_LAB)
    t = np.where(f > 0.2068966, f * f * f, (f - 16.0 / 116.0) / 7.787)
    lin = np.maximum(cv2.transform(t, _LINEAR_FROM_LAB), 0.0)
    curve = np.vectorize(lambda v: 1.055 * math.pow(v, 1 / 2.4) - 0.055 if v > 0.0031308 else 12.92 * v)(lin)
    return np.where(lin > 1.000001, 1.0, np.clip(curve, 0.0, 1.0))


@follows_opencv_here
@pytest.mark.parametrize("shape", [(48, 64), (13, 7), (1, 3), (5, 5)])
def test_lab2rgb_matches_opencv_transforms_bit_for_bit(shape):
    """Pixel counts that are not a multiple of 4 end in OpenCV's scalar code, which rounds differently."""
    rng = np.random.default_rng(sum(shape))
    lab = np.stack([rng.uniform(-5, 105, shape), rng.uniform(-130, 130, shape), rng.uniform(-130, 130, shape)], -1)
    assert np.array_equal(lab2rgb_clipped(lab), lab2rgb_with_opencv(lab))


@follows_opencv_here
def test_colour_table_renders_match_per_pixel_maths_where_opencv_rounds_the_last_pixels_apart():
    """Types 8 and 16 run once per distinct colour; 53 x 49 pixels leave 1 in OpenCV's scalar tail, here a repeat."""
    rng = np.random.default_rng(3)
    palette = np.concatenate([[[0, 0, 0], [255, 255, 255]], rng.integers(0, 256, (4, 3))]).astype(np.uint8)
    image = palette[rng.integers(0, 6, (49, 53))]
    image[0, :2], image[-1, -1] = palette[:2], image[1, 1]
    src = PreparedImage(image)
    x = image / 255.0
    lab = rgb2lab(x)
    chroma = lab.copy()
    chroma[..., 1:] *= 3.0
    saturated = RENDERERS[8].apply(src, 3.0)
    assert np.array_equal(saturated.values[saturated.rows], lab2rgb_with_opencv(chroma))
    mid = 0.5 + 0.4 / 2
    lightness, ell = lab.copy(), lab[..., 0] / 100.0
    lightness[..., 0] = 100.0 * np.clip((2 - 4 * mid) * ell * ell + (4 * mid - 1) * ell, 0, 1)
    rgb_curve = np.clip((2 - 4 * mid) * x * x + (4 * mid - 1) * x, 0, 1)
    brightened = RENDERERS[16].apply(src, 0.4)
    assert np.array_equal(brightened.values[brightened.rows], (2.0 * rgb_curve + lab2rgb_with_opencv(lightness)) / 3.0)
    assert np.array_equal(distort(src, 16, 3), to_uint8(mapmm(brightened.values[brightened.rows])))


@follows_opencv_here
def test_noise_kernels_match_numpy_noise_and_opencv_transforms_bit_for_bit():
    """Types 11 to 14 draw in C order from the caller's generator and leave it where numpy would; 53 x 49 has a tail."""
    rng = np.random.default_rng(8)
    src = PreparedImage(rng.integers(0, 256, (49, 53, 3), dtype=np.uint8))
    ours, theirs = np.random.default_rng(4), np.random.default_rng(4)
    noisy = np.clip(src.x + np.sqrt(0.01) * theirs.standard_normal(src.x.shape), 0.0, 1.0)
    assert np.array_equal(gaussian_noise(src.x, 0.01, ours), noisy)
    ycc = rgb2ycbcr(src.x)
    expected = ycbcr2rgb(np.clip(ycc + np.sqrt(0.02) * theirs.standard_normal(ycc.shape), 0.0, 1.0))
    assert np.array_equal(RENDERERS[12].apply(src, 0.02, ours), expected)
    u = theirs.random(src.x.shape)
    assert np.array_equal(RENDERERS[13].apply(src, 0.1, ours), np.where(u < 0.05, 0.0, np.where(u < 0.1, 1.0, src.x)))
    speckle = np.clip(src.x + src.x * (np.sqrt(12 * 0.05) * (theirs.random(src.x.shape) - 0.5)), 0.0, 1.0)
    assert np.array_equal(RENDERERS[14].apply(src, 0.05, ours), speckle)
    assert ours.integers(1 << 62) == theirs.integers(1 << 62)


@follows_opencv_here
def test_one_pass_lab_kernels_of_types_4_and_24_match_the_array_maths_bit_for_bit():
    """Blurred chroma scaled in float32 (type 4), unsharp-masked L* (type 24); 53 x 49 pixels end in a scalar tail."""
    src = PreparedImage(np.random.default_rng(5).integers(0, 256, (49, 53, 3), dtype=np.uint8))
    lab = src.lab
    diffused = lab.copy()
    diffused[..., 1:] = gaussian_filter(np.ascontiguousarray(lab[..., 1:], dtype=np.float32), 1.5 * 2.5 + 2) * 2.5
    assert np.array_equal(RENDERERS[4].apply(src, 2.5), lab2rgb_with_opencv(diffused))
    sharpened, lightness = lab.copy(), lab[..., 0]
    sharpened[..., 0] = lightness + 1.7 * (lightness - gaussian_filter(np.ascontiguousarray(lightness), 3.0))
    assert np.array_equal(RENDERERS[24].apply(src, 1.7), lab2rgb_with_opencv(sharpened))


@follows_opencv_here
def test_lab_of_the_distinct_colours_spread_to_the_pixels_is_opencvs_lab_of_the_image():
    rng = np.random.default_rng(6)
    palette = np.concatenate([[[0, 0, 0], [255, 255, 255]], rng.integers(0, 256, (30, 3))]).astype(np.uint8)
    image = palette[rng.integers(0, 32, (49, 53))]
    image[0, :2], image[-1, -1] = palette[:2], image[1, 1]
    assert np.array_equal(PreparedImage(image).lab, rgb2lab(image / 255.0))

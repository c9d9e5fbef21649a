"""Exact tests, from SPEC-distortions.md, for the six types that have no Octave reference output: 6 colour
quantisation, 9 JPEG 2000, 15 denoise, 19 jitter, 22 quantisation, 23 colour blocks.

Each test computes what the SPEC says the output is, independently of ``saqt.build.distortions``. Where GNU Octave 7.3
(image package 2.14) could run the reference generator's own code on a small input, its result is recorded here
as fixed values, so the tests do not need Octave.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import uniform_filter

from saqt.build.distortions import distort, random_params
from saqt.build.distortions.prepared import PreparedImage
from saqt.build.distortions.registry import RENDERERS


def half_up(x):
    """MATLAB ``round`` for x >= 0."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def final_stretch(y: np.ndarray) -> np.ndarray:
    """The reference's last steps (SPEC 1.3-1.4): global min-max stretch, then floor(255 x + 0.5)."""
    y = (y - y.min()) / (y.max() - y.min())
    return np.floor(255.0 * y + 0.5).astype(np.uint8)


def full_range_noise(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Random uint8 RGB that holds both 0 and 255, so the input stretch is the identity."""
    img = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    img[-1, 0] = 0
    img[-1, 1] = 255
    return img


# --- 23 colour blocks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1, 5])
def test_colour_block_draws_follow_the_spec(level):
    """Per block: colour (u1, u2, u3), x = u4 (W - 32) (a column), y = u5 (H - 32); 1-based corner round(x), round(y)."""
    h, w = 70, 90
    u = np.random.default_rng(42).random((2 * level, 5))
    expected = [[int(half_up(y * (h - 32))) - 1, int(half_up(x * (w - 32))) - 1, r, g, b] for r, g, b, x, y in u]
    assert random_params(23, level, (h, w), seed=42) == {"blocks": expected}
    img = full_range_noise((h, w), 0)
    assert np.array_equal(distort(img, 23, level, seed=42), distort(img, 23, level, params={"blocks": expected}))


def test_colour_blocks_are_painted_in_rgb_order_one_over_another():
    img = full_range_noise((96, 128), 1)
    blocks = [[10, 10, 0.9, 0.2, 0.1], [30, 30, 0.1, 0.3, 0.95], [-1, 90, 0.5, 0.75, 0.25]]
    out = distort(img, 23, 2, params={"blocks": blocks})
    expected = img.copy()
    expected[10:42, 10:42] = (230, 51, 26)  # floor(255 c + 0.5), R then G then B
    expected[30:62, 30:62] = (26, 77, 242)  # the later block covers the earlier one
    expected[0:31, 90:122] = (128, 191, 64)  # a corner at 0 (1-based) leaves 31 rows inside the image
    assert np.array_equal(out, expected)


# --- 22 quantisation ----------------------------------------------------------------------------------------

# Octave's imquantize (image package 2.14) with the 7 thresholds below and values [0, t2..t7, 1]/255, on the grey
# levels around each threshold: a value equal to a threshold stays in the lower bin.
OCTAVE_IMQUANTIZE_N7 = {
    0: 0,
    31: 0,
    32: 0,
    33: 64,
    63: 64,
    64: 64,
    65: 96,
    95: 96,
    96: 96,
    97: 128,
    127: 128,
    128: 128,
    129: 159,
    158: 159,
    159: 159,
    160: 191,
    190: 191,
    191: 191,
    192: 223,
    222: 223,
    223: 223,
    224: 255,
    255: 255,
}
LEVELS_22 = {1: 20, 2: 16, 3: 13, 4: 10, 5: 7}


def uniform_grey_image() -> np.ndarray:
    """48 x 64 x 3 samples holding every grey level 36 times: a flat histogram."""
    return np.tile(np.arange(256, dtype=np.uint8), 36).reshape(48, 64, 3)


@pytest.mark.parametrize("level", sorted(LEVELS_22))
def test_quantiser_puts_a_value_on_a_threshold_in_the_lower_bin(level):
    """For a flat histogram the search stays at its start, so the thresholds are round(255 k / (N + 1));
    imquantize maps x <= t1 to 0, t(k-1) < x <= t(k) to t(k), x > tN to 1."""
    n = LEVELS_22[level]
    t = half_up(np.arange(1, n + 1) * 255.0 / (n + 1)).astype(int)
    grey = np.arange(256)
    mapped = np.concatenate([[0], t[1:], [255]])[np.searchsorted(t, grey, side="left")]
    if n == 7:
        assert t.tolist() == [32, 64, 96, 128, 159, 191, 223]
        assert {g: int(mapped[g]) for g in OCTAVE_IMQUANTIZE_N7} == OCTAVE_IMQUANTIZE_N7
    img = uniform_grey_image()
    assert np.array_equal(distort(img, 22, level), mapped.astype(np.uint8)[img])


# Thresholds MATLAB's multithresh finds for the `photo` fixture (all channels pooled), from two transcriptions of
# its N >= 3 search run independently of saqt (Python, and Octave with MATLAB's sort and round): Otsu's criterion
# with sequential sums, fminsearch's simplex rules, and the start linspace(0, 255, N + 2) as MATLAB computes it,
# (k * 255) / (N + 1). numpy's linspace divides first; at N = 20 that sends the search to other thresholds.
PHOTO_THRESHOLDS = {
    20: [11, 24, 37, 49, 62, 74, 86, 97, 109, 121, 134, 147, 160, 172, 183, 194, 207, 218, 229, 244],
    16: [14, 30, 46, 61, 76, 90, 105, 120, 136, 152, 168, 181, 196, 209, 223, 241],
    13: [17, 37, 56, 74, 91, 110, 128, 148, 167, 184, 200, 217, 235],
    10: [19, 47, 73, 97, 119, 144, 168, 188, 206, 226],
    7: [24, 62, 98, 133, 166, 194, 221],
}


@pytest.mark.parametrize("level", sorted(LEVELS_22))
def test_quantiser_finds_matlabs_thresholds_on_a_photo(photo, level):
    t = PHOTO_THRESHOLDS[LEVELS_22[level]]
    assert photo.min() == 0 and photo.max() == 255  # no input stretch: output levels are the thresholds
    assert np.unique(distort(photo, 22, level)).tolist() == [0, *t[1:], 255]


def test_quantiser_keeps_an_image_with_no_more_values_than_thresholds():
    """MATLAB's degenerate case: with at most N distinct values the thresholds are those values, so nothing moves."""
    values = np.array([0, 20, 41, 70, 99, 128, 150, 190, 230, 255], np.uint8)
    img = values[np.random.default_rng(0).integers(0, 10, (48, 64, 3))]
    for level in (1, 2, 3, 4):  # N = 20, 16, 13, 10 >= 10 values
        assert np.array_equal(distort(img, 22, level), img)
    # N = 7: the search runs (Octave's transcription gives thresholds 32 64 96 128 159 191 234)
    assert np.unique(distort(img, 22, 5)).tolist() == [0, 64, 96, 128, 159, 191, 234, 255]


# --- 19 jitter ----------------------------------------------------------------------------------------------


class FixedShifts:
    """Stands in for the random generator: hands out the given shift fields one per pass."""

    def __init__(self, fields: np.ndarray):
        self.fields = list(fields.astype(np.float64))

    def standard_normal(self, shape):
        field = self.fields.pop(0)
        assert field.shape == shape
        return field


# The reference's imjitter -> imscatter -> imwarpmap, run by Octave with its randn replaced by these integer
# fields (so that any interpolation samples exactly; 'bicubic' was replaced by 'linear', which Octave has), then
# imdist_generator's mapmm and round(255 x): SHA-256 of the uint8 H x W x 3 result.
OCTAVE_JITTER_SHA256 = "757040bbfb9db002c0649a56cfd05db39e414f26f5da55421b73595df74b4070"


def jitter_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(19)
    h, w = 48, 56
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[0, 0], img[-1, -1] = 0, 255
    fields = rng.integers(-2, 3, (5, 2, h, w))  # per pass: row shifts (randn plane 1), column shifts (plane 2)
    fields[:, :, 5, 7], fields[:, :, 9, 3] = 2, -2  # both planes reach |2|: the reference pads 2 px each way
    return img, fields


def test_jitter_displacement_field_is_the_reference_codes():
    """Backward mapping: J'(r, c) = J(r - Sy(r, c), c - Sx(r, c)) with edges replicated, five passes."""
    img, fields = jitter_case()
    out = RENDERERS[19].apply(PreparedImage(img), 1.0, FixedShifts(fields))
    rows, cols = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    expected = img
    for sy, sx in fields:
        expected = expected[np.clip(rows - sy, 0, img.shape[0] - 1), np.clip(cols - sx, 0, img.shape[1] - 1)]
    assert hashlib.sha256(expected.tobytes()).hexdigest() == OCTAVE_JITTER_SHA256
    assert np.array_equal(final_stretch(out), expected)


def keys_weight(t: np.ndarray) -> np.ndarray:
    """Keys cubic convolution, a = -0.5 (SPEC P13)."""
    t = np.abs(t)
    near = 1.5 * t**3 - 2.5 * t**2 + 1
    far = -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def keys_warp(img: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """Sample ``img`` at (r - sy, c - sx) from its 4 x 4 neighbours, after replicate padding (imwarpmap)."""
    pad = int(np.ceil(max(np.abs(sy).max(), np.abs(sx).max()))) + 2
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    rows, cols = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    qr, qc = rows - sy + pad, cols - sx + pad
    r0, c0 = np.floor(qr).astype(int), np.floor(qc).astype(int)
    out = np.zeros(img.shape)
    for i in range(-1, 3):
        for j in range(-1, 3):
            weight = keys_weight(qr - (r0 + i)) * keys_weight(qc - (c0 + j))
            out += weight[..., None] * padded[r0 + i, c0 + j]
    return out


@pytest.mark.parametrize("level, strength", [(1, 0.05), (3, 0.2), (5, 1.0)])
def test_jitter_is_five_passes_of_keys_bicubic_warping(level, strength):
    img = full_range_noise((48, 56), 3)
    rng = np.random.default_rng(7)
    expected = img / 255.0
    for _ in range(5):
        sy, sx = strength * rng.standard_normal((2, *img.shape[:2]))
        expected = keys_warp(expected, sy, sx)
    out = RENDERERS[19].apply(PreparedImage(img), strength, np.random.default_rng(7))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    assert np.array_equal(distort(img, 19, level, seed=7), final_stretch(expected))


# --- 6 colour quantisation ----------------------------------------------------------------------------------

EIGHT_COLOURS = np.array(
    [
        [0, 0, 0],
        [255, 255, 255],
        [200, 30, 40],
        [30, 180, 60],
        [40, 60, 210],
        [230, 220, 20],
        [120, 40, 160],
        [90, 200, 210],
    ],
    np.uint8,
)


def test_colour_quantisation_keeps_an_image_of_few_well_separated_colours():
    """Each colour is alone in its 5-bit cell, so the minimum-variance palette holds it exactly; nothing to diffuse."""
    img = EIGHT_COLOURS[np.random.default_rng(2).integers(0, 8, (48, 64))]
    for level in range(1, 6):  # 64 .. 8 colours
        assert np.array_equal(distort(img, 6, level), img)


def test_palette_colour_is_the_rounded_mean_of_its_cell():
    """Two colours in one 5-bit cell share a palette entry: their pixel-weighted mean, rounded half up."""
    index = np.random.default_rng(3).integers(0, 8, 48 * 64)
    marks = np.flatnonzero(index == 2)[: np.count_nonzero(index == 2) // 2 * 2]
    index[np.flatnonzero(index == 2)[len(marks) :]] = 0  # an even number of (200, 30, 40) pixels
    colours = np.vstack([EIGHT_COLOURS, np.array([[203, 27, 45]], np.uint8)])  # the cell of (200, 30, 40)
    index[marks[::2]] = 8
    img = colours[index].reshape(48, 64, 3)
    shared = np.isin(index, (2, 8)).reshape(48, 64)
    out = distort(img, 6, 5)  # 8 colours for 8 occupied cells
    assert np.array_equal(out[shared], np.broadcast_to((202, 29, 43), (shared.sum(), 3)))  # 201.5, 28.5, 42.5
    assert np.array_equal(out[~shared], img[~shared])


@pytest.mark.parametrize("level, colours", [(3, 32), (4, 16), (5, 8)])
def test_ramp_is_dithered_between_the_two_nearest_palette_greys(level, colours):
    """A 0..255 ramp fills the 32 cells of the grey diagonal evenly, so the greedy variance split cuts it into
    equal boxes: the palette is the rounded box means. Floyd-Steinberg then mixes, in every column, the two palette
    greys around the column's value, keeping the mean."""
    img = np.repeat(np.tile(np.arange(256, dtype=np.uint8), (64, 1))[..., None], 3, axis=2)
    width = 256 // colours
    palette = half_up(np.arange(colours) * width + (width - 1) / 2)  # the box means, rounded half up
    out = distort(img, 6, level)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    stretched = half_up(255 * (palette - palette[0]) / (palette[-1] - palette[0]))  # the final min-max stretch
    index = np.searchsorted(stretched, out[..., 0])
    assert np.array_equal(stretched[index], out[..., 0])  # only palette colours
    grey = palette[index]  # back on the 0..255 scale of the input
    below = np.searchsorted(palette, np.arange(256), side="right") - 1
    lower, upper = palette[np.clip(below, 0, colours - 1)], palette[np.clip(below + 1, 0, colours - 1)]
    assert np.all((grey == lower) | (grey == upper))
    ramp = np.arange(256)
    between = (ramp > palette[0]) & (ramp < palette[-1]) & ~np.isin(ramp, palette)
    mixed = np.array([len(np.unique(column)) == 2 for column in grey.T])
    assert mixed[between].mean() > 0.5  # the nearest colour alone would make every column one grey
    assert abs(grey[:, between].mean() - ramp[between].mean()) < 0.5


# --- 9 JPEG 2000 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level, ratio", [(1, 16), (2, 32), (3, 45), (4, 120), (5, 400)])
def test_jpeg2000_is_openjpeg_9_7_with_colour_transform_at_the_compression_ratio(photo, level, ratio):
    """MATLAB's imwrite(X, 'jp2', 'CompressionRatio', r): 24 / r bits per pixel of round(255 X), irreversible 9/7
    wavelet and RGB -> YCbCr, read back and divided by 255."""
    img = (photo // 2 + 60).astype(np.uint8)  # not full range: the codec sees the stretched image
    x8 = half_up(255 * (img - 60.0) / (img.max() - 60.0)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(x8).save(buf, "JPEG2000", quality_mode="rates", quality_layers=[ratio], irreversible=True, mct=1)
    budget = img.size / ratio  # bytes: H x W x 3 samples of 8 bits at 1 / ratio
    assert 0.95 * budget <= buf.tell() <= 1.01 * budget  # OpenJPEG's rate control, JP2 header included
    decoded = np.asarray(Image.open(buf).convert("RGB"))
    assert np.array_equal(distort(img, 9, level), final_stretch(decoded / 255.0))


# --- 15 denoise ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level, variance", [(1, 0.01), (3, 0.05), (5, 0.15)])
def test_denoise_is_a_per_channel_guided_filter_of_the_noisy_image(level, variance):
    """Noise clip(X + sqrt(v) N(0, 1)) per sample (SPEC 15.1), then, for MATLAB's DnCNN, the guided filter of each
    channel with itself as guide (He, Sun and Tang 2010, Algorithm 1): 7 x 7 box means with replicated edges,
    eps = 6 v; output clipped to [0, 1] (catalogue version 3). Box sums in another order: within a grey level."""
    img = (full_range_noise((48, 60), 4) // 2 + 40).astype(np.uint8)  # not full range: noise goes on the stretch
    x = (img - img.min()) / float(img.max() - img.min())
    noisy = np.clip(x + np.sqrt(variance) * np.random.default_rng(11).standard_normal(x.shape), 0, 1)

    def mean(a):
        return uniform_filter(a, size=(7, 7, 1), mode="nearest")

    var = mean(noisy * noisy) - mean(noisy) ** 2
    a = var / (var + 6 * variance)
    b = mean(noisy) - a * mean(noisy)
    expected = final_stretch(np.clip(mean(a) * noisy + mean(b), 0, 1)).astype(int)
    got = distort(img, 15, level, seed=11).astype(int)
    assert np.abs(got - expected).max() <= 1 and np.mean(got == expected) > 0.99

"""The MATLAB-semantics building blocks, checked against values MATLAB documents or that follow from the maths."""

import numpy as np
import pytest
from scipy.optimize import rosen

from saqt.build.distortions.multithresh import fminsearch, multithresh
from saqt.build.distortions.palette import colour_moments, wu_palette
from saqt.build.distortions.primitives import (
    curve_parabola,
    curve_spline,
    disk_kernel,
    gaussian_kernel_1d,
    lab2rgb_clipped,
    mapmm,
    mapmm_to_uint8,
    motion_kernel,
    mround,
    rgb2lab,
    rgb2ycbcr,
    to_uint8,
    ycbcr2rgb,
)
from saqt.build.distortions.spatial import keys_remap, nearest_indices


def test_mround_is_half_away_from_zero():
    assert mround(np.array([0.5, 1.5, 2.5, -0.5, -2.5, 2.4999])).tolist() == [1, 2, 3, -1, -3, 2]


def test_mapmm_to_uint8_matches_two_step_numpy():
    a = np.random.default_rng(1).normal(size=(37, 41, 3))
    assert np.array_equal(mapmm_to_uint8(a), to_uint8(mapmm(a)))


def test_gaussian_kernel_width_rule():
    for sigma, size in [(0.1, 3), (0.5, 3), (1, 5), (2, 9), (5, 21), (20, 81)]:
        k = gaussian_kernel_1d(sigma)
        assert k.size == size and k.sum() == pytest.approx(1.0)


def test_disk_kernel_matches_matlab_values():
    k = disk_kernel(1.0)
    assert k[0, 0] == pytest.approx(0.0251, abs=1e-4)
    assert k[0, 1] == pytest.approx(0.1453, abs=1e-4)
    assert k[1, 1] == pytest.approx(0.3183, abs=1e-4)
    assert [disk_kernel(r).shape[0] for r in (1, 2, 4, 6, 8)] == [3, 5, 9, 13, 17]


def test_motion_kernel_matches_matlab_values():
    assert motion_kernel(1, 37).shape == (1, 1) and motion_kernel(1, 37)[0, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(motion_kernel(2, 0), [[0.25, 0.5, 0.25]], atol=1e-12)
    np.testing.assert_allclose(motion_kernel(10, 0), [[0.05] + [0.1] * 9 + [0.05]], atol=1e-12)
    np.testing.assert_allclose(motion_kernel(10, 90), motion_kernel(10, 0).T, atol=1e-12)
    np.testing.assert_allclose(motion_kernel(6, 0), motion_kernel(6, 180), atol=1e-12)


@pytest.mark.parametrize("angle", [13, 45, 114, 168])
def test_motion_kernel_is_a_point_symmetric_normalised_line(angle):
    k = motion_kernel(6, angle)
    assert k.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)
    # the weight lies along the direction: y up, angle counter-clockwise from +x
    rows, cols = np.nonzero(k > 0.05)
    cy, cx = (np.array(k.shape) - 1) / 2
    direction = np.array([np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))])
    offsets = np.stack([cols - cx, cy - rows], axis=1)
    perpendicular = np.abs(offsets @ np.array([-direction[1], direction[0]]))
    assert perpendicular.max() < 1.0


def test_tone_curves_pass_through_their_knots():
    x = np.array([0.0, 0.3, 0.5, 0.7, 1.0])
    assert curve_parabola(np.array([0.0, 0.5, 1.0]), 0.3).tolist() == pytest.approx([0.0, 0.3, 1.0])
    assert curve_spline(x, 0.2, 0.8).tolist() == pytest.approx([0.0, 0.2, 0.5, 0.8, 1.0])
    assert curve_parabola(np.array([0.2]), 0.1)[0] == 0.0  # 1.6 x^2 - 0.6 x < 0 is clipped


def test_lab_round_trip_and_reference_colours():
    rgb = np.random.default_rng(2).random((16, 16, 3))
    np.testing.assert_allclose(lab2rgb_clipped(rgb2lab(rgb)), rgb, atol=1e-6)
    white = rgb2lab(np.ones((1, 1, 3)))[0, 0]
    np.testing.assert_allclose(white, [100, 0, 0], atol=0.01)  # white point 0.95047/1/1.08883, as Octave
    red = rgb2lab(np.array([[[1.0, 0, 0]]]))[0, 0]
    np.testing.assert_allclose(red, [53.24, 80.09, 67.20], atol=0.02)


def test_ycbcr_is_bt601_studio_range_and_inverse_clips():
    ycc = rgb2ycbcr(np.array([[[0.0, 0, 0], [1.0, 1, 1]]]))
    np.testing.assert_allclose(ycc[0, 0] * 255, [16, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[0, 1] * 255, [235, 128, 128], atol=1e-9)
    rgb = np.random.default_rng(3).random((8, 8, 3))
    np.testing.assert_allclose(ycbcr2rgb(rgb2ycbcr(rgb)), rgb, atol=1e-12)
    assert ycbcr2rgb(np.array([[[1.0, 0.5, 1.0]]])).max() == 1.0


@pytest.mark.slow
def test_keys_remap_against_direct_formula():
    rng = np.random.default_rng(4)
    img = rng.random((20, 24, 3))
    rows, cols = np.mgrid[0:20, 0:24].astype(float)
    np.testing.assert_array_equal(keys_remap(img, rows, cols), img)  # integer positions are exact
    qr, qc = rows + rng.uniform(-1.5, 1.5, rows.shape), cols + rng.uniform(-1.5, 1.5, cols.shape)

    def w(d):
        d = np.abs(d)
        return np.where(d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1, np.where(d < 2, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2, 0))

    expected = np.zeros_like(img)
    for i in range(-2, 4):
        for j in range(-2, 4):
            ri, cj = np.floor(qr).astype(int) + i, np.floor(qc).astype(int) + j
            weight = w(qr - ri) * w(qc - cj)
            expected += weight[..., None] * img[np.clip(ri, 0, 19), np.clip(cj, 0, 23)]
    np.testing.assert_allclose(keys_remap(img, qr, qc), expected, atol=1e-12)


def test_nearest_resize_index_rule():
    # imresize(..., 0.5, 'nearest') on 8 samples picks floor((u + 0.5) / 0.5) = 1, 3, 5, 7
    assert nearest_indices(4, 8, 0.5).tolist() == [1, 3, 5, 7]
    assert nearest_indices(8, 4, 2.0).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_fminsearch_solves_rosenbrock_like_matlab():
    x = fminsearch(rosen, np.array([-1.2, 1.0]), tol_x=1e-4, tol_f=1e-4, max_iter=400, max_evals=400)
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-3)


def test_multithresh_separates_clear_modes():
    hist = np.zeros(256)
    for centre in (20, 70, 130, 200):
        hist[centre - 5 : centre + 6] = 1000
    t = multithresh(hist, 3)
    assert 25 <= t[0] < 65 and 75 <= t[1] < 125 and 135 <= t[2] < 195


@pytest.mark.slow
def test_wu_palette_recovers_distinct_colours():
    colours = np.array([[10, 200, 30], [250, 5, 5], [40, 40, 220], [128, 128, 128]], dtype=np.uint8)
    img = np.repeat(colours, 50, axis=0).reshape(10, 20, 3)
    m = colour_moments(img)
    assert {tuple(c) for c in wu_palette(m, 4)} == {tuple(c) for c in colours}
    assert len(wu_palette(m, 2)) == 2
    assert len(wu_palette(m, 64)) == 4  # never more colours than the image has

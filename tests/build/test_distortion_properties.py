"""Behaviour every distortion type must have, on a real photo: shape, determinism, randomness, severity."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from saqt.build.distortions import PreparedImage, catalogue, distort, random_params, spec

ALL_TYPES = range(1, 26)
RANDOM_TYPES = [s.id for s in catalogue() if s.random]
REPLAYABLE = (3, 5, 20, 23)


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def src(photo) -> PreparedImage:
    return PreparedImage(photo)


def test_catalogue_has_25_types_with_5_levels():
    entries = catalogue()
    assert [e.id for e in entries] == list(ALL_TYPES)
    assert all(len(e.values) == 5 for e in entries)
    assert RANDOM_TYPES == [3, 5, 11, 12, 13, 14, 15, 19, 20, 23]
    assert spec(10).values == (43, 36, 24, 7, 4) and spec(9).values[-1] == 400
    assert all(e.notes for e in entries if e.fidelity == "approximation")


@pytest.mark.parametrize("t", ALL_TYPES)
def test_shape_dtype_determinism_and_input_untouched(src, photo, t):
    before = photo.copy()
    a = distort(photo, t, 4, seed=7)
    assert a.shape == photo.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, distort(photo, t, 4, seed=7))
    np.testing.assert_array_equal(a, distort(src, t, 4, seed=7))  # shared preparation changes nothing
    np.testing.assert_array_equal(photo, before)


@pytest.mark.parametrize("t", RANDOM_TYPES)
def test_random_types_depend_on_the_seed(photo, t):
    outs = {distort(photo, t, 4, seed=s).tobytes() for s in range(3)}
    assert len(outs) >= 2


@pytest.mark.parametrize("t", sorted(set(ALL_TYPES) - set(RANDOM_TYPES)))
def test_deterministic_types_ignore_the_seed(photo, t):
    np.testing.assert_array_equal(distort(photo, t, 3, seed=1), distort(photo, t, 3, seed=2))


@pytest.mark.parametrize("t", REPLAYABLE)
def test_replaying_drawn_parameters_reproduces_the_output(photo, t):
    params = random_params(t, 5, photo.shape[:2], seed=11)
    assert params
    np.testing.assert_array_equal(distort(photo, t, 5, params=params), distort(photo, t, 5, seed=11))


def test_replay_is_refused_for_types_without_parameters(photo):
    with pytest.raises(ValueError, match="no replayable parameters"):
        distort(photo, 11, 1, params={"angle": 3})


MONOTONE = [t for t in ALL_TYPES if t not in (18, 21, 25)]


@pytest.mark.parametrize("t", MONOTONE)
def test_severity_increases_with_level(src, t):
    """PSNR against the pristine falls level by level (same seed, so random draws are shared)."""
    params = {5: {"direction": [1.0, 1.0]}}.get(t)
    scores = [psnr(distort(src, t, lv, seed=3, params=params), src.u8) for lv in range(1, 6)]
    assert all(b < a for a, b in pairwise(scores)), scores


def test_pixelate_resolution_falls_with_level(src):
    """Pixelate's PSNR is not monotone at levels 1-3 (in the reference outputs either); its resolution is."""
    distinct_rows = [len(np.unique(distort(src, 21, lv), axis=0)) for lv in range(1, 6)]
    assert distinct_rows == sorted(distinct_rows, reverse=True) and len(set(distinct_rows)) == 5, distinct_rows


def test_mean_shift_is_u_shaped_around_identity(src):
    scores = [psnr(distort(src, 18, lv), src.u8) for lv in range(1, 6)]
    assert scores[2] == np.inf and scores[0] < scores[1] and scores[4] < scores[3]


def test_contrast_falls_from_level_1_to_level_5(src):
    spread = [distort(src, 25, lv).astype(float).std() for lv in range(1, 6)]
    assert all(b < a for a, b in pairwise(spread)), spread
    assert spread[2] > src.u8.astype(float).std()  # level 3 still adds contrast: not the identity


def test_numpy_integers_are_accepted(photo):
    np.testing.assert_array_equal(
        distort(photo, np.int64(7), np.uint8(2), seed=np.int64(3)), distort(photo, 7, 2, seed=3)
    )


@pytest.mark.parametrize("bad_type", [0, 26, -1, 2.0, "3", True])
def test_invalid_type_names_valid_range(photo, bad_type):
    with pytest.raises(ValueError, match=r"1\.\.25"):
        distort(photo, bad_type, 1)


@pytest.mark.parametrize("bad_level", [0, 6, 1.5, None])
def test_invalid_level_names_valid_range(photo, bad_level):
    with pytest.raises(ValueError, match=r"1\.\.5"):
        distort(photo, 1, bad_level)


def test_grey_input_is_converted_to_rgb(photo):
    grey = photo[..., 1].copy()
    out = distort(grey, 2, 3)
    assert out.shape == photo.shape
    np.testing.assert_array_equal(out, distort(np.repeat(grey[..., None], 3, axis=2), 2, 3))


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((64, 64, 4), np.uint8), "alpha"),
        (np.zeros((64, 64, 3), np.uint16), "uint8"),
        (np.zeros((64, 64, 3), np.float64), "uint8"),
        (np.zeros((20, 64, 3), np.uint8), "at least 48"),
        (np.zeros((64, 64, 2), np.uint8), "H x W x 3"),
    ],
)
def test_unusable_input_is_rejected_with_a_reason(image, message):
    with pytest.raises(ValueError, match=message):
        distort(image, 1, 1)


def test_flat_image_is_returned_unchanged():
    flat = np.full((64, 80, 3), 77, np.uint8)
    for t in (1, 11, 22):
        np.testing.assert_array_equal(distort(flat, t, 5), flat)


@pytest.fixture(scope="module")
def low_contrast(photo) -> np.ndarray:
    return (photo // 2 + 40).astype(np.uint8)


def test_non_full_range_input_is_stretched_like_the_reference(low_contrast):
    """The reference min-max stretches its input: a low-contrast copy gives the full-range result."""
    low = low_contrast
    stretched = np.floor((low.astype(float) - low.min()) / (low.max() - low.min()) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(distort(low, 18, 3), stretched)


@pytest.mark.parametrize("t", ALL_TYPES)
def test_every_type_handles_low_contrast_input(low_contrast, t):
    out = distort(low_contrast, t, 5, seed=1)
    assert out.shape == low_contrast.shape and out.max() > low_contrast.max()  # the final stretch reaches 255

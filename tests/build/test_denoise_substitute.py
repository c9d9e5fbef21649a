"""Type 15's DnCNN substitute (catalogue version 2): a guided filter with each channel as its own guide."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from saqt.build.distortions import spec
from saqt.build.distortions.noise import GUIDED_EPS_GAIN, GUIDED_RADIUS, gaussian_noise, guided_denoise


def guided_filter_reference(p: np.ndarray, eps: float, radius: int) -> np.ndarray:
    """He, Sun and Tang (2010), Algorithm 1 with guide I = input p: box means over (2r+1)^2 windows, edges replicated."""

    def mean(a):
        return uniform_filter(a, size=(2 * radius + 1, 2 * radius + 1, 1), mode="nearest")

    mean_p = mean(p)
    var_p = mean(p * p) - mean_p * mean_p
    a = var_p / (var_p + eps)
    b = mean_p - a * mean_p
    return np.clip(mean(a) * p + mean(b), 0.0, 1.0)


@pytest.mark.parametrize("shape", [(40, 56, 3), (5, 6, 3)])  # the second is smaller than one window
def test_matches_the_published_algorithm(shape):
    x = np.random.default_rng(1).random(shape)
    variance = 0.05
    expected = guided_filter_reference(x, GUIDED_EPS_GAIN * variance, GUIDED_RADIUS)
    np.testing.assert_allclose(guided_denoise(x, variance), expected, atol=1e-12)


@pytest.mark.parametrize("level", range(1, 6))
def test_removes_most_of_the_noise_at_every_level(level):
    variance = spec(15).value(level)
    clean = np.full((64, 64, 3), 0.25)
    clean[:, 32:] = 0.75
    noisy = gaussian_noise(clean, variance, np.random.default_rng(level))
    out = guided_denoise(noisy, variance)
    gain_db = 10 * np.log10(np.mean((noisy - clean) ** 2) / np.mean((out - clean) ** 2))
    assert gain_db > 8.0
    edge = out[:, 33:36].mean() - out[:, 28:31].mean()  # the 0.5 step, 2-4 px either side of it
    assert edge > (0.35 if level == 1 else 0.2)

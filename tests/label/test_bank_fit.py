"""``saqt.label.bank_fit``: the plain sentence when a bank is too small or too far from the images for transfer to help
(one reference the nearest for more than half of at least five images, or a median nearest similarity below 0.5),
and none otherwise."""

from __future__ import annotations

from saqt.label.bank_fit import bank_fit


def _fit(nearest: list[str], sims: list[float], references: int = 12):
    return bank_fit([[n, "other"] for n in nearest], [[s, s - 0.1] for s in sims], references)


def test_one_reference_nearest_for_most_images_is_named():
    fit = _fit(["I07", "I07", "I07", "I02", "I05"], [0.9, 0.8, 0.7, 0.85, 0.6])
    assert (fit.most_used, fit.most_used_images, fit.images, fit.median_similarity) == ("I07", 3, 5, 0.8)
    warning = fit.warning()
    assert warning.startswith("the bank (12 references) looks too small or too far from these images")
    assert "one reference (I07) is the nearest for 3 of the 5 images (60%, more than 50%)" in warning
    assert "median similarity" not in warning and fit.record()["warning"] == warning


def test_half_of_the_images_or_too_few_images_is_no_sign():
    assert _fit(["A", "A", "B", "C"], [0.9] * 4).warning() is None  # 4 images: fewer than 5
    assert _fit(["A", "A", "A", "B", "C", "D"], [0.9] * 6).warning() is None  # 3 of 6: not more than half


def test_a_low_median_similarity_is_named():
    warning = _fit(["A", "B"], [0.31, 0.22]).warning()
    assert "the median similarity to the nearest reference is 0.27 (below 0.5)" in warning
    assert _fit(["A", "B"], [0.5, 0.5]).warning() is None


def test_no_neighbours_no_fit():
    assert bank_fit([[], []], [[], []], 12) is None

"""Every metric the toolkit reports, on data with ties, against values counted by hand (issue 23, kind 2).

The release computes its correlations with scipy's defaults: Spearman on average ranks, Kendall's tau-b, Pearson.
Each expectation below is derived by hand in the comment above it; scipy is not called here, so a metric that moves to
another tie rule (tau-a, tau-c, ordinal ranks, the no-tie formula 1 - 6 sum d^2 / (n (n^2 - 1))) fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from glint.finetune import median_test
from glint.metrics import METRICS, iqa_metrics
from saqt.label.fidelity import correlations, evaluate_scores, matches_usage, top1_agreement

# Ties in both: X has 2,2 and 5,5; Y has 3,3. Means are whole numbers (3 and 3), so Pearson stays in integers.
X = [1, 2, 2, 3, 5, 5]
Y = [2, 1, 3, 3, 4, 5]
# Average ranks: X -> 1, 2.5, 2.5, 4, 5.5, 5.5; Y -> 2, 1, 3.5, 3.5, 5, 6; both have mean 3.5.
# Deviations: X [-2.5, -1, -1, .5, 2, 2], Y [-1.5, -2.5, 0, 0, 1.5, 2.5]; sum of products 3.75+2.5+3+5 = 14.25,
# sums of squares 16.5 and 17. (The no-tie formula gives 1 - 6*5/210 = 0.857; ordinal ranks give yet another.)
SROCC = 14.25 / math.sqrt(16.5 * 17)  # 0.85084
# The 15 pairs: 11 concordant, 1 discordant (0,1), tied in X only: (1,2), (4,5); tied in Y only: (2,3).
# tau-b = (C - D) / sqrt((C + D + tx)(C + D + ty)) = 10 / sqrt(14 * 13). (tau-a 10/15 = 0.667, tau-c 80/108 = 0.7407.)
KRCC = 10 / math.sqrt(14 * 13)  # 0.741249
# X - 3 = [-2, -1, -1, 0, 2, 2], Y - 3 = [-1, -2, 0, 0, 1, 2]: sum of products 10, sums of squares 14 and 10.
PLCC = 10 / math.sqrt(14 * 10)  # 0.845154
# X - Y = [-1, 1, -1, 0, 1, 0]: four squared errors of 1 over six images.
RMSE = math.sqrt(4 / 6)  # 0.816497


def test_iqa_metrics_on_tied_data_are_scipys_defaults_counted_by_hand():
    m = iqa_metrics(X, Y)
    assert m["srocc"] == pytest.approx(SROCC, rel=1e-12)
    assert m["krcc"] == pytest.approx(KRCC, rel=1e-12)
    assert m["plcc"] == pytest.approx(PLCC, rel=1e-12)
    assert m["rmse"] == pytest.approx(RMSE, rel=1e-12)  # raw, as the release reports it
    swapped = iqa_metrics(Y, X)  # every correlation is symmetric; RMSE too
    assert [swapped[k] for k in ("srocc", "krcc", "plcc", "rmse")] == pytest.approx([SROCC, KRCC, PLCC, RMSE])


def test_below_five_images_the_logistic_variants_are_the_raw_ones():
    """x = [0, 1, 1, 2], y = [0, 2, 0, 2]: ranks x 1, 2.5, 2.5, 4 and y 1.5, 3.5, 1.5, 3.5, deviations [-1.5, 0, 0,
    1.5] and [-1, 1, -1, 1]: SROCC 3 / sqrt(4.5 * 4). Pairs: 3 concordant, none discordant, (1,2) tied in x, (0,2)
    and (1,3) tied in y: tau-b 3 / sqrt(4 * 5). Pearson 2 / sqrt(2 * 4); errors [0, -1, 1, 0]: RMSE sqrt(2 / 4). Four
    points cannot fit four parameters: the mapped predictions are the raw ones."""
    m = iqa_metrics([0, 1, 1, 2], [0, 2, 0, 2])
    assert m["srocc"] == pytest.approx(3 / math.sqrt(18), rel=1e-12)
    assert m["krcc"] == pytest.approx(3 / math.sqrt(20), rel=1e-12)
    assert m["plcc"] == m["plcc_logistic"] == pytest.approx(2 / math.sqrt(8), rel=1e-12)
    assert m["rmse"] == m["rmse_logistic"] == pytest.approx(math.sqrt(0.5), rel=1e-12)


def test_the_logistic_variants_fit_targets_that_are_a_logistic_of_the_predictions():
    """Targets exactly 1 + 8 / (1 + exp(-x)) of tied predictions: after the fit PLCC is 1 and RMSE 0, where the raw
    PLCC is below 1 and the raw RMSE large; the ranks agree, ties and all, so SROCC and tau-b are exactly 1 (tau-a
    would be 19/21: two of the 21 pairs are tied in both)."""
    pred = np.array([-4.0, -2, -2, 0, 2, 2, 4])
    target = 1 + 8 / (1 + np.exp(-pred))
    m = iqa_metrics(pred, target)
    assert m["srocc"] == pytest.approx(1.0, abs=1e-12) and m["krcc"] == pytest.approx(1.0, abs=1e-12)
    assert m["plcc_logistic"] == pytest.approx(1.0, abs=1e-9) and m["rmse_logistic"] == pytest.approx(0.0, abs=1e-4)
    assert m["plcc"] < 0.98 and m["rmse"] > 3.0  # the ends of the S bend away from any line


@pytest.mark.parametrize("pred, target", [([1.0, 2.0], [1.0, 2.0]), ([3.0, 3.0, 3.0, 3.0], [1.0, 2.0, 3.0, 4.0])])
def test_undefined_metrics_are_nan(pred, target):
    m = iqa_metrics(pred, target)
    assert set(m) == set(METRICS) and all(math.isnan(v) for v in m.values())


def test_median_over_rounds_averages_the_middle_two_of_an_even_count():
    """Four rounds: SROCC 0.9, 0.1, 0.8, 0.6 -> sorted 0.1, 0.6, 0.8, 0.9 -> (0.6 + 0.8) / 2 = 0.7 (the mean is 0.6,
    the low and high medians 0.6 and 0.8); RMSE 4, 1, 2, 8 -> (2 + 4) / 2 = 3. Three rounds: 0.9, 0.1, 0.8 -> 0.8."""
    srocc, rmse = [0.9, 0.1, 0.8, 0.6], [4.0, 1.0, 2.0, 8.0]
    rounds = zip(range(4), srocc, rmse, strict=True)
    results = {r: {"metrics": {"test": {**dict.fromkeys(METRICS, 0.5), "srocc": s, "rmse": e}}} for r, s, e in rounds}
    median = median_test(results)
    assert median["srocc"] == pytest.approx(0.7) and median["rmse"] == pytest.approx(3.0) and median["plcc"] == 0.5
    assert median_test({r: results[r] for r in range(3)})["srocc"] == pytest.approx(0.8)


def test_fidelity_correlations_drop_missing_cells_and_handle_ties():
    """The transfer-fidelity SROCC and PLCC: cells without a score (NaN, in either) are left out, then the tied data
    above gives the values counted by hand; fewer than three scored cells give NaN."""
    truth = np.array([*X, np.nan, 7.0])
    pred = np.array([*Y, 1.0, np.nan])
    assert correlations(truth, pred) == pytest.approx((SROCC, PLCC), rel=1e-12)
    assert all(math.isnan(v) for v in correlations(np.array([1.0, 2.0, np.nan]), np.array([1.0, 2.0, 3.0])))
    # per distortion type (numbered from 1): type 1 as above, type 2 with the predictions reversed (12 - Y keeps
    # the ties and negates every deviation: -SROCC)
    scores = np.array([[X, X]], dtype=float)  # (references, types, levels) = (1, 2, 6)
    preds = np.array([[Y, [12 - y for y in Y]]], dtype=float)
    per_type = evaluate_scores(scores, preds)["per_type"]
    assert list(per_type) == [1, 2] and per_type[1] == pytest.approx(SROCC) and per_type[2] == pytest.approx(-SROCC)


def test_bank_usage_by_hand():
    """Ten matches over six references used 3, 2, 2, 1, 1, 1 times (ties in the counts): shares .3 .2 .2 .1 .1 .1.
    exp(entropy) = prod p^-p = .3^-.3 * .2^-.4 * .1^-.3 = 5.4507 (a base-2 entropy would give 2^H = 3.24); the five
    most used hold 9 of 10; a bank of 8 leaves 2 unused."""
    refs = ["r1", "r2", "r3", "r1", "r4", "r2", "r5", "r3", "r6", "r1"]
    usage = matches_usage(refs, bank_size=8)
    assert usage["effective_references"] == pytest.approx(0.3**-0.3 * 0.2**-0.4 * 0.1**-0.3, rel=1e-12)
    assert usage["top5_share"] == pytest.approx(0.9) and usage["unused_references"] == 2
    assert usage["most_used"] == ["r1", 3] and usage["least_used"][1] == 1 and usage["references_used"] == 6
    assert matches_usage(["a"] * 4)["effective_references"] == pytest.approx(1.0)  # one reference labels all


def test_top1_agreement_by_hand():
    """Three images have both a given and an own top-1 (w and v have one only); x and y agree once extensions go
    (I01 = I01, I02.bmp = I02.png), z does not: 2 of 3."""
    given = {"x.png": "I01.png", "y.png": "I02.bmp", "z.png": "I03.png", "w.png": "I04.png"}
    own = {"x.png": "I01", "y.png": "I02.png", "z.png": "I05.png", "v.png": "I01.png"}
    assert top1_agreement(given, own) == {"compared": 3, "agree": 2, "rate": pytest.approx(2 / 3)}
    assert math.isnan(top1_agreement(given, {})["rate"])

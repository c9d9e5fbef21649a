"""Correlation metrics of IQA: SROCC, KRCC, and PLCC and RMSE both raw (as the official release computes them) and
after the standard 4-parameter logistic fit (``plcc_logistic``, ``rmse_logistic``)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.stats import kendalltau, pearsonr, spearmanr


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The VQEG 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    with np.errstate(over="ignore"):
        return (b1 - b2) / (1 + np.exp(-(x - b3) / np.abs(b4))) + b2


def fit_logistic(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``pred`` mapped onto the scale of ``target`` by the fitted 4-parameter logistic (unchanged if there are too
    few points for four parameters, or the fit fails)."""
    if len(pred) < 5:
        return pred
    start = [target.max(), target.min(), np.mean(pred), np.std(pred) / 4 + 1e-8]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(logistic4, pred, target, p0=start, maxfev=20000)
    except RuntimeError:
        return pred
    return logistic4(pred, *params)


METRICS = ("srocc", "plcc", "krcc", "rmse", "plcc_logistic", "rmse_logistic")


def iqa_metrics(pred, target) -> dict[str, float]:
    """SROCC, PLCC, KRCC and RMSE on the raw predictions (the release's four), and PLCC and RMSE after the logistic
    fit; NaN where fewer than three images or constant predictions leave them undefined."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if len(pred) < 3 or np.ptp(pred) == 0:
        return dict.fromkeys(METRICS, float("nan"))
    mapped = fit_logistic(pred, target)
    return {
        "srocc": float(spearmanr(pred, target)[0]),
        "plcc": float(pearsonr(pred, target)[0]),
        "krcc": float(kendalltau(pred, target)[0]),
        "rmse": float(np.sqrt(np.mean((pred - target) ** 2))),
        "plcc_logistic": float(pearsonr(mapped, target)[0]),
        "rmse_logistic": float(np.sqrt(np.mean((mapped - target) ** 2))),
    }

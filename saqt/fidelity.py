"""Transfer fidelity: leave each reference out of its bank and predict its scores from the others."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import pearsonr, spearmanr

from saqt.errors import ConfigError
from saqt.match import build_index, search
from saqt.transfer import Rule, neighbour_weights, transfer


def _corr(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(truth) & np.isfinite(pred)
    if ok.sum() < 3:
        return float("nan"), float("nan")
    return float(spearmanr(truth[ok], pred[ok])[0]), float(pearsonr(truth[ok], pred[ok])[0])


@dataclass
class FidelityReport:
    """Pooled SROCC/PLCC of each predictor against the true scores, overall and per distortion type."""

    rows: dict[str, dict]  # predictor -> {"srocc", "plcc", "per_type": {type: srocc}}
    references: int

    def as_dict(self) -> dict:
        return {"references": self.references, "predictors": self.rows}


def _evaluate(truth: np.ndarray, pred: np.ndarray) -> dict:
    srocc, plcc = _corr(truth.ravel(), pred.ravel())
    per_type = {t + 1: _corr(truth[:, t].ravel(), pred[:, t].ravel())[0] for t in range(truth.shape[1])}
    return {"srocc": srocc, "plcc": plcc, "per_type": per_type}


def leave_one_out(scores: np.ndarray, embeddings: np.ndarray | None, rule: Rule, seed: int = 0,
                  random_draws: int = 20) -> FidelityReport:  # fmt: skip
    """Each reference's scores predicted from the other references.

    ``rule`` needs ``embeddings`` (R, d) unless it is ``mean``. Baselines: ``mean`` (the others' mean per
    cell), ``random`` (one random other reference, averaged over ``random_draws`` draws), and ``oracle``
    (the single other reference that best matches, chosen by looking at the answer: a ceiling, per-reference
    SROCC averaged).
    """
    r = len(scores)
    if r < 2:
        raise ConfigError("leave-one-out needs at least two references")
    rows: dict[str, dict] = {}
    totals = np.nansum(scores, axis=0)
    counts = np.isfinite(scores).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = (totals[None] - np.nan_to_num(scores)) / (counts[None] - np.isfinite(scores))
    if rule.name != "mean":
        if embeddings is None:
            raise ConfigError(f"rule {rule.name} needs the bank's reference images to embed")
        k = min(rule.neighbours, r - 1)
        sims, ids = search(build_index(embeddings), embeddings, k + 1)
        own = ids == np.arange(r)[:, None]  # drop each reference from its own neighbours
        keep = ~own & (np.cumsum(~own, axis=1) <= k)
        ids, sims = ids[keep].reshape(r, k), sims[keep].reshape(r, k)
        rows[rule.name] = _evaluate(scores, transfer(ids, neighbour_weights(sims, rule), scores))
    rows["mean"] = _evaluate(scores, mean_pred)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(random_draws):
        pick = (np.arange(r) + rng.integers(1, r, size=r)) % r  # a uniformly random other reference
        draws.append(_evaluate(scores, scores[pick]))
    rows["random"] = {key: float(np.nanmean([d[key] for d in draws])) for key in ("srocc", "plcc")}
    rows["random"]["per_type"] = {t: float(np.nanmean([d["per_type"][t] for d in draws])) for t in draws[0]["per_type"]}
    flat = scores.reshape(r, -1)
    best = [max(_corr(flat[i], flat[j])[0] for j in range(r) if j != i) for i in range(r)]
    rows["oracle"] = {"srocc": float(np.nanmean(best)), "plcc": float("nan"), "per_type": {}}
    return FidelityReport(rows, r)

"""Label-transfer rules: a pristine image's 25 x 5 scores from its nearest labelled references."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from saqt.core.errors import ConfigError

SELF_MATCH = 0.999  # a pristine image this similar to a reference is (nearly) that reference

RULES = ("top1", "topk", "mean")


@dataclass(frozen=True)
class Rule:
    """``top1`` copies the nearest reference's scores (the authors' rule); ``topk`` averages the k nearest with
    weights softmax(similarity / temperature); ``mean`` ignores content and takes the bank's mean per cell."""

    name: str = "top1"
    neighbours: int = 3  # as given; then how many nearest references the rule reads (1 for top1, 0 for mean)
    temperature: float = 0.05

    def __post_init__(self):
        if self.name not in RULES:
            raise ConfigError(f"--rule must be one of {', '.join(RULES)}, got {self.name!r}")
        if self.neighbours < 1 or self.temperature <= 0:
            raise ConfigError("--neighbours must be at least 1 and --temperature positive")
        object.__setattr__(self, "neighbours", {"top1": 1, "topk": self.neighbours, "mean": 0}[self.name])

    def describe(self) -> dict:
        """Provenance of the rule."""
        return {
            "rule": self.name,
            "k": self.neighbours,
            "temperature": self.temperature if self.name == "topk" else None,
        }


def neighbour_weights(similarities: np.ndarray, rule: Rule) -> np.ndarray:
    """(Q, k) weights summing to 1 per row: one-hot for top1, a temperature softmax for topk."""
    if rule.name == "top1":
        w = np.zeros_like(similarities, dtype=np.float64)
        w[:, 0] = 1.0
        return w
    z = (similarities - similarities.max(axis=1, keepdims=True)) / rule.temperature
    e = np.exp(z.astype(np.float64))
    return e / e.sum(axis=1, keepdims=True)


def transfer(neighbour_ids: np.ndarray, weights: np.ndarray, bank_scores: np.ndarray) -> np.ndarray:
    """(Q, 25, 5) scores: per cell the weighted mean over the neighbours that have a score there (NaN if none)."""
    scores = bank_scores[neighbour_ids]  # (Q, k, 25, 5)
    present = np.isfinite(scores)
    w = weights[:, :, None, None] * present
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w * np.nan_to_num(scores)).sum(axis=1) / total, np.nan)


def cell_means(bank_scores: np.ndarray) -> np.ndarray:
    """(25, 5) mean score per cell over the bank (the ``mean`` rule)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cell no reference has stays NaN
        return np.nanmean(bank_scores, axis=0)

"""One validation of scores: every score a stage writes, a set publishes or verifies, and a training run reads is a
finite number. A score cell of a table (text) and a column of scores (Arrow or numpy) are checked here, nowhere else.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from saqt.core.errors import SaqtError


class ScoreError(SaqtError, ValueError):
    """A score that is not a finite number; the message names where it is."""


def score_value(cell: object, where: str) -> float:
    """The finite number a score cell holds; ScoreError naming ``where`` otherwise."""
    try:
        score = float(cell)
    except (TypeError, ValueError):
        raise ScoreError(f"{where}: score {cell!r} is not a number") from None
    if not math.isfinite(score):
        raise ScoreError(f"{where}: score {cell!r} is not a finite number")
    return score


def require_finite(scores: pa.Array | pa.ChunkedArray | np.ndarray, where: str, ids=None) -> None:
    """ScoreError naming ``where`` (and the id, from ``ids``, of the first bad row) unless every non-null score is a
    finite number; a column that is not numeric is refused too."""
    if isinstance(scores, np.ndarray):
        scores = pa.array(scores)
    if not (pa.types.is_floating(scores.type) or pa.types.is_integer(scores.type) or pa.types.is_null(scores.type)):
        raise ScoreError(f"{where}: scores are {scores.type}, not numbers")
    if not pa.types.is_floating(scores.type):
        return
    bad = pc.fill_null(pc.invert(pc.is_finite(scores)), False)
    if pc.any(bad).as_py():
        first = int(pc.index(bad, True).as_py())
        row = f" (row {first}{'' if ids is None else f', {ids[first]}'})"
        raise ScoreError(f"{where}: {pc.sum(bad).as_py()} scores are NaN or infinite{row}")


def shard_scores(shard: str | Path | pq.ParquetFile, where: str | None = None) -> pa.ChunkedArray:
    """The ``score`` column of a Parquet shard (a label, SAQT-IQA or published one), checked by
    :func:`require_finite` (naming ``where``, default the shard)."""
    scores = (shard if isinstance(shard, pq.ParquetFile) else pq.ParquetFile(shard)).read(columns=["score"]).column(0)
    require_finite(scores, where or str(shard))
    return scores

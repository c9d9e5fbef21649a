"""The scale of a model's scores: that of the labels it was last trained on, as its checkpoint records it; and
checkpoint text made printable."""

from __future__ import annotations

UNKNOWN_SCALE = "unknown"


def printable(text: object) -> str:
    """``text`` with its control characters (terminal escapes, line breaks) written as escapes: a checkpoint's
    text as glint prints it."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def recorded_scale(meta: dict | None) -> str:
    """The scale a checkpoint's ``meta`` records for its scores: the range of the labels it was last trained on
    (``unknown`` without the record, as for the release's checkpoints or a random model); control characters
    escaped. A prediction may fall outside that range: it is the labels', not a bound on the model's output."""
    provenance = (meta or {}).get("provenance", {}) or {}
    if provenance.get("score_scale"):
        return printable(provenance["score_scale"])
    pretrain = provenance.get("pretrain", {}) or {}
    if pretrain.get("score_scale"):
        return printable(f"SAQT-IQA labels, {pretrain['score_scale']}, higher is better")
    return UNKNOWN_SCALE

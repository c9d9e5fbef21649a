"""A stage manifest's ``counts``, computed from its finished units: what the writer records at each compaction, and
what a reader of an unfinished stage recomputes once it has folded in the stage's journal."""

from __future__ import annotations

import re
from collections import Counter


def reason_kind(reason: str) -> str:
    """The reason with details and numbers stripped, for counting: 'too small', 'needs upscaling', 'duplicate'."""
    return re.sub(r"\d+", "N", re.sub(r"\s*\(.*\)", "", reason))


def _build(m: dict) -> dict:
    done = m["done"].values()
    rendering = [reason for u in done for _, reason in u["errors"]]
    by_reason = Counter(m["refused"]["by_reason"])  # inputs the listing and the screen refused, in log order
    by_reason.update(map(reason_kind, rendering))
    return {
        "pristine": sum(u["files"]["pristine"]["rows"] for u in done),
        "distorted": sum(u["files"]["distorted"]["rows"] for u in done),
        "skipped": m["refused"]["inputs"] + len(rendering),
        "skipped_by_reason": dict(by_reason),
        "duplicates": m.get("screen", {}).get("duplicates", 0),
    }


def _label(m: dict) -> dict:
    return {"labels": sum(u["files"]["labels"]["rows"] for u in m["done"].values()), "shards": len(m["done"])}


def _bank(m: dict) -> dict:
    done = m["done"].values()
    return {
        "references": sum("scores" in u for u in done),
        "skipped": len(m["listing_errors"]) + sum("skipped" in u for u in done),
    }


def counts(manifest: dict) -> dict:
    """The ``counts`` of a stage manifest (build, label or bank synth), from its units and refusals."""
    return {"build": _build, "label": _label, "bank": _bank}[manifest["stage"]](manifest)

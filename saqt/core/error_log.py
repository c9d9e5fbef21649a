"""A build's error log, errors.jsonl: one JSON line (key, reason, stage) for each input that was not built, streamed
as the build runs and never rewritten whole per unit."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from saqt.core.safe_files import atomic_write, open_own
from saqt.core.shards import writing


def _log(f: BinaryIO, errors: Iterable[tuple[str, str]], stage: str) -> None:
    for key, reason in errors:
        f.write(json.dumps({"key": key, "reason": reason, "stage": stage}, sort_keys=True).encode() + b"\n")


class ErrorLog:
    """errors.jsonl: the inputs refused by the listing, then by the screen, then each unit's render errors in unit
    order, a JSON line each. The run's first compaction writes it whole; a finished unit's errors are appended; a
    later compaction puts the render errors back in unit order, behind the refusals, which stay as written."""

    def __init__(self, path: Path, listing_errors: list[tuple[str, str]], screen_errors: list[tuple[str, str]]):
        self.path, self._refusals = path, (listing_errors, screen_errors)
        self._head: int | None = None  # bytes of the refusals, once written

    def __call__(self, manifest: dict) -> None:
        """Write the log for ``manifest``'s finished units (the stage writer's ``on_save``)."""
        done = manifest["done"]
        rendering = (error for unit in sorted(done, key=int) for error in done[unit]["errors"])
        if self._head is None:
            with atomic_write(self.path) as f:
                _log(f, self._refusals[0], "list")
                _log(f, self._refusals[1], "screen")
                self._head = f.tell()
                _log(f, rendering, "render")
            return
        with writing(self.path), os.fdopen(open_own(self.path), "r+b") as f:
            f.truncate(self._head)
            f.seek(self._head)
            _log(f, rendering, "render")

    def append(self, errors: list[tuple[str, str]]) -> None:
        """Add the render errors of a unit just finished."""
        if errors:
            with writing(self.path), os.fdopen(open_own(self.path, os.O_WRONLY | os.O_APPEND), "ab") as f:
                _log(f, errors, "render")

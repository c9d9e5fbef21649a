"""A stage's journal: the units finished since its manifest was last written, one appended line each.

Recording a unit appends one line and fsyncs it, so the cost of recording a unit does not grow with the units done.
The writer folds the journal into the manifest and removes it (compaction) when a run starts and when it finishes;
readers fold it in as they read the manifest.

The first line names an anchor, a random token that the compaction before it also wrote into the manifest: a
journal whose anchor the manifest does not name is left from before a later compaction (its units are in the
manifest already) and is ignored. Each further line holds a unit, what it reported, and a SHA-256 chained from the
line before (the first from the anchor), so a line edited, inserted, removed or reordered is refused. A last line
cut short by a kill (no newline, or not JSON) is ignored: its unit is done again.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import BinaryIO

from saqt.core.errors import StageError
from saqt.core.safe_files import create_new
from saqt.core.shards import writing


def journal_name(manifest: str) -> str:
    """The journal beside manifest file ``manifest``: build.json -> build.journal.jsonl."""
    return f"{Path(manifest).stem}.journal.jsonl"


def new_anchor() -> str:
    """A fresh anchor for the journal that follows a compaction."""
    return secrets.token_hex(16)


def _link(previous: str, unit: object, done: object) -> str:
    body = json.dumps([unit, done], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{previous}\n{body}".encode()).hexdigest()


class JournalWriter:
    """Appends finished units to the journal at ``path`` that follows the compaction which wrote ``anchor``; the
    file is created at the first unit."""

    def __init__(self, path: Path, anchor: str):
        self.path, self._chain = Path(path), anchor
        self._file: BinaryIO | None = None

    def append(self, unit: str, done: dict) -> None:
        """Add one line for ``unit`` and fsync it."""
        with writing(self.path):
            if self._file is None:  # a new journal: one of an earlier compaction's is replaced, never written through
                self.path.unlink(missing_ok=True)
                self._file = create_new(self.path)
                self._file.write(json.dumps({"anchor": self._chain}).encode() + b"\n")
            self._chain = _link(self._chain, unit, done)
            self._file.write(json.dumps({"unit": unit, "done": done, "chain": self._chain}, sort_keys=True).encode())
            self._file.write(b"\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file (it stays in place until the next compaction removes it)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _parse(line: bytes) -> dict | None:
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def read_journal(path: Path, anchor: str | None) -> list[tuple[int, str, dict]]:
    """(line number, unit, what it reported) of each unit that the journal at ``path`` adds to a manifest naming
    ``anchor``: none without a journal or anchor, or where the journal is stale; StageError if a line was changed."""
    if anchor is None or not path.is_file():
        return []
    try:
        data = path.read_bytes()
    except OSError as err:
        raise StageError(f"{path} cannot be read ({err.strerror or err})") from None
    lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]  # only whole lines: a kill may cut the last short
    if not lines or (_parse(lines[0]) or {}).get("anchor") != anchor:
        return []  # stale: written before the manifest's last compaction
    entries, chain = [], anchor
    for n, line in enumerate(lines[1:], 2):
        entry = _parse(line)
        if entry is None and n == len(lines):
            break  # a last line left torn by a kill: its unit is done again
        if entry is None or entry.get("chain") != _link(chain, entry.get("unit"), entry.get("done")):
            raise StageError(
                f"{path} line {n} does not follow from the lines before it (edited, inserted, removed or "
                "reordered); rerun the stage with --overwrite"
            )
        chain = entry["chain"]
        entries.append((n, entry["unit"], entry["done"]))
    return entries


def remove_journal(path: Path) -> None:
    """Remove the journal at ``path``, if any."""
    with writing(path):
        path.unlink(missing_ok=True)

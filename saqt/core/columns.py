"""Finding a column of a label table (a bank's scores, a dataset's labels) by name, candidate names or position."""

from __future__ import annotations

from pathlib import Path

from saqt.core.errors import SaqtError


def pick_column(
    wanted: int | str | list[str] | None,
    header: list[str],
    what: str,
    path: Path,
    error: type[SaqtError],
    required: bool = True,
) -> int | None:
    """The index in ``header`` of the column ``wanted``: a position, a name, or candidate names (the first present).
    None where ``wanted`` is None, or where no candidate is present and the column is not ``required``; else
    ``error`` naming ``path``, the candidates and the columns found."""
    if wanted is None:
        return None
    if isinstance(wanted, int):
        return wanted
    candidates = [wanted] if isinstance(wanted, str) else list(wanted)
    found = next((header.index(c) for c in candidates if c in header), None)
    if found is None and required:
        raise error(f"{path} has no {what} column (one of {candidates}; found {header})")
    return found

"""Given top-1 matches (the authors', or any file of the same form) instead of matching by embeddings.

Two forms are read: the authors' release ``kadis,kadid-10k,sim_value`` and the official pipeline's
``source_image,target_reference,cosine_similarity[,rank]`` (rows of rank 1). Images are matched to build rows
by file name, references to bank references by name with or without extension (``I27.png`` is ``I27``).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saqt.build import authors
from saqt.core.errors import SaqtError

FORMS = (("kadis", "kadid-10k", "sim_value"), ("source_image", "target_reference", "cosine_similarity"))


class MatchesError(SaqtError, ValueError):
    """A matches file that cannot be used as asked; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class Matches:
    """Pristine image name -> (reference name, cosine similarity), and where the pairs came from."""

    pairs: dict[str, tuple[str, float]]
    origin: str  # "authors" or the file's path
    file: str
    sha256: str

    def describe(self) -> dict:
        """Provenance recorded with the labels."""
        by_authors = self.origin == "authors"
        return {
            "source": "authors" if by_authors else "file",
            "file": self.file,
            "sha256": self.sha256,
            "rows": len(self.pairs),
            "licence": authors.LICENCE if by_authors else None,
            "how": "the authors' top-1 KADID-10k reference by ImageNet ResNet features (their release)"
            if by_authors
            else f"top-1 matches read from {self.origin}",
        }

    @property
    def label(self) -> str:
        """The ``encoder`` recorded in each label row: the matches stand in for an encoder."""
        return f"matches:{'authors' if self.origin == 'authors' else Path(self.origin).name}"

    @property
    def weights(self) -> str:
        """The ``encoder_weights`` recorded in each label row."""
        return f"{self.file} sha256:{self.sha256[:16]}"

    def resolve(self, pristine_keys: dict[str, str], ref_ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(reference index, similarity) arrays, (Q, 1), for the pristine ids of ``pristine_keys`` (id -> source
        key) in sorted order; MatchesError if an image has no match or a reference is not in the bank."""
        refs = {r: i for i, r in enumerate(ref_ids)} | {Path(r).stem: i for i, r in enumerate(ref_ids)}
        ids = sorted(pristine_keys)
        missing = [pristine_keys[p] for p in ids if self._pair(pristine_keys[p]) is None]
        if missing:
            raise MatchesError(
                f"{len(missing)} pristine images of the build have no match in {self.origin} "
                f"(first: {', '.join(missing[:3])})"
            )
        pairs = [self._pair(pristine_keys[p]) for p in ids]
        unknown = sorted({ref for ref, _ in pairs if ref not in refs and Path(ref).stem not in refs})
        if unknown:
            raise MatchesError(f"{self.origin} matches references the bank does not have: {', '.join(unknown[:5])}")
        nn = np.array([[refs.get(ref, refs.get(Path(ref).stem))] for ref, _ in pairs], dtype=np.int64)
        sims = np.array([[sim] for _, sim in pairs], dtype=np.float32)
        return nn.reshape(len(ids), 1), sims.reshape(len(ids), 1)

    def _pair(self, key: str) -> tuple[str, float] | None:
        return self.pairs.get(key) or self.pairs.get(Path(key).name)


def _parse(text: str, origin: str) -> dict[str, tuple[str, float]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    form = next((f for f in FORMS if set(f) <= set(columns)), None)
    if form is None:
        raise MatchesError(
            f"{origin} has neither the columns {','.join(FORMS[0])} nor {','.join(FORMS[1])} "
            f"(found {','.join(columns)})"
        )
    name_col, ref_col, sim_col = form
    pairs: dict[str, tuple[str, float]] = {}
    for line, row in enumerate(reader, start=2):
        if row.get("rank") not in (None, "", "1"):
            continue
        name, ref = (row[name_col] or "").strip(), (row[ref_col] or "").strip()
        try:
            sim = float(row[sim_col])
        except (TypeError, ValueError):
            raise MatchesError(f"{origin}:{line}: similarity {row[sim_col]!r} is not a number") from None
        if not name or not ref:
            raise MatchesError(f"{origin}:{line}: empty image or reference name")
        if pairs.get(name, (ref,))[0] != ref:
            raise MatchesError(f"{origin}:{line}: {name} is matched twice, to {pairs[name][0]} and {ref}")
        pairs[name] = (ref, sim)
    if not pairs:
        raise MatchesError(f"{origin} holds no matches")
    return pairs


def read_matches(spec: str) -> Matches:
    """``authors`` (the packaged release file) or the path of a matches CSV."""
    if spec == "authors":
        text = authors.matches_text()
        return Matches(_parse(text, "the authors' matches"), "authors", authors.MATCHES_FILE, authors.MATCHES_SHA256)
    path = Path(spec)
    if not path.is_file():
        raise MatchesError(f"--matches {spec}: neither 'authors' nor an existing CSV file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MatchesError(f"{path} is not UTF-8 text") from None
    try:
        pairs = _parse(text, str(path))
    except csv.Error as err:
        raise MatchesError(f"{path} is not a readable CSV ({err})") from None
    return Matches(pairs, str(path), path.name, hashlib.sha256(data).hexdigest())

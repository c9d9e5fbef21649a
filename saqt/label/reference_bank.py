"""Labelled reference banks: reference images with a score for each (type, level) distortion of them.

A bank is described by ``manifests/banks/<kind>.yaml``. Scores live in an (R, 25, 5) array indexed by
reference, KADID type - 1 and level - 1, NaN where the bank has no score.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from saqt.core.columns import pick_column
from saqt.core.errors import SaqtError
from saqt.core.scores import ScoreError, require_finite, score_value
from saqt.core.shards import BANK_MANIFEST
from saqt.core.stage_contract import FORMAT, MalformedManifest, open_stage, parse_manifest
from saqt.core.yaml_manifests import named_manifest

KINDS = ("kadid10k", "csv", "synth")
PROVENANCE = ("metric", "score_meaning", "config", "command", "toolkit_version")  # of a bank.json, kept with labels


class BankError(SaqtError, ValueError):
    """A bank that cannot be read as asked; one line naming the file and the problem."""


def bank_spec(kind: str) -> dict:
    """The manifest of bank kind ``kind``."""
    return named_manifest("banks", kind, BankError, "bank type")


@dataclass(frozen=True)
class Bank:
    """Reference ids, their image paths (None when only the label table is present), scores and provenance."""

    kind: str
    root: Path
    ref_ids: tuple[str, ...]
    images: tuple[Path | None, ...]
    scores: np.ndarray  # (R, 25, 5), NaN = no score for that cell
    proxy: bool = False
    provenance: dict = field(default_factory=dict)
    excluded: tuple[str, ...] = ()

    @property
    def has_images(self) -> bool:
        """Whether every reference image is on disk (needed to embed the bank)."""
        return all(p is not None and p.is_file() for p in self.images)

    def resolve(self, names: Iterable[str]) -> set[str]:
        """The bank ids of reference ``names`` as users write them: an id (``I01``), or its file name or stem with
        or without the extension (``I01.png``, ``i01``). BankError naming the unknown or ambiguous ones and the
        bank's ids."""
        ids = set(self.ref_ids)
        by_stem: dict[str, set[str]] = {}
        for r in self.ref_ids:
            by_stem.setdefault(Path(r).stem.lower(), set()).add(r)
        found, unknown = set(), []
        for name in sorted(names):
            candidates = {name} if name in ids else by_stem.get(Path(name).stem.lower(), set())
            if len(candidates) > 1:
                raise BankError(f"--exclude-refs: {name} could be any of {', '.join(sorted(candidates))}; give the id")
            found |= candidates
            unknown += [name] if not candidates else []
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise BankError(
                f"--exclude-refs names references the bank {self.root} does not have: {shown}; "
                f"{_ids_hint(self.ref_ids)}"
            )
        return found

    def without(self, excluded: set[str]) -> Bank:
        """The bank with the references ``excluded`` (ids, or names :meth:`resolve` reads) removed; their ids are
        recorded."""
        excluded = self.resolve(excluded)
        keep = [i for i, r in enumerate(self.ref_ids) if r not in excluded]
        return replace(
            self,
            ref_ids=tuple(self.ref_ids[i] for i in keep),
            images=tuple(self.images[i] for i in keep),
            scores=self.scores[keep],
            excluded=tuple(sorted(set(self.excluded) | excluded)),
        )

    def describe(self) -> dict:
        """Provenance recorded with every label."""
        return {
            "root": str(self.root),
            "kind": self.kind,
            "references": len(self.ref_ids),
            "proxy": self.proxy,
            "excluded": list(self.excluded),
            **self.provenance,
        }


def _ids_hint(ref_ids: tuple[str, ...]) -> str:
    """The bank's reference ids, shortened past ten: ``its 81 references are I01, I02, ..., I81``."""
    shown = list(ref_ids) if len(ref_ids) <= 10 else [*ref_ids[:6], "...", *ref_ids[-2:]]
    return f"its {len(ref_ids)} references are {', '.join(shown)}"


def normalise_scores(scores: np.ndarray, method: str) -> np.ndarray:
    """``none``, ``zscore``, or ``minmax:LO:HI`` (the authors': ``minmax:0:9``) over all of the bank's scores;
    BankError where the scores have no spread to normalise, ScoreError where a score would not stay finite (every
    transferred label is a weighted mean of these: they are what ``saqt label`` writes)."""
    with np.errstate(invalid="ignore", over="ignore"):  # the check below names what overflowed
        normalised = _normalised(scores, method)
    require_finite(normalised[np.isfinite(scores)], f"--normalise {method[:40]}")
    return normalised


def _normalised(scores: np.ndarray, method: str) -> np.ndarray:
    finite = scores[np.isfinite(scores)]
    if method == "none":
        return scores.copy()
    match = re.fullmatch(r"minmax:(-?[\d.]+):(-?[\d.]+)", method)
    if method != "zscore" and not match:
        raise BankError(f"score normalisation must be none, zscore or minmax:LO:HI, got {method!r}")
    if not finite.size or finite.min() == finite.max():
        value = f"every score is {finite.min():g}" if finite.size else "it has no score"
        raise BankError(f"--normalise {method} needs scores that differ, and {value}; use --normalise none")
    if method == "zscore":
        return (scores - finite.mean()) / finite.std()
    lo, hi = float(match[1]), float(match[2])
    return lo + (scores - finite.min()) / (finite.max() - finite.min()) * (hi - lo)


def check_scorable(bank: Bank, cells: list[tuple[int, int]], build: str) -> None:
    """BankError unless each (type, level) of ``cells`` has a score from at least one of the bank's references."""
    missing = [(t, lv) for t, lv in cells if not np.isfinite(bank.scores[:, t - 1, lv - 1]).any()]
    if missing:
        shown = ", ".join(f"type {t} level {lv}" for t, lv in missing[:4]) + (", ..." if len(missing) > 4 else "")
        raise BankError(
            f"no reference of the bank {bank.root} has a score for {len(missing)} (type, level) cells "
            f"the build {build} renders ({shown}); use a bank that scores them, or build without them"
        )


def _read_rows(path: Path) -> tuple[list[dict], list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            return list(reader), list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as err:
        raise BankError(f"{path} is not a readable CSV ({err})") from None


def _score(text: str, where: str, spec: dict) -> float:
    """A score cell: a finite number (``saqt.core.scores``) within the bank kind's ``score_range`` where it has one."""
    try:
        score = score_value(text, where)
    except ScoreError as err:
        raise BankError(str(err)) from None
    lo, hi = spec.get("score_range") or (None, None)
    if (lo is not None and score < lo) or (hi is not None and score > hi):
        raise BankError(f"{where}: score {score:g} lies outside the {spec['name']} range [{lo}, {hi}]")
    return score


def _cell(type_text: str, level_text: str, where: str) -> tuple[int, int]:
    try:
        t, lv = int(type_text), int(level_text)
    except ValueError:
        raise BankError(f"{where}: type and level must be integers, got {type_text!r}, {level_text!r}") from None
    if not (1 <= t <= 25 and 1 <= lv <= 5):
        raise BankError(f"{where}: type {t} / level {lv} outside the KADID-10k grid (1..25, 1..5)")
    return t, lv


def _assemble(root: Path, triples: list[tuple[str, int, int, float]], images: dict[str, Path | None]) -> tuple:
    ref_ids = tuple(sorted({r for r, *_ in triples}))
    index = {r: i for i, r in enumerate(ref_ids)}
    scores = np.full((len(ref_ids), 25, 5), np.nan)
    for ref, t, lv, score in triples:
        if not np.isnan(scores[index[ref], t - 1, lv - 1]):
            raise BankError(f"{root}: reference {ref} has two scores for type {t} level {lv}")
        scores[index[ref], t - 1, lv - 1] = score
    return ref_ids, tuple(images.get(r) for r in ref_ids), scores


def _load_kadid(root: Path, spec: dict, path: Path | None = None) -> tuple:
    path = path or next((root / n for n in spec["score_files"] if (root / n).is_file()), None)
    if path is None:
        raise BankError(f"{root} has no KADID-10k score file ({' or '.join(spec['score_files'])})")
    rows, columns = _read_rows(path)
    dist_col = columns[pick_column(spec["distorted_columns"], columns, "distorted-image", path, BankError)]
    score_col = columns[pick_column(spec["score_columns"], columns, "score", path, BankError)]
    pattern = re.compile(spec["distorted_pattern"])
    triples = []
    for i, row in enumerate(rows, start=2):
        m = pattern.match(row[dist_col].strip())
        if not m:
            raise BankError(f"{path}:{i}: {row[dist_col]!r} is not a KADID-10k name like I01_01_01.png")
        t, lv = _cell(m["type"], m["level"], f"{path}:{i}")
        triples.append((m["ref"], t, lv, _score(row[score_col], f"{path}:{i}", spec)))
    images = {r: root / spec["images_dir"] / f"{r}{spec['reference_suffix']}" for r, *_ in triples}
    return _assemble(root, triples, images)


def _load_csv(root: Path, spec: dict) -> tuple:
    path = root / spec["score_files"][0]
    if not path.is_file():
        raise BankError(f"{root} has no {spec['score_files'][0]}")
    rows, columns = _read_rows(path)
    cols = spec["columns"]
    missing = [c for c in cols.values() if c not in columns]
    if missing:
        raise BankError(f"{path} lacks columns {missing} (needs {list(cols.values())}; found {columns})")
    triples, images = [], {}
    for i, row in enumerate(rows, start=2):
        ref = row[cols["reference"]].strip()
        image = (root / ref).resolve()
        if not image.is_relative_to(root.resolve()):
            raise BankError(f"{path}:{i}: reference {ref!r} escapes the bank folder")
        t, lv = _cell(row[cols["type"]], row[cols["level"]], f"{path}:{i}")
        triples.append((ref, t, lv, _score(row[cols["score"]], f"{path}:{i}", spec)))
        images[ref] = image
    return _assemble(root, triples, images)


def read_scores(root: Path, kind: str) -> tuple:
    """(reference ids, image paths, (R, 25, 5) scores) of the ``kind`` bank's score table under ``root``, every score
    checked (a finite number, within the kind's range); BankError otherwise."""
    return (_load_kadid if kind == "kadid10k" else _load_csv)(root, bank_spec(kind))


def _bank_manifest(root: Path) -> dict:
    """The bank's ``bank.json`` ({} without one); one written by ``saqt bank synth`` is checked as a stage."""
    path = root / BANK_MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = parse_manifest(path)
    except MalformedManifest as err:
        raise BankError(str(err)) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("kind", ""), str):
        raise BankError(f"{path} is not a bank manifest (a JSON object with a kind)")
    if manifest.get("format") == FORMAT:
        manifest = open_stage(root, "bank").manifest
        if not manifest["complete"]:
            raise BankError(f"{root} is an unfinished bank: rerun its `saqt bank synth` command to complete it")
    return manifest


def detect_kind(root: Path) -> str:
    """The bank kind from its ``bank.json``, else from which score file is present."""
    manifest = _bank_manifest(root)
    if manifest.get("kind"):
        return manifest["kind"]
    for kind in KINDS:
        if any((root / n).is_file() for n in bank_spec(kind)["score_files"]):
            return kind
    raise BankError(f"{root} is not a bank: no {BANK_MANIFEST}, dmos.csv or scores.csv")


def load_bank(root: Path, kind: str | None = None) -> Bank:
    """Read the bank under ``root``; ``kind`` (kadid10k, csv, synth) is detected when not given. Every score is
    checked (a finite number, within the kind's range); a bank written by ``saqt bank synth`` is checked against
    its manifest's checksums.

    ``root`` may also be a KADID-10k score table itself (``dmos.csv`` or pyiqa's ``KADID10k.csv``): a bank of
    scores only, enough for the ``mean`` rule and for given matches (``saqt label --matches``).
    """
    root = Path(root)
    if root.is_file():
        if kind not in (None, "kadid10k"):
            raise BankError(f"{root} is a file: only a KADID-10k score table can be given as a file, not a {kind} bank")
        ref_ids, images, scores = _load_kadid(root.parent, bank_spec("kadid10k"), root)
        return Bank("kadid10k", root.parent, ref_ids, images, scores, False, {"score_file": root.name})
    if not root.is_dir():
        raise BankError(f"bank folder {root} does not exist")
    manifest = _bank_manifest(root)
    kind = kind or manifest.get("kind") or detect_kind(root)
    ref_ids, images, scores = read_scores(root, kind)
    if not ref_ids:
        raise BankError(f"{root}: the bank has no scores")
    provenance = {k: manifest[k] for k in PROVENANCE if k in manifest}
    proxy = bool(manifest.get("proxy", kind == "synth"))
    return Bank(kind, root, ref_ids, images, scores, proxy, provenance)

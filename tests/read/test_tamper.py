"""Every kind of file each saqt stage writes, tampered with: refused in one line, or kept as documented (issue 23,
kind 6).

The kinds are found on disk, not listed by hand: each file a stage wrote must be its manifest, a file the manifest
lists (checksummed: a changed byte or a missing file is refused, by ``saqt verify`` and by the stage that reads the
folder next) or one of its ``aux`` files (documented as rewritten freely and not checksummed). A stage that starts
writing a file kind its manifest does not list fails here. A published set: every file but SHA256SUMS is listed in
it, the card included. The glint run folder and ``saqt fetch`` have theirs in test_glint_hardening and test_fetch.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from saqt.build.build_reader import BuildReader
from saqt.core.errors import SaqtError
from saqt.core.stage_contract import CARD, MANIFESTS, SUMS, open_stage, read_sums
from saqt.label.reference_bank import load_bank
from saqt.label.sets import finished_labels
from saqt.read.api import VerifyError, verify

FOLDERS = {"build": "build", "bank": "bank", "label": "labels"}
# What reads each stage's folder next: the label stage reads builds and banks, publish (and pretraining) labels.
READERS: dict[str, Callable] = {"build": BuildReader, "bank": load_bank, "label": finished_labels}
# The kinds each stage writes, pinned so that a new one is a deliberate change here (the tests below check them all).
KINDS = {
    "build": {
        "build.json",
        "errors.jsonl",
        "distorted/*.parquet",
        "pristine/*.parquet",
        "ranges/distorted/*.npy",
        "ranges/pristine/*.npy",
    },
    "bank": {"bank.json", "scores.csv", "dataset.csv", "images/*.png", "distorted/*.png"},
    "label": {
        "label.json",
        "labels/*.parquet",
        "saqt-iqa/*.parquet",
        "embeddings/*.parquet",
        *(f"index/{part}/*.{ext}" for part in ("rows", "names", "refs") for ext in ("bin", "json")),
    },
    "published": {CARD, SUMS, "data/*.parquet"},
}


def on_disk(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def kind(path: str) -> str:
    """A file's kind: its folder and extension (``ranges/pristine/*.npy``), or its name at the top."""
    p = PurePosixPath(path)
    return p.name if p.parent == PurePosixPath(".") else f"{p.parent}/*{p.suffix}"


def one_of_each(paths: list[str]) -> dict[str, str]:
    """The last file of each kind (the last unit's, say)."""
    return {kind(p): p for p in paths}


def refused(target: Path, pattern: str, reader: Callable | None = None) -> None:
    """``saqt verify`` (and ``reader`` of the folder, given one) refuse ``target`` in one line matching ``pattern``."""
    for check in [verify, reader] if reader else [verify]:
        with pytest.raises(SaqtError, match=pattern) as err:
            check(target if check is not verify else str(target))
        assert "\n" not in str(err.value)
        if check is verify:
            assert isinstance(err.value, VerifyError)


def copy(small_stages: Path, name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(small_stages / name, target)
    return target


def flip_byte(path: Path) -> bytes:
    """Flip one bit in the middle of ``path`` (same size: only a checksum tells); the original bytes."""
    data = path.read_bytes()
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(changed))
    return data


@pytest.mark.parametrize("stage", list(FOLDERS))
def test_every_file_a_stage_writes_is_its_manifest_listed_or_aux(small_stages, stage):
    folder = small_stages / FOLDERS[stage]
    manifest = open_stage(folder, stage).manifest
    listed = {e["path"] for e in open_stage(folder, stage).entries()}
    aux = set(manifest["aux"])
    assert not listed & aux and (aux or stage == "bank")
    unaccounted = set(on_disk(folder)) - listed - aux - {MANIFESTS[stage]}
    assert not unaccounted, f"{stage} wrote files its manifest neither lists nor names as aux: {sorted(unaccounted)}"
    assert {kind(p) for p in on_disk(folder)} == KINDS[stage]


@pytest.mark.parametrize("stage", list(FOLDERS))
def test_a_changed_or_missing_listed_file_of_every_kind_is_refused(small_stages, tmp_path, stage):
    """One file of each listed kind, a bit flipped (same size), then deleted: ``saqt verify`` and the folder's next
    reader refuse it, naming it."""
    target = copy(small_stages, FOLDERS[stage], tmp_path)
    listed = [e["path"] for e in open_stage(target, stage).entries()]
    name = MANIFESTS[stage]
    for path in one_of_each(listed).values():
        original = flip_byte(target / path)
        refused(target, rf"{re.escape(path)}: SHA-256 differs from {name}'s", READERS[stage])
        (target / path).unlink()
        refused(target, rf"{re.escape(path)} is missing", READERS[stage])
        (target / path).write_bytes(original)
    assert verify(str(target)).kind == stage  # restored: each refusal was that file's


@pytest.mark.parametrize("stage", ["build", "label"])
def test_aux_files_are_not_checksummed_as_documented(small_stages, tmp_path, stage):
    """A stage's aux files (its error log, the embedding caches) are rewritten freely: changing them is no damage."""
    target = copy(small_stages, FOLDERS[stage], tmp_path)
    aux = open_stage(target, stage).manifest["aux"]
    assert aux
    for path in aux:
        (target / path).write_bytes(b"changed")
    assert verify(str(target)).kind == stage


def edit_manifest(target: Path, stage: str, change: Callable[[dict], None]) -> None:
    path = target / MANIFESTS[stage]
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _own_or_last_unit(manifest: dict) -> dict:
    """A file entry of the manifest: the stage's own (a bank's scores.csv), else the last unit's first."""
    if manifest["files"]:
        return next(iter(manifest["files"].values()))
    last = max(manifest["done"], key=int)
    return next(iter(manifest["done"][last]["files"].values()))


MANIFEST_EDITS = {
    "a listed checksum": (
        lambda m: _own_or_last_unit(m).update(sha256="0" * 64),
        r"SHA-256 differs from {name}'s",
    ),
    "a listed size": (lambda m: _own_or_last_unit(m).update(bytes=1), r"size differs from {name}'s"),
    "a path out of the folder": (
        lambda m: _own_or_last_unit(m).update(path="../elsewhere.csv"),
        r"path '\.\./elsewhere\.csv' is not a relative path inside the folder",
    ),
    "marked unfinished": (lambda m: m.update(complete=False), r"{name}: the \w+ is unfinished"),
}


@pytest.mark.parametrize("edit", list(MANIFEST_EDITS))
@pytest.mark.parametrize("stage", list(FOLDERS))
def test_an_edited_or_truncated_manifest_is_refused(small_stages, tmp_path, stage, edit):
    target = copy(small_stages, FOLDERS[stage], tmp_path)
    name = MANIFESTS[stage]
    change, pattern = MANIFEST_EDITS[edit]
    edit_manifest(target, stage, change)
    refused(target, pattern.format(name=re.escape(name)))
    (target / name).write_bytes((small_stages / FOLDERS[stage] / name).read_bytes()[:-40])
    refused(target, rf"{re.escape(name)} is malformed or truncated", READERS[stage])


def test_every_file_of_a_published_set_is_listed_in_its_sha256sums(small_stages):
    folder = small_stages / "published"
    listed = read_sums((folder / SUMS).read_text())
    assert set(on_disk(folder)) == {*listed, SUMS} and CARD in listed
    assert {kind(p) for p in on_disk(folder)} == KINDS["published"]


def test_a_changed_or_missing_file_of_a_published_set_is_refused(small_stages, tmp_path):
    target = copy(small_stages, "published", tmp_path)
    for path in one_of_each(sorted(read_sums((target / SUMS).read_text()))).values():
        original = flip_byte(target / path)
        refused(target, rf"{re.escape(path)}: SHA-256 mismatch")
        (target / path).unlink()
        refused(target, rf"{re.escape(path)} is (missing|not a published)")
        (target / path).write_bytes(original)
    assert verify(str(target)).kind == "published"


def test_an_edited_sha256sums_is_refused(small_stages, tmp_path):
    """SHA256SUMS vouches for every other file: a changed digest, a dropped line (the card's too: else the card
    could be edited at will) and a malformed line are each refused."""
    target = copy(small_stages, "published", tmp_path)
    sums = target / SUMS
    text = sums.read_text()
    lines = text.splitlines(keepends=True)
    card_line = next(line for line in lines if line.rstrip().endswith(f" {CARD}"))
    shard_line = next(line for line in lines if "data/" in line)
    other_digest = ("1" if shard_line[0] == "0" else "0") + shard_line[1:]
    edits = {
        text.replace(shard_line, other_digest): r"data/\S+: SHA-256 mismatch",
        text.replace(card_line, ""): rf"{CARD} is not listed in {SUMS}",
        text.replace(shard_line, ""): rf"data/\S+ is not listed in {SUMS}",
        text + "not a checksum line\n": rf"{SUMS} line {len(lines) + 1} is malformed",
    }
    for edited, pattern in edits.items():
        sums.write_text(edited)
        refused(target, pattern)
    sums.write_text(text)
    assert verify(str(target)).kind == "published"

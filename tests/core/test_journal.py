"""The stage journal: recording a unit appends one line and leaves the manifest alone; a killed build's journal is
read (torn last line ignored, stale journal ignored, tampering refused), and the error log keeps its order."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.saqt_cli import app
from saqt.build.build_reader import BuildReader
from saqt.build.build_stage import BuildConfig, run_build
from saqt.build.sources import sample_paths
from saqt.core.context import InProcess, RunContext
from saqt.core.journal import JournalWriter
from saqt.core.shards import sha256_file
from saqt.core.stage_contract import StageError, open_stage, read_manifest

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

ONE_CELL = {"size": (96, 64), "images_per_shard": 1, "source": "folder", "types": (1,), "levels": (1,)}
JOURNAL = "build.journal.jsonl"
runner = CliRunner()


class Killed(BaseException):
    """Stands for a kill of the build after some units."""


class Watched(InProcess):
    """This process's executor that, for the build's units (the call made once the run has written build.json),
    first calls ``before``, yields the results in reverse order if asked, calls ``after`` once each result is
    recorded, and stops as a kill would after ``stop_after`` results."""

    def __init__(self, out: Path, before=None, after=None, stop_after: int | None = None, reverse: bool = False):
        self.out, self.before, self.after, self.stop_after, self.reverse = out, before, after, stop_after, reverse
        self._earlier = self._written()

    def _written(self) -> tuple[int, int] | None:
        path = self.out / "build.json"
        return (path.stat().st_ino, path.stat().st_mtime_ns) if path.exists() else None

    def map_unordered(self, fn: Callable, items):
        if self._written() == self._earlier:
            yield from map(fn, items)  # the screen
            return
        if self.before:
            self.before()
        results = list(map(fn, items)) if self.reverse else map(fn, items)
        for n, result in enumerate(reversed(results) if self.reverse else results):
            if n == self.stop_after:
                raise Killed
            yield result
            if self.after:
                self.after()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Seven photos: the five samples and two crops."""
    root = tmp_path_factory.mktemp("photos")
    for i, path in enumerate(sample_paths()):
        img = Image.open(path).convert("RGB")
        img.save(root / f"{path.stem}.png")
        if i < 2:
            img.crop((0, 0, img.width // 2 + 40, img.height // 2 + 40)).save(root / f"crop_{path.stem}.png")
    return root


def build(out: Path, root: Path, executor=None, **kw) -> dict:
    config = BuildConfig(**{**ONE_CELL, "root": str(root), **kw})
    return run_build(config, out, RunContext(executor or InProcess(), progress=False))


def shards(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.glob("*/*.parquet"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, photos) -> dict[str, str]:
    out = tmp_path_factory.mktemp("ref") / "out"
    build(out, photos)
    return shards(out)


@pytest.fixture
def killed(tmp_path, photos) -> Path:
    """A build killed after four of its seven units: build.json from the run's start, four units in the journal."""
    out = tmp_path / "out"
    with pytest.raises(Killed):
        build(out, photos, Watched(out, stop_after=4))
    return out


def _journal_lines(out: Path) -> list[bytes]:
    return (out / JOURNAL).read_bytes().splitlines(keepends=True)


def test_recording_a_unit_appends_one_line_and_leaves_the_manifest_alone(tmp_path, photos, reference):
    out, seen = tmp_path / "out", []

    def look() -> None:
        stat = (out / "build.json").stat()
        seen.append(((stat.st_ino, stat.st_mtime_ns, stat.st_size), len(_journal_lines(out))))

    manifest = build(out, photos, Watched(out, after=look))
    assert [lines for _, lines in seen] == [2, 3, 4, 5, 6, 7, 8]  # the anchor line, then one line per unit
    assert len({stat for stat, _ in seen}) == 1  # build.json neither replaced nor rewritten between records
    assert manifest["complete"] and len(manifest["done"]) == 7 and not (out / JOURNAL).exists()  # folded at finish
    assert shards(out) == reference and json.loads((out / "build.json").read_text())["done"] == manifest["done"]


def test_a_reader_of_a_killed_build_sees_the_units_of_its_journal(killed):
    on_disk = json.loads((killed / "build.json").read_text())
    assert on_disk["done"] == {} and len(_journal_lines(killed)) == 5
    reader = BuildReader(killed)
    assert len(reader.stage.units()) == 4 and len(reader.shard_paths("pristine")) == 4
    assert reader.manifest["counts"]["pristine"] == reader.manifest["counts"]["distorted"] == 4
    info = runner.invoke(app, ["info", str(killed)])
    assert info.exit_code == 0 and "rows: 4 pristine, 4 distorted" in info.output
    assert "shards: 4 of 7 units done" in info.output
    unit = reader.stage.units()[-1]
    shard = reader.stage.path(unit, "distorted")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))  # a journalled unit's shard is checked too
    verified = runner.invoke(app, ["verify", str(killed)])
    assert verified.exit_code == 1 and f"{shard.relative_to(killed)}: SHA-256 differs" in verified.output


@pytest.mark.parametrize("tear", [lambda line: line[:-9], lambda line: b"\x00" * 40 + b"\n"], ids=["cut", "junk"])
def test_a_torn_last_line_is_ignored_and_its_unit_redone(killed, photos, reference, tear):
    lines = _journal_lines(killed)
    last = json.loads(lines[-1])["unit"]
    (killed / JOURNAL).write_bytes(b"".join(lines[:-1]) + tear(lines[-1]))
    done = read_manifest(killed, "build")["done"]
    assert len(done) == 3 and last not in done
    torn = killed / f"pristine/part-{int(last):05d}.parquet"
    os.utime(torn, ns=(0, 0))
    kept = {u: (killed / f"pristine/part-{int(u):05d}.parquet").stat().st_mtime_ns for u in done}
    build(killed, photos)
    assert shards(killed) == reference
    assert torn.stat().st_mtime_ns != 0  # written again
    assert kept == {u: (killed / f"pristine/part-{int(u):05d}.parquet").stat().st_mtime_ns for u in done}


def test_a_stale_journal_is_ignored(killed, photos, reference):
    stale, old_anchor = (
        (killed / JOURNAL).read_bytes(),
        json.loads((killed / "build.json").read_text())["journal_anchor"],
    )
    with pytest.raises(Killed):
        build(killed, photos, Watched(killed, stop_after=0))  # resumed, its start compacted, then killed
    compacted = json.loads((killed / "build.json").read_text())
    anchor = compacted["journal_anchor"]
    assert anchor != old_anchor and len(compacted["done"]) == 4 and not (killed / JOURNAL).exists()
    (killed / JOURNAL).write_bytes(stale)  # as if the kill had come before the compaction removed it
    assert read_manifest(killed, "build")["done"] == compacted["done"]
    entry = {"sha256": "0" * 64, "bytes": 1, "rows": 1}
    files = {table: {"path": f"{table}/gone.parquet", **entry} for table in ("pristine", "distorted")}
    for anchor_of_journal, folded in ((old_anchor, False), (anchor, True)):
        writer = JournalWriter(killed / JOURNAL, anchor_of_journal)
        writer.append("99", {"files": files, "errors": []})
        writer.close()
        assert ("99" in read_manifest(killed, "build")["done"]) is folded
    with pytest.raises(StageError, match="distorted/gone.parquet is missing"):
        open_stage(killed)  # the journal that follows the manifest is read: the unit it names is checked
    finished = build(killed, photos)  # the unit of no file is dropped as damaged, the missing three are built
    assert finished["complete"] and "journal_anchor" not in finished and shards(killed) == reference
    (killed / JOURNAL).write_bytes(stale)
    assert read_manifest(killed, "build") == json.loads((killed / "build.json").read_text())  # none follows


def _edit(lines: list[bytes]) -> list[bytes]:
    entry = json.loads(lines[2])
    entry["done"]["files"]["pristine"]["rows"] = 2
    return [*lines[:2], json.dumps(entry, sort_keys=True).encode() + b"\n", *lines[3:]]


@pytest.mark.parametrize(
    "change",
    [
        _edit,
        lambda lines: [*lines[:2], lines[1], *lines[2:]],  # a line inserted: a copy of the one before
        lambda lines: [*lines[:2], *lines[3:]],  # a line removed
        lambda lines: [*lines[:2], lines[3], lines[2], *lines[4:]],  # two lines swapped
    ],
    ids=["edited", "inserted", "removed", "reordered"],
)
def test_a_changed_line_of_the_journal_is_refused_in_one_line(killed, photos, change):
    lines = _journal_lines(killed)
    (killed / JOURNAL).write_bytes(b"".join(change(lines)))
    message = f"{killed / JOURNAL} line 3 does not follow from the lines before it"
    with pytest.raises(StageError, match=message) as err:
        read_manifest(killed, "build")
    assert "--overwrite" in str(err.value) and "\n" not in str(err.value)
    for args, code in ((["info", str(killed)], 2), (["verify", str(killed)], 1)):
        result = runner.invoke(app, args)
        assert result.exit_code == code and message in result.output and "Traceback" not in result.output
    with pytest.raises(StageError, match=message):
        build(killed, photos)  # a rerun resumes only from an intact journal


def test_overwrite_replaces_a_build_whose_journal_was_changed(killed, photos, reference):
    lines = _journal_lines(killed)
    (killed / JOURNAL).write_bytes(b"".join(_edit(lines)))
    config = BuildConfig(**{**ONE_CELL, "root": str(photos)})
    manifest = run_build(config, killed, RunContext(InProcess(), overwrite=True, progress=False))
    assert manifest["complete"] and shards(killed) == reference and not (killed / JOURNAL).exists()


@pytest.fixture
def refusing(tmp_path) -> tuple[Path, Path]:
    """Four good photos, three images the screen refuses, and a list naming them, one missing, one twice."""
    root = tmp_path / "pool"
    root.mkdir()
    for name, path in zip(("a.png", "b.png", "c.png", "d.png"), sample_paths(), strict=False):
        shutil.copy(path, root / name)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "tiny.png")
    (root / "text.jpg").write_text("this is not an image\n")
    Image.open(sample_paths()[4]).convert("L").save(root / "grey.png")
    names = ["a.png", "b.png", "c.png", "d.png", "tiny.png", "text.jpg", "grey.png", "missing.png", "b.png"]
    (tmp_path / "pool.txt").write_text("\n".join(names) + "\n")
    return root, tmp_path / "pool.txt"


def test_the_error_log_lists_refusals_then_render_errors_in_unit_order(tmp_path, refusing):
    root, listing = refusing
    out = tmp_path / "out"

    def vanish() -> None:  # screened, then gone before its unit is rendered
        (root / "a.png").unlink()
        (root / "c.png").unlink()

    executor = Watched(out, before=vanish, reverse=True)  # units 3, 2, 1, 0: c's error is logged before a's
    manifest = build(out, root, executor, source="list", list_file=str(listing), min_side=64)
    expected = [
        {"key": "missing.png", "reason": "no such file", "stage": "list"},
        {"key": "b.png", "reason": "listed twice", "stage": "list"},
        {"key": "grey.png", "reason": "greyscale (no colour; pass --allow-grey to keep)", "stage": "screen"},
        {"key": "text.jpg", "reason": "not a recognised image format", "stage": "screen"},
        {"key": "tiny.png", "reason": "too small (1x1; shorter side under 64 px)", "stage": "screen"},
        {"key": "a.png", "reason": "cannot read (No such file or directory)", "stage": "render"},
        {"key": "c.png", "reason": "cannot read (No such file or directory)", "stage": "render"},
    ]
    assert [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()] == expected
    assert manifest["counts"]["skipped"] == 7 and manifest["counts"]["pristine"] == 2
    assert manifest["counts"]["skipped_by_reason"] == {
        "no such file": 1,
        "listed twice": 1,
        "greyscale": 1,
        "not a recognised image format": 1,
        "too small": 1,
        "cannot read": 2,
    }
    on_disk = json.loads((out / "build.json").read_text())
    assert (
        "screen_errors" not in on_disk and "listing_errors" not in on_disk and on_disk["counts"] == manifest["counts"]
    )

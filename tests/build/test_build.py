"""``saqt build``: determinism across workers, resume, schema, recipes, bad input, crashes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.executors import LocalExecutor
from pipelines.saqt_cli import app
from saqt.build.build_reader import BuildReader
from saqt.build.build_stage import BuildConfig, run_build
from saqt.build.distortions import distort
from saqt.build.sources import SourceError, sample_paths
from saqt.core.context import RunContext
from saqt.core.images import decode_image, encode_png
from saqt.core.shards import DISTORTED_SCHEMA, PRISTINE_SCHEMA, sha256_file
from saqt.core.stage_contract import StageConflict, StageError, read_manifest

SMALL = {"size": (96, 64), "images_per_shard": 2, "source": "folder"}


def build(out: Path, root: Path, workers: int = 1, overwrite: bool = False, **kw) -> dict:
    config = BuildConfig(**{**SMALL, "root": str(root), **kw})
    return run_build(config, out, RunContext(LocalExecutor(workers), overwrite=overwrite, progress=False))


def checksums(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.glob("*/*.parquet"))}


@pytest.mark.slow
def test_same_output_whatever_the_number_of_workers(tmp_path, photos):
    one = build(tmp_path / "w1", photos, workers=1)
    two = build(tmp_path / "w2", photos, workers=2)
    assert one["complete"] and two["complete"] and one["counts"]["distorted"] == 7 * 125
    assert checksums(tmp_path / "w1") == checksums(tmp_path / "w2") and len(checksums(tmp_path / "w1")) == 8
    assert one["done"] == two["done"]


@pytest.mark.slow
def test_shards_have_the_documented_schema_and_match_the_manifest(tmp_path, photos):
    out = tmp_path / "b"
    manifest = build(out, photos, types=(1, 19, 20), levels=(2, 5))
    for unit in manifest["done"].values():
        for table, schema in (("pristine", PRISTINE_SCHEMA), ("distorted", DISTORTED_SCHEMA)):
            entry = unit["files"][table]
            t = pq.read_table(out / entry["path"])
            assert t.schema.equals(schema, check_metadata=False) and t.num_rows == entry["rows"]
            assert sha256_file(out / entry["path"]) == entry["sha256"]
    rows = pq.read_table(out / "distorted").to_pylist()
    assert len(rows) == 7 * 6 and {r["dist_type"] for r in rows} == {1, 19, 20}
    row = next(r for r in rows if r["dist_type"] == 20 and r["level"] == 5)
    pristine = {r["pristine_id"]: r for r in pq.read_table(out / "pristine").to_pylist()}
    canon = decode_image(pristine[row["pristine_id"]]["image"])
    assert canon.shape == (64, 96, 3) and row["image"][:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(decode_image(row["image"]), distort(canon, 20, 5, seed=row["seed"]))
    assert len(json.loads(row["random_params"])["patches"]) == 100
    assert row["image_id"] == f"{row['pristine_id']}_20_05" and row["param"] == 100.0


@pytest.mark.slow
def test_recipe_only_build_renders_back_bit_identically(tmp_path, photos):
    build(tmp_path / "full", photos, types=(3, 11, 15, 22), levels=(1, 4))
    build(tmp_path / "recipe", photos, types=(3, 11, 15, 22), levels=(1, 4), recipe_only=True)
    full, recipe = BuildReader(tmp_path / "full"), BuildReader(tmp_path / "recipe")
    pairs = list(zip(full.rows("distorted"), recipe.rows("distorted"), strict=True))
    assert len(pairs) == 7 * 8
    for materialised, row in pairs:
        assert row["image"] is None and row["seed"] == materialised["seed"]
        assert encode_png(recipe.image(row)) == materialised["image"]
    size = sum(p.stat().st_size for p in (tmp_path / "recipe" / "distorted").iterdir())
    assert size < sum(p.stat().st_size for p in (tmp_path / "full" / "distorted").iterdir()) / 20


@pytest.mark.slow
def test_per_image_subset_is_seeded(tmp_path, photos):
    manifest = build(tmp_path / "p", photos, per_image=5)
    rows = pq.read_table(tmp_path / "p" / "distorted").to_pylist()
    cells = {}
    for r in rows:
        cells.setdefault(r["pristine_id"], []).append((r["dist_type"], r["level"]))
    assert manifest["counts"]["distorted"] == 35 and all(len(c) == 5 for c in cells.values())
    assert len({tuple(c) for c in cells.values()}) > 1  # each image draws its own cells


@pytest.mark.slow
def test_resume_redoes_only_missing_shards_and_refuses_other_settings(tmp_path, photos):
    out = tmp_path / "r"
    build(out, photos, types=(1, 2))
    first = checksums(out)
    (out / "distorted" / "part-00001.parquet").unlink()
    (out / "pristine" / "part-00002.parquet").write_bytes(b"damaged")
    before = {p: os.stat(out / p).st_mtime_ns for p in first if "00001" not in p and "00002" not in p}
    build(out, photos, types=(1, 2))
    assert checksums(out) == first
    assert before == {p: os.stat(out / p).st_mtime_ns for p in before}  # finished shards untouched
    with pytest.raises(StageConflict, match="another config \\(types\\)"):
        build(out, photos, types=(1, 3))
    assert checksums(out) == first
    build(out, photos, types=(1, 3), overwrite=True)
    assert json.loads((out / "build.json").read_text())["config"]["types"] == [1, 3]


@pytest.mark.slow
def test_the_same_root_however_spelled_resumes_and_another_root_is_refused(tmp_path, photos, monkeypatch):
    out = tmp_path / "r"
    first = build(out, photos, types=(1,))
    assert json.loads((out / "build.json").read_text())["config"]["root"] == str(photos.resolve())
    stamps = {p: os.stat(out / p).st_mtime_ns for p in checksums(out)}
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    spelled = Path(os.path.relpath(photos, tmp_path / "elsewhere"))  # ../../photos0 from here
    again = build(out, Path(f"./{spelled}/"), types=(1,))
    assert again["complete"] and again["done"] == first["done"]
    assert stamps == {p: os.stat(out / p).st_mtime_ns for p in stamps}  # resumed: nothing rewritten
    copy = tmp_path / "copy"
    shutil.copytree(photos, copy)  # the same files in another folder: another input
    with pytest.raises(StageConflict, match="another config \\(root\\)"):
        build(out, Path("../copy"), types=(1,))


@pytest.mark.slow
def test_a_relative_root_recorded_by_an_earlier_version_resumes_from_its_folder(tmp_path, photos, monkeypatch):
    out = tmp_path / "r"
    build(out, photos, types=(1,))
    manifest = json.loads((out / "build.json").read_text())
    monkeypatch.chdir(photos.parent)
    manifest["config"]["root"] = photos.name  # as 0.3 recorded `--root photos0`, run from photos0's parent
    (out / "build.json").write_text(json.dumps(manifest))
    assert build(out, Path(photos.name), types=(1,))["complete"]


def png_bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture
def messy(tmp_path, photos) -> Path:
    """Two good photos plus every kind of bad or awkward input the issue lists."""
    root = tmp_path / "messy"
    root.mkdir()
    photo = np.asarray(Image.open(sample_paths()[1]).convert("RGB"))
    Image.fromarray(photo).save(root / "good.png")
    Image.fromarray(photo[::-1]).save(root / "good2.jpg", quality=90)
    jpeg = (root / "good2.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("this is not an image\n")
    Image.fromarray(photo[:, ::-1]).convert("CMYK").save(root / "cmyk.jpg", quality=90)
    cv2.imwrite(str(root / "deep16.png"), (photo[..., ::-1].astype(np.uint16) * 257)[50:, 30:])
    rgba = np.dstack([photo[::-1, ::-1], np.full(photo.shape[:2], 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").quantize(64).save(root / "palette_alpha.png", transparency=0)
    Image.fromarray(photo).convert("L").save(root / "grey.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "tiny.png")
    (root / "bomb.png").write_bytes(png_bomb(20000, 20000))
    os.symlink(photos / "chelsea.jpg", root / "escape.jpg")
    return root


EXPECTED_SKIPS = {
    "truncated.jpg": "cannot decode",
    "empty.jpg": "not a recognised image format",
    "text.jpg": "not a recognised image format",
    "grey.png": "greyscale",
    "tiny.png": "too small (1x1",
    "bomb.png": "decompression-bomb limit",
    "escape.jpg": "symlink points outside the root",
    "palette_alpha.png": "not pristine: PNG of at most 256 colours (mode P)",  # 64 colours: not pristine
}


@pytest.mark.slow
def test_bad_inputs_are_skipped_with_reasons_and_the_rest_is_built(tmp_path, messy):
    manifest = build(tmp_path / "out", messy, min_side=64)
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    reasons = {e["key"]: e["reason"] for e in errors}
    assert set(reasons) == set(EXPECTED_SKIPS)
    for key, fragment in EXPECTED_SKIPS.items():
        assert fragment in reasons[key] and "\n" not in reasons[key]
    built = {r["source_key"] for r in pq.read_table(tmp_path / "out" / "pristine").to_pylist()}
    assert built == {"good.png", "good2.jpg", "cmyk.jpg", "deep16.png"}
    assert manifest["counts"]["distorted"] == 4 * 125 and manifest["counts"]["skipped"] == 8
    assert manifest["counts"]["skipped_by_reason"]["too small"] == 1


def _build_as_nobody(config: BuildConfig, out: str, conn) -> None:
    os.setgid(65534)
    os.setuid(65534)
    run_build(config, Path(out), RunContext(LocalExecutor(1), progress=False))
    conn.send(json.loads((Path(out) / "errors.jsonl").read_text().splitlines()[0]))


def test_unreadable_file_is_skipped(photos):
    base = Path(tempfile.mkdtemp(prefix="saqt-perm-"))
    try:
        os.chmod(base, 0o777)
        root = base / "root"
        root.mkdir()
        for name in ("chelsea.jpg", "coffee.png"):
            (root / name).write_bytes((photos / name).read_bytes())
        os.chmod(root / "coffee.png", 0o000)
        config = BuildConfig(**{**SMALL, "root": str(root), "types": (1,), "levels": (1,)})
        if os.geteuid() != 0:
            run_build(config, base / "out", RunContext(LocalExecutor(1), progress=False))
            error = json.loads((base / "out" / "errors.jsonl").read_text().splitlines()[0])
        else:  # root reads anything: drop to user nobody in a forked child to meet a real EACCES
            os.chmod(root, 0o755)
            parent, child = mp.get_context("fork").Pipe()
            proc = mp.get_context("fork").Process(target=_build_as_nobody, args=(config, str(base / "out"), child))
            proc.start()
            proc.join(60)
            assert proc.exitcode == 0
            error = parent.recv()
        assert error == {"key": "coffee.png", "reason": "cannot read (Permission denied)", "stage": "screen"}
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


runner = CliRunner()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "folder", "--root", "/nonexistent/place"], "not a directory"),
        (["--source", "list", "--root", "."], "needs --list"),
        (["--size", "40x30"], "at least 48 px"),
        (["--size", "big"], "--size must look like 512x384"),
        (["--types", "0,3"], "--types"),
        (["--per-image", "9", "--types", "1", "--levels", "1-5"], "exceeds the 5"),
        (["--source", "imagenet", "--root", "."], "no imagenet images under"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, args, message):
    out = tmp_path / "never"
    result = runner.invoke(app, ["build", "--out", str(out), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_malformed_list_file_is_refused_before_any_work(tmp_path, photos):
    listing = tmp_path / "pool.csv"
    listing.write_text("name;score\nchelsea.jpg;3\n")
    result = runner.invoke(
        app, ["build", "--source", "list", "--root", str(photos), "--list", str(listing), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "no path column" in result.output and not (tmp_path / "o").exists()
    with pytest.raises(SourceError):
        build(tmp_path / "o2", photos, source="list", list_file=str(listing))


@pytest.mark.slow
def test_cli_builds_the_sample_by_default_and_resumes(tmp_path):
    out = tmp_path / "s"
    args = ["build", "--out", str(out), "--size", "96x64", "--types", "2,13", "--levels", "3"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0 and "built 5 pristine and 10 distorted images" in first.output
    stamp = checksums(out)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and checksums(out) == stamp


# --- crashes: a real process, killed mid-run, then resumed ---------------------------------------------------


def saqt_command(args: list[str]) -> list[str]:
    return [sys.executable, "-c", "from pipelines.saqt_cli import app; app()", *args]


def _wait_for_shards(out: Path, proc: subprocess.Popen, at_least: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(read_manifest(out, "build")["done"]) >= at_least:  # with the units its journal holds
                return
        except StageError:  # not written yet
            pass
        time.sleep(0.05)
    pytest.fail(f"the build finished or stalled before {at_least} shards were done")


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


CRASH_ARGS = [
    "--source",
    "folder",
    "--size",
    "192x128",
    "--images-per-shard",
    "1",
    "--types",
    "1-25",
    "--levels",
    "1-5",
]


@pytest.fixture(scope="module")
def reference_build(tmp_path_factory, photos) -> dict[str, str]:
    out = tmp_path_factory.mktemp("ref") / "out"
    subprocess.run(
        saqt_command(["build", "--root", str(photos), "--out", str(out), *CRASH_ARGS]), check=True, capture_output=True
    )
    return checksums(out)


def _visible_shards_are_whole(out: Path) -> None:
    for path in out.glob("*/*.parquet"):
        pq.read_table(path)  # a shard under its final name always reads completely


@pytest.mark.slow
def test_killing_the_main_process_then_rerunning_gives_the_same_shards(tmp_path, photos, reference_build):
    out = tmp_path / "out"
    args = ["build", "--root", str(photos), "--out", str(out), "--workers", "2", *CRASH_ARGS]
    proc = subprocess.Popen(
        saqt_command(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    _wait_for_shards(out, proc, 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = read_manifest(out, "build")
    assert not manifest["complete"] and len(manifest["done"]) < 7
    _visible_shards_are_whole(out)
    subprocess.run(saqt_command(args), check=True, capture_output=True)
    assert checksums(out) == reference_build


@pytest.mark.slow
def test_killing_a_worker_fails_cleanly_and_a_rerun_completes(tmp_path, photos, reference_build):
    out = tmp_path / "out"
    args = ["build", "--root", str(photos), "--out", str(out), "--workers", "2", *CRASH_ARGS]
    proc = subprocess.Popen(saqt_command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_shards(out, proc, 1)
    workers = [pid for pid in _children(proc.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "a worker process died" in err and "Traceback" not in err
    _visible_shards_are_whole(out)
    subprocess.run(saqt_command(args), check=True, capture_output=True)
    assert checksums(out) == reference_build


def _thread_setting(_: int) -> str | None:
    return os.environ.get("OMP_NUM_THREADS")


@pytest.mark.slow
def test_worker_processes_are_single_threaded_and_this_process_is_untouched(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert set(LocalExecutor(2).map_unordered(_thread_setting, range(4))) == {"1"}
    assert "OMP_NUM_THREADS" not in os.environ


def _square(n: int) -> int:
    return n * n


@pytest.mark.slow
def test_the_local_executor_keeps_a_few_units_in_flight_not_all_of_them():
    """Waiting for a result must not cost more as units accumulate: no more than two units per worker are handed to
    the pool before the first result comes back, and every unit's result comes back exactly once."""
    pulled = []

    def units():
        for n in range(40):
            pulled.append(n)
            yield n

    results = LocalExecutor(2).map_unordered(_square, units())
    first = next(results)
    assert len(pulled) <= 4 and first in {n * n for n in pulled}
    assert sorted([first, *results]) == [n * n for n in range(40)]

"""Hostile use of the ``saqt`` stages (issue 13): one test per numbered case of the adversarial pass.

Everything runs for real: real builds, banks, labels and published sets; real subprocesses killed with real signals;
a real ENOSPC from /dev/full; a real refused connection for the offline Hub. Each test names its case.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.executors import LocalExecutor
from pipelines.saqt_cli import app
from saqt.build.build_stage import BuildConfig, run_build
from saqt.build.sources import sample_paths
from saqt.core import safe_files
from saqt.core.context import RunContext
from saqt.core.shards import sha256_file
from saqt.label.label_stage import LabelConfig, run_label
from saqt.label.synth_stage import SynthConfig, run_synth_bank
from saqt.publish.publish_stage import PublishConfig, run_publish

runner = CliRunner()
SIZE = (96, 64)
CELLS = {"types": (1, 9), "levels": (1, 3)}
QUIET = RunContext(progress=False)


def on_cpu(config: LabelConfig) -> LabelConfig:
    return replace(config, device="cpu", loader_workers=0)


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> Path:
    """A finished build (5 sample photos x 4 cells, 3 units), a 2-reference PSNR bank, labels, a published set."""
    root = tmp_path_factory.mktemp("stages")
    run_build(
        BuildConfig(size=SIZE, images_per_shard=2, **CELLS),
        root / "build",
        RunContext(LocalExecutor(1), progress=False),
    )
    run_synth_bank(
        SynthConfig(source="sample-bank", size=SIZE, limit=2, metric="psnr"),
        root / "bank",
        RunContext(LocalExecutor(1), progress=False),
    )
    config = LabelConfig(
        build=str(root / "build"), bank=str(root / "bank"), encoder="effnet-lite0", rule="topk", neighbours=2
    )
    run_label(on_cpu(config), root / "labels", QUIET)
    run_publish(PublishConfig(str(root / "labels")), str(root / "published"), RunContext(progress=False))
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Seven real photos (the bundled samples and two crops) for builds slow enough to interrupt."""
    root = tmp_path_factory.mktemp("photos")
    for i, path in enumerate(sample_paths()):
        img = Image.open(path).convert("RGB")
        img.save(root / f"{path.stem}.{'jpg' if i % 2 else 'png'}", quality=92)
        if i < 2:
            img.crop((0, 0, img.width // 2 + 40, img.height // 2 + 40)).save(root / f"crop_{path.stem}.jpg", quality=92)
    return root


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def invoke_label(build: Path, bank: Path, out: Path, *extra: str):
    """``saqt label`` of ``build`` against ``bank`` into ``out`` with the small encoder, ``extra`` options after."""
    return runner.invoke(
        app,
        ["label", "--build", str(build), "--bank", str(bank), "--out", str(out), "--encoder", "effnet-lite0", *extra],
    )


def one_line_failure(result, fragment: str, code: int = 2) -> None:
    """The command ended with ``code`` on a one-line message holding ``fragment``, never an uncaught exception."""
    assert result.exit_code == code and isinstance(result.exception, SystemExit), (
        result.exit_code,
        result.output,
        result.exception,
    )
    lines = [line for line in result.output.splitlines() if fragment in line]
    assert lines and "Traceback" not in result.output, result.output


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1: --overwrite removes only what the stage wrote ---------------------------------------------------------------


@pytest.mark.slow
def test_case01_publish_overwrite_never_deletes_foreign_files_or_its_input(stages, tmp_path):
    labels = copy(stages / "labels", tmp_path / "labels")
    folder = tmp_path / "P"
    folder.mkdir()
    (folder / "thesis.txt").write_text("x")
    one_line_failure(
        runner.invoke(app, ["publish", "--labels", str(labels), "--out", str(folder), "--overwrite"]),
        "did not write (thesis.txt)",
    )
    assert (folder / "thesis.txt").read_text() == "x"
    mine = tmp_path / "mine"  # someone's own files with a `sha256sum` listing: it vouches for nothing
    mine.mkdir()
    (mine / "README.md").write_text("# my notes\n")
    (mine / "notes.md").write_text("mine")
    sums = {n: hashlib.sha256((mine / n).read_bytes()).hexdigest() for n in ("README.md", "notes.md")}
    (mine / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    before = tree(mine)
    one_line_failure(
        runner.invoke(app, ["publish", "--labels", str(labels), "--out", str(mine), "--overwrite"]),
        "README.md is not a card `saqt publish` wrote",
    )
    assert tree(mine) == before and (mine / "README.md").read_text() == "# my notes\n"
    before = tree(labels)
    one_line_failure(
        runner.invoke(app, ["publish", "--labels", str(labels), "--out", str(labels), "--overwrite"]), "is --labels"
    )
    assert tree(labels) == before
    published = copy(stages / "published", tmp_path / "pub")
    (published / "notes.txt").write_text("mine")
    assert "data/train-00000-of-00001.parquet" in tree(published)
    result = runner.invoke(
        app,
        [
            "publish",
            "--labels",
            str(labels),
            "--out",
            str(published),
            "--overwrite",
            "--validation",
            "0.4",
            "--shard-size",
            "60000",
        ],
    )
    assert result.exit_code == 0, result.output
    listed = [line.split("  ", 1)[1] for line in (published / "SHA256SUMS").read_text().splitlines()]
    assert set(tree(published)) == {"notes.txt", "SHA256SUMS", *listed}  # the old set's shards are gone
    assert (published / "notes.txt").read_text() == "mine" and len(listed) > 3
    assert runner.invoke(app, ["verify", str(published)]).exit_code == 0


@pytest.mark.slow
def test_case01_build_and_label_overwrite_keep_foreign_files_and_refuse_out_inside_an_input(stages, photos, tmp_path):
    out = copy(stages / "build", tmp_path / "build")
    (out / "distorted" / "mine.txt").write_text("mine")
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(
        app,
        [
            "build",
            "--out",
            str(out),
            "--size",
            "96x64",
            "--types",
            "1",
            "--levels",
            "1",
            "--images-per-shard",
            "2",
            "--overwrite",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "distorted" / "mine.txt").read_text() == "mine" and (out / "notes.txt").read_text() == "mine"
    one_line_failure(
        runner.invoke(
            app,
            [
                "build",
                "--source",
                "folder",
                "--root",
                str(photos),
                "--out",
                str(photos / "out"),
                "--size",
                "96x64",
                "--types",
                "1",
                "--levels",
                "1",
            ],
        ),
        "is inside --root",
    )
    assert not (photos / "out").exists()
    one_line_failure(
        invoke_label(out, stages / "bank", out),
        "is --build",
    )


# --- 2: inputs are checked against their manifests before use ------------------------------------------------------


def _rewrite_scores(shard: Path) -> None:
    table = pq.read_table(shard)
    scores = pa.array(np.arange(table.num_rows, dtype=np.float64))
    pq.write_table(table.set_column(table.schema.get_field_index("score"), "score", scores), shard)


@pytest.mark.slow
def test_case02_publish_refuses_labels_whose_shards_were_rewritten(stages, tmp_path):
    labels = copy(stages / "labels", tmp_path / "labels")
    _rewrite_scores(labels / "saqt-iqa" / "part-00001.parquet")
    result = runner.invoke(app, ["publish", "--labels", str(labels), "--out", str(tmp_path / "pub")])
    one_line_failure(result, "saqt-iqa/part-00001.parquet")
    assert not (tmp_path / "pub").exists()


@pytest.mark.slow
def test_case02_label_refuses_a_build_whose_shard_no_longer_matches(stages, tmp_path):
    build = copy(stages / "build", tmp_path / "build")
    shard = build / "distorted" / "part-00002.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.slice(0, table.num_rows - 1), shard)
    result = invoke_label(build, stages / "bank", tmp_path / "labels", "--device", "cpu")
    one_line_failure(result, "distorted/part-00002.parquet")
    assert not (tmp_path / "labels" / "label.json").exists()


# --- 3: manifest paths stay inside their folder -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("escape", ["relative", "absolute"])
def test_case03_manifest_paths_that_leave_the_folder_are_refused(stages, tmp_path, escape):
    labels = copy(stages / "labels", tmp_path / "labels")
    outside = tmp_path / "outside.parquet"
    shutil.copy(labels / "saqt-iqa" / "part-00000.parquet", outside)
    manifest = json.loads((labels / "label.json").read_text())
    units = manifest.get("done") or manifest.get("shards")  # the shape before and after the stage contract
    entry = units["0"]["files"]["saqt-iqa"] if "files" in units["0"] else units["0"]["saqt-iqa"]
    entry["path"] = "../outside.parquet" if escape == "relative" else str(outside)
    (labels / "label.json").write_text(json.dumps(manifest))
    for args in (
        ["publish", "--labels", str(labels), "--out", str(tmp_path / "pub")],
        ["verify", str(labels)],
        ["report", str(labels), "--out", str(tmp_path / "r.html")],
    ):
        result = runner.invoke(app, args)
        one_line_failure(result, "not a relative path inside the folder", 1 if args[0] == "verify" else 2)
    assert not (tmp_path / "pub").exists() and not (tmp_path / "r.html").exists()


# --- 4: workers die with their parent ------------------------------------------------------------------------------

SLOW = ["--source", "folder", "--size", "192x128", "--images-per-shard", "1", "--types", "1-25", "--levels", "1-5"]


def _saqt(args: list[str]) -> list[str]:
    return [sys.executable, "-c", "from pipelines.saqt_cli import app; app()", *args]


def _descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every living descendant of ``pid``."""
    parents, cmdlines = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
            cmdlines[int(stat.parent.name)] = cmdline
    found, frontier = {}, [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found.update({p: cmdlines[p] for p in kids})
        frontier = kids
    return found


def _alive(pids) -> list[int]:
    living = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                living.append(pid)
        except OSError:
            pass
    return living


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(
                f"the command ended (rc {proc.returncode}) before {what}: {log.read_text()[-2000:] if log else ''}"
            )
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _outlive(pids: list[int], seconds: float) -> list[int]:
    """Those of ``pids`` still alive after ``seconds``; they are killed then, so no test leaves them running."""
    deadline = time.time() + seconds
    while _alive(pids) and time.time() < deadline:
        time.sleep(0.2)
    left = _alive(pids)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_case04_local_workers_die_with_the_command(photos, tmp_path, sig):
    log = tmp_path / "log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            _saqt(["build", "--root", str(photos), "--out", str(tmp_path / "out"), "--workers", "2", *SLOW]),
            stdout=err,
            stderr=err,
        )
    try:
        workers = _wait_for(
            lambda: (
                [p for p, cmd in _descendants(proc.pid).items() if "spawn_main" in cmd]
                if (tmp_path / "out" / "build.json").exists()
                else []
            ),
            180,
            "worker processes",
            proc,
            log,
        )
    finally:
        os.kill(proc.pid, sig)
        proc.wait()
    assert not _outlive(workers, 15), "worker processes outlived the command"


@pytest.mark.slow
def test_case04_ray_tasks_stop_with_the_command(photos, tmp_path):
    pytest.importorskip("ray")
    log = tmp_path / "log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            _saqt(
                [
                    "build",
                    "--root",
                    str(photos),
                    "--out",
                    str(tmp_path / "out"),
                    "--executor",
                    "ray",
                    "--workers",
                    "2",
                    *SLOW,
                ]
            ),
            stdout=err,
            stderr=err,
            start_new_session=True,
        )
    try:
        tasks = _wait_for(
            lambda: [p for p, cmd in _descendants(proc.pid).items() if cmd.startswith("ray::_run_unit")],
            240,
            "Ray tasks",
            proc,
            log,
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not _outlive(tasks, 30), "Ray tasks outlived the command"
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's own agents of the dead cluster, which end on their own later


# --- 5: banks that cannot score are refused -------------------------------------------------------------------------


def _csv_bank(folder: Path, scores) -> Path:
    """A generic CSV bank of two references (copies of sample photos 0 and 1) with ``scores(ref, t, lv)``."""
    folder.mkdir()
    rows = ["ref,type,level,score"]
    for i in (0, 1):
        shutil.copy(sample_paths()[i], folder / f"ref{i}.png")
        rows += [
            f"ref{i}.png,{t},{lv},{s}"
            for t in range(1, 26)
            for lv in range(1, 6)
            if (s := scores(i, t, lv)) is not None
        ]
    (folder / "scores.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "scores, rule, message",
    [
        (lambda i, t, lv: 3.0, "top1", "needs scores that differ"),
        (lambda i, t, lv: None if t == 9 else float(lv + i), "top1", "no reference of the bank"),
        (lambda i, t, lv: "nan" if (t, lv) == (1, 1) else float(lv), "top1", "is not a finite number"),
        (lambda i, t, lv: "inf" if (t, lv) == (1, 3) else float(lv), "top1", "is not a finite number"),
        (lambda i, t, lv: None if (i, t, lv) == (1, 1, 1) else float(lv + t), "top1", "would get no score"),
    ],
)
def test_case05_banks_that_cannot_score_the_build_are_refused(stages, tmp_path, scores, rule, message):
    bank = _csv_bank(tmp_path / "bank", scores)
    result = invoke_label(stages / "build", bank, tmp_path / "labels", "--rule", rule, "--device", "cpu")
    one_line_failure(result, message)
    assert not list((tmp_path / "labels").glob("labels/*")) and not (tmp_path / "labels" / "label.json").exists()


def test_case05_negative_scores_are_refused_where_the_bank_kind_forbids_them(tmp_path):
    from saqt.label.reference_bank import BankError, load_bank

    bank = tmp_path / "kadid"
    bank.mkdir()
    (bank / "dmos.csv").write_text(
        "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.5,0.1\nI01_01_02.png,I01.png,-2,0.1\n"
    )
    with pytest.raises(BankError, match="outside the kadid10k range"):
        load_bank(bank)


# --- 6: a rerun repairs a shard that no longer matches -------------------------------------------------------------


@pytest.mark.slow
def test_case06_a_rerun_repairs_a_shard_of_the_same_size_that_no_longer_matches(stages, tmp_path):
    out = copy(stages / "build", tmp_path / "build")
    shard = out / "distorted" / "part-00001.parquet"
    good = sha256_file(shard)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = runner.invoke(
        app,
        ["build", "--out", str(out), "--size", "96x64", "--types", "1,9", "--levels", "1,3", "--images-per-shard", "2"],
    )
    assert result.exit_code == 0, result.output
    assert sha256_file(shard) == good
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0


# --- 7: one run at a time per output folder ----------------------------------------------------------------------


@pytest.mark.slow
def test_case07_a_second_run_is_refused_and_a_dead_runs_lock_is_recovered(photos, tmp_path):
    out = tmp_path / "out"
    args = ["build", "--root", str(photos), "--out", str(out), *SLOW]
    first = subprocess.Popen(_saqt(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (out / "build.json").exists(), 120, "the first run to start")
        second = runner.invoke(app, args)
        one_line_failure(second, f"being written by another saqt run (pid {first.pid})")
    finally:
        first.kill()
        first.wait()
    third = runner.invoke(app, args)  # the dead run's lock file is still there
    assert third.exit_code == 0, third.output
    assert json.loads((out / "build.json").read_text())["complete"]


# --- 8: one-line errors, and bugs stay bugs ------------------------------------------------------------------------


@pytest.mark.slow
def test_case08_truncated_and_malformed_manifests_are_one_line(stages, tmp_path):
    build = copy(stages / "build", tmp_path / "build")
    text = (build / "build.json").read_text()
    (build / "build.json").write_text(text[: len(text) // 2])
    for args, code in (
        (["info", str(build)], 2),
        (["verify", str(build)], 1),
        (["report", str(build), "--out", str(tmp_path / "r.html")], 2),
        (
            [
                "label",
                "--build",
                str(build),
                "--bank",
                str(stages / "bank"),
                "--out",
                str(tmp_path / "l"),
                "--encoder",
                "effnet-lite0",
            ],
            2,
        ),
    ):
        one_line_failure(runner.invoke(app, args), "build.json", code)
    labels = copy(stages / "labels", tmp_path / "labels")
    (labels / "label.json").write_text("[1, 2")
    one_line_failure(
        runner.invoke(app, ["publish", "--labels", str(labels), "--out", str(tmp_path / "p")]), "label.json"
    )


@pytest.mark.slow
def test_case08_malformed_card_and_sums_are_one_line(stages, tmp_path):
    published = copy(stages / "published", tmp_path / "pub")
    card = (published / "README.md").read_text()
    (published / "README.md").write_text(card.replace("license:", "license: [unclosed", 1))
    one_line_failure(runner.invoke(app, ["info", str(published)]), "README.md", 2)
    other = copy(stages / "published", tmp_path / "pub2")
    (other / "SHA256SUMS").write_bytes(b"\xff\xfe not text\n")
    one_line_failure(runner.invoke(app, ["verify", str(other)]), "SHA256SUMS", 1)


def test_case08_a_full_disk_is_one_line(tmp_path, monkeypatch):
    real = safe_files.create_new

    def on_full_disk(path: Path):  # the first shard's temporary file: every write to /dev/full fails with ENOSPC
        return open("/dev/full", "r+b") if path.name.startswith(".part-00000.parquet.") else real(path)  # noqa: SIM115

    monkeypatch.setattr(safe_files, "create_new", on_full_disk)
    out = tmp_path / "out"
    result = runner.invoke(app, ["build", "--out", str(out), "--size", "96x64", "--types", "1", "--levels", "1"])
    one_line_failure(result, "No space left on device")


@pytest.mark.slow
def test_case08_list_files_with_nul_bytes_or_numbers_as_paths(photos, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("chelsea.jpg\nbad\x00name.jpg\n")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "build",
            "--source",
            "list",
            "--root",
            str(photos),
            "--list",
            str(listing),
            "--out",
            str(out),
            "--size",
            "96x64",
            "--types",
            "1",
            "--levels",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["reason"] for e in errors] == ["path contains a NUL byte"]
    numbers = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": [1, 2]}), numbers)
    one_line_failure(
        runner.invoke(
            app,
            ["build", "--source", "list", "--root", str(photos), "--list", str(numbers), "--out", str(tmp_path / "o2")],
        ),
        "path is a int (1), not text",
    )


def test_case08_a_bug_is_not_hidden_as_an_expected_failure(tmp_path, monkeypatch):
    import saqt.build.build_stage

    def bug(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(saqt.build.build_stage, "run_build", bug)  # stands in for a programming error inside the stage
    result = runner.invoke(app, ["build", "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, ValueError) and result.exit_code == 1


# --- 9: --size has a ceiling -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["build"], ["bank", "synth", "--source", "sample-bank", "--metric", "psnr"]])
def test_case09_size_has_a_ceiling(tmp_path, command):
    out = tmp_path / "o"
    result = runner.invoke(
        app,
        [*command, "--out", str(out), "--size", "4097x48", "--types", "1", "--levels", "1"]
        if command == ["build"]
        else [*command, "--out", str(out), "--size", "4097x48", "--limit", "1"],
    )
    one_line_failure(result, "at most 4096 px")
    assert not out.exists()


# --- 10: nothing built is a failure, with a count ----------------------------------------------------------------


@pytest.mark.slow
def test_case10_a_build_with_no_usable_input_fails_with_a_count_and_cannot_be_labelled(stages, tmp_path):
    root = tmp_path / "junk"
    root.mkdir()
    for i in range(3):
        (root / f"junk{i}.jpg").write_text("not an image")
    out = tmp_path / "out"
    result = runner.invoke(app, ["build", "--source", "folder", "--root", str(root), "--out", str(out)])
    one_line_failure(result, "none of the 3 inputs")
    assert len((out / "errors.jsonl").read_text().splitlines()) == 3
    one_line_failure(
        invoke_label(out, stages / "bank", tmp_path / "l"),
        "holds no images",
    )


# --- 11: bank synth refuses other settings and resumes --------------------------------------------------------------


@pytest.mark.slow
def test_case11_bank_synth_resumes_an_identical_rerun_and_refuses_other_settings(tmp_path):
    out = tmp_path / "bank"
    args = [
        "bank",
        "synth",
        "--source",
        "sample-bank",
        "--out",
        str(out),
        "--size",
        "96x64",
        "--metric",
        "psnr",
        "--limit",
        "2",
    ]
    assert runner.invoke(app, args).exit_code == 0
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == stamps
    before = tree(out)
    one_line_failure(runner.invoke(app, [*args, "--seed", "1"]), "another config (seed)")
    assert tree(out) == before
    assert runner.invoke(app, [*args, "--seed", "1", "--overwrite"]).exit_code == 0
    assert json.loads((out / "bank.json").read_text())["config"]["seed"] == 1


# --- 12: symlinks out of the root (and GIFs) get a reason --------------------------------------------------------


@pytest.mark.slow
def test_case12_symlinks_out_of_the_root_and_gifs_are_logged_with_a_reason(photos, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for name in ("chelsea.jpg", "coffee.png"):
        os.symlink(photos / name, root / name)
    out = tmp_path / "out"
    result = runner.invoke(app, ["build", "--source", "folder", "--root", str(root), "--out", str(out)])
    one_line_failure(result, "none of the 2 inputs")
    reasons = {
        json.loads(line)["key"]: json.loads(line)["reason"] for line in (out / "errors.jsonl").read_text().splitlines()
    }
    assert reasons == dict.fromkeys(["chelsea.jpg", "coffee.png"], "symlink points outside the root")
    shutil.copy(photos / "chelsea.jpg", root / "real.jpg")
    frames = [Image.open(photos / "chelsea.jpg").convert("RGB").resize((160, 140)).rotate(a) for a in (0, 90)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    result = runner.invoke(
        app,
        [
            "build",
            "--source",
            "folder",
            "--root",
            str(root),
            "--out",
            str(tmp_path / "o2"),
            "--size",
            "96x64",
            "--types",
            "1",
            "--levels",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    reasons = {
        json.loads(line)["key"]: json.loads(line)["reason"]
        for line in (tmp_path / "o2" / "errors.jsonl").read_text().splitlines()
    }
    assert "anim.gif" in reasons and "GIF" in reasons["anim.gif"]


# --- 13: remote outputs, devices, the offline Hub -----------------------------------------------------------------


@pytest.mark.slow
def test_case13_s3_without_s3fs_and_hf_urls_are_one_line(stages, monkeypatch):
    if __import__("importlib").util.find_spec("s3fs") is None:
        result = runner.invoke(app, ["publish", "--labels", str(stages / "labels"), "--out", "s3://bucket/saqt-iqa"])
        one_line_failure(result, "s3fs")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never reach for the network here
    result = runner.invoke(app, ["publish", "--labels", str(stages / "labels"), "--out", "hf://datasets/me/saqt"])
    one_line_failure(result, "--push-to-hub ORG/NAME")


@pytest.mark.slow
def test_case13_a_gpu_device_without_a_gpu_is_one_line(stages, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: --device cuda is valid here")
    result = invoke_label(stages / "build", stages / "bank", tmp_path / "l", "--device", "cuda")
    one_line_failure(result, "no CUDA GPU")
    assert not (tmp_path / "l").exists()


def test_case13_the_default_clip_encoder_fails_fast_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from saqt.label.encoders import EncoderError, load_encoder

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # a real, refused connection
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))  # nothing cached
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    with pytest.raises(EncoderError, match="cannot download") as err:
        load_encoder("clip:ViT-B-32@laion2b_s34b_b79k", "cpu")
    assert time.perf_counter() - start < 15 and "\n" not in str(err.value)

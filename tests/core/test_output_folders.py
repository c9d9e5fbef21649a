"""An output folder belongs to one run and holds only what the stage wrote: --overwrite removes only the
stage's files and never an input, an output inside an input is refused, a second run is refused while
the first holds the lock, and a dead run's lock is recovered."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
from helpers import SLOW, copy, invoke_label, one_line_failure, runner, saqt_command, tree, wait_for

from pipelines.saqt_cli import app


@pytest.mark.slow
def test_publish_overwrite_never_deletes_foreign_files_or_its_input(stages, tmp_path):
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
def test_build_and_label_overwrite_keep_foreign_files_and_refuse_out_inside_an_input(stages, photos, tmp_path):
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


@pytest.mark.slow
def test_a_second_run_is_refused_and_a_dead_runs_lock_is_recovered(photos, tmp_path):
    out = tmp_path / "out"
    args = ["build", "--root", str(photos), "--out", str(out), *SLOW]
    first = subprocess.Popen(saqt_command(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (out / "build.json").exists(), 120, "the first run to start")
        second = runner.invoke(app, args)
        one_line_failure(second, f"being written by another saqt run (pid {first.pid})")
    finally:
        first.kill()
        first.wait()
    third = runner.invoke(app, args)  # the dead run's lock file is still there
    assert third.exit_code == 0, third.output
    assert json.loads((out / "build.json").read_text())["complete"]

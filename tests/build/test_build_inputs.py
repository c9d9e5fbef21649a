"""What ``saqt build`` is given: list files with odd entries, a --size ceiling, a folder with nothing
usable (a failure with a count), and links out of the root or GIFs logged with a reason."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import invoke_label, one_line_failure, runner
from PIL import Image

from pipelines.saqt_cli import app


@pytest.mark.slow
def test_list_files_with_nul_bytes_or_numbers_as_paths(photos, tmp_path):
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


@pytest.mark.parametrize("command", [["build"], ["bank", "synth", "--source", "sample-bank", "--metric", "psnr"]])
def test_size_has_a_ceiling(tmp_path, command):
    out = tmp_path / "o"
    result = runner.invoke(
        app,
        [*command, "--out", str(out), "--size", "4097x48", "--types", "1", "--levels", "1"]
        if command == ["build"]
        else [*command, "--out", str(out), "--size", "4097x48", "--limit", "1"],
    )
    one_line_failure(result, "at most 4096 px")
    assert not out.exists()


@pytest.mark.slow
def test_a_build_with_no_usable_input_fails_with_a_count_and_cannot_be_labelled(stages, tmp_path):
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


@pytest.mark.slow
def test_symlinks_out_of_the_root_and_gifs_are_logged_with_a_reason(photos, tmp_path):
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

"""A rerun of a stage resumes what matches, repairs what no longer matches, and refuses other settings."""

from __future__ import annotations

import json

import pytest
from helpers import copy, one_line_failure, runner, tree

from pipelines.saqt_cli import app
from saqt.core.shards import sha256_file


@pytest.mark.slow
def test_a_rerun_repairs_a_shard_of_the_same_size_that_no_longer_matches(stages, tmp_path):
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


@pytest.mark.slow
def test_bank_synth_resumes_an_identical_rerun_and_refuses_other_settings(tmp_path):
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

"""A stage's inputs are checked against their manifests before use: rewritten shards, manifest paths that
leave their folder, and truncated or malformed manifests, cards and checksum files are one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import copy, invoke_label, one_line_failure, runner

from pipelines.saqt_cli import app


def _rewrite_scores(shard: Path) -> None:
    table = pq.read_table(shard)
    scores = pa.array(np.arange(table.num_rows, dtype=np.float64))
    pq.write_table(table.set_column(table.schema.get_field_index("score"), "score", scores), shard)


@pytest.mark.slow
def test_publish_refuses_labels_whose_shards_were_rewritten(stages, tmp_path):
    labels = copy(stages / "labels", tmp_path / "labels")
    _rewrite_scores(labels / "saqt-iqa" / "part-00001.parquet")
    result = runner.invoke(app, ["publish", "--labels", str(labels), "--out", str(tmp_path / "pub")])
    one_line_failure(result, "saqt-iqa/part-00001.parquet")
    assert not (tmp_path / "pub").exists()


@pytest.mark.slow
def test_label_refuses_a_build_whose_shard_no_longer_matches(stages, tmp_path):
    build = copy(stages / "build", tmp_path / "build")
    shard = build / "distorted" / "part-00002.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.slice(0, table.num_rows - 1), shard)
    result = invoke_label(build, stages / "bank", tmp_path / "labels", "--device", "cpu")
    one_line_failure(result, "distorted/part-00002.parquet")
    assert not (tmp_path / "labels" / "label.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("escape", ["relative", "absolute"])
def test_manifest_paths_that_leave_the_folder_are_refused(stages, tmp_path, escape):
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


@pytest.mark.slow
def test_truncated_and_malformed_manifests_are_one_line(stages, tmp_path):
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
def test_malformed_card_and_sums_are_one_line(stages, tmp_path):
    published = copy(stages / "published", tmp_path / "pub")
    card = (published / "README.md").read_text()
    (published / "README.md").write_text(card.replace("license:", "license: [unclosed", 1))
    one_line_failure(runner.invoke(app, ["info", str(published)]), "README.md", 2)
    other = copy(stages / "published", tmp_path / "pub2")
    (other / "SHA256SUMS").write_bytes(b"\xff\xfe not text\n")
    one_line_failure(runner.invoke(app, ["verify", str(other)]), "SHA256SUMS", 1)

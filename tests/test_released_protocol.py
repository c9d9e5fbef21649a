"""``--protocol released`` against the official release's definitions (SYSU-Video/GlintIQA at 34c8936: scripts/train.py,
glintiqa/data/datasets.py and transforms.py, scripts/train_distributed.py, run.sh): the expectations are the release's
literals or its rules recomputed here, never this toolkit's output."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
from conftest import SHARED, needs_shared
from PIL import Image
from typer.testing import CliRunner

from glint.data import IQATable, Sample
from glint.finetune import eval_sets, image_reader
from glint.protocol import default_rounds
from pipelines.glint_cli import app

runner = CliRunner()
RELEASE_SEED = 12345  # configs/defaults.py --seed
RELEASE_ROUNDS = 10  # scripts/train.py --train-test-round default, and run.sh's


def test_released_runs_ten_rounds_unless_told_otherwise():
    assert default_rounds("released", None) == RELEASE_ROUNDS
    assert default_rounds("honest", None) == 1
    assert default_rounds("released", 3) == 1  # --round 3 alone is that round


def test_released_rounds_on_the_shared_clive_keep_each_round_and_report_the_median(tmp_path):
    """`glint finetune --protocol released --dataset clive --max-steps 2 --rounds 2` on 20 of the shared CLIVE images
    (random EfficientNet-Lite0, one test crop, to stay fast): both rounds in their folders, seeded r x 12345 as
    train.py's round_seed, and the median of their test metrics, as train.py's np.median over rounds."""
    clive = needs_shared(SHARED / "data" / "clive")
    lines = (clive / "mos.csv").read_text().splitlines()
    (tmp_path / "mos.csv").write_text("\n".join(lines[:21]) + "\n")
    out = tmp_path / "run"
    args = ["finetune", "--protocol", "released", "--dataset", "clive", "--root", str(clive)]
    args += ["--csv", str(tmp_path / "mos.csv"), "--max-steps", "2", "--rounds", "2", "--out", str(out)]
    args += ["--local-backbone", "efficientnet_lite0", "--random-init", "--device", "cpu"]
    args += ["--loader-workers", "0", "--batch-size", "4", "--crops", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "the release indexes 1162 images of clive" in result.output  # a subset: not the release's split, said so
    rounds = {r: json.loads((out / f"round-{r}" / "results.json").read_text()) for r in (1, 2)}
    assert [rounds[r]["provenance"]["protocol"]["torch_seed"] for r in (1, 2)] == [12345, 24690]
    assert [rounds[r]["provenance"]["split"]["counts"] for r in (1, 2)] == [{"train": 16, "val": 0, "test": 4}] * 2
    for r in (1, 2):
        assert (out / f"round-{r}" / "metrics.jsonl").is_file() and (out / f"round-{r}" / "best.pt").is_file()
    tests = [rounds[r]["metrics"]["test"] for r in (1, 2)]
    summary = json.loads((out / "summary.json").read_text())
    for metric in ("srocc", "plcc", "krcc", "rmse"):
        assert summary["median_test"][metric] == statistics.median(t[metric] for t in tests)
    table = list(csv.DictReader((out / "rounds.csv").read_text().splitlines()))
    assert [row["round"] for row in table] == ["1", "2", "median"]
    assert [float(row["srocc"]) for row in table[:2]] == [t["srocc"] for t in tests]
    assert float(table[2]["rmse"]) == statistics.median(t["rmse"] for t in tests)
    assert "median over 2 rounds" in result.output


def tagged_photo(path: Path, orientation: int = 6) -> Path:
    """A 64 x 32 JPEG stored with its left half red and its right half blue, tagged with EXIF ``orientation`` (6: a
    viewer turns it 90 degrees clockwise, so the red half shows on top)."""
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :32, 0] = 255
    pixels[:, 32:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())
    return path


def red(pixel) -> bool:
    return pixel[0] > 200 and pixel[2] < 60


def blue(pixel) -> bool:
    return pixel[2] > 200 and pixel[0] < 60


def test_released_reads_images_as_stored_and_the_honest_protocol_as_shown(tmp_path):
    """The release reads with ``Image.open(p).convert("RGB")`` (datasets.py pil_loader): no EXIF transpose."""
    path = tagged_photo(tmp_path / "phone.jpg")
    stored = image_reader("released")(str(path))
    assert stored.shape == (32, 64, 3) and red(stored[16, 4]) and blue(stored[16, 60])
    shown = image_reader("honest")(str(path))
    assert shown.shape == (64, 32, 3) and red(shown[4, 16]) and blue(shown[60, 16])
    table = IQATable("csv", "authentic", [Sample(str(path), 1.0, "phone.jpg")], True)
    parts = {"train": [], "val": [], "test": table.samples}
    test_set = eval_sets(table, parts, "released")["test"]
    assert test_set.load(test_set.items[0]).shape == (32, 64, 3)
    assert eval_sets(table, parts, "honest")["test"].load(test_set.items[0]).shape == (64, 32, 3)

"""``--protocol released`` against the official release's definitions (SYSU-Video/GlintIQA at 34c8936: scripts/train.py,
glintiqa/data/datasets.py and transforms.py, scripts/train_distributed.py, run.sh): the expectations are the release's
literals or its rules recomputed here, never this toolkit's output."""

from __future__ import annotations

import csv
import json
import statistics

from conftest import SHARED, needs_shared
from typer.testing import CliRunner

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

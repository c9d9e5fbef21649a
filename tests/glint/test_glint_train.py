"""Training runs on a tiny real dataset: exact resume, selection, logs, the protocols, the CLI (evaluate on the right
images, predict), DDP, the refusals, the leakage warning."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SHARED, needs_shared
from helpers import finetune_args
from PIL import Image
from typer.testing import CliRunner

from glint.finetune import leakage_warning, spread
from pipelines.glint_cli import app
from saqt.build.sources import sample_paths
from saqt.core.context import RunContext
from saqt.core.stage_contract import LOCK, FolderLock

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

runner = CliRunner()


def test_a_second_run_on_a_busy_run_folder_is_refused_in_one_line(tmp_path, tiny_dataset):
    """While a run holds its folder (its lock taken here, as a running glint would), another run there stops before
    writing anything, instead of mixing its checkpoints and logs into the first's."""
    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out / LOCK, str(out)):
        result = runner.invoke(app, finetune_args(tiny_dataset, out, epochs=1))
        assert result.exit_code == 2 and "is being written by another" in result.output, result.output
        last = result.output.splitlines()[-1]  # after the random-weights warning
        assert (
            last.startswith(f"glint finetune: {out} is being written by another") and "Traceback" not in result.output
        )
        assert [p.name for p in out.iterdir()] == [LOCK]


def test_a_killed_run_resumes_exactly(tmp_path, tiny_dataset):
    """Kill a real run after its first epoch's checkpoint; --resume then gives the uninterrupted run's epoch 2."""
    glint = str(Path(sys.executable).parent / "glint")
    subprocess.run([glint, *finetune_args(tiny_dataset, tmp_path / "a")], check=True, capture_output=True)
    out = tmp_path / "b"
    proc = subprocess.Popen(
        [glint, *finetune_args(tiny_dataset, out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 900  # an epoch takes minutes on a busy 2-core machine
    log = out / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None and not (log.exists() and log.read_text().endswith("\n")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    subprocess.run([glint, *finetune_args(tiny_dataset, out), "--resume"], check=True, capture_output=True)
    history = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for record in history + again:
        for split in ("val", "test"):
            record[split].pop("images_per_s")
    assert len(history) == len(again) == 2 and again == history  # losses, learning rates and test metrics
    assert history[1]["test"]["images"] == 3 and history[1]["test"]["srocc"] == history[1]["test"]["srocc"]  # not NaN
    changed = runner.invoke(app, [*finetune_args(tiny_dataset, out, epochs=3), "--resume"])
    assert changed.exit_code == 2 and "changed: epochs" in changed.output
    assert (tmp_path / "a" / "metrics.csv").read_text().startswith("epoch,step,lr,train_loss,first_loss,val_srocc")


def test_cli_finetune_evaluate_predict(tmp_path, tiny_dataset):
    out = tmp_path / "run"
    result = runner.invoke(app, [*finetune_args(tiny_dataset, out, epochs=1, crops=2, lr=None), "--select-on", "test"])
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output and "test  SROCC" in result.output
    results = json.loads((out / "results.json").read_text())
    assert results["selected_on"] == "test" and "optimistic" in results["selection_note"]
    assert results["provenance"]["split"]["counts"] == {"train": 11, "val": 1, "test": 3}
    evaluate = [
        "evaluate",
        "--checkpoint",
        str(out / "best.pt"),
        "--dataset",
        "csv",
        "--csv",
        str(tiny_dataset / "scores.csv"),
        "--root",
        str(tiny_dataset),
        "--crops",
        "2",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, [*evaluate, "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0 and "csv test: SROCC" in result.output and "(3 images)" in result.output, result.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["own_split"] and report["train_overlap"] == 0 and report["metrics"]["images"] == 3
    assert set(report["metrics"]) >= {"srocc", "plcc", "krcc", "rmse", "plcc_logistic", "rmse_logistic"}
    for extra in (["--split", "all"], ["--round", "1"]):  # images the checkpoint was trained on
        result = runner.invoke(app, [*evaluate, *extra])
        assert result.exit_code == 2 and "were in the checkpoint's training set" in result.output, result.output
    result = runner.invoke(
        app, [*evaluate, "--split", "all", "--allow-train-overlap", "--out", str(tmp_path / "a.json")]
    )
    assert result.exit_code == 0 and "11 of the 15 images scored were in the checkpoint's training set" in result.output
    assert json.loads((tmp_path / "a.json").read_text())["train_overlap"] == 11
    clive = needs_shared(SHARED / "data" / "clive" / "images")
    images = sorted(clive.iterdir())[:3]
    scores = tmp_path / "scores.csv"
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"nope")
    result = runner.invoke(
        app,
        [
            "predict",
            "--checkpoint",
            str(out / "best.pt"),
            *map(str, images),
            str(bad),
            "--out",
            str(scores),
            "--crops",
            "3",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = scores.read_text().splitlines()[1:]
    assert len(lines) == 4 and all(float(line.split(",")[1]) == float(line.split(",")[1]) for line in lines[:3])
    assert lines[3].endswith("not a recognised image format")
    smoke = runner.invoke(app, ["predict", "--random-init", str(images[0]), "--crops", "1", "--device", "cpu"])
    assert smoke.exit_code == 0 and str(images[0]) in smoke.output


def test_predict_needs_a_checkpoint_or_random_init(tmp_path):
    result = runner.invoke(app, ["predict", str(tmp_path)])
    assert result.exit_code == 2 and "--checkpoint" in result.output


def test_leakage_warning_names_unexcluded_test_references():
    init = {"provenance": {"pretrain": {"bank": {"kind": "kadid10k", "excluded": ["I03"]}}}}
    warning = leakage_warning(init, "kadid10k", {"I03.png", "I07.png"})
    assert warning and "1 of this test split's references (e.g. I07.png)" in warning
    assert leakage_warning(init, "kadid10k", {"I03.png"}) is None
    assert leakage_warning(init, "koniq10k", {"x.jpg"}) is None


def test_ddp_under_torchrun_on_cpu(tmp_path, tiny_dataset):
    """Two processes, gloo backend: the same command as a single-process run, launched by torchrun."""
    glint = Path(sys.executable).parent / "glint"
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(glint),
        *finetune_args(tiny_dataset, out, epochs=1, batch_size=4, lr=None),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["metrics"]["test"]["images"] == 3


def test_ddp_pretraining_on_a_stream_does_not_hang(tmp_path):
    """Two ranks share each epoch's permutation of SAQT-IQA rows; both step the same number of times."""
    from pipelines.executors import LocalExecutor
    from saqt.build.build_stage import BuildConfig, run_build
    from saqt.label.label_stage import LabelConfig, run_label
    from saqt.label.synth_stage import SynthConfig, run_synth_bank

    run_build(
        BuildConfig(size=(96, 64), types=(1, 10), levels=(1, 3, 5), images_per_shard=1),
        tmp_path / "build",
        RunContext(LocalExecutor(1), progress=False),
    )
    run_synth_bank(
        SynthConfig(source="sample-bank", size=(96, 64), metric="psnr"),
        tmp_path / "bank",
        RunContext(LocalExecutor(1), progress=False),
    )
    run_label(
        LabelConfig(build=str(tmp_path / "build"), bank=str(tmp_path / "bank"), rule="mean"),
        tmp_path / "labels",
        RunContext(progress=False),
    )
    glint = Path(sys.executable).parent / "glint"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(glint),
        "pretrain",
        "--data",
        str(tmp_path / "labels"),
        "--out",
        str(tmp_path / "pre"),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--local-backbone",
        "efficientnet_lite0",
        "--crops",
        "1",
        "--holdout-images",
        "3",
        "--loader-workers",
        "1",
        "--device",
        "cpu",
        "--random-init",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    history = [json.loads(line) for line in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    rows = 4 * 6  # 4 of the 5 sample photos train (one is held out), 6 cells each: 6 global batches of 2 x 2
    assert [h["step"] for h in history] == [rows // 4, 2 * (rows // 4)] and history[-1]["val"]["images"] == 3


def test_rounds_report_the_median_of_the_test_metrics(tmp_path, tiny_dataset):
    out = tmp_path / "rounds"
    args = [*finetune_args(tiny_dataset, out, epochs=1), "--max-steps", "1", "--rounds", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    per_round = summary["per_round_test"]
    assert summary["rounds"] == [0, 1, 2] and len(per_round) == 3
    assert summary["median_test"]["srocc"] == sorted(r["srocc"] for r in per_round.values())[1]
    splits = [
        json.loads((out / f"round-{r}" / "results.json").read_text())["provenance"]["split"]["round"] for r in range(3)
    ]
    assert splits == [0, 1, 2] and "median over 3 rounds" in result.output


def test_random_backbones_are_refused_without_random_init(tmp_path, tiny_dataset):
    args = [a for a in finetune_args(tiny_dataset, tmp_path / "r") if a != "--random-init"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and not (tmp_path / "r").exists()
    assert result.output.startswith(
        "glint finetune: the ViT-S/16 backbone would start from random weights: give "
        "--vit-weights timm|FILE and --cnn-weights torchvision|FILE"
    )
    assert "--random-init" in result.output and result.output.strip().count("\n") == 0
    args[args.index("efficientnet_lite0")] = "resnet50"
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "the ViT-S/16 and resnet50 backbones would start from random" in result.output


def test_released_protocol_is_recorded_in_the_run_folder(tmp_path, tiny_dataset):
    out = tmp_path / "released"
    args = finetune_args(tiny_dataset, out, epochs=1, lr=None)
    result = runner.invoke(app, [*args, "--protocol", "released", "--max-steps", "2", "--rounds", "1"])
    assert result.exit_code == 0, result.output  # one round (the release runs 10): its files in the run folder itself
    assert "has no counterpart in the release" in result.output  # a CSV dataset: the release's rule on its rows
    run = json.loads((out / "run.json").read_text())
    assert run["protocol"] == "released"
    record = run["provenance"]["protocol"]
    assert record["round"] == 1 and record["torch_seed"] == 12345
    assert {k: record["settings"][k] for k in ("schedule", "select_on", "amp", "seed", "lr", "weight_decay")} == {
        "schedule": "cycle",
        "select_on": "test",
        "amp": False,
        "seed": 12345,
        "lr": 1e-5,
        "weight_decay": 1e-5,
    }
    assert record["deviations"] == {
        "epochs": {"protocol": 300, "used": 1},
        "batch_size": {"protocol": 32, "used": 2},
        "test_crops": {"protocol": 25, "used": 1},
        "max_steps": {"protocol": None, "used": 2},
    }
    config = run["train_config"]
    assert (config["schedule"], config["select_on"], config["amp"], config["seed"]) == ("cycle", "test", False, 12345)
    split = run["provenance"]["split"]
    assert split["protocol"] == "released" and split["counts"] == {"train": 12, "val": 0, "test": 3}
    names = [line.split(",")[0] for line in (tiny_dataset / "scores.csv").read_text().splitlines()[1:]]
    order = list(range(15))
    random.Random(12345).shuffle(order)  # round 1 x seed 12345, as the release's splits.py
    from glint.data import load_table, names_digest, released_split

    parts = released_split(load_table("csv", tiny_dataset, tiny_dataset / "scores.csv"), 1, 12345)
    assert {s.name for s in parts["test"]} == {names[i] for i in order[12:]}
    assert split["digests"]["test"] == names_digest(parts["test"])
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert history[0]["lr"] == pytest.approx(1e-5 * (1 + math.cos(math.pi * 2 / 30)) / 2)  # T_max=30, 2 steps
    assert "val" not in history[0] and history[0]["test"]["images"] == 3
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "released" and results["selected_on"] == "test"
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "last.pt",
        "metrics.csv",
        "metrics.jsonl",
        "results.json",
        "run.json",
    ]
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(out / "best.pt"),
            "--dataset",
            "csv",
            "--csv",
            str(tiny_dataset / "scores.csv"),
            "--root",
            str(tiny_dataset),
            "--crops",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "m.json"),
        ],
    )
    report = json.loads((tmp_path / "m.json").read_text())
    assert result.exit_code == 0 and (report["protocol"], report["round"], report["own_split"]) == ("released", 1, True)
    assert report["metrics"]["images"] == 3 and report["train_overlap"] == 0


def test_predict_escapes_formula_cells_and_skips_images_too_small_to_score(tmp_path, monkeypatch):
    photo = Image.open(sample_paths()[0]).convert("RGB").resize((240, 240))
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("=HYPERLINK(1).png", "+1.png", "-2.png", "@cmd.png", "plain.png"):
        photo.save(folder / name)
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    monkeypatch.chdir(folder)  # relative paths: the names themselves start the CSV cells
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["predict", "--random-init", ".", "--out", str(out), "--crops", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "skipped dot.png: 1x1 is too small to score (under 32 px on a side)" in result.output
    rows = {r["path"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"'+1.png", "'-2.png", "'=HYPERLINK(1).png", "'@cmd.png", "dot.png", "plain.png"}
    assert rows["dot.png"]["score"] == "" and "too small" in rows["dot.png"]["error"]
    assert all(rows[n]["score"] for n in ("'=HYPERLINK(1).png", "plain.png"))
    assert "scored 5 images (1 skipped)" in result.output
    from glint.predict import spreadsheet_safe

    assert [spreadsheet_safe(t) for t in ("=1+1", "+x", "-x", "@x", "a=b", "")] == [
        "'=1+1",
        "'+x",
        "'-x",
        "'@x",
        "a=b",
        "",
    ]


SMOKE_SIZES = {
    "epochs": 1,
    "max_steps": 4,
    "batch_size": 8,
    "test_crops": 2,
    "loader_workers": 0,
}  # the demo's former DEMO_TRAIN flags


def _parsed(monkeypatch, command: str, args: list[str]):
    """The config ``glint <command> ARGS`` would run with (the run itself replaced)."""
    seen = {}

    def capture(config, out, ctx):
        seen["config"] = config
        return {} if command == "finetune" else {"plan": out, "batches": 0, "ranks": 1}

    monkeypatch.setattr(f"glint.{command}.run_{command}", capture)  # the command imports it when it runs
    data = ["--dataset", "csv", "--root", "r"] if command == "finetune" else ["--data", "d", "--plan-only", "1"]
    result = runner.invoke(app, [command, *data, "--out", "o", "--random-init", *args])
    assert result.exit_code == 0, result.output
    return seen["config"]


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_smoke_gives_the_demos_sizes_and_explicit_options_win(command, monkeypatch):
    smoke = _parsed(monkeypatch, command, ["--smoke"])
    evaluated = "eval_images" if command == "finetune" else "holdout_images"
    assert {k: getattr(smoke, k) for k in [*SMOKE_SIZES, evaluated]} == {**SMOKE_SIZES, evaluated: 20}
    given = _parsed(monkeypatch, command, ["--smoke", "--epochs", "3", "--crops", "5", "--loader-workers", "2"])
    assert (given.epochs, given.test_crops, given.loader_workers, given.batch_size) == (3, 5, 2, 8)
    plain = _parsed(monkeypatch, command, [])
    assert (plain.epochs, plain.max_steps, plain.batch_size, plain.test_crops, plain.loader_workers) == (
        None,
        None,
        None,
        None,
        2,
    )
    assert getattr(plain, evaluated) == (None if command == "finetune" else 500)


def test_spread_picks_evenly_in_order():
    assert spread(list("abcdefghij"), 3) == ["a", "d", "g"]
    assert spread(list("abc"), 5) == list("abc") and spread(list("abc"), None) == list("abc")


def test_eval_images_caps_each_evaluated_split_and_the_run_reports_its_time_split(tmp_path, tiny_dataset):
    out = tmp_path / "run"
    args = [*finetune_args(tiny_dataset, out, epochs=1, crops=1), "--eval-images", "2", "--max-steps", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert record["test"]["images"] == 2 and record["val"]["images"] == 1  # of 3 test images and 1 validation image
    results = json.loads((out / "results.json").read_text())
    assert results["provenance"]["eval_images"] == 2
    assert results["provenance"]["split"]["counts"] == {"train": 11, "val": 1, "test": 3}  # the split is not cut
    time_s = results["time_s"]
    assert set(time_s) == {"training", "evaluation"} and time_s["training"] > 0 and time_s["evaluation"] > 0
    assert f"time: {time_s['training']:.1f} s training, {time_s['evaluation']:.1f} s evaluation" in result.output

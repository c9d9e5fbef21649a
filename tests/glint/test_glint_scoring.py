"""Scoring: ``GlintIQA.score`` (paths, PIL images, arrays) against ``glint predict`` and an independent computation of
the crop protocol; the scale named in predict's and evaluate's outputs; escaped CSV cells; ``run_evaluate``'s metrics
and its train/test overlap policy."""

from __future__ import annotations

import csv
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import kendalltau, pearsonr, spearmanr
from typer.testing import CliRunner

import glint
from glint.backbones import RandomWeightsWarning
from glint.checkpoint import checkpoint_payload, random_model
from glint.configs import EvaluateConfig, RunWarning
from glint.data import IQATable, Sample, dataset_spec, load_table, make_split, split_record
from glint.evaluate import run_evaluate
from glint.finetune import label_scale
from glint.predict import write_table
from glint.scoring import UnscorableImageError, predict_images
from pipelines.glint_cli import app
from saqt.build.sources import sample_paths
from saqt.core.errors import ConfigError
from saqt.core.seeding import derive_seed

runner = CliRunner()
SCALE = "kadid10k dmos, 1 to 5, higher is better"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A fixed random model (EfficientNet-Lite0 local branch, seed 0) saved as this toolkit saves a finetuned one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = random_model(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(checkpoint_payload(model, provenance={"score_scale": SCALE}, train_config={"amp": False}), path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Three real photos of different sizes (all at least 224 px on a side)."""
    folder = tmp_path_factory.mktemp("photos")
    out = []
    for i, (path, size) in enumerate(zip(sample_paths()[:3], [(240, 230), (300, 260), (256, 256)], strict=True)):
        out.append(folder / f"p{i}.png")
        Image.open(path).convert("RGB").resize(size).save(out[-1])
    return out


def protocol_by_hand(model: torch.nn.Module, image: np.ndarray, crops: int, seed: int) -> float:
    """The test-time protocol from its definition: ``crops`` uniformly placed 224 x 224 crops (no flips), each
    normalised to [-1, 1] (mean = std = 0.5), the model's mean prediction in eval mode."""
    rng = random.Random(seed)
    h, w = image.shape[:2]
    views = []
    for _ in range(crops):
        top, left = rng.randrange(h - 223), rng.randrange(w - 223)
        views.append(torch.tensor(image[top : top + 224, left : left + 224], dtype=torch.float32).permute(2, 0, 1))
    x = torch.stack(views) / 127.5 - 1
    model.eval()
    with torch.no_grad():
        return float(model(x).mean())


@pytest.mark.slow
def test_score_equals_predict_and_the_protocol_computed_by_hand(tiny_checkpoint, photos, tmp_path):
    model = glint.load_model(tiny_checkpoint, device="cpu")
    model.train()  # score must switch dropout off
    got = model.score([str(p) for p in photos], crops=2, batch_size=2)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (3,)
    assert not model.training and torch.is_grad_enabled()  # eval mode after; inference mode only inside
    for path, value in zip(photos, got, strict=True):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        expected = protocol_by_hand(model, pixels, 2, derive_seed(0, "test-crops", path.name))
        assert value == pytest.approx(expected, rel=1e-5, abs=1e-6)
    out = tmp_path / "scores.json"
    result = runner.invoke(
        app,
        [
            "predict",
            "--checkpoint",
            str(tiny_checkpoint),
            *map(str, photos),
            "--crops",
            "2",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["score_scale"] == SCALE and report["crops"] == 2
    assert model.score_scale == SCALE == model.checkpoint.meta["provenance"]["score_scale"]
    assert f"scores on the scale: {SCALE} (the range of the labels the model was last trained on" in result.output
    assert [r["score"] for r in report["scores"]] == got.tolist()  # the same code path: equal, not close
    assert model.score(photos[1], crops=2)[0] == pytest.approx(got[1], rel=1e-5)  # seeded by its name, not its place


@pytest.mark.slow
def test_score_takes_pil_images_and_arrays_and_refuses_what_it_cannot_score(tiny_checkpoint, photos):
    model = glint.load_model(tiny_checkpoint)
    pil = [Image.open(p) for p in photos]
    arrays = [np.asarray(im.convert("RGB")) for im in pil]
    from_pil = model.score(pil, crops=2)
    assert from_pil.tolist() == model.score(arrays, crops=2).tolist()
    assert model.score(arrays[::-1], crops=2, batch_size=1) == pytest.approx(from_pil[::-1], rel=1e-5)  # order, batch
    grey = arrays[0][..., 0]
    assert model.score(grey, crops=1)[0] == model.score(np.repeat(grey[..., None], 3, axis=2), crops=1)[0]
    with pytest.raises(UnscorableImageError, match="image 0: 20x10 is too small to score"):
        model.score([np.zeros((10, 20, 3), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        model.score([np.zeros((240, 240, 3), np.float32)])
    with pytest.raises(ValueError, match="no such file"):
        model.score(["/nonexistent/x.png"])


def test_predict_images_advances_a_progress_bar_per_image_and_batches_the_crops():
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x.mean(dim=(1, 2, 3))

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    images = [(np.full((230, 240, 3), v, np.uint8), v) for v in (0, 51, 255, 102, 153)]
    got = predict_images(Counting(), images, 3, torch.device("cpu"), batch_size=2, bar=bar)
    assert calls == [6, 6, 3] and bar.n == 5  # 2 + 2 + 1 images, 3 crops each
    assert got == pytest.approx([v / 127.5 - 1 for v in (0, 51, 255, 102, 153)], abs=1e-6)


@pytest.mark.slow
def test_load_model_without_a_path_is_the_random_smoke_model():
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        model = glint.load_model(None, device="auto")
    assert not model.training and model.config.local_backbone == "efficientnet_lite0"
    assert model.score_scale == "unknown"


@pytest.mark.slow
def test_the_scale_comes_from_the_training_labels():
    spec = dataset_spec("kadid10k")
    table = IQATable(
        "kadid10k", "synthetic", [Sample("a.png", 3.0, "I01")], True, Path("dmos.csv"), spec, spec["labels"][0]
    )
    assert label_scale(table) == SCALE
    clive = dataset_spec("clive")
    table = IQATable("clive", "authentic", [Sample("a.png", 50.0, "a")], True, Path("x.csv"), clive, clive["labels"][0])
    assert label_scale(table, clive["released"]["train_score_map"]) == (
        "clive mos, -50 to 150 (mapped from 0 to 100), higher is better"
    )
    live = dataset_spec("live")
    table = IQATable("live", "synthetic", [Sample("a", 1.0, "r")], False, Path("LIVEIQA.csv"), live, live["labels"][0])
    assert label_scale(table).endswith("0 to 100, lower is better")
    csv_spec = dataset_spec("csv")
    table = IQATable(
        "csv",
        "authentic",
        [Sample("a", 12.5, "a"), Sample("b", 3.0, "b")],
        True,
        Path("/d/s.csv"),
        csv_spec,
        csv_spec["labels"][0],
    )
    assert label_scale(table) == "csv score, 3 to 12.5 in s.csv, higher is better"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        pretrained = random_model(0)
    pretrained.checkpoint = type("C", (), {"meta": {"provenance": {"pretrain": {"score_scale": "minmax:0:9"}}}})()
    assert pretrained.score_scale == "SAQT-IQA labels, minmax:0:9, higher is better"


def test_tables_escape_formula_cells_and_name_the_scale(tmp_path):
    rows = [{"path": "=cmd|'/c calc'!A1", "score": 0.25, "label": -3.0}, {"path": "@x", "score": None, "label": 1.0}]
    write_table(rows, tmp_path / "t.csv", {"score_scale": "-1 to 1"}, ["path", "score", "label", "score_scale"])
    got = list(csv.reader((tmp_path / "t.csv").open()))
    assert got == [
        ["path", "score", "label", "score_scale"],
        ["'=cmd|'/c calc'!A1", "0.250000", "-3.000000", "'-1 to 1"],
        ["'@x", "", "1.000000", "'-1 to 1"],
    ]
    write_table(rows, tmp_path / "t.json", {"score_scale": "s"}, ["path"], key="predictions")
    assert json.loads((tmp_path / "t.json").read_text()) == {"score_scale": "s", "predictions": rows}


@pytest.mark.slow
def test_evaluate_writes_each_images_score_with_the_scale(tiny_checkpoint, photos, tmp_path):
    root = photos[0].parent
    names = ["-p0.png", "+p1.png", "p2.png"]
    for p, name in zip(photos, names, strict=True):
        (root / name).write_bytes(p.read_bytes())
    (root / "scores.csv").write_text("path,score\n" + "".join(f"{n},{i + 1}\n" for i, n in enumerate(names)))
    args = [
        "evaluate",
        "--checkpoint",
        str(tiny_checkpoint),
        "--dataset",
        "csv",
        "--csv",
        str(root / "scores.csv"),
        "--root",
        str(root),
        "--crops",
        "1",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "e.csv")])
    assert result.exit_code == 0, result.output
    assert f"scores on the scale: {SCALE}" in result.output and "csv all: SROCC" in result.output
    rows = list(csv.DictReader((tmp_path / "e.csv").open()))
    assert [Path(r["path"]).name for r in rows] == names and [r["label"] for r in rows] == [
        "1.000000",
        "2.000000",
        "3.000000",
    ]
    assert {r["score_scale"] for r in rows} == {SCALE}
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "e.json")])
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["score_scale"] == SCALE and report["metrics"]["images"] == 3
    assert [f"{p['score']:.6f}" for p in report["predictions"]] == [r["score"] for r in rows]
    model = glint.load_model(tiny_checkpoint)
    for i, (name, row) in enumerate(zip(names, rows, strict=True)):  # image i's crops are seeded by (0, i)
        pixels = np.asarray(Image.open(root / name).convert("RGB"))
        assert float(row["score"]) == pytest.approx(
            protocol_by_hand(model, pixels, 1, derive_seed(0, "test-crops", i)), abs=2e-6
        )


@pytest.fixture()
def rated(photos, tmp_path) -> tuple[Path, list[str], list[float]]:
    """Four rated photos (the fourth a mirror of the first) in a CSV dataset: its folder, image names and labels."""
    root, names, labels = tmp_path / "rated", ["a.png", "b.png", "c.png", "d.png"], [3.0, 1.0, 2.5, 4.0]
    root.mkdir()
    for name, photo in zip(names, photos, strict=False):
        (root / name).write_bytes(photo.read_bytes())
    Image.open(photos[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / names[3])
    (root / "scores.csv").write_text("path,score\n" + "".join(f"{n},{v}\n" for n, v in zip(names, labels, strict=True)))
    return root, names, labels


def test_run_evaluate_reports_the_metrics_of_the_protocols_scores(tiny_checkpoint, rated, tmp_path):
    """The library's evaluation: each image scored by the crop protocol (computed here by hand, image i seeded by
    (0, i)), the raw metrics those scores give against the labels (scipy's, here), all images when the checkpoint
    records no split (with a warning), and the .json file holding the report and the scores."""
    root, names, labels = rated
    config = EvaluateConfig(tiny_checkpoint, "csv", root, root / "scores.csv", crops=1, device="cpu")
    with pytest.warns(RunWarning, match="records no training split: scoring all 4 images of csv"):
        report = run_evaluate(config, tmp_path / "e.json")
    model = glint.load_model(tiny_checkpoint)
    scores = [
        protocol_by_hand(model, np.asarray(Image.open(root / n).convert("RGB")), 1, derive_seed(0, "test-crops", i))
        for i, n in enumerate(names)
    ]
    m = report["metrics"]
    assert (report["split"], report["train_overlap"], report["score_scale"], m["images"]) == ("all", 0, SCALE, 4)
    assert m["srocc"] == pytest.approx(spearmanr(scores, labels)[0], abs=1e-9)
    assert m["krcc"] == pytest.approx(kendalltau(scores, labels)[0], abs=1e-9)
    assert m["plcc"] == pytest.approx(pearsonr(scores, labels)[0], abs=1e-4)
    assert m["rmse"] == pytest.approx(float(np.sqrt(np.mean((np.array(scores) - labels) ** 2))), abs=1e-5)
    written = json.loads((tmp_path / "e.json").read_text())
    assert [p["label"] for p in written["predictions"]] == labels
    assert [p["score"] for p in written["predictions"]] == pytest.approx(scores, abs=2e-6)
    assert {k: v for k, v in written.items() if k != "predictions"} == report


def test_run_evaluate_refuses_images_the_checkpoint_was_trained_on(tiny_checkpoint, rated, tmp_path):
    """A checkpoint that records its honest split of these 4 images (round(0.2 x 4) = 1 test image, at least 1 for
    validation, 2 trained on) is scored on its own test image by default; all four are refused, and scored with a
    warning under allow_train_overlap."""
    root, _, _ = rated
    table = load_table("csv", root, root / "scores.csv")
    parts = make_split(table, "honest", 0, 0)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["provenance"] = {**payload["provenance"], "split": split_record(table, parts, "honest", 0, 0)}
    checkpoint = tmp_path / "trained.pt"
    torch.save(payload, checkpoint)
    config = EvaluateConfig(checkpoint, "csv", root, root / "scores.csv", crops=1, device="cpu")
    report = run_evaluate(config)
    assert (report["split"], report["own_split"], report["train_overlap"], report["metrics"]["images"]) == (
        "test",
        True,
        0,
        1,
    )
    everything = EvaluateConfig(checkpoint, "csv", root, root / "scores.csv", split="all", crops=1, device="cpu")
    with pytest.raises(ConfigError, match=r"2 of the 4 images to score were in the checkpoint's training set"):
        run_evaluate(everything, tmp_path / "refused.json")
    assert not (tmp_path / "refused.json").exists()
    allowed = EvaluateConfig(**{**everything.__dict__, "allow_train_overlap": True})
    with pytest.warns(RunWarning, match="2 of the 4 images scored were in the checkpoint's training set"):
        assert run_evaluate(allowed)["train_overlap"] == 2

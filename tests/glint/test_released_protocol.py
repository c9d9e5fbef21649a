"""``--protocol released`` against the official release's definitions (SYSU-Video/GlintIQA at 34c8936: scripts/train.py,
glintiqa/data/datasets.py and transforms.py, scripts/train_distributed.py, run.sh): the expectations are the release's
literals or its rules recomputed here, never this toolkit's output."""

from __future__ import annotations

import contextlib
import csv
import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import SHARED, needs_shared
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.transforms import RandomCrop
from typer.testing import CliRunner

from glint.data import (
    DatasetError,
    IQATable,
    Sample,
    check_released_images,
    crop_views,
    load_table,
    released_crop_corners,
)
from glint.finetune import eval_sets, image_reader
from glint.pretrain_data import EpochBatches, released_holdout_references
from glint.protocol import default_rounds
from glint.train import EvalSet, TrainConfig, evaluate_all, score_eval_set
from pipelines.glint_cli import app
from saqt.label.presets import label_settings

runner = CliRunner()
RELEASE_SEED = 12345  # configs/defaults.py --seed
RELEASE_ROUNDS = 10  # scripts/train.py --train-test-round default, and run.sh's


def test_released_runs_ten_rounds_unless_told_otherwise():
    assert default_rounds("released", None) == RELEASE_ROUNDS
    assert default_rounds("honest", None) == 1
    assert default_rounds("released", 3) == 1  # --round 3 alone is that round


@pytest.mark.slow
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


@pytest.mark.parametrize("size", [(500, 500), (384, 512), (224, 300), (224, 224)])
def test_released_test_crops_are_drawn_as_torchvisions_random_crop(size):
    """transforms.py tests with ``RandomCrop(size=224)``: per crop, torchvision's get_params on the torch generator."""
    height, width = size
    with torch.random.fork_rng():
        torch.manual_seed(7)
        image = torch.zeros(3, height, width)
        expected = [tuple(RandomCrop.get_params(image, (224, 224))[:2]) for _ in range(25)]
    assert released_crop_corners(height, width, 25, torch.Generator().manual_seed(7)) == expected
    views = crop_views(np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3), 25, 7, True)
    pixels = torch.arange(height * width * 3, dtype=torch.uint8).reshape(height, width, 3)
    top, left = expected[3]
    own = pixels[top : top + 224, left : left + 224].permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(views[3], own)


class MeanPixel(torch.nn.Module):
    """A stand-in model whose score of a crop is its mean pixel: scores tell crops apart."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


@pytest.mark.slow
def test_released_test_crops_are_new_every_epoch_and_the_same_on_a_rerun(photo):
    """The release's test loader draws new crops each time it is read (each epoch); seeded here, so reruns agree.
    The honest protocol keeps each image's crops fixed."""
    data = EvalSet([0, 1], [1.0, 2.0], lambda item: photo[:, item * 10 :])
    cpu = torch.device("cpu")

    def scores(epoch):
        return score_eval_set(MeanPixel(), data, 5, 12345, cpu, amp=False, epoch=epoch)[0]

    assert scores(0) == scores(0) and scores(1) == scores(1) and scores(0) != scores(1)
    assert scores(None) == scores(None)


@pytest.mark.slow
def test_a_released_run_redraws_its_test_crops_each_epoch_and_an_honest_run_does_not(photo):
    data = EvalSet([0, 1, 2], [1.0, 2.0, 3.0], lambda item: photo[:, item * 10 :])
    session = SimpleNamespace(main=True, model=MeanPixel(), device=torch.device("cpu"))
    log = SimpleNamespace(bar=lambda *args: contextlib.nullcontext())

    def rmse(protocol, epoch):
        config = TrainConfig(protocol=protocol, test_crops=5, amp=False, seed=12345)
        return evaluate_all(session, {"test": data}, config, epoch, log)["test"]["rmse"]

    assert rmse("released", 0) == rmse("released", 0) != rmse("released", 1)
    assert rmse("honest", 0) == rmse("honest", 1)


def koniq_folder(root: Path, size: str) -> Path:
    """A KonIQ-10k folder in the release's layout, its three images in ``size``/ (empty files: never decoded)."""
    rows = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore"]
    (root / size).mkdir(parents=True)
    for i, name in enumerate(["826373.jpg", "10004473376.jpg", "10007357496.jpg"]):
        (root / size / name).write_bytes(b"")
        rows.append(f"{name},0,0,10,80,10,100,3.{i},0.4,{60 + i}")
    (root / "koniq10k_scores_and_distributions.csv").write_text("\n".join(rows) + "\n")
    return root


def test_released_koniq_reads_512x384_only_and_refuses_1024x768_in_one_line(tmp_path):
    """datasets.py KonIQ10k reads root / "512x384" / image_name: the 1024x768 set is another input, not a fallback."""
    large = koniq_folder(tmp_path / "large", "1024x768")
    check_released_images(load_table("koniq10k", koniq_folder(tmp_path / "small", "512x384")), tmp_path / "small")
    with pytest.raises(DatasetError, match="reads koniq10k's images from 512x384/"):
        check_released_images(load_table("koniq10k", large), large)
    args = ["finetune", "--protocol", "released", "--dataset", "koniq10k", "--root", str(large), "--out"]
    args += [str(tmp_path / "run"), "--local-backbone", "efficientnet_lite0", "--random-init", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "826373.jpg is not in" in result.output.splitlines()[-1] and not (tmp_path / "run").exists()


def test_preset_authors_matches_as_the_published_checkpoints_were_pretrained():
    """run.sh pretrains on similarity_img_in_kadid-10k_resnet50.csv; the first release's step 1 ran --model_name
    resnet50 (its utils.py default): ResNet-50 top-1, DMOS min-max to [0, 9]. The paper's ResNet-101 is the option."""
    assert label_settings("authors", None, None, None, None) == {
        "encoder": "resnet50",
        "rule": "top1",
        "normalise": "minmax:0:9",
    }
    assert label_settings("authors-resnet101", None, None, None, None)["encoder"] == "resnet101"


def test_the_releases_pretraining_holdout_references_are_i13_and_i76():
    """train_distributed.py: val indices = sorted(random.Random(12345).sample(range(50000), 1000)); SAQTIQADataset
    keeps the images matched to f"I{idx + 1:02d}.png", which names a KADID-10k reference only for idx < 81."""
    assert released_holdout_references() == ["I13.png", "I76.png"]


@pytest.mark.parametrize(("rows", "world", "batch"), [(103, 2, 8), (64, 4, 16), (7, 1, 2), (5, 1, 8)])
def test_released_pretraining_drops_the_last_partial_batch_as_the_releases_loaders(rows, world, batch):
    """DistributedSampler(drop_last=True) and DataLoader(drop_last=True): every rank takes as many full batches."""
    for rank in range(world):
        sampler = DistributedSampler(range(rows), world, rank, shuffle=False, drop_last=True)
        expected = len(DataLoader(range(rows), batch_size=batch, sampler=sampler, drop_last=True))
        ours = EpochBatches(np.arange(rows), rank, world, batch, drop_last=True)
        assert len(ours) == expected == len(list(ours.arrays()))
        assert all(len(b) == batch for b in ours.arrays())
    assert len(EpochBatches(np.arange(rows), 0, world, batch)) >= expected  # the honest default keeps the rest


def test_released_live_refuses_a_folder_without_the_realigned_labels_in_one_line(tmp_path):
    """The release trains and tests LIVE on dmos_realigned.mat's dmos_new; pyiqa's LIVEIQA.csv (dmos.mat) is not it."""
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "LIVEIQA.csv").write_text("ref_name,dist_name,mos\nbikes.bmp,jp2k/img2,40.0\n")
    args = ["finetune", "--protocol", "released", "--dataset", "live", "--root", str(tmp_path / "live"), "--out"]
    args += [str(tmp_path / "run"), "--local-backbone", "efficientnet_lite0", "--random-init", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "reads live's labels from LIVE_realigned.csv" in result.output.splitlines()[-1]
    assert not (tmp_path / "run").exists()

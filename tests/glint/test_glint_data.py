"""Dataset loaders on the real label tables, the toolkit's and the release's splits, crops and resizing."""

from __future__ import annotations

import csv
import random
import re

import numpy as np
import pytest
import torch
from conftest import SHARED, needs_shared
from torch.utils.data import DataLoader

from glint.data import (
    CROP,
    DatasetError,
    TrainingImages,
    count_mismatch,
    crop_views,
    load_table,
    prepare,
    random_view,
    released_split,
    split_table,
)
from saqt.build.sources import sample_paths
from saqt.core.scores import ScoreError

LABELS = SHARED / "data" / "labels"
TABLES = {  # dataset: (label table, rows, groups, kind)
    "kadid10k": ("KADID10k.csv", 10125, 81, "synthetic"),
    "koniq10k": ("KonIQ10k.csv", 10073, 10073, "authentic"),
    "clive": ("LIVEChallenge.csv", 1162, 1162, "authentic"),  # t1-t7 dropped
    "csiq": ("CSIQ.csv", 866, 30, "synthetic"),
    "tid2013": ("TID2013.csv", 3000, 25, "synthetic"),
    "live": ("LIVEIQA.csv", 779, 29, "synthetic"),
    "spaq": ("SPAQ.csv", 11125, 11125, "authentic"),
    "livemd": ("LIVEMD.csv", 450, 15, "synthetic"),  # one reference per scene across both parts
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TABLES))
def test_loaders_read_the_real_label_tables(name, tmp_path):
    table_file, rows, groups, kind = TABLES[name]
    table = load_table(name, tmp_path, needs_shared(LABELS / table_file))
    assert len(table.samples) == rows and len({s.group for s in table.samples}) == groups and table.kind == kind
    assert all(np.isfinite(s.score) for s in table.samples)
    parts = split_table(table, round_=0, seed=0)
    assert sum(len(p) for p in parts.values()) == rows
    groups_of = {k: {s.group for s in v} for k, v in parts.items()}
    assert not (groups_of["train"] & groups_of["test"]) and not (groups_of["val"] & groups_of["test"])


@pytest.mark.slow
def test_synthetic_split_goes_by_reference_and_is_seeded(tmp_path):
    table = load_table("kadid10k", tmp_path, needs_shared(LABELS / "KADID10k.csv"))
    a, b, c = split_table(table, 0, 0), split_table(table, 0, 0), split_table(table, 1, 0)
    refs = {k: {s.group for s in v} for k, v in a.items()}
    assert (len(refs["test"]), len(refs["val"]), len(refs["train"])) == (16, 6, 59)
    assert [s.path for s in a["test"]] == [s.path for s in b["test"]] and refs["test"] != {s.group for s in c["test"]}
    assert table.samples[0].path.endswith("images/I01_01_01.png") and table.higher_is_better


@pytest.mark.slow
def test_koniq_uses_its_official_split(tmp_path):
    parts = split_table(load_table("koniq10k", tmp_path, needs_shared(LABELS / "KonIQ10k.csv")))
    assert {k: len(v) for k, v in parts.items()} == {"train": 7058, "val": 1000, "test": 2015}


def test_real_clive_folder(tmp_path):
    table = load_table("clive", needs_shared(SHARED / "data" / "clive"))
    assert len(table.samples) == 627 and all(p.endswith(".JPG") for p in (s.path for s in table.samples[:5]))
    assert table.samples[0].score == pytest.approx(73.6235)


def test_malformed_tables_are_refused(tmp_path):
    (tmp_path / "t.csv").write_text("name,quality\na.jpg,3\n")
    with pytest.raises(DatasetError, match="no image and score columns of csv"):
        load_table("csv", tmp_path, tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text("path,score\na.jpg,good\n")
    with pytest.raises(ScoreError, match="t.csv:2: score 'good' is not a number"):
        load_table("csv", tmp_path, tmp_path / "t.csv")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_table("imagenet", tmp_path)
    with pytest.raises(DatasetError, match="no label file"):
        load_table("clive", tmp_path)
    (tmp_path / "t.csv").write_text("path,score\n../../etc/passwd,3\n")
    with pytest.raises(DatasetError, match="lies outside the dataset folder"):
        load_table("csv", tmp_path, tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text("path,score\na.png,nan\n")
    with pytest.raises(ScoreError, match="t.csv:2: score 'nan' is not a finite number"):
        load_table("csv", tmp_path, tmp_path / "t.csv")


@pytest.mark.slow
def test_views_are_224_crops_and_test_crops_are_reproducible():
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    import random

    view = random_view(image, random.Random(1))
    assert view.shape == (CROP, CROP, 3)
    torch.testing.assert_close(crop_views(image, 25, 7), crop_views(image, 25, 7))
    assert crop_views(image, 25, 7).shape == (25, 3, 224, 224)
    assert prepare(image[:100, :150]).shape[:2] == (224, 336)  # small images are enlarged to allow a crop
    assert prepare(image, resize=(512, 384)).shape[:2] == (512, 384)  # torchvision's Resize((512, 384)): h, w


def test_training_views_do_not_depend_on_loader_workers(tmp_path):
    from glint.data import Sample

    samples = [Sample(str(p), float(i), p.name) for i, p in enumerate(sample_paths())]
    data = TrainingImages(samples, seed=4)
    data.set_epoch(2)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(data, batch_size=5, num_workers=workers, shuffle=False)
        batches.append(next(iter(loader))[0])
    torch.testing.assert_close(batches[0], batches[1], rtol=0, atol=0)
    data.set_epoch(3)
    assert not torch.equal(next(iter(DataLoader(data, batch_size=5)))[0], batches[0])  # new epoch, new crops


def _names(parts: dict, key: str = "test") -> set[str]:
    return {s.group for s in parts[key]}


def _release_train_units(units: list[str], round_: int, seed: int) -> set[str]:
    """Written from the release's splits.py: list(range(n)) shuffled by random.Random(round x seed), first
    round(0.8 n) for training."""
    indices = list(range(len(units)))
    random.Random(round_ * seed).shuffle(indices)
    return {units[i] for i in indices[: int(round(0.8 * len(units)))]}


@pytest.mark.parametrize("name", ["live", "csiq", "tid2013", "kadid10k", "livemd", "clive"])
def test_released_splits_are_the_releases(name, tmp_path):
    """Each dataset's units in the release's index order (datasets.py), split as its splits.py does."""
    table_file = TABLES[name][0]
    table = load_table(name, tmp_path, needs_shared(LABELS / table_file))
    with open(LABELS / table_file, newline="") as f:
        rows = list(csv.DictReader(f))
    if name == "live":  # sorted(refimgs/*.bmp)
        units = sorted({r["ref_name"] for r in rows})
    elif name == "csiq":  # sorted(src_imgs/*.png, reverse=True)
        units = sorted({r["ref_name"] for r in rows}, reverse=True)
    elif name in ("tid2013", "kadid10k"):  # sorted(name[1:3] of the reference files)
        units = sorted({r["ref_name"] for r in rows}, key=lambda n: n[1:3])
    elif name == "livemd":  # np.unique(dist_name.split("_")[0] + ".bmp")
        units = sorted({r["dist_name"].split("/")[-1].split("_")[0] + ".bmp" for r in rows})
    else:  # AllImages_release.mat[7:1169]: the table's rows after t1-t7
        units = [r["img_name"] for r in rows][7:]
    assert len(units) == {"live": 29, "csiq": 30, "tid2013": 25, "kadid10k": 81, "livemd": 15, "clive": 1162}[name]
    for round_ in (1, 4):
        parts = released_split(table, round_, 12345)
        assert _names(parts, "train") == _release_train_units(units, round_, 12345) and not parts["val"]
        assert _names(parts, "test") == set(units) - _names(parts, "train")
        assert len(parts["train"]) + len(parts["test"]) == len(table.samples)
    assert _names(released_split(table, 1, 12345)) != _names(released_split(table, 2, 12345))


def test_clive_has_1162_images_and_the_627_image_folder_cannot_give_the_releases_split(tmp_path):
    """The release's rule on a subset is not the release's split: said so (a warning under --protocol released)."""
    table = load_table("clive", tmp_path, needs_shared(LABELS / "LIVEChallenge.csv"))
    assert len(table.samples) == 1162 and not any(s.name.startswith("t") for s in table.samples)
    assert table.samples[0].name == "100.bmp" and table.samples[0].path.endswith("Images/100.bmp")
    assert count_mismatch(table) is None
    folder = load_table("clive", needs_shared(SHARED / "data" / "clive"))
    assert re.search("the release indexes 1162 images of clive, .* gives 627", count_mismatch(folder))
    parts = released_split(folder, 1, 12345)  # the rule on the 627: round(0.8 x 627) = 502 train
    assert (len(parts["train"]), len(parts["test"])) == (502, 125)


def test_koniq_reads_the_releases_file_and_column(tmp_path):
    """The release reads koniq10k_scores_and_distributions.csv (MOS_zscore, not MOS) and the 512x384 images."""
    (tmp_path / "koniq10k_scores_and_distributions.csv").write_text(
        "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore\n"
        "826373.jpg,0,0,10,80,10,100,3.9,0.4,72.5\n10004473376.jpg,0,10,90,0,0,100,2.9,0.3,40.1\n"
    )
    (tmp_path / "512x384").mkdir()
    table = load_table("koniq10k", tmp_path)
    assert [(s.name, s.score) for s in table.samples] == [("826373.jpg", 72.5), ("10004473376.jpg", 40.1)]
    assert table.samples[0].path == str(tmp_path / "512x384" / "826373.jpg") and table.entry["release_order"]


def test_bid_flive_and_spaq_in_the_releases_formats(tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["Image", "MOS"])
    for i in range(1, 587):
        book.active.append([i, round(i / 586 * 5, 3)])
    book.save(tmp_path / "DatabaseGrades.xlsx")
    bid = load_table("bid", tmp_path)
    assert len(bid.samples) == 586 and bid.samples[9].name == "DatabaseImage0010.JPG" and bid.resize == (512, 384)
    assert bid.samples[-1].score == 5.0
    assert len(released_split(bid, 1, 12345)["train"]) == 469
    (tmp_path / "labels_image.csv").write_text(
        "name,mos,width,height\nblur_dataset/a.jpg,61.2,640,480\nvoc_emotic_ava/b.jpg,70.0,500,375\n"
    )
    flive = load_table("flive", tmp_path)
    assert [s.name for s in flive.samples] == ["blur_dataset/a.jpg", "voc_emotic_ava/b.jpg"] and flive.resize == (
        512,
        512,
    )
    assert "the release indexes 39810 images" in count_mismatch(flive)
    (tmp_path / "Annotations").mkdir()
    book = Workbook()
    for row in (["Image name", "MOS", "Brightness"], ["00001.jpg", 48.86, 47.4], ["00002.jpg", 62.5, 55.4]):
        book.active.append(row)
    book.save(tmp_path / "Annotations" / "MOS and Image attribute scores.xlsx")
    spaq = load_table("spaq", tmp_path)
    assert [(s.name, s.score) for s in spaq.samples] == [("00001.jpg", 48.86), ("00002.jpg", 62.5)]
    assert spaq.samples[0].path.endswith("TestImage/00001.jpg") and spaq.resize is None


def test_released_training_scores_of_clive_are_rescaled(tmp_path):
    from glint.data import Sample

    path = str(sample_paths()[0])
    data = TrainingImages([Sample(path, 25.0, "a")], train_score_map=[0, 100, -50, 150])
    assert float(data[0][1]) == 0.0  # 25 on [0, 100] is 0 on [-50, 150]

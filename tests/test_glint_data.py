"""Dataset loaders on the real label tables, splits, crops and the SAQT-IQA stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED, needs_shared
from torch.utils.data import DataLoader

from glint.data import (
    CROP,
    DatasetError,
    SaqtSource,
    SaqtStream,
    TrainingImages,
    crop_views,
    load_table,
    prepare,
    random_view,
    split_table,
)
from pipelines.executors import LocalExecutor
from saqt.build import BuildConfig, run_build
from saqt.label import LabelConfig, RunOptions, run_label
from saqt.sources import sample_paths

LABELS = SHARED / "data" / "labels"
TABLES = {  # dataset: (label table, rows, groups, kind)
    "kadid10k": ("KADID10k.csv", 10125, 81, "synthetic"),
    "koniq10k": ("KonIQ10k.csv", 10073, 10073, "authentic"),
    "clive": ("LIVEChallenge.csv", 1169, 1169, "authentic"),
    "csiq": ("CSIQ.csv", 866, 30, "synthetic"),
    "tid2013": ("TID2013.csv", 3000, 25, "synthetic"),
    "live": ("LIVEIQA.csv", 779, 29, "synthetic"),
    "spaq": ("SPAQ.csv", 11125, 11125, "authentic"),
}


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


def test_synthetic_split_goes_by_reference_and_is_seeded(tmp_path):
    table = load_table("kadid10k", tmp_path, needs_shared(LABELS / "KADID10k.csv"))
    a, b, c = split_table(table, 0, 0), split_table(table, 0, 0), split_table(table, 1, 0)
    refs = {k: {s.group for s in v} for k, v in a.items()}
    assert (len(refs["test"]), len(refs["val"]), len(refs["train"])) == (16, 6, 59)
    assert [s.path for s in a["test"]] == [s.path for s in b["test"]] and refs["test"] != {s.group for s in c["test"]}
    assert table.samples[0].path.endswith("images/I01_01_01.png") and table.higher_is_better


def test_koniq_uses_its_official_split(tmp_path):
    parts = split_table(load_table("koniq10k", tmp_path, needs_shared(LABELS / "KonIQ10k.csv")))
    assert {k: len(v) for k, v in parts.items()} == {"train": 7058, "val": 1000, "test": 2015}


def test_real_clive_folder(tmp_path):
    table = load_table("clive", needs_shared(SHARED / "data" / "clive"))
    assert len(table.samples) == 627 and all(p.endswith(".JPG") for p in (s.path for s in table.samples[:5]))
    assert table.samples[0].score == pytest.approx(73.6235)


def test_malformed_tables_are_refused(tmp_path):
    (tmp_path / "t.csv").write_text("name,quality\na.jpg,3\n")
    with pytest.raises(DatasetError, match="no image column"):
        load_table("csv", tmp_path, tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text("path,score\na.jpg,good\n")
    with pytest.raises(DatasetError, match="not a number"):
        load_table("csv", tmp_path, tmp_path / "t.csv")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_table("imagenet", tmp_path)
    with pytest.raises(DatasetError, match="no label file"):
        load_table("clive", tmp_path)


def test_views_are_224_crops_and_test_crops_are_reproducible():
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    import random

    view = random_view(image, random.Random(1))
    assert view.shape == (CROP, CROP, 3)
    torch.testing.assert_close(crop_views(image, 25, 7), crop_views(image, 25, 7))
    assert crop_views(image, 25, 7).shape == (25, 3, 224, 224)
    assert prepare(image[:100, :150]).shape[:2] == (224, 336)  # small images are enlarged to allow a crop
    assert prepare(image, resize_shorter=512).shape[:2] == (512, 683)


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


def test_saqt_holdout_and_training_never_share_a_pristine_image(tmp_path):
    """Pretraining holds out whole pristine images: no photo has rows on both sides, and together they are every
    rated row."""
    run_build(BuildConfig(size=(96, 64), types=(1,), levels=(1, 2), images_per_shard=2), tmp_path / "build",
              LocalExecutor(1), progress=False)  # fmt: skip
    (tmp_path / "bank").mkdir()
    (tmp_path / "bank" / "scores.csv").write_text("ref,type,level,score\na.png,1,1,0.9\na.png,1,2,0.5\nb.png,1,1,0.7\n")
    run_label(LabelConfig(build=str(tmp_path / "build"), bank=str(tmp_path / "bank"), rule="mean"), tmp_path / "labels",
              RunOptions(progress=False))  # fmt: skip
    source = SaqtSource.open(tmp_path / "labels")
    train, held = SaqtStream(source, seed=3), SaqtStream(source, seed=3, holdout=True)
    train_rows, held_rows = [r for r, _ in train.rated_images()], [r for r, _ in held.rated_images()]
    train_ids, held_ids = {r["pristine_id"] for r in train_rows}, {r["pristine_id"] for r in held_rows}
    assert held_ids == source.holdout(3) and len(held_ids) == 1  # 5 % of 5 photos, at least one
    assert not train_ids & held_ids and len(train_ids | held_ids) == 5
    assert len(train_rows) + len(held_rows) == 10 and (train.count(), held.count()) == (8, 2)

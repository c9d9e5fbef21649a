"""The protocols' quantities where a plausible mistake gives another value: rounds past the first, a ``--seed`` that
is not the protocol's, split sizes where rounding differs, and each dataset x protocol's training targets and
reported scale. Expectations are written from the official release (SYSU-Video/GlintIQA at 34c8936) or from the
toolkit's documented rules, by hand; training itself is replaced by a recorder, so these run in a second or two."""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import glint.finetune as finetune
import glint.pretrain as pretrain
from glint.data import IQATable, Sample, dataset_names, dataset_spec
from glint.evaluate import evaluation_split
from glint.finetune import FinetuneConfig, run_finetune
from glint.metrics import METRICS
from glint.pretrain import PretrainConfig, run_pretrain
from glint.pretrain_index import holdout_ids
from glint.protocol import resolve
from glint.train import TrainConfig
from saqt.core.seeding import derive_seed

# configs/defaults.py (lr, weight decay, T_max 30 -> "cycle", batch 32, 25 test patches, seed 12345, 300 epochs),
# scripts/train.py (fp32, best epoch on the test split), run.sh's pretraining (50 epochs, batch 128, --amp, a held-out
# validation set)
RELEASED_FINETUNE = {
    "batch_size": 32,
    "lr": 1e-5,
    "weight_decay": 1e-5,
    "test_crops": 25,
    "epochs": 300,
    "seed": 12345,
    "select_on": "test",
    "schedule": "cycle",
    "amp": False,
}
RELEASED_PRETRAIN = {**RELEASED_FINETUNE, "epochs": 50, "batch_size": 128, "amp": True, "select_on": "val"}
HONEST_FINETUNE = {**RELEASED_FINETUNE, "epochs": 10, "seed": 0, "select_on": "val", "schedule": "cosine", "amp": True}
HONEST_PRETRAIN = {**HONEST_FINETUNE, "epochs": 50, "batch_size": 128}


def test_protocol_settings_are_the_releases_and_the_toolkits():
    assert resolve("released", {}).settings == RELEASED_FINETUNE
    assert resolve("released", {}, pretrain=True).settings == RELEASED_PRETRAIN
    assert resolve("honest", {}).settings == HONEST_FINETUNE
    assert resolve("honest", {}, pretrain=True).settings == HONEST_PRETRAIN


@pytest.mark.parametrize(
    ("name", "seed", "round_", "torch_seed"),
    [
        ("released", None, None, 12345),  # round 1 by default: 1 x 12345
        ("released", None, 2, 24690),  # scripts/train.py: round_seed = round_num * args.seed
        ("released", 7, 3, 21),  # --seed 7, round 3: 3 x 7
        ("honest", 7, 3, 7),  # the toolkit's: the seed as given, the round only moves the split
        ("honest", None, None, 0),
    ],
)
def test_the_torch_seed_is_round_times_seed_under_the_release_only(name, seed, round_, torch_seed):
    proto = resolve(name, {"seed": seed}, round_)
    assert proto.torch_seed == torch_seed and proto.record()["torch_seed"] == torch_seed
    assert TrainConfig.from_protocol(proto).seed == torch_seed
    assert proto.round == (round_ if round_ is not None else {"released": 1, "honest": 0}[name])


@pytest.fixture
def recorded(monkeypatch):
    """``run_finetune`` with the model and the training replaced by recorders: what each round would train on."""
    calls = {"fit": [], "model": []}

    def fake_model(config, seed, random_init=False):
        calls["model"].append(seed)
        return SimpleNamespace(config=config)

    def fake_fit(model, run, train, *args):  # the keys of fit's results that a run over several rounds reads
        calls["fit"].append((run, train))
        return {"metrics": {"test": dict.fromkeys(METRICS, 0.5)}, "selected_epoch": 1, "provenance": run.provenance}

    monkeypatch.setattr(finetune, "new_model", fake_model)
    monkeypatch.setattr(finetune, "fit", fake_fit)
    monkeypatch.setattr(finetune, "check_image_files", lambda *args: None)
    monkeypatch.setattr(finetune, "check_released_images", lambda *args: None)  # KonIQ's 512x384/: in-memory tables
    return calls


def memory_table(monkeypatch, name: str, units: int, image: str | None = None, per_unit: int = 1) -> IQATable:
    """``load_table`` answering a table of ``units`` units of dataset ``name`` (``per_unit`` images each, all scored
    25, each its own path or all ``image``), described by the dataset's first label entry."""
    spec = dataset_spec(name)
    synthetic = spec["kind"] == "synthetic" or (name == "csv" and per_unit > 1)  # a CSV with a reference column
    groups = [f"I{u + 1:02d}.png" if synthetic else f"{u:05d}.jpg" for u in range(units)]
    samples = [
        Sample(image or f"{g}_{k}", 25.0, g, None, f"{g}_{k}" if synthetic else g)
        for g in groups
        for k in range(per_unit)
    ]
    table = IQATable(
        name,
        "synthetic" if synthetic else spec["kind"],
        samples,
        spec["higher_is_better"],
        Path("scores.csv"),
        spec,
        spec["labels"][0],
    )
    monkeypatch.setattr(finetune, "load_table", lambda *args: table)
    return table


def run(tmp_path: Path, dataset: str, protocol: str, **given) -> None:
    config = FinetuneConfig(
        dataset, tmp_path / "data", protocol=protocol, random_init=True, local_backbone="efficientnet_lite0", **given
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", finetune.RunWarning)
        run_finetune(config, tmp_path / "run")


def release_split(units: int, round_: int, seed: int) -> set[int]:
    """The release's splits.py: list(range(n)) shuffled by random.Random(round x seed), the first round(0.8 n)
    train."""
    order = list(range(units))
    random.Random(round_ * seed).shuffle(order)
    return set(order[: int(round(0.8 * units))])


def honest_split(groups: list[str], round_: int, seed: int, dataset: str) -> tuple[set, set]:
    """The toolkit's rule (glint.data.split_table): sorted groups shuffled by random.Random(derive_seed(seed,
    dataset, round, "split")); round(0.2 n) test, then round(0.1 x the rest) validation."""
    order = sorted(groups)
    random.Random(derive_seed(seed, dataset, round_, "split")).shuffle(order)
    n_test = round(0.2 * len(order))
    return set(order[:n_test]), set(order[n_test : n_test + round(0.1 * (len(order) - n_test))])


@pytest.mark.slow
def test_released_rounds_past_the_first_with_a_seed_of_ones_own(tmp_path, monkeypatch, recorded):
    """17 images: round(0.8 x 17) = 14 train (int() would give 13); rounds 2 and 3 with --seed 7 split with
    random.Random(14) and random.Random(21) and seed torch, the model and the crops with 14 and 21."""
    table = memory_table(monkeypatch, "csv", 17)
    run(tmp_path, "csv", "released", seed=7, round=2, rounds=2)
    assert recorded["model"] == [14, 21]
    for (data, train), round_ in zip(recorded["fit"], (2, 3), strict=True):
        assert train.seed == data.train.seed == 7 * round_ and train.protocol == "released"
        trained = {int(s.group[:5]) for s in data.train.samples}
        assert trained == release_split(17, round_, 7) and len(trained) == 14
        assert data.evals["test"].items == [s.path for s in table.samples if int(s.group[:5]) not in trained]
        record = data.provenance["split"]
        assert (record["protocol"], record["round"], record["seed"]) == ("released", round_, 7)
        assert data.provenance["protocol"]["torch_seed"] == 7 * round_
        remade, chosen = evaluation_split(table, record, "test", None, None, None)  # what glint evaluate scores
        assert {s.group for s in remade} == {s.group for s in table.samples} - {s.group for s in data.train.samples}
        assert chosen["own_split"] and (chosen["round"], chosen["seed"]) == (round_, 7)
    rows = (tmp_path / "run" / "rounds.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in rows[1:]] == [["2", "14"], ["3", "21"], ["median", ""]]


@pytest.mark.slow
def test_honest_rounds_past_the_first_with_a_seed_of_ones_own(tmp_path, monkeypatch, recorded):
    """30 references: 6 test and round(0.1 x 24) = 2 validation (0.1 x 30 would give 3), drawn per round from
    (seed 7, round); the torch seed stays 7 in every round."""
    table = memory_table(monkeypatch, "csv", 30, per_unit=2)
    run(tmp_path, "csv", "honest", seed=7, round=2, rounds=2)
    assert recorded["model"] == [7, 7]
    groups = sorted({s.group for s in table.samples})
    for (data, train), round_ in zip(recorded["fit"], (2, 3), strict=True):
        assert train.seed == data.train.seed == 7
        test, val = honest_split(groups, round_, 7, "csv")
        assert (len(test), len(val)) == (6, 2)
        assert {s.group for s in data.train.samples} == set(groups) - test - val
        assert {s.group for s in table.samples if s.path in data.evals["test"].items} == test
        record = data.provenance["split"]
        assert (record["protocol"], record["round"], record["seed"]) == ("honest", round_, 7)
        remade, chosen = evaluation_split(table, record, "test", None, None, None)
        assert {s.group for s in remade} == test and chosen["own_split"]
    rows = (tmp_path / "run" / "rounds.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in rows[1:]] == [["2", "7"], ["3", "7"], ["median", ""]]


# dataset: (the release's unit count, the scale reported for the labels trained on). The release's datasets.py
# rescales only CLIVE's training MOS, [0, 100] -> [-50, 150], under "released"; every other target is the label.
DATASETS = {
    "bid": (586, "bid score, 0 to 5, higher is better"),
    "clive": (1162, "clive mos, 0 to 100, higher is better"),
    "csiq": (30, "csiq dmos, 0 to 1, lower is better"),
    "csv": (20, "csv score, 25 to 25 in scores.csv, higher is better"),
    "flive": (39810, "flive mos, 0 to 100, higher is better"),
    "kadid10k": (81, "kadid10k dmos, 1 to 5, higher is better"),
    "koniq10k": (10073, "koniq10k MOS_zscore, 0 to 100, higher is better"),
    "live": (29, "live mos, 0 to 100, lower is better"),
    "livemd": (15, "livemd dmos, 0 to 100, lower is better"),
    "spaq": (11125, "spaq MOS, 0 to 100, higher is better"),
    "tid2013": (25, "tid2013 mos, 0 to 9, higher is better"),
}
CLIVE_RELEASED = "clive mos, -50 to 150 (mapped from 0 to 100), higher is better"


def test_the_table_covers_every_dataset():
    assert sorted(DATASETS) == sorted(dataset_names())


@pytest.fixture(scope="module")
def small_image(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "x.png"
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(path)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["honest", "released"])
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_each_dataset_and_protocol_trains_on_its_targets_and_reports_its_scale(
    dataset, protocol, tmp_path, monkeypatch, recorded, small_image
):
    """Every label is 25: a training target of 25, except CLIVE under the release's protocol, where
    (25 - 0) / (100 - 0) x (150 - -50) + -50 = 0. Evaluation always scores against the label itself (25). The
    release runs 10 rounds unless told otherwise (train.py's --train-test-round), the toolkit one; the first is
    checked."""
    units, scale = DATASETS[dataset]
    memory_table(monkeypatch, dataset, units, small_image)
    run(tmp_path, dataset, protocol)
    assert len(recorded["fit"]) == (10 if protocol == "released" else 1)
    data, _ = recorded["fit"][0]
    mapped = dataset == "clive" and protocol == "released"
    assert float(data.train[0][1]) == (0.0 if mapped else 25.0)
    assert data.provenance["train_score_map"] == ([0, 100, -50, 150] if mapped else None)
    assert data.provenance["score_scale"] == (CLIVE_RELEASED if mapped else scale)
    assert all(set(e.scores) == {25.0} for e in data.evals.values()) and data.evals["test"].scores


def test_pretraining_holds_out_five_percent_of_pristine_images_by_a_seeded_rank():
    """holdout_ids: the pristine ids ranked by derive_seed(seed, "holdout", id), the first round(n x 5 / 100), at
    least one, none of a single image. 50 ids at 5%: round(2.5) = 2 (banker's rounding); 30 ids: round(1.5) = 2."""
    ids = [f"p{i:03d}" for i in range(50)]
    ranked = sorted(ids, key=lambda p: derive_seed(7, "holdout", p))
    assert holdout_ids(ids, 7, 5.0) == ranked[:2]
    assert holdout_ids(ids, 7, 5.0) != sorted(ids, key=lambda p: derive_seed(0, "holdout", p))[:2]
    assert holdout_ids(ids[:30], 7, 5.0) == sorted(ids[:30], key=lambda p: derive_seed(7, "holdout", p))[:2]
    assert len(holdout_ids(ids[:3], 7, 5.0)) == 1 and holdout_ids(ids[:1], 7, 5.0) == []


class Stop(Exception):
    pass


@pytest.mark.parametrize(
    ("protocol", "seed", "expected"), [("released", None, 12345), ("released", 7, 7), ("honest", None, 0)]
)
def test_pretraining_indexes_and_orders_with_the_protocols_seed(tmp_path, monkeypatch, protocol, seed, expected):
    """The held-out draw and the epoch order come from the seed the set is indexed with: the protocol's (the
    release pretrains in one round: 1 x seed); only the release's holds out its references and drops the last
    partial batch."""
    seen = []

    def training(files, seed, index_dir, released=False):
        seen.append((seed, released))
        raise Stop

    monkeypatch.setattr(pretrain, "open_saqt", lambda *args: SimpleNamespace(build=None))
    monkeypatch.setattr(pretrain, "SaqtTraining", training)
    config = PretrainConfig(str(tmp_path / "set"), protocol=protocol, seed=seed, local_backbone="efficientnet_lite0")
    with pytest.raises(Stop):
        run_pretrain(config, tmp_path / "run")
    assert seen == [(expected, protocol == "released")]

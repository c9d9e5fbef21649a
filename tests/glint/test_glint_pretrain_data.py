"""Pretraining data: the per-epoch permutation over ranks and workers, recipe rendering, --plan-only, and every
form of SAQT-IQA (label folder, published folder, fsspec URL, Hub id) training, on a real tiny build."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry
from torch.utils.data import get_worker_info
from typer.testing import CliRunner

import glint.train
from glint.pretrain_data import DatasetError, SaqtTraining, epoch_order, open_saqt, rank_batches
from glint.train import TrainConfig, make_loader
from pipelines.executors import LocalExecutor
from pipelines.glint_cli import app
from saqt.build.build_reader import BuildReader
from saqt.build.build_stage import BuildConfig, run_build
from saqt.core.context import RunContext
from saqt.core.errors import SaqtError
from saqt.core.images import decode_image
from saqt.label.label_stage import LabelConfig, run_label
from saqt.label.row_index import open_columns
from saqt.label.synth_stage import SynthConfig, run_synth_bank
from saqt.publish.publish_stage import PublishConfig, run_publish

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

runner = CliRunner()
SMOKE = [
    "--random-init",
    "--local-backbone",
    "efficientnet_lite0",
    "--crops",
    "1",
    "--holdout-images",
    "2",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> Path:
    """The 5 sample photos x 6 cells, built with pixels and recipe-only from the same seed, labelled by the mean
    rule of a synth bank, and the materialised labels published with a validation split."""
    root = tmp_path_factory.mktemp("pretrain")
    run_synth_bank(
        SynthConfig(source="sample-bank", size=(96, 64), metric="psnr"),
        root / "bank",
        RunContext(LocalExecutor(1), progress=False),
    )
    for name, recipe_only in (("mat", False), ("rec", True)):
        config = BuildConfig(
            size=(96, 64), types=(1, 10), levels=(1, 3, 5), images_per_shard=2, recipe_only=recipe_only
        )
        run_build(config, root / name / "build", RunContext(LocalExecutor(1), progress=False))
        run_label(
            LabelConfig(build=str(root / name / "build"), bank=str(root / "bank"), rule="mean"),
            root / name / "labels",
            RunContext(progress=False),
        )
    run_publish(
        PublishConfig(str(root / "mat" / "labels"), validation=0.4), str(root / "pub"), RunContext(progress=False)
    )
    return root


def test_holdout_and_training_never_share_a_pristine_image(stages):
    """Pretraining holds out whole pristine images: 5 % of them, at least one; together the two parts are every
    row."""
    data = SaqtTraining(open_saqt(str(stages / "mat" / "labels")), seed=3)
    train, held = data.index, data.held_out()
    train_ids = {train.pristine_id(k) for k in range(len(train))}
    held_ids = {held.pristine_id(k) for k in range(len(held))}
    assert len(held_ids) == 1 and not train_ids & held_ids and len(train_ids | held_ids) == 5
    assert (len(train), len(held)) == (24, 6)
    rows = pq.read_table(stages / "mat" / "labels" / "saqt-iqa").to_pylist()
    expected = {r["image_id"]: r["score"] for r in rows}  # every row, with the score its label shard gives it
    assert {
        **{train.image_id(k): train.score(k) for k in range(24)},
        **{held.image_id(k): held.score(k) for k in range(6)},
    } == expected


def test_epoch_order_is_a_seeded_permutation():
    a, b, c = epoch_order(1000, 7, 0), epoch_order(1000, 7, 0), epoch_order(1000, 7, 1)
    assert sorted(a) == list(range(1000)) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, epoch_order(1000, 8, 0)) and not np.array_equal(a, np.arange(1000))


@pytest.mark.parametrize(("n", "world", "batch"), [(1000, 1, 32), (1000, 2, 16), (1001, 3, 7), (10, 4, 8)])
def test_ranks_share_the_epoch_disjointly_in_equal_numbers_of_batches(n, world, batch):
    shares = [rank_batches(n, 5, 2, rank, world, batch) for rank in range(world)]
    assert len({len(s) for s in shares}) == 1  # every rank steps the same number of times
    seen = np.concatenate([b for s in shares for b in s])
    assert len(seen) == len(set(seen.tolist())) and n - len(seen) < world  # disjoint, and all but < world rows
    assert all(len(b) <= batch for s in shares for b in s)
    if world == 1:
        assert np.array_equal(seen, epoch_order(n, 5, 2))
    global_batches = [np.concatenate([s[i] for s in shares]) for i in range(len(shares[0]))]
    assert np.array_equal(np.concatenate(global_batches), epoch_order(n, 5, 2)[: len(seen)])


class _WhoReads(SaqtTraining):
    """Returns each row's image id and the loader worker that read it, instead of pixels."""

    def __getitems__(self, indices):
        return [(image, get_worker_info().id) for image in self.image_ids(indices)]


def test_workers_and_ranks_read_disjoint_batches_covering_the_epoch(stages):
    data = _WhoReads(open_saqt(str(stages / "mat" / "labels")), seed=3)
    config = TrainConfig(batch_size=4, loader_workers=2, seed=3)
    everything = set(data.image_ids(range(len(data))))
    read = []
    for rank in range(2):
        batches = list(make_loader(data, config, epoch=1, rank=rank, world=2))
        assert [list(ids) for ids, _ in batches] == [data.image_ids(b) for b in data.batch_sampler(1, rank, 2, 2)]
        assert all(len(set(w.tolist())) == 1 for _, w in batches)  # a batch comes whole from one worker
        assert {int(w[0]) for _, w in batches} == {0, 1}
        read += [i for ids, _ in batches for i in ids]
    assert len(read) == len(set(read)) == len(everything) and set(read) == everything


def test_recipes_render_the_materialised_pixels_bit_for_bit(stages):
    built, rendered = (SaqtTraining(open_saqt(str(stages / k / "labels")), seed=0).index for k in ("mat", "rec"))
    assert "offset" in built.columns and "seed" in rendered.columns and "offset" not in rendered.columns
    stored = {r["image_id"]: r["image"] for r in pq.read_table(stages / "mat" / "build" / "distorted").to_pylist()}
    assert len(rendered) == len(built) == 24
    for k in range(len(rendered)):
        image = rendered.image_id(k)
        assert np.array_equal(rendered.pixels(k), decode_image(stored[image]))
        assert np.array_equal(
            built.pixels(list(map(built.image_id, range(24))).index(image)), decode_image(stored[image])
        )


def test_plan_only_is_the_order_the_trainer_consumes(stages, tmp_path, monkeypatch):
    labels = str(stages / "rec" / "labels")  # recipe-only: the loader renders every image
    plan = runner.invoke(
        app,
        [
            "pretrain",
            "--data",
            labels,
            "--out",
            str(tmp_path / "plan"),
            "--batch-size",
            "4",
            "--epochs",
            "2",
            "--plan-only",
            "8",
            "--seed",
            "3",
        ],
    )
    assert plan.exit_code == 0, plan.output
    with open(tmp_path / "plan" / "batches.csv") as f:
        planned = list(csv.DictReader(f))
    assert not (tmp_path / "plan" / "last.pt").exists() and {r["rank"] for r in planned} == {"0"}
    assert [int(r["batch"]) for r in planned] == [b for b in range(8) for _ in range(4)]
    seen = []
    step = glint.train.train_step
    monkeypatch.setattr(
        glint.train, "train_step", lambda net, x, y, *a: (seen.append(x.clone()), step(net, x, y, *a))[1]
    )
    args = [
        "pretrain",
        "--data",
        labels,
        "--out",
        str(tmp_path / "run"),
        "--batch-size",
        "4",
        "--seed",
        "3",
        "--max-steps",
        "8",
        "--epochs",
        "2",
        "--loader-workers",
        "2",
        *SMOKE,
    ]
    trained = runner.invoke(app, args)
    assert trained.exit_code == 0, trained.output
    data = SaqtTraining(open_saqt(labels), seed=3)
    index = {image: i for i, image in enumerate(data.image_ids(range(len(data))))}
    per_epoch = len(data.batch_sampler(0, 0, 1, 4))
    assert len(seen) == 8 and per_epoch == 6  # 24 training rows (one of 5 photos held out): epoch 2 is read too
    for b, x in enumerate(seen):
        data.set_epoch(b // per_epoch)
        ids = [r["image_id"] for r in planned if int(r["batch"]) == b]
        expected = torch.stack([v for v, _ in data.__getitems__([index[i] for i in ids])])
        assert torch.equal(x, expected)


class HubStandIn(MemoryFileSystem):
    """Stands in for the Hugging Face Hub's ``hf://`` file system (huggingface_hub's HfFileSystem), which cannot
    reach the Hub here: an in-memory store under the same protocol and paths (``hf://datasets/ORG/NAME/...``)."""

    protocol = ("hf",)
    store: dict = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix("hf://"))


@pytest.mark.parametrize("form", ["folder", "data-folder", "memory", "file-url", "hub-id"])
def test_every_form_of_a_published_set_trains(stages, tmp_path, monkeypatch, form):
    published = stages / "pub"
    memory = fsspec.filesystem("memory")
    if form == "memory":
        memory.put(str(published), "/sets/saqt", recursive=True)
    if form == "hub-id":
        monkeypatch.setitem(_registry, "hf", HubStandIn)
        HubStandIn().put(str(published), "/datasets/lab/saqt-iqa-tiny", recursive=True)
    data = {
        "folder": str(published),
        "data-folder": str(published / "data"),
        "memory": "memory://sets/saqt",
        "file-url": published.as_uri(),
        "hub-id": "lab/saqt-iqa-tiny",
    }[form]
    try:
        result = runner.invoke(
            app,
            [
                "pretrain",
                "--data",
                data,
                "--out",
                str(tmp_path / "run"),
                "--batch-size",
                "2",
                "--max-steps",
                "2",
                "--epochs",
                "1",
                "--loader-workers",
                "0",
                *SMOKE,
            ],
        )
    finally:
        memory.rm("/sets", recursive=True) if memory.exists("/sets") else None
        HubStandIn.store.clear()
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == 2 and np.isfinite(history[-1]["train_loss"])
    if form != "data-folder":  # a published set holds out its validation split: 2 of 5 photos, 2 images scored
        # the scale is the card's (the labels were made with the default minmax:0:9), so predictions can name it
        assert results["provenance"]["pretrain"] == {"published": data, "score_scale": "minmax:0:9"}
        assert history[-1]["val"]["images"] == 2
        assert len(SaqtTraining(open_saqt(str(published)))) == 18


def test_a_damaged_published_set_or_missing_build_is_refused_in_one_line(stages, tmp_path):
    damaged = tmp_path / "pub"
    shutil.copytree(stages / "pub", damaged)
    shard = next((damaged / "data").glob("train-*.parquet"))
    damaged_bytes = bytearray(shard.read_bytes())
    damaged_bytes[len(damaged_bytes) // 2] ^= 0xFF
    shard.write_bytes(bytes(damaged_bytes))
    with pytest.raises(DatasetError, match="SHA-256 mismatch"):
        open_saqt(str(damaged))
    result = runner.invoke(app, ["pretrain", "--data", str(damaged), "--out", str(tmp_path / "run"), *SMOKE])
    assert result.exit_code == 2 and "SHA-256 mismatch" in result.output and "Traceback" not in result.output
    labels = tmp_path / "labels"
    shutil.copytree(stages / "mat" / "labels", labels)
    manifest = json.loads((labels / "label.json").read_text())
    manifest["inputs"]["build"]["root"] = str(tmp_path / "gone")
    (labels / "label.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="its build .* is not here"):
        open_saqt(str(labels))
    (labels / "label.json").write_text(json.dumps({**manifest, "complete": False}))  # a killed `saqt label`
    result = runner.invoke(app, ["pretrain", "--data", str(labels), "--out", str(tmp_path / "run2"), *SMOKE])
    assert result.exit_code == 2 and "is an unfinished labelling run" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run2").exists()
    published = tmp_path / "pub2"
    shutil.copytree(stages / "pub", published)
    result = runner.invoke(app, ["pretrain", "--data", str(published), "--out", str(published / "data"), *SMOKE])
    assert result.exit_code == 2 and "is inside --data" in result.output, result.output


def _copy_labelled(stages: Path, kind: str, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of a build and its labels, the labels pointing at the copied build."""
    build, labels = tmp_path / "build", tmp_path / "labels"
    shutil.copytree(stages / kind / "build", build)
    shutil.copytree(stages / kind / "labels", labels)
    manifest = json.loads((labels / "label.json").read_text())
    manifest["inputs"]["build"]["root"] = str(build)
    (labels / "label.json").write_text(json.dumps(manifest))
    return build, labels


def _flip_inside_image(build: Path, table: str, key: str) -> Path:
    """Change one byte in the middle of the stored PNG of the ``table`` row whose image_id is ``key``, found by its
    bytes (independently of the ranges files); returns its shard."""
    for shard in sorted((build / table).glob("*.parquet")):
        rows = pq.read_table(shard, columns=["image_id", "image"]).to_pylist()
        for record in rows:
            if record["image_id"] == key:
                data = bytearray(shard.read_bytes())
                at = data.find(record["image"])
                assert at > 0 and data.find(record["image"], at + 1) < 0
                data[at + len(record["image"]) // 2] ^= 0x01
                shard.write_bytes(bytes(data))
                return shard
    raise AssertionError(f"no {table} row {key}")


@pytest.mark.parametrize(("kind", "table"), [("mat", "distorted"), ("rec", "pristine")])
def test_a_changed_byte_in_a_stored_png_is_refused_when_read_naming_the_row(stages, tmp_path, kind, table):
    """One byte changed inside one stored PNG (a distorted image, or a pristine image that recipes render from), size
    kept: the start reads no shard whole and accepts the set; reading that image is refused in one line naming the
    row and the shard, in a loader worker too; every other image still reads."""
    build, labels = _copy_labelled(stages, kind, tmp_path)
    first = SaqtTraining(open_saqt(str(labels)), seed=3)
    k = next(iter(first.batch_sampler(0, 0, 1, 4)))[0]  # the first row the run below reads
    key = first.index.image_id(k) if table == "distorted" else first.index.pristine_id(k)
    shard = _flip_inside_image(build, table, key)
    index = SaqtTraining(open_saqt(str(labels)), seed=3).index
    expected = f"{key}: its bytes in {shard} (offset "
    with pytest.raises(SaqtError, match=re.escape(expected)):
        index.pixels(k)
    ids = [index.image_id(j) if table == "distorted" else index.pristine_id(j) for j in range(len(index))]
    assert len(index) == 24 and all(index.pixels(j).shape == (64, 96, 3) for j in range(24) if ids[j] != key)
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(labels), "--out", str(run), "--batch-size", "4", "--epochs", "1"]
    result = runner.invoke(app, [*args, "--max-steps", "1", "--loader-workers", "2", "--seed", "3", *SMOKE])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and lines[-1].startswith(f"glint pretrain: {expected}"), result.output
    assert "Traceback" not in result.output and sum("glint pretrain:" in line for line in lines) == 1
    assert not (run / "best.pt").exists() and not (run / "last.pt").exists()


def _without_row_index(labels: Path) -> None:
    """Make ``labels`` a label folder of 0.3.0, which had no row index."""
    manifest = json.loads((labels / "label.json").read_text())
    manifest["files"] = {}
    (labels / "label.json").write_text(json.dumps(manifest))
    shutil.rmtree(labels / "index")


def test_a_changed_row_index_is_refused_at_the_start_and_the_shards_are_read_only_there(stages, tmp_path):
    """The row index saqt label wrote vouches for every row (its score, cell and byte range), so it is checked
    against label.json's SHA-256 when the set is opened; the shards and ranges files it was made from are not read
    again (their sizes are checked), so a changed byte in them changes nothing training reads."""
    build, labels = _copy_labelled(stages, "mat", tmp_path)
    listed = json.loads((labels / "label.json").read_text())["files"]
    assert {"index/rows/score.bin", "index/rows/sha256.bin", "index/names/name.bin"} <= set(listed)
    before = SaqtTraining(open_saqt(str(labels)), seed=3).index
    for path in (build / "ranges" / "distorted" / "part-00000.npy", next((labels / "saqt-iqa").glob("*.parquet"))):
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01
        path.write_bytes(bytes(data))
    after = SaqtTraining(open_saqt(str(labels)), seed=3).index
    assert [after.score(k) for k in range(24)] == [before.score(k) for k in range(24)]
    score = labels / "index" / "rows" / "score.bin"
    data = bytearray(score.read_bytes())
    data[3] ^= 0x01
    score.write_bytes(bytes(data))
    expected = f"{labels}: index/rows/score.bin: SHA-256 differs from label.json's; the label output changed"
    with pytest.raises(SaqtError, match=re.escape(expected)):
        open_saqt(str(labels))


def test_a_changed_ranges_file_is_refused_at_the_start_and_a_build_without_ranges_is_hashed_whole(stages, tmp_path):
    """A label folder without a row index (0.3.0) reads the build's ranges files, which vouch for every image, so
    they are checked against build.json when the set is opened. A build written before ranges were recorded is read
    as before: every file's SHA-256 checked at the start."""
    build, labels = _copy_labelled(stages, "mat", tmp_path)
    _without_row_index(labels)
    ranges = build / "ranges" / "distorted" / "part-00000.npy"
    data = bytearray(ranges.read_bytes())
    data[-1] ^= 0x01
    ranges.write_bytes(bytes(data))
    expected = f"{build}: ranges/distorted/part-00000.npy: SHA-256 differs from build.json's"
    with pytest.raises(SaqtError, match=re.escape(expected)):
        open_saqt(str(labels))
    shutil.rmtree(build / "ranges")  # an earlier build: no ranges recorded, its digest recorded without them
    manifest = json.loads((build / "build.json").read_text())
    for unit in manifest["done"].values():
        unit["files"] = {k: v for k, v in unit["files"].items() if not k.endswith("-ranges")}
    (build / "build.json").write_text(json.dumps(manifest))
    label = json.loads((labels / "label.json").read_text())
    label["inputs"]["build"]["digest"] = BuildReader(build, checksums=False).stage.digest()
    (labels / "label.json").write_text(json.dumps(label))
    files = open_saqt(str(labels))
    old = SaqtTraining(files, seed=3).index
    assert files.ranges is None and "offset" not in old.columns and len(old) == 24
    stored = {r["image_id"]: r["image"] for r in pq.read_table(build / "distorted").to_pylist()}
    assert all(np.array_equal(old.pixels(k), decode_image(stored[old.image_id(k)])) for k in range(24))
    _flip_inside_image(build, "distorted", old.image_id(0))
    with pytest.raises(SaqtError, match=re.escape("SHA-256 differs from build.json's; the build output changed")):
        open_saqt(str(labels))


def _with_matches(stages: Path, folder: Path, matched: dict[int, list[str]] | None) -> list[str]:
    """The published set's shards copied as a folder of shards, the ``neighbours`` of the k-th pristine image (sorted
    ids) replaced by ``matched[k]`` (the column dropped when ``matched`` is None); returns the sorted pristine ids."""
    folder.mkdir()
    shards = sorted((stages / "pub" / "data").glob("*.parquet"))
    ids = sorted({p for s in shards for p in pq.read_table(s, columns=["pristine_id"]).column(0).to_pylist()})
    for shard in shards:
        table = pq.read_table(shard)
        at = table.schema.get_field_index("neighbours")
        if matched is None:
            table = table.remove_column(at)
        else:
            lists = [matched[ids.index(p)] for p in table.column("pristine_id").to_pylist()]
            table = table.set_column(at, "neighbours", pa.array(lists, pa.list_(pa.string())))
        pq.write_table(table, folder / shard.name)
    return ids


def test_released_pretraining_holds_out_the_images_matched_to_i13_and_i76(stages, tmp_path):
    """The release (train_distributed.py, SAQTIQADataset) holds out the SAQT images whose pristine image the
    similarity CSV matches to I13.png or I76.png, its val references: here the first of the image's neighbours,
    compared by name stem. A second-best match, or I130, is not I13."""
    matched = {0: ["I13.png", "I02.png"], 1: ["I76"], 2: ["I31.png"], 3: ["I130.png"], 4: ["I07.png", "I13.png"]}
    ids = _with_matches(stages, tmp_path / "set", matched)
    rows = [r for s in sorted((tmp_path / "set").glob("*.parquet")) for r in pq.read_table(s).to_pylist()]
    expected_held = {r["image_id"] for r in rows if r["pristine_id"] in (ids[0], ids[1])}  # 2 images x 6 cells
    assert len(ids) == 5 and len(expected_held) == 12
    data = SaqtTraining(open_saqt(str(tmp_path / "set")), seed=3, released=True)
    held = data.held_out()
    assert {held.image_id(k) for k in range(len(held))} == expected_held and len(held) == 12
    assert {data.index.image_id(k) for k in range(len(data))} == {r["image_id"] for r in rows} - expected_held
    honest = SaqtTraining(open_saqt(str(tmp_path / "set")), seed=3)  # the default keeps its own hold-out
    assert len({honest.held_out().pristine_id(k) for k in range(len(honest.held_out()))}) == 1


def test_released_pretraining_refuses_a_set_without_matches_in_one_line(stages, tmp_path):
    _with_matches(stages, tmp_path / "bare", None)
    with pytest.raises(
        DatasetError, match="records no matched references .no neighbours.: --protocol released holds out .* I13, I76"
    ):
        SaqtTraining(open_saqt(str(tmp_path / "bare")), released=True)
    assert len(SaqtTraining(open_saqt(str(tmp_path / "bare")))) == 24  # the honest default needs no matches
    args = ["pretrain", "--data", str(tmp_path / "bare"), "--out", str(tmp_path / "run"), "--protocol", "released"]
    result = runner.invoke(app, [*args, *SMOKE])
    assert (
        result.exit_code == 2 and "records no matched references" in result.output and "Traceback" not in result.output
    )
    _with_matches(stages, tmp_path / "other", dict.fromkeys(range(5), ["I31.png"]))
    with pytest.raises(DatasetError, match="no row of .* is: label with the KADID-10k bank"):
        SaqtTraining(open_saqt(str(tmp_path / "other")), released=True)


def test_saqt_label_writes_a_row_index_of_its_shards_and_replaces_only_its_own(stages, tmp_path):
    """The row index saqt label writes holds each shard row's score, cell, pristine image and the byte range of its
    PNG in the build (checked here against the shards read with pyarrow); a rerun and --overwrite replace it, and a
    link planted where it goes is refused, nothing written through it."""
    config = LabelConfig(build=str(stages / "mat" / "build"), bank=str(stages / "bank"), rule="mean")
    out = tmp_path / "labels"
    run_label(config, out, RunContext(progress=False))
    rows = open_columns(out / "index" / "rows")
    names = open_columns(out / "index" / "names")["name"]
    shards = sorted((out / "saqt-iqa").glob("*.parquet"))
    table = pa.concat_tables(pq.read_table(s, columns=["pristine_id", "score", "dist_type", "level"]) for s in shards)
    assert list(rows["score"]) == table.column("score").to_pylist() and len(names) == 5
    assert [names[p].decode() for p in rows["pristine"]] == table.column("pristine_id").to_pylist()
    assert list(rows["dist_type"]) == table.column("dist_type").to_pylist()
    images = [
        r
        for s in sorted((stages / "mat" / "build" / "distorted").glob("*.parquet"))
        for r in pq.read_table(s).to_pylist()
    ]
    built = [s.read_bytes() for s in sorted((stages / "mat" / "build" / "distorted").glob("*.parquet"))]
    for k, record in enumerate(images):
        f, at, n = int(rows["file"][k]), int(rows["offset"][k]), int(rows["length"][k])
        assert built[f][at : at + n] == record["image"]
        assert bytes(rows["sha256"][k]) == hashlib.sha256(record["image"]).digest()
    listed = json.loads((out / "label.json").read_text())["files"]
    on_disk = {p.relative_to(out).as_posix() for p in (out / "index").rglob("*") if p.is_file()}
    assert set(listed) == on_disk
    inode = (out / "index" / "rows" / "score.bin").stat().st_ino
    run_label(config, out, RunContext(progress=False))  # a rerun of the finished run keeps an intact index
    assert (out / "index" / "rows" / "score.bin").stat().st_ino == inode
    data = bytearray((out / "index" / "rows" / "score.bin").read_bytes())
    data[0] ^= 1
    (out / "index" / "rows" / "score.bin").write_bytes(bytes(data))
    run_label(config, out, RunContext(progress=False))  # ... and writes a changed one again
    assert json.loads((out / "label.json").read_text())["files"] == listed
    run_label(config, out, RunContext(progress=False, overwrite=True))
    assert json.loads((out / "label.json").read_text())["files"] == listed  # the same bytes, listed the same
    assert {p.relative_to(out).as_posix() for p in (out / "index").rglob("*") if p.is_file()} == on_disk
    assert len(SaqtTraining(open_saqt(str(out)), seed=3)) == 24
    elsewhere, planted = tmp_path / "elsewhere", tmp_path / "planted"
    elsewhere.mkdir()
    planted.mkdir()
    (planted / "index").symlink_to(elsewhere)
    with pytest.raises(SaqtError, match="index is a symbolic link that saqt did not write"):
        run_label(config, planted, RunContext(progress=False))
    assert not any(elsewhere.iterdir()) and not (planted / "saqt-iqa").exists()  # refused before any work
    foreign = tmp_path / "foreign"
    (foreign / "index" / "rows").mkdir(parents=True)
    (foreign / "index" / "rows" / "notes.txt").write_text("mine")
    with pytest.raises(SaqtError, match="notes.txt is a file that saqt did not write"):
        run_label(config, foreign, RunContext(progress=False))
    assert (foreign / "index" / "rows" / "notes.txt").read_text() == "mine" and not (foreign / "saqt-iqa").exists()


def test_released_pretraining_reads_reference_names_in_any_script(stages, tmp_path):
    """Reference names are UTF-8 text (a csv bank's own names): the index keeps them whole."""
    ids = _with_matches(
        stages, tmp_path / "set", {0: ["Î13.png"], 1: ["I13.png"], 2: ["é.png"], 3: ["I76"], 4: ["雪.png"]}
    )
    held = SaqtTraining(open_saqt(str(tmp_path / "set")), seed=3, released=True).held_out()
    assert {held.pristine_id(k) for k in range(len(held))} == {ids[1], ids[3]}

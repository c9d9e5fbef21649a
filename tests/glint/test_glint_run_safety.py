"""Issue 21, the glint cases: a finished run folder is never replaced without --resume or --overwrite (which removes
only a run's files); NaN losses, NaN weights and non-finite training scores stop in one line; every command's output
lies apart from its inputs, URLs resolved; checkpoint records, options and dataset files checked before any work;
checkpoint text printed escaped. One tiny finished run (EfficientNet-Lite0, random weights, one step) serves all."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import glint
from glint.checkpoint import CheckpointError, checkpoint_payload, random_model, read_checkpoint
from glint.data import DatasetError, Sample, check_image_files
from glint.model import GlintConfig
from glint.outputs import RUN_FILES, clear_run, local_path, run_files, run_start
from glint.runlog import RunLog
from glint.scale import printable, recorded_scale
from glint.train import TrainConfig, claim_run_folder, resume_checkpoint, run_results, select
from pipelines.glint_cli import app
from saqt.build.sources import sample_paths
from saqt.core.errors import ConfigError
from saqt.core.shards import sha256_file

runner = CliRunner()
TINY = ["--local-backbone", "efficientnet_lite0", "--random-init", "--crops", "1", "--loader-workers", "0"]
TINY += ["--device", "cpu"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Six small real photos with scores, as a CSV dataset (4 to train on, 1 to validate, 1 to test)."""
    root = tmp_path_factory.mktemp("dataset")
    rows = []
    for i, path in enumerate(sample_paths()[:3]):
        img = Image.open(path).convert("RGB").resize((64, 48))
        for j, view in enumerate((img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))):
            view.save(root / f"{path.stem}_{j}.png")
            rows.append(f"{path.stem}_{j}.png,{10 + 9 * i + 3 * j}")
    (root / "scores.csv").write_text("path,score\n" + "\n".join(rows) + "\n")
    return root


def finetune_args(dataset: Path, out: Path, *extra: str, root: Path | None = None) -> list[str]:
    """A one-step `glint finetune` of the CSV dataset (at ``root``, a copy of it, when given)."""
    root = root or dataset
    data = ["--dataset", "csv", "--csv", str(root / "scores.csv"), "--root", str(root)]
    steps = ["--epochs", "1", "--max-steps", "1", "--batch-size", "2", "--lr", "1e-4"]
    return ["finetune", *data, *steps, *TINY, "--out", str(out), *extra]


@pytest.fixture(scope="module")
def finished(dataset, tmp_path_factory) -> Path:
    """A finished run folder (one step, one epoch) of the dataset."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = runner.invoke(app, finetune_args(dataset, out))
    assert result.exit_code == 0, result.output
    return out


def shard_folder(folder: Path, scores: list, drop: tuple[str, ...] = ()) -> Path:
    """A folder of one saqt-iqa shard (the columns pretraining reads, less ``drop``) with these scores."""
    folder.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    n = len(scores)
    columns = {
        "image_id": [f"p{i}_01_01" for i in range(n)],
        "pristine_id": [f"p{i}" for i in range(n)],
        "dist_type": [1] * n,
        "level": [1] * n,
        "score": scores,
        "image": [png.getvalue()] * n,
    }
    pq.write_table(pa.table({k: v for k, v in columns.items() if k not in drop}), folder / "part-00000.parquet")
    return folder


def pretrain_args(data: str | Path, out: Path, *extra: str) -> list[str]:
    steps = ["--epochs", "1", "--max-steps", "1", "--batch-size", "2", "--holdout-images", "1"]
    return ["pretrain", "--data", str(data), "--out", str(out), *steps, *TINY, *extra]


def refused(result, fragment: str) -> str:
    """The command ended with exit 2 on one line ``glint <command>: ...`` holding ``fragment`` (after any warnings
    and progress), never a traceback; that line."""
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (result.exit_code, result.output)
    said = [line for line in result.output.splitlines() if line.startswith("glint ")]
    assert len(said) == 1 and fragment in said[0] and "Traceback" not in result.output, result.output
    return said[0]


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1: a finished run folder: refused, resumed or overwritten ------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_on_a_finished_run_folder_is_refused_and_changes_nothing(dataset, finished, tmp_path):
    before = tree(finished)
    assert {"run.json", "last.pt", "best.pt", "metrics.jsonl", "metrics.csv", "results.json"} <= set(before)
    line = refused(runner.invoke(app, finetune_args(dataset, finished)), "holds an earlier glint run")
    assert "--resume to continue it, --overwrite to replace it" in line
    refused(runner.invoke(app, pretrain_args(shard_folder(tmp_path / "s", [1.0, 2.0]), finished)), "earlier glint run")
    both = runner.invoke(app, finetune_args(dataset, finished, "--resume", "--overwrite"))
    refused(both, "--resume continues the run in --out and --overwrite replaces it")
    assert tree(finished) == before


@pytest.mark.slow
def test_how_a_run_starts_in_its_folder(finished, tmp_path, capsys):
    """resume needs a last.pt where a run's files are; with nothing there it starts, and says so."""
    assert run_start(tmp_path / "new", resume=True, overwrite=False) == "fresh"
    claim_run_folder(tmp_path, resume=True, overwrite=False, log=RunLog(tmp_path, progress=False))
    assert capsys.readouterr().err == f"--resume: {tmp_path} holds no run yet: starting from the beginning\n"
    assert run_start(tmp_path / "new", resume=False, overwrite=True) == "fresh"
    assert run_start(finished, resume=True, overwrite=False) == "resume"
    assert run_start(finished, resume=False, overwrite=True) == "overwrite"
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "run.json").write_text("{}")  # a run killed before its first epoch ended
    with pytest.raises(ConfigError, match=r"holds an earlier run's files \(run.json\) but no last.pt to continue"):
        run_start(tmp_path / "killed", resume=True, overwrite=False)


@pytest.mark.slow
def test_overwrite_removes_only_the_files_a_run_writes(finished, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    (folder / "notes.txt").write_text("mine")
    (folder / "tensorboard").mkdir()
    (folder / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"old")
    (folder / "tensorboard" / "mine.txt").write_text("mine")
    outside = tmp_path / "victim.json"
    outside.write_text("precious")
    (folder / "results.json").unlink()
    (folder / "results.json").symlink_to(outside)  # a link in place of a run file goes, not what it points to
    assert {p.name for p in run_files(folder)} == {*RUN_FILES, "events.out.tfevents.1.host"} - {
        "summary.json",
        "rounds.csv",
    }
    clear_run(folder)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "notes.txt",
        "tensorboard",
        "tensorboard/mine.txt",
    ]
    assert outside.read_text() == "precious" and run_start(folder, resume=False, overwrite=False) == "fresh"


@pytest.mark.slow
def test_resume_from_a_last_pt_without_train_config_is_one_line(dataset, finished, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    ckpt = torch.load(finished / "last.pt", weights_only=True)
    del ckpt["train_config"]
    torch.save(ckpt, out / "last.pt")
    result = runner.invoke(app, finetune_args(dataset, out, "--resume"))
    refused(result, f"{out / 'last.pt'} lacks train_config: not a glint last.pt that can be resumed")


# What each file of a run folder becomes when tampered with: a checkpoint that cannot be read is refused in one line
# (last.pt by --resume, best.pt by whatever loads it); the others are written again by the next run, from last.pt,
# whose history is the truth. summary.json and rounds.csv (several rounds only) are written whole at the end of
# each such run.
TAMPERED = {
    "last.pt": "refused",
    "best.pt": "refused",
    "run.json": "rewritten",
    "metrics.jsonl": "rewritten",
    "metrics.csv": "rewritten",
    "results.json": "rewritten",
    "summary.json": "rewritten",
    "rounds.csv": "rewritten",
}


@pytest.mark.slow
def test_every_file_a_run_writes_is_refused_or_rewritten_when_tampered(dataset, finished, tmp_path):
    assert set(TAMPERED) == set(RUN_FILES) and set(tree(finished)) <= set(RUN_FILES)  # a new file needs its fate
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    rewritten = [name for name, fate in TAMPERED.items() if fate == "rewritten" and (out / name).exists()]
    assert rewritten == ["run.json", "metrics.jsonl", "metrics.csv", "results.json"]
    for name in rewritten:
        (out / name).write_text("tampered")
    result = runner.invoke(app, finetune_args(dataset, out, "--resume"))
    assert result.exit_code == 0, result.output
    before, after = tree(finished), tree(out)
    assert [after[n] == before[n] for n in ("run.json", "metrics.jsonl", "metrics.csv")] == [True] * 3
    results = {p: json.loads((p / "results.json").read_text()) for p in (finished, out)}
    assert results[out]["metrics"] == results[finished]["metrics"] and results[out]["selected_epoch"] == 1
    for name in ("last.pt", "best.pt"):
        data = (out / name).read_bytes()
        (out / name).write_bytes(data[: len(data) // 2])
    said = "cannot be read: truncated, damaged or not a PyTorch checkpoint"  # the commands' one line (see above)
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {out / 'last.pt'} {said}")):
        resume_checkpoint(out / "last.pt")  # what --resume reads first
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {out / 'best.pt'} {said}")):
        glint.load_model(out / "best.pt")  # what evaluate, predict and --init read


# --- 2: NaN losses, NaN weights, non-finite scores -------------------------------------------------------------------


@pytest.mark.slow
def test_overwrite_replaces_a_finished_run_and_a_nan_loss_stops_it_naming_the_step(dataset, finished, tmp_path):
    """Scores of 1e300 are finite numbers, but not in float32: the first step's L1 loss is inf. The run was asked to
    replace a finished one: its files are gone (the user's stay), and no checkpoint is written from the NaN step."""
    huge = tmp_path / "huge"
    shutil.copytree(dataset, huge)
    table = (huge / "scores.csv").read_text().splitlines()
    (huge / "scores.csv").write_text("\n".join([table[0], *(f"{r.split(',')[0]},1e300" for r in table[1:])]) + "\n")
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(app, finetune_args(dataset, out, "--overwrite", root=huge))
    refused(result, "step 1 (epoch 1): the loss is inf; the run stops without a checkpoint from it")
    assert not any((out / name).exists() for name in ("best.pt", "last.pt", "metrics.jsonl", "results.json"))
    assert (out / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A random model saved as the toolkit saves one, with a terminal escape in its score scale; and the same with a
    NaN in one tensor."""
    folder = tmp_path_factory.mktemp("checkpoints")
    with pytest.warns(UserWarning):
        model = random_model(0)
    payload = checkpoint_payload(model, provenance={"score_scale": "\x1b[31mred\x1b[0m"}, train_config={"amp": False})
    torch.save(payload, folder / "ansi.pt")
    payload["state_dict"]["quality_head.layers.3.bias"] = torch.tensor([math.nan])
    torch.save(payload, folder / "nan.pt")
    return {"ansi": folder / "ansi.pt", "nan": folder / "nan.pt"}


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("image") / "photo.png"
    Image.open(sample_paths()[0]).convert("RGB").resize((240, 230)).save(path)
    return path


@pytest.mark.slow
def test_a_checkpoint_with_nan_weights_scores_nothing(checkpoints, image):
    with pytest.raises(CheckpointError, match="tensor quality_head.layers.3.bias holds NaN or infinite values"):
        glint.load_model(checkpoints["nan"])  # so never .score(...)
    result = runner.invoke(app, ["predict", "--checkpoint", str(checkpoints["nan"]), str(image), "--crops", "1"])
    refused(result, "holds NaN or infinite values (the run that saved it diverged): it cannot score")


@pytest.mark.parametrize(
    ("scores", "drop", "message"),
    [
        ([1.0, math.nan, 2.0], (), "part-00000.parquet: 1 scores are NaN or infinite (row 1, p1_01_01)"),
        ([1.0, 2.0, math.inf], (), "scores are NaN or infinite (row 2, p2_01_01)"),
        (["1.0", "2.0", "3.0"], (), "part-00000.parquet: scores are string, not numbers"),
        ([1.0, 2.0, 3.0], ("score",), "part-00000.parquet has no score column: not a saqt-iqa shard"),
        ([1.0, 2.0, 3.0], ("image",), "part-00000.parquet has no image column: not a saqt-iqa shard"),
    ],
)
def test_pretraining_shards_need_finite_scores_and_their_columns(tmp_path, scores, drop, message):
    data = shard_folder(tmp_path / "shards", scores, drop)
    result = runner.invoke(app, pretrain_args(data, tmp_path / "run"))
    refused(result, message)
    assert not run_files(tmp_path / "run") and not list(tmp_path.rglob(".building-*"))  # no index left half-built


# --- 3: outputs apart from inputs, URLs resolved ---------------------------------------------------------------------


def test_local_urls_name_their_paths():
    assert local_path("file:///x/pub") == Path("/x/pub") and local_path("local:///x/pub") == Path("/x/pub")
    assert local_path("rel/pub") == Path("rel/pub") and local_path(None) is None
    assert local_path("memory://x/pub") is None and local_path("s3://bucket/pub") is None


@pytest.mark.parametrize("scheme", ["file", "local"])
def test_pretrain_out_inside_its_data_given_as_a_url_is_refused(tmp_path, scheme):
    data = shard_folder(tmp_path / "pub", [1.0, 2.0])
    url = f"{scheme}://{data}"
    refused(runner.invoke(app, pretrain_args(url, data / "data")), f"--out {data / 'data'} is inside --data {data}")
    assert sorted(p.name for p in data.iterdir()) == ["part-00000.parquet"]


@pytest.mark.parametrize("how", ["is", "is inside", "contains"])
def test_finetune_out_apart_from_its_root(dataset, how):
    out = {"is": dataset, "is inside": dataset / "run", "contains": dataset.parent}[how]
    before = tree(dataset)
    refused(runner.invoke(app, finetune_args(dataset, out)), f"--out {out} {how} --root {dataset}")
    assert tree(dataset) == before


@pytest.mark.slow
def test_finetune_evaluate_and_predict_write_apart_from_checkpoints_and_images(dataset, finished, image):
    refused(
        runner.invoke(app, finetune_args(dataset, finished, "--init", str(finished / "best.pt"))),
        f"--out {finished} contains --init {finished / 'best.pt'}",
    )
    evaluate = ["evaluate", "--checkpoint", str(finished / "best.pt"), "--dataset", "csv", "--root", str(dataset)]
    refused(runner.invoke(app, [*evaluate, "--out", str(dataset / "m.json")]), "is inside --root")
    refused(runner.invoke(app, [*evaluate, "--out", str(finished / "best.pt")]), "is --checkpoint")
    before = sha256_file(image)
    predict = runner.invoke(app, ["predict", "--random-init", str(image), "--out", str(image)])
    refused(predict, f"--out {image} is IMAGES {image}")
    assert sha256_file(image) == before


# --- 4: checkpoint records -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"model_config": {"dropout": 5.0}}, "cannot build (dropout must be a number from 0 up to (not including) 1"),
        ({"model_config": {"dropout": "0.5"}}, "got '0.5'"),
        ({"model_config": {"cwsa": ["released"]}}, "--cwsa must be one of released, plain, got ['released']"),
        ({"model_config": {"width": 3}}, "cannot build (GlintConfig.__init__() got an unexpected keyword"),
        ({"model_config": [1]}, "model_config should be dict, is list"),
        ({"provenance": ["x"]}, "provenance should be dict, is list"),
        ({"provenance": {"score_scale": 3}}, "provenance score_scale should be str, is int"),
        ({"provenance": {"split": {"dataset": "csv"}}}, "provenance split label_file should be str, is missing"),
    ],
)
def test_malformed_checkpoint_records_are_one_line(tmp_path, entries, message):
    path = tmp_path / "c.pt"
    torch.save({"state_dict": {"vgfe.backbone.w": torch.zeros(1)}, **entries}, path)
    with pytest.raises(CheckpointError, match=f"^checkpoint {re.escape(str(path))}[: ].*{re.escape(message)}"):
        read_checkpoint(path)
    result = runner.invoke(app, ["predict", "--checkpoint", str(path), str(tmp_path)])
    refused(result, message)


def test_model_configurations_are_checked_in_one_place():
    for dropout in (5.0, -0.1, 1.0, "0.5", True, math.nan):
        with pytest.raises(ConfigError, match="dropout must be a number"):
            GlintConfig("efficientnet_lite0", dropout=dropout)
    assert GlintConfig("efficientnet_lite0", dropout=0).dropout == 0
    with pytest.raises(ConfigError, match="vit_weights must be a name or a file, got 3"):
        GlintConfig("efficientnet_lite0", vit_weights=3)


# --- 5: options, the selection note, checkpoint text printed escaped ------------------------------------------------


@pytest.mark.parametrize("lr", ["nan", "-1", "0", "inf"])
def test_lr_must_be_a_finite_number_above_0(tmp_path, lr):
    data = shard_folder(tmp_path / "shards", [1.0, 2.0])
    refused(runner.invoke(app, pretrain_args(data, tmp_path / "run", "--lr", lr)), "--lr must be a finite number")
    with pytest.raises(ConfigError, match="--lr must be a finite number above 0"):
        TrainConfig(lr=float(lr))


def test_holdout_images_at_least_0_and_without_validation_the_last_epoch_is_kept(tmp_path):
    data = shard_folder(tmp_path / "shards", [1.0, 2.0])
    result = runner.invoke(app, [*pretrain_args(data, tmp_path / "run"), "--holdout-images", "-1"])
    assert result.exit_code == 2 and "Invalid value for '--holdout-images'" in result.output, result.output
    state = {"best": None}
    assert select(state, {"epoch": 1, "train_loss": 1.0}, "val") and select(state, {"epoch": 2}, "val")
    assert state["best"] == {"epoch": 2, "score": None}
    state["history"] = [{"epoch": 1}, {"epoch": 2, "test": {"srocc": 0.5}}]
    timing = {"rate": 1.0, "time_s": {"training": 1.0, "evaluation": 2.0}}
    results = run_results(torch.nn.Linear(1, 1), state, TrainConfig(), "cpu", 1, timing, {})
    assert results["selected_epoch"] == 2
    assert results["selection_note"] == "the last epoch: no validation images to select on"


@pytest.mark.slow
def test_init_refuses_another_cwsa_than_its_checkpoints(dataset, finished, tmp_path):
    args = finetune_args(dataset, tmp_path / "run", "--init", str(finished / "best.pt"), "--cwsa", "plain")
    refused(
        runner.invoke(app, args), f"--cwsa plain: the --init checkpoint {finished / 'best.pt'} computes the released"
    )
    assert not run_files(tmp_path / "run")


@pytest.mark.slow
def test_checkpoint_text_is_printed_escaped(checkpoints, image):
    result = runner.invoke(app, ["predict", "--checkpoint", str(checkpoints["ansi"]), str(image), "--crops", "1"])
    assert result.exit_code == 0, result.output
    assert "scores on the scale: \\x1b[31mred\\x1b[0m" in result.output and "\x1b" not in result.output
    meta = {"provenance": {"pretrain": {"score_scale": "a\nb"}}}
    assert recorded_scale(meta) == "SAQT-IQA labels, a\\nb, higher is better"
    assert printable("é ok\x07\r\x9b") == "é ok\\x07\\r\\x9b"


# --- 6: every image of a finetuning set checked before training ------------------------------------------------------


def test_a_link_out_of_the_root_is_refused_before_training(dataset, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(dataset, root)
    first = sorted(root.glob("*.png"))[0]
    outside = tmp_path / "outside.png"
    first.rename(outside)
    first.symlink_to(outside)
    result = runner.invoke(app, finetune_args(dataset, tmp_path / "run", root=root))
    refused(result, f"image {first} of csv leads outside --root {root} (to {outside})")
    assert not (tmp_path / "run").exists()


def test_image_files_must_be_regular_files_inside_the_root(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "inner.png").symlink_to(tmp_path / "a.png")  # a link that stays inside is followed
    check_image_files([Sample(str(tmp_path / n), 1.0, n) for n in ("a.png", "inner.png")], tmp_path, "csv")
    for name in ("fifo.png", "dir.png"):
        with pytest.raises(DatasetError, match=f"image {tmp_path / name} of csv is not a regular file"):
            check_image_files([Sample(str(tmp_path / name), 1.0, name)], tmp_path, "csv")
    with pytest.raises(DatasetError, match="2 images of csv are missing, e.g. "):
        check_image_files([Sample(str(tmp_path / n), 1.0, n) for n in ("x.png", "y.png")], tmp_path, "csv")


# --- 7: an output file checked before scoring ------------------------------------------------------------------------


def test_predict_checks_its_output_can_be_written_before_scoring(tmp_path, image, monkeypatch):
    monkeypatch.setattr("glint.predict.score_files", lambda *a, **k: pytest.fail("scored before the check"))
    args = ["predict", "--random-init", str(image), "--crops", "1", "--out"]
    refused(runner.invoke(app, [*args, str(tmp_path / "gone" / "s.csv")]), f"its folder {tmp_path / 'gone'} does not")
    refused(runner.invoke(app, [*args, str(tmp_path)]), f"--out {tmp_path} is a folder: name a file")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root may write in it: access(2) answers as it would for another user
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and access(path, mode, **kw))
    refused(runner.invoke(app, [*args, str(locked / "s.csv")]), f"cannot be created: {locked} is not writable")


def test_a_folder_holding_only_a_multi_round_runs_rounds_csv_is_an_earlier_run(tmp_path):
    """rounds.csv is a run's file: a new run in its folder is refused, --overwrite removes it (a stale table of
    another run's rounds would otherwise sit beside the new run)."""
    (tmp_path / "rounds.csv").write_text("round,seed\n1,12345\n")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds an earlier glint run \(rounds.csv\)"):
        run_start(tmp_path, resume=False, overwrite=False)
    assert run_start(tmp_path, resume=False, overwrite=True) == "overwrite"
    clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]

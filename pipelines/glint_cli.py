"""The ``glint`` command: pretrain, finetune, evaluate and run the GlintIQA model."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from glint.backbones import LOCAL_BACKBONES
from glint.data import DatasetError, SaqtSource, SaqtStream, TrainingImages, load_table, split_table
from glint.model import GlintConfig, GlintIQA
from glint.predict import image_paths, score_files
from glint.train import (
    EvalSet,
    Run,
    TrainConfig,
    evaluate,
    fit,
    load_checkpoint,
    model_from_checkpoint,
    model_from_state,
)
from pipelines.cli_common import OneLineErrors
from saqt.encoders import pick_device
from saqt.images import decode_image

app = typer.Typer(name="glint", cls=OneLineErrors, no_args_is_help=True, add_completion=False,
                  help="Train and run the GlintIQA quality model.")  # fmt: skip

Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
Epochs = Annotated[int, typer.Option(help="Epochs (the paper: 50 to pretrain, 10 to finetune).")]
MaxSteps = Annotated[int | None, typer.Option(help="Stop after this many optimiser steps in all.")]
Crops = Annotated[int, typer.Option(help="Random 224 crops averaged per test image (the paper: 25).")]
LoaderWorkers = Annotated[int, typer.Option(help="DataLoader worker processes.")]
Resume = Annotated[bool, typer.Option(help="Continue from RUN_DIR/last.pt exactly where it stopped.")]
Seed = Annotated[int, typer.Option(help="Seed of initialisation, data order and augmentation.")]


def fail(command: str, err: Exception, code: int = 2) -> None:
    typer.echo(f"glint {command}: {err}", err=True)
    raise typer.Exit(code) from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _new_model(local_backbone: str, vit_weights: str | None, cnn_weights: str | None, seed: int = 0) -> GlintIQA:
    """A fresh model, its random parts initialised from ``seed``; backbone warnings are shown, not raised."""
    if local_backbone not in LOCAL_BACKBONES:
        raise ValueError(f"--local-backbone must be one of {', '.join(LOCAL_BACKBONES)}")
    torch.manual_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = GlintIQA(GlintConfig(local_backbone, vit_weights, cnn_weights))
    for w in caught:
        typer.secho(f"WARNING: {w.message}", fg="yellow", err=True)
    return model


def _train(model: GlintIQA, run: Run, config: TrainConfig, device: str, resume: bool, command: str) -> dict:
    try:
        results = fit(model, run, config, device, resume)
    except ValueError as err:
        fail(command, err)
    _report(results, run.out)
    return results


def _report(results: dict, out: Path) -> None:
    total, trainable = results["parameters"]["total"], results["parameters"]["trainable"]
    typer.echo(f"parameters: {total:,} ({trainable:,} trainable); training {results['train_images_per_s'] or 0:.2f} "
               f"images/s on {results['device']}")  # fmt: skip
    typer.echo(f"selected epoch {results['selected_epoch']} ({results['selection_note']})")
    for split, m in results["metrics"].items():
        typer.echo(f"  {split:<5} SROCC {m['srocc']:.4f}  PLCC {m['plcc']:.4f}  PLCC(logistic) {m['plcc_logistic']:.4f}"
                   f"  KRCC {m['krcc']:.4f}  RMSE {m['rmse']:.4f}  ({m['images']} images)")  # fmt: skip
    typer.echo(f"checkpoints {out}/last.pt and best.pt; per-epoch metrics in {out}/metrics.csv")


@app.command("pretrain")
def pretrain(
    data: Annotated[Path, typer.Option(help="A `saqt label` output folder (or a folder of saqt-iqa shards).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, metrics, results.json.")],
    epochs: Epochs = 50,
    max_steps: MaxSteps = None,
    batch_size: Annotated[int, typer.Option(help="Global batch size (the paper: 128 to pretrain).")] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-5,
    local_backbone: Annotated[
        str, typer.Option(help="resnet50 (the paper's) or efficientnet_lite0 (offline).")
    ] = "resnet50",
    vit_weights: Annotated[str | None, typer.Option(help="ViT-S/16 weights: a file, or 'timm' to download.")] = None,
    cnn_weights: Annotated[str | None, typer.Option(help="Local-branch weights: a file, 'timm', or 'random'.")] = None,
    holdout_images: Annotated[int, typer.Option(help="Held-out SAQT-IQA images scored each epoch.")] = 500,
    test_crops: Crops = 25,
    seed: Seed = 0,
    device: Device = "auto",
    loader_workers: LoaderWorkers = 2,
    resume: Resume = False,
) -> None:
    """Pretrain GlintIQA on SAQT-IQA labels (5% of pristine images are held out to pick the epoch)."""
    try:
        source = SaqtSource.open(data)
        train = SaqtStream(source, seed)
        held = SaqtStream(source, seed, holdout=True).rated_images(holdout_images)
        rows = train.count()
        config = TrainConfig(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, seed=seed,
                             test_crops=test_crops, loader_workers=loader_workers)  # fmt: skip
        model = _new_model(local_backbone, vit_weights, cnn_weights, seed)
    except (DatasetError, ValueError, FileNotFoundError, RuntimeError) as err:
        fail("pretrain", err)
    evals = {"val": EvalSet([r for r, _ in held], [s for _, s in held], source.image)} if held else {}
    run = Run(out, train, evals, math.ceil(rows / batch_size), {"pretrain": source.provenance})
    _train(model, run, config, device, resume, "pretrain")


def _leakage(init: dict, dataset: str, test_groups: set[str]) -> str | None:
    """A warning when the init checkpoint was pretrained on labels from references that are in this test split."""
    bank = init.get("provenance", {}).get("pretrain", {}).get("bank", {})
    if bank.get("kind") != dataset:
        return None
    excluded = {Path(r).stem for r in bank.get("excluded", [])}
    leaked = sorted(g for g in test_groups if Path(g).stem not in excluded)
    if not leaked:
        return None
    return (f"label leakage: the init checkpoint was pretrained on SAQT labels transferred from {dataset} references, "
            f"and {len(leaked)} of this test split's references (e.g. {', '.join(leaked[:3])}) were not excluded; "
            "relabel with `saqt label --exclude-refs` to evaluate fairly")  # fmt: skip


@app.command("finetune")
def finetune(
    dataset: Annotated[str, typer.Option(help="kadid10k, koniq10k, clive, csiq, tid2013, live, spaq, or csv.")],
    root: Annotated[Path, typer.Option(help="The dataset's folder (images and label file).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")],
    init: Annotated[Path | None, typer.Option(help="Checkpoint to start from (e.g. a pretrain's best.pt).")] = None,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Label table (with --dataset csv, or to override).")
    ] = None,
    epochs: Epochs = 10,
    max_steps: MaxSteps = None,
    batch_size: Annotated[int, typer.Option(help="Batch size (the paper: 32).")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-5,
    round_: Annotated[int, typer.Option("--round", help="Split round (0-9: the paper's 10 seeded rounds).")] = 0,
    rounds: Annotated[int, typer.Option(min=1, help="Run this many consecutive rounds and report the median.")] = 1,
    select_on: Annotated[
        str, typer.Option(help="val (fair) or test (the released code's choice, optimistic).")
    ] = "val",
    local_backbone: Annotated[str, typer.Option(help="Without --init: resnet50 or efficientnet_lite0.")] = "resnet50",
    vit_weights: Annotated[str | None, typer.Option(help="Without --init: ViT-S/16 weights file or 'timm'.")] = None,
    cnn_weights: Annotated[str | None, typer.Option(help="Without --init: local-branch weights.")] = None,
    test_crops: Crops = 25,
    seed: Seed = 0,
    device: Device = "auto",
    loader_workers: LoaderWorkers = 2,
    resume: Resume = False,
) -> None:
    """Finetune on an IQA dataset: 80/20 split (by reference for synthetic datasets), epoch chosen on validation.
    With --rounds N, runs rounds --round .. --round+N-1 in RUN_DIR/round-K and reports the median test metrics."""
    try:
        table = load_table(dataset, root, csv_file)
        splits = {r: split_table(table, r, seed) for r in range(round_, round_ + rounds)}
        config = TrainConfig(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, seed=seed,
                             test_crops=test_crops, select_on=select_on, loader_workers=loader_workers)  # fmt: skip
        ckpt = load_checkpoint(init) if init else None
        init_record = (
            {"path": str(init), "sha256": _sha256(init), "provenance": ckpt.get("provenance", {})} if init else None
        )
    except (DatasetError, ValueError, FileNotFoundError, RuntimeError) as err:
        fail("finetune", err)
    missing = [s.path for s in table.samples if not Path(s.path).is_file()]
    if missing:
        fail("finetune", FileNotFoundError(f"{len(missing)} images of {dataset} are missing, e.g. {missing[0]}"))
    results = {}
    for r, parts in splits.items():
        if init:
            model, provenance = model_from_state(ckpt), {"init": init_record}
            warning = _leakage(ckpt, dataset, {s.group for s in parts["test"]})
            if warning:
                typer.secho(f"WARNING: {warning}", fg="yellow", err=True)
                provenance["leakage_warning"] = warning
        else:
            model, provenance = _new_model(local_backbone, vit_weights, cnn_weights, seed), {"init": None}
        provenance |= {"dataset": dataset, "root": str(root), "round": r,
                       "split": {k: len(v) for k, v in parts.items()}}  # fmt: skip
        evals = {name: EvalSet([s.path for s in parts[name]], [s.score for s in parts[name]], decode_image,
                               table.resize_shorter) for name in ("val", "test")}  # fmt: skip
        train = TrainingImages(parts["train"], seed, table.resize_shorter)
        run_out = out if rounds == 1 else out / f"round-{r}"
        run = Run(run_out, train, evals, math.ceil(len(parts["train"]) / batch_size), provenance)
        results[r] = _train(model, run, config, device, resume, "finetune")
    if rounds > 1:
        keys = ("srocc", "plcc", "plcc_logistic", "krcc", "rmse")
        median = {k: float(np.median([res["metrics"]["test"][k] for res in results.values()])) for k in keys}
        (out / "summary.json").write_text(json.dumps({"rounds": list(results), "median_test": median,
                                                      "per_round_test": {r: res["metrics"]["test"] for r, res in results.items()}}, indent=2))  # fmt: skip
        typer.echo(f"median over {rounds} rounds: test SROCC {median['srocc']:.4f}  PLCC {median['plcc']:.4f}  "
                   f"KRCC {median['krcc']:.4f}  RMSE {median['rmse']:.4f}  ({out / 'summary.json'})")  # fmt: skip


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint (best.pt or last.pt).")],
    dataset: Annotated[str, typer.Option(help="Dataset name (or csv with --csv).")],
    root: Annotated[Path, typer.Option(help="The dataset's folder.")],
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Label table override.")] = None,
    split: Annotated[str, typer.Option(help="test (the round's test split) or all.")] = "test",
    round_: Annotated[int, typer.Option("--round", help="Split round.")] = 0,
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
    crops: Crops = 25,
    device: Device = "auto",
) -> None:
    """Print SROCC, PLCC, KRCC and RMSE of a checkpoint on a dataset."""
    try:
        model, _ = model_from_checkpoint(checkpoint)
        table = load_table(dataset, root, csv_file)
        samples = table.samples if split == "all" else split_table(table, round_, seed)[split]
    except (DatasetError, ValueError, FileNotFoundError, KeyError) as err:
        fail("evaluate", err)
    data = EvalSet([s.path for s in samples], [s.score for s in samples], decode_image, table.resize_shorter)
    m = evaluate(model, data, crops, seed, pick_device(device))
    typer.echo(f"{dataset} {split} ({m['images']} images): SROCC {m['srocc']:.4f}  PLCC {m['plcc']:.4f}  "
               f"PLCC(logistic) {m['plcc_logistic']:.4f}  KRCC {m['krcc']:.4f}  RMSE {m['rmse']:.4f}")  # fmt: skip


@app.command("predict")
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    checkpoint: Annotated[Path | None, typer.Option(help="A checkpoint to score with.")] = None,
    random_init: Annotated[bool, typer.Option(help="Score with a randomly initialised model (a smoke run).")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write scores to this .csv or .json file.")] = None,
    crops: Crops = 25,
    device: Device = "auto",
) -> None:
    """Score images; prints one line per image, or writes CSV/JSON with --out."""
    if (checkpoint is None) == (not random_init):
        fail("predict", ValueError("give --checkpoint CKPT, or --random-init for a smoke run"))
    try:
        model = model_from_checkpoint(checkpoint)[0] if checkpoint else _new_model("efficientnet_lite0", None, "random")
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        fail("predict", err)
    paths = image_paths(images)
    if not paths:
        fail("predict", ValueError("no image files found"))
    rows = score_files(model, paths, crops, device)
    if out and out.suffix == ".json":
        out.write_text(json.dumps([{"path": str(p), "score": s, "error": e} for p, s, e in rows], indent=2))
    elif out:
        with open(out, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "score", "error"])
            writer.writerows([str(p), "" if s is None else f"{s:.6f}", e or ""] for p, s, e in rows)
    else:
        for p, s, e in rows:
            typer.echo(f"{p}\t{s:.4f}" if s is not None else f"{p}\tskipped: {e}")
    failed = sum(s is None for _, s, _ in rows)
    if out:
        typer.echo(f"scored {len(rows) - failed} images ({failed} skipped) -> {out}")
    if failed == len(rows):
        raise typer.Exit(1)

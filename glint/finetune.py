"""Finetuning GlintIQA on an IQA dataset, one or several split rounds: the library side of ``glint finetune``.

``run_finetune(config, out, ctx)`` loads the label table, resolves the protocol, makes each round's split, builds or
loads the model, trains (``glint.train.fit``) and, over several rounds, writes the median test metrics to
``out/summary.json``. What a user should know but does not stop the run (label leakage from the init checkpoint's
pretraining, a split that is not exactly the release's) is told as a ``RunWarning`` and recorded in the provenance.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from glint.checkpoint import load_model
from glint.configs import FinetuneConfig, RunWarning
from glint.data import (
    IQATable,
    TrainingImages,
    check_image_files,
    check_released_images,
    count_mismatch,
    load_table,
    make_split,
    split_record,
)
from glint.metrics import METRICS
from glint.model import GlintIQA, new_model, refuse_random_backbones
from glint.outputs import check_outputs_apart, run_start
from glint.protocol import Protocol, default_rounds, resolve
from glint.train import EvalSet, Run, TrainConfig, fit
from saqt.core.context import DEFAULT_CONTEXT, RunContext
from saqt.core.errors import ConfigError
from saqt.core.images import decode_as_released, decode_image
from saqt.core.safe_files import write_bytes_atomic


def leakage_warning(init: dict, dataset: str, test_groups: set[str]) -> str | None:
    """A warning when the init checkpoint was pretrained on labels from references that are in this test split."""
    bank = ((init.get("provenance") or {}).get("pretrain") or {}).get("bank")
    if not isinstance(bank, dict) or bank.get("kind") != dataset:
        return None
    excluded = {Path(str(r)).stem for r in bank.get("excluded") or []}
    leaked = sorted(g for g in test_groups if Path(g).stem not in excluded)
    if not leaked:
        return None
    return (
        f"label leakage: the init checkpoint was pretrained on SAQT labels transferred from {dataset} references, "
        f"and {len(leaked)} of this test split's references (e.g. {', '.join(leaked[:3])}) were not excluded; "
        "relabel with `saqt label --exclude-refs` to evaluate fairly"
    )


def order_warning(table: IQATable, protocol: str) -> str | None:
    """Under the release's protocol, a warning when the split cannot be the release's: the table lists another
    number of units than the release indexes, or the release indexes another file's rows than the one read."""
    if protocol != "released":
        return None
    count = count_mismatch(table)
    if count:
        return count
    released = table.spec.get("released", {})
    if released.get("order", "file") != "file" or table.entry.get("release_order"):
        return None
    files = [e["file"] for e in table.spec["labels"] if e.get("release_order")]
    if not files:
        return f"{table.name} has no counterpart in the release: its split rule is applied to {table.label_file}'s rows"
    return (
        f"the release indexes the rows of {', '.join(files)}, not of {table.label_file.name}: the split is the "
        "release's only if both list the images in the same order"
    )


def label_scale(table: IQATable, score_map: list[float] | None = None) -> str:
    """The scale of the labels a run trains on, e.g. ``kadid10k dmos, 1 to 5, higher is better``: the manifest's
    range (else the table's), after the release's rescaling of training scores when it applies."""
    column = table.entry.get("score")
    name = f"{table.name} {column if isinstance(column, str) else 'score'}"
    if score_map:
        a, b, c, d = score_map
        where = f"{c:g} to {d:g} (mapped from {a:g} to {b:g})"
    elif table.spec.get("score_range"):
        lo, hi = table.spec["score_range"]
        where = f"{lo:g} to {hi:g}"
    else:
        scores = [s.score for s in table.samples]
        where = f"{min(scores):g} to {max(scores):g} in {table.label_file.name}"
    return f"{name}, {where}, {'higher' if table.higher_is_better else 'lower'} is better"


def image_reader(protocol: str) -> Callable[[str], np.ndarray]:
    """How a protocol reads images: as the release does under ``released`` (no EXIF orientation), else
    oriented as a viewer shows them."""
    return decode_as_released if protocol == "released" else decode_image


def spread(items: list, count: int | None) -> list:
    """``count`` of ``items`` spread evenly over them, in their order (all of them when ``count`` is None or more)."""
    if count is None or count >= len(items):
        return items
    return [items[i * len(items) // count] for i in range(count)]


def eval_sets(table: IQATable, parts: dict, protocol: str = "honest", images: int | None = None) -> dict[str, EvalSet]:
    """The validation and test parts of a split (those that are not empty) as evaluation sets, each cut to
    ``images`` spread over it when given."""
    load = image_reader(protocol)
    chosen = {name: spread(parts[name], images) for name in ("val", "test") if parts[name]}
    return {name: EvalSet([s.path for s in c], [s.score for s in c], load, table.resize) for name, c in chosen.items()}


def _protocols(config: FinetuneConfig, table: IQATable) -> tuple[list[Protocol], dict[int, dict]]:
    """Each round's protocol and split; refused when the selection split is missing or images are absent."""
    first = resolve(config.protocol, {**config.settings, "max_steps": config.max_steps}, config.round, table.spec)
    rounds = config.rounds or default_rounds(first.name, config.round)
    protos = [dataclasses.replace(first, round=r) for r in range(first.round, first.round + rounds)]
    splits = {p.round: make_split(table, p.name, p.round, p.settings["seed"]) for p in protos}
    if first.settings["select_on"] == "val" and not splits[first.round]["val"]:
        raise ConfigError("--select-on val needs a validation split, which --protocol released does not carve")
    check_image_files(table.samples, config.root, config.dataset)
    if first.name == "released":
        check_released_images(table, config.root)
    return protos, splits


def _start(config: FinetuneConfig, train: TrainConfig, test_groups: set[str], provenance: dict) -> GlintIQA:
    """The round's model: the init checkpoint's (its description and any leakage recorded) or a fresh one."""
    if not config.init:
        provenance["init"] = None
        return new_model(config.model, train.seed, config.random_init)
    model = load_model(config.init)
    if config.cwsa and config.cwsa != model.config.cwsa:  # its weights were trained with the checkpoint's CWSA
        raise ConfigError(
            f"--cwsa {config.cwsa}: the --init checkpoint {config.init} computes the {model.config.cwsa} CWSA, "
            "which its weights were trained with; leave --cwsa out to finetune it"
        )
    provenance["init"] = model.checkpoint.describe()
    warning = leakage_warning(model.checkpoint.meta, config.dataset, test_groups)
    if warning:
        warnings.warn(warning, RunWarning, stacklevel=2)
        provenance["leakage_warning"] = warning
    return model


def run_finetune(config: FinetuneConfig, out: Path, ctx: RunContext = DEFAULT_CONTEXT) -> dict[int, dict]:
    """Finetune for each round (in ``out``, or ``out/round-K`` for several) and return each round's results; over
    several rounds, ``out/summary.json`` holds the median test metrics. ``out`` lies apart from the dataset and the
    init checkpoint; a round's folder may hold an earlier run only with ``config.resume`` or ``ctx.overwrite``."""
    check_outputs_apart(out, {"--root": config.root, "--csv": config.csv_file, "--init": config.init})
    if not config.init:
        refuse_random_backbones(config.model, config.random_init)  # before any work
    table = load_table(config.dataset, config.root, config.csv_file, config.protocol)
    protos, splits = _protocols(config, table)
    folders = {p.round: out if len(protos) == 1 else out / f"round-{p.round}" for p in protos}
    for folder in folders.values():  # before any training; fit checks again, with the folder locked
        run_start(folder, config.resume, ctx.overwrite)
    split_warning = order_warning(table, protos[0].name)
    if split_warning:
        warnings.warn(split_warning, RunWarning, stacklevel=2)
    score_map = table.spec.get("released", {}).get("train_score_map") if protos[0].name == "released" else None
    results = {}
    for proto in protos:
        parts, train = splits[proto.round], TrainConfig.from_protocol(proto, config.max_steps, config.loader_workers)
        provenance = {
            "dataset": config.dataset,
            "root": str(config.root),
            "protocol": proto.record(),
            "split": split_record(table, parts, proto.name, proto.round, proto.settings["seed"]),
            "split_warning": split_warning,
            "train_score_map": score_map,
            "score_scale": label_scale(table, score_map),
            **({"eval_images": config.eval_images} if config.eval_images else {}),  # recorded when evaluation is cut
        }
        model = _start(config, train, {s.group for s in parts["test"]}, provenance)
        images = TrainingImages(parts["train"], train.seed, table.resize, score_map, image_reader(proto.name))
        run = Run(
            folders[proto.round],
            images,
            eval_sets(table, parts, proto.name, config.eval_images),
            math.ceil(len(parts["train"]) / train.batch_size),
            provenance,
        )
        results[proto.round] = fit(
            model, run, train, config.device, config.resume, ctx.progress, config.tensorboard, ctx.overwrite
        )
    if len(results) > 1:
        write_summary(results, out)
    return results


def median_test(results: dict[int, dict]) -> dict[str, float]:
    """The median over rounds of each test metric."""
    return {k: float(np.median([res["metrics"]["test"][k] for res in results.values()])) for k in METRICS}


def write_summary(results: dict[int, dict], out: Path) -> None:
    """``out/summary.json`` (the rounds, their median test metrics and each round's) and ``out/rounds.csv`` (a row per
    round: its seed, selected epoch and test metrics, then the median row), as the release's round and median
    results."""
    per_round = {r: res["metrics"]["test"] for r, res in results.items()}
    summary = {"rounds": list(results), "median_test": median_test(results), "per_round_test": per_round}
    write_bytes_atomic(out / "summary.json", json.dumps(summary, indent=2).encode())
    rows = [["round", "torch_seed", "selected_epoch", *METRICS]]
    for r, res in results.items():
        rows.append([r, res["provenance"]["protocol"]["torch_seed"], res["selected_epoch"]])
        rows[-1] += [per_round[r][k] for k in METRICS]
    rows.append(["median", "", "", *(summary["median_test"][k] for k in METRICS)])
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    write_bytes_atomic(out / "rounds.csv", text.getvalue().encode())

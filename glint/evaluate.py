"""``glint evaluate``: a checkpoint scored on an IQA dataset, ``run_evaluate(config, out, ctx)``.

Which images are scored is a policy: by default the checkpoint's own test split, remade from the split record its
provenance holds (``glint.data.split_record``) and checked against that record's digests; images the checkpoint was
trained on are refused unless ``allow_train_overlap``, and scored with a warning then."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from glint.checkpoint import load_model
from glint.configs import EvaluateConfig, RunWarning
from glint.data import IQATable, Sample, check_image_files, load_table, make_split, names_digest
from glint.finetune import image_reader
from glint.model import GlintIQA
from glint.outputs import check_creatable, check_outputs_apart
from glint.predict import write_table
from glint.protocol import resolve
from glint.scale import printable
from glint.scoring import scoring_amp
from glint.train import EvalSet, eval_metrics, score_eval_set
from saqt.core.context import DEFAULT_CONTEXT, RunContext, pick_device
from saqt.core.errors import ConfigError
from saqt.core.progress import Progress

SPLITS = ("auto", "test", "all")


def trained_on(record: dict | None, table: IQATable) -> bool:
    """Whether a run's split record is of this dataset (for a CSV dataset: of this label file)."""
    if not record or record["dataset"] != table.name:
        return False
    return table.name != "csv" or Path(record["label_file"]).resolve() == Path(table.label_file).resolve()


def evaluation_split(
    table: IQATable, record: dict | None, split: str, protocol: str | None, round_: int | None, seed: int | None
) -> tuple[list[Sample], dict]:
    """The images to score and a description of them: all, or a test split (the checkpoint's own by default)."""
    if split == "all":
        return table.samples, {"split": "all"}
    own = trained_on(record, table)
    if not own and round_ is None:
        raise ConfigError(
            f"the checkpoint records no training split on {table.name}: give --split all, or the split "
            "to remake with --round (and --protocol, --seed)"
        )
    base = record if own else {}
    name = protocol or base.get("protocol", "honest")
    proto = resolve(
        name,
        {"seed": seed if seed is not None else base.get("seed")},
        round_ if round_ is not None else base.get("round"),
        table.spec,
    )
    parts = make_split(table, proto.name, proto.round, proto.settings["seed"])
    same = own and (proto.name, proto.round, proto.settings["seed"]) == (
        record["protocol"],
        record["round"],
        record["seed"],
    )
    if same and names_digest(parts["test"]) != record["digests"]["test"]:
        raise ConfigError(
            f"the checkpoint's test split cannot be remade from {table.label_file}: the run read another "
            f"label table ({printable(record['label_file'])})"
        )
    return parts["test"], {
        "split": "test",
        "protocol": proto.name,
        "round": proto.round,
        "seed": proto.settings["seed"],
        "own_split": bool(same),
    }


def training_overlap(table: IQATable, record: dict | None, samples: list[Sample]) -> tuple[set[str], str | None]:
    """Images among ``samples`` that the checkpoint was trained on, when its record lets them be known; else why
    not."""
    if not trained_on(record, table):
        return set(), None
    parts = make_split(table, record["protocol"], record["round"], record["seed"])
    if names_digest(parts["train"]) != record["digests"]["train"]:
        return set(), f"the training split cannot be remade from {table.label_file}: overlap with it is unknown"
    trained = {s.name for s in parts["train"]}
    return {s.name for s in samples if s.name in trained}, None


def evaluation_samples(
    table: IQATable, record: dict | None, config: EvaluateConfig, ctx: RunContext = DEFAULT_CONTEXT
) -> tuple[list[Sample], dict, int]:
    """The images to score, a description of the split, and how many of them the checkpoint was trained on; refused
    (ConfigError) when that is any, unless ``config.allow_train_overlap`` (then with a warning, through
    ``ctx.warn``, default ``warnings.warn``)."""
    split = config.split
    if split not in SPLITS:
        raise ConfigError(f"--split must be auto, test or all, got {split!r}")
    if split == "auto":
        split = "test" if trained_on(record, table) or config.round is not None else "all"
    samples, chosen = evaluation_split(table, record, split, config.protocol, config.round, config.seed)
    overlap, unknown = training_overlap(table, record, samples)
    warn = ctx.warn or (lambda line: warnings.warn(line, RunWarning, stacklevel=3))
    if unknown:
        warn(unknown)
    if overlap and not config.allow_train_overlap:
        raise ConfigError(
            f"{len(overlap)} of the {len(samples)} images to score were in the checkpoint's training set "
            f"(e.g. {sorted(overlap)[0]}); evaluate on its own test split (the default, --split auto) "
            "or pass --allow-train-overlap"
        )
    if overlap:
        warn(
            f"{len(overlap)} of the {len(samples)} images scored were in the checkpoint's training set: the "
            "figures are optimistic"
        )
    if not record and chosen["split"] == "all":
        warn(
            f"the checkpoint records no training split: scoring all {len(samples)} images of {table.name}; if it was "
            "trained on some of them the figures are optimistic"
        )
    return samples, chosen, len(overlap)


def run_evaluate(config: EvaluateConfig, out: Path | None = None, ctx: RunContext = DEFAULT_CONTEXT) -> dict:
    """Score ``config.checkpoint`` on the images :func:`evaluation_samples` chooses and return the report: the
    metrics (``glint.train.eval_metrics``), the split, how many images it shares with the training set, the crops
    and the scores' scale. With ``out``, also write the report and each image's score (``.json``), or each image's
    score and label (``.csv``); ``out`` is checked before any image is scored."""
    if out:
        check_outputs_apart(out, {"--checkpoint": config.checkpoint, "--root": config.root, "--csv": config.csv_file})
        check_creatable(out)
    device = pick_device(config.device)
    model = load_model(config.checkpoint, device)
    trained_under = model.checkpoint.meta.get("train_config", {}).get("protocol", "honest")
    table = load_table(config.dataset, config.root, config.csv_file, trained_under)  # LIVE released: realigned DMOS
    record = model.checkpoint.meta.get("provenance", {}).get("split")
    samples, chosen, overlap = evaluation_samples(table, record, config, ctx)
    check_image_files(samples, config.root, config.dataset)
    preds, metrics = _score(model, samples, table, trained_under, config, device, ctx)
    report = {
        "checkpoint": str(config.checkpoint),
        "dataset": config.dataset,
        "label_file": str(table.label_file),
        **chosen,
        "train_overlap": overlap,
        "crops": config.crops,
        "score_scale": model.score_scale,
        "metrics": metrics,
    }
    if out:
        _write(out, report, samples, preds)
    return report


def _score(
    model: GlintIQA,
    samples: list[Sample],
    table: IQATable,
    trained_under: str,
    config: EvaluateConfig,
    device: torch.device,
    ctx: RunContext,
) -> tuple[list[float], dict]:
    """Each sample's score (the test-time crop protocol) and the metrics against the labels."""
    data = EvalSet([s.path for s in samples], [s.score for s in samples], image_reader(trained_under), table.resize)
    with Progress(total=len(samples), desc="evaluate", unit="img", leave=False, disable=not ctx.progress) as bar:
        preds, seconds = score_eval_set(
            model, data, config.crops, 0, device, scoring_amp(model), bar, config.batch_size
        )
    return preds, eval_metrics(preds, data, seconds)


def _write(out: Path, report: dict, samples: list[Sample], preds: list[float]) -> None:
    """The report and each image's score (``.json``), or each image's score, label and the scale (``.csv``)."""
    rows = [{"path": s.path, "score": p, "label": s.score} for s, p in zip(samples, preds, strict=True)]
    meta = report if out.suffix == ".json" else {"score_scale": report["score_scale"]}
    write_table(rows, out, meta, ["path", "score", "label", "score_scale"], key="predictions")

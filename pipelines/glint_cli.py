"""The ``glint`` command: pretrain, finetune, evaluate and run the GlintIQA model. The commands parse their options
and call the library (``glint.pretrain.run_pretrain``, ``glint.finetune.run_finetune``, ``glint.predict``)."""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from glint.architecture import RandomWeightsWarning
from glint.configs import BATCH_IMAGES, MIN_SIDE, FinetuneConfig, PretrainConfig, RunWarning
from glint.options import CSV_HELP, DATASET_HELP, ROOT_HELP
from glint.protocol import PROTOCOLS, resolve
from glint.scale import UNKNOWN_SCALE, printable
from pipelines.cli_common import App, OneLineErrors, Options, config_options, fail_command
from saqt import __version__
from saqt.context import RunContext
from saqt.errors import ConfigError
from saqt.options import DATA, DEVICE_HELP, EVALUATION, EXECUTION, MODEL, OUTPUT

if TYPE_CHECKING:
    from glint.data import IQATable

# The options come from torch-free modules (glint.configs, glint.options); the model, the stages and the data
# (torch, timm, torchvision, cv2) are imported inside the commands and helpers that use them, so that --help and
# --version answer at once.

DEPRECATED_NAMES = {"--test-crops": "--crops"}  # old name -> name now: hidden, still accepted (a DeprecationWarning)


class GlintCommands(OneLineErrors):
    """The glint command group: deprecated option names rewritten to the current ones, and warnings printed as one
    yellow line each."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, [_current_name(a) for a in args])

    def invoke(self, ctx: click.Context):
        with warnings.catch_warnings():
            for category in (RandomWeightsWarning, RunWarning):  # the toolkit's own: each time, not once a process
                warnings.filterwarnings("always", category=category)
            warnings.showwarning = lambda message, *_args, **_kw: warn(str(message))
            return super().invoke(ctx)


def _current_name(arg: str) -> str:
    name, eq, value = arg.partition("=")
    if name not in DEPRECATED_NAMES:
        return arg
    warn(f"{name} is deprecated; use {DEPRECATED_NAMES[name]}")  # printed, not warnings.warn: filters hide those
    return DEPRECATED_NAMES[name] + eq + value


app = App(
    name="glint",
    cls=GlintCommands,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # plain text: "[default]" in a help is not taken for rich markup
    help="Train and run the GlintIQA quality model.",
)

# pretrain and finetune take their options from their configs' fields (glint/configs.py, glint/options.py); evaluate and predict, which are no stages, declare theirs here.


def _version(value: bool) -> None:
    if value:
        typer.echo(f"glint (saqt-iqa) {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the toolkit's version and exit.")
    ] = False,
) -> None:
    """Train and run the GlintIQA quality model."""


Device = Annotated[str, typer.Option(help=DEVICE_HELP, rich_help_panel=EXECUTION)]
Crops = Annotated[int, typer.Option(min=1, help="Random 224 crops averaged per image.", rich_help_panel=EVALUATION)]
ScoreBatch = Annotated[
    int, typer.Option(min=1, help="Images per forward pass (each as --crops views).", rich_help_panel=EXECUTION)
]
Checkpoint = Annotated[
    Path, typer.Option(help="A checkpoint: this toolkit's best.pt/last.pt, or an official one.", rich_help_panel=MODEL)
]
DatasetName = Annotated[str, typer.Option(help=DATASET_HELP, rich_help_panel=DATA)]
DatasetRoot = Annotated[Path, typer.Option(help=ROOT_HELP, rich_help_panel=DATA)]
CsvFile = Annotated[Path | None, typer.Option("--csv", help=CSV_HELP, rich_help_panel=DATA)]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace an earlier run in --out (only the files a glint run writes) instead of refusing it.",
        rich_help_panel=OUTPUT,
    ),
]


fail = partial(fail_command, "glint")


def warn(message: str) -> None:
    typer.secho(f"WARNING: {message}", fg="yellow", err=True)


def scale_line(scale: str) -> str:
    """What the scores' scale is, for stderr: the range of the training labels, which scores may leave."""
    if scale == UNKNOWN_SCALE:
        return "scores on the scale: unknown (the checkpoint records no training labels)"
    return (
        f"scores on the scale: {scale} (the range of the labels the model was last trained on; a score may fall "
        "outside it)"
    )


def _metrics_line(m: dict) -> str:
    return (
        f"SROCC {m['srocc']:.4f}  PLCC {m['plcc']:.4f}  KRCC {m['krcc']:.4f}  RMSE {m['rmse']:.4f}  "
        f"PLCC(logistic) {m['plcc_logistic']:.4f}  ({m['images']} images)"
    )


def _report(results: dict, out: Path) -> None:
    """The run's summary, printed by rank 0 only."""
    from glint.train import main_process

    if not main_process():
        return
    total, trainable = results["parameters"]["total"], results["parameters"]["trainable"]
    typer.echo(
        f"protocol {results['protocol']}; parameters: {total:,} ({trainable:,} trainable); training "
        f"{results['train_images_per_s'] or 0:.2f} images/s on {results['device']}"
    )
    typer.echo(f"selected epoch {results['selected_epoch']} ({results['selection_note']})")
    time_s = results["time_s"]
    typer.echo(f"time: {time_s['training']:.1f} s training, {time_s['evaluation']:.1f} s evaluation")
    for split, m in results["metrics"].items():
        typer.echo(f"  {split:<5} {_metrics_line(m)}")
    typer.echo(
        f"checkpoints {out}/last.pt and best.pt; per-epoch metrics in {out}/metrics.csv; settings in {out}/run.json"
    )


@app.command("pretrain")
@config_options(PretrainConfig, before={"out": "protocol"})
def pretrain(
    given: Options,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Run folder: checkpoints, metrics, run.json, results.json.", rich_help_panel=OUTPUT
        ),
    ],
    overwrite: Overwrite = False,
) -> None:
    """Pretrain GlintIQA on SAQT-IQA labels (a published set's validation split, or else 5% of pristine images, is
    held out to pick the epoch); each epoch reads every training image once, in a fresh random order."""
    from glint.pretrain import run_pretrain

    results = run_pretrain(given.make(PretrainConfig), out, RunContext(overwrite=overwrite))
    if given["plan_only"]:
        typer.echo(
            f"wrote {results['plan']}: the first {results['batches']} batches over {results['ranks']} rank(s); "
            "nothing trained"
        )
    else:
        _report(results, out)


@app.command("finetune")
@config_options(FinetuneConfig, before={"out": "init"})
def finetune(
    given: Options,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.", rich_help_panel=OUTPUT)],
    overwrite: Overwrite = False,
) -> None:
    """Finetune on an IQA dataset. honest: 80/20 split (by reference for synthetic datasets), epoch chosen on a
    validation split. released: the official recipe end to end, 10 rounds by default. With several rounds, runs
    them in RUN_DIR/round-K and reports the median test metrics (RUN_DIR/summary.json, RUN_DIR/rounds.csv).
    Settings and the split are recorded in RUN_DIR/run.json."""
    from glint.finetune import median_test, run_finetune
    from glint.train import main_process

    results = run_finetune(given.make(FinetuneConfig), out, RunContext(overwrite=overwrite))
    rounds = len(results)
    for round_number, res in results.items():
        _report(res, out if rounds == 1 else out / f"round-{round_number}")
    if rounds > 1 and main_process():
        median = median_test(results)
        typer.echo(
            f"median over {rounds} rounds: test SROCC {median['srocc']:.4f}  PLCC {median['plcc']:.4f}  "
            f"KRCC {median['krcc']:.4f}  RMSE {median['rmse']:.4f}  ({out / 'summary.json'})"
        )


def _trained_on(record: dict | None, table: IQATable) -> bool:
    """Whether a run's split record is of this dataset (for a CSV dataset: of this label file)."""
    if not record or record["dataset"] != table.name:
        return False
    return table.name != "csv" or Path(record["label_file"]).resolve() == Path(table.label_file).resolve()


def _evaluation_split(
    table: IQATable, record: dict | None, split: str, protocol: str | None, round_: int | None, seed: int | None
) -> tuple[list, dict]:
    """The images to score and a description of them: all, or a test split (the checkpoint's own by default)."""
    from glint.data import make_split, names_digest

    if split == "all":
        return table.samples, {"split": "all"}
    own = _trained_on(record, table)
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


def _training_overlap(table: IQATable, record: dict | None, samples: list) -> tuple[set[str], str | None]:
    """Images among ``samples`` that the checkpoint was trained on, when its record lets them be known."""
    from glint.data import make_split, names_digest

    if not _trained_on(record, table):
        return set(), None
    parts = make_split(table, record["protocol"], record["round"], record["seed"])
    if names_digest(parts["train"]) != record["digests"]["train"]:
        return set(), f"the training split cannot be remade from {table.label_file}: overlap with it is unknown"
    trained = {s.name for s in parts["train"]}
    return {s.name for s in samples if s.name in trained}, None


def _evaluation_samples(
    table: IQATable,
    record: dict | None,
    split: str,
    protocol: str | None,
    round_: int | None,
    seed: int | None,
    allow_train_overlap: bool,
) -> tuple[list, dict, int]:
    """The images to score, a description of the split, and how many of them the checkpoint was trained on; refused
    (or warned about, with --allow-train-overlap) when that is any."""
    if split not in ("auto", "test", "all"):
        raise ConfigError(f"--split must be auto, test or all, got {split!r}")
    if split == "auto":
        split = "test" if _trained_on(record, table) or round_ is not None else "all"
    samples, chosen = _evaluation_split(table, record, split, protocol, round_, seed)
    overlap, unknown = _training_overlap(table, record, samples)
    if unknown:
        warn(unknown)
    if overlap and not allow_train_overlap:
        fail(
            "evaluate",
            f"{len(overlap)} of the {len(samples)} images to score were in the checkpoint's training set "
            f"(e.g. {sorted(overlap)[0]}); evaluate on its own test split (the default, --split auto) "
            "or pass --allow-train-overlap",
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


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Checkpoint,
    dataset: DatasetName,
    root: DatasetRoot,
    csv_file: CsvFile = None,
    split: Annotated[
        str,
        typer.Option(
            help="auto (the checkpoint's own test split when it was trained on this "
            "dataset, else all images), test, or all.",
            rich_help_panel=DATA,
        ),
    ] = "auto",
    protocol: Annotated[
        str | None,
        typer.Option(
            help=f"With --split test: the split's protocol ({', '.join(PROTOCOLS)}) [the checkpoint's].",
            rich_help_panel=DATA,
        ),
    ] = None,
    round_: Annotated[
        int | None,
        typer.Option("--round", help="With --split test: the split's round [the checkpoint's].", rich_help_panel=DATA),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="With --split test: the split's seed [the checkpoint's].", rich_help_panel=DATA)
    ] = None,
    allow_train_overlap: Annotated[
        bool,
        typer.Option(
            "--allow-train-overlap",
            help="Score images the checkpoint was trained on (with a warning) instead of refusing.",
            rich_help_panel=DATA,
        ),
    ] = False,
    crops: Crops = 25,
    batch_size: ScoreBatch = BATCH_IMAGES,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the metrics and each image's score to this "
            ".json file, or each image's score (and label) to "
            "this .csv file.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    device: Device = "auto",
) -> None:
    """SROCC, PLCC, KRCC and RMSE (raw, as the release computes them) and the logistic-fitted PLCC and RMSE of a
    checkpoint on a dataset; by default on the checkpoint's own test split, refusing images it was trained on."""
    from glint.checkpoint import load_model
    from glint.data import check_image_files, load_table
    from glint.finetune import image_reader
    from glint.outputs import check_creatable, check_outputs_apart
    from glint.predict import write_table
    from glint.scoring import scoring_amp
    from glint.train import EvalSet, eval_metrics, score_eval_set
    from saqt.context import pick_device
    from saqt.progress import Progress

    if out:  # before any image is scored
        check_outputs_apart(out, {"--checkpoint": checkpoint, "--root": root, "--csv": csv_file})
        check_creatable(out)
    dev = pick_device(device)
    model = load_model(checkpoint, dev)
    trained_under = model.checkpoint.meta.get("train_config", {}).get("protocol", "honest")
    table = load_table(dataset, root, csv_file, trained_under)  # a released run's labels (LIVE: realigned DMOS)
    record = model.checkpoint.meta.get("provenance", {}).get("split")
    samples, chosen, overlap = _evaluation_samples(table, record, split, protocol, round_, seed, allow_train_overlap)
    check_image_files(samples, root, dataset)
    data = EvalSet([s.path for s in samples], [s.score for s in samples], image_reader(trained_under), table.resize)
    with Progress(total=len(samples), desc="evaluate", unit="img", leave=False) as bar:
        preds, seconds = score_eval_set(model, data, crops, 0, dev, scoring_amp(model), bar, batch_size)
    m, scale = eval_metrics(preds, data, seconds), model.score_scale
    typer.echo(f"{dataset} {chosen['split']}: {_metrics_line(m)}")
    typer.echo(scale_line(scale), err=True)
    if out:
        report = {
            "checkpoint": str(checkpoint),
            "dataset": dataset,
            "label_file": str(table.label_file),
            **chosen,
            "train_overlap": overlap,
            "crops": crops,
            "score_scale": scale,
            "metrics": m,
        }
        rows = [{"path": s.path, "score": p, "label": s.score} for s, p in zip(samples, preds, strict=True)]
        write_table(
            rows,
            out,
            report if out.suffix == ".json" else {"score_scale": scale},
            ["path", "score", "label", "score_scale"],
            key="predictions",
        )
        typer.echo(f"{'metrics and scores' if out.suffix == '.json' else 'scores'} -> {out}")


@app.command("predict")
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="A checkpoint to score with (this toolkit's or an official one).", rich_help_panel=MODEL),
    ] = None,
    random_init: Annotated[
        bool,
        typer.Option(
            "--random-init", help="Score with a randomly initialised model (a smoke run).", rich_help_panel=MODEL
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write scores to this .csv or .json file.", rich_help_panel=OUTPUT),
    ] = None,
    crops: Crops = 25,
    batch_size: ScoreBatch = BATCH_IMAGES,
    min_side: Annotated[
        int, typer.Option(min=1, help="Skip images smaller than this on a side.", rich_help_panel=DATA)
    ] = MIN_SIDE,
    device: Device = "auto",
) -> None:
    """Score images; prints one line per image, or writes CSV/JSON with --out, with the scale of the scores named.
    Unreadable or too small images are skipped with their reason."""
    from glint.checkpoint import load_model
    from glint.outputs import check_creatable, check_outputs_apart
    from glint.predict import image_paths, score_files, write_scores

    if (checkpoint is None) == (not random_init):
        fail("predict", "give --checkpoint CKPT, or --random-init for a smoke run")
    if out:  # before any image is scored
        for option, path in [("--checkpoint", checkpoint), *(("IMAGES", image) for image in images)]:
            check_outputs_apart(out, {option: path})
        check_creatable(out)
    model = load_model(checkpoint)  # None: the random smoke-test model
    paths = image_paths(images)
    if not paths:
        fail("predict", "no image files found")
    rows = score_files(model, paths, crops, device, min_side=min_side, batch_size=batch_size)
    for _, s, e in rows:
        if s is None:
            warn(f"skipped {e}")
    scale = model.score_scale
    typer.echo(scale_line(scale), err=True)
    if out:
        write_scores(
            rows, out, {"checkpoint": str(checkpoint) if checkpoint else "random", "crops": crops, "score_scale": scale}
        )
    else:
        for p, s, _ in rows:
            if s is not None:
                typer.echo(f"{p}\t{s:.4f}")
    failed = sum(s is None for _, s, _ in rows)
    if out:
        typer.echo(f"scored {len(rows) - failed} images ({failed} skipped) -> {out}")
    if failed == len(rows):
        raise typer.Exit(1)

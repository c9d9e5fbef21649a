"""The ``glint`` command: pretrain, finetune, evaluate and run the GlintIQA model. The commands parse their options
and call the library (``glint.pretrain.run_pretrain``, ``glint.finetune.run_finetune``,
``glint.evaluate.run_evaluate``, ``glint.predict``), then print."""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import Annotated

import click
import typer

from glint.architecture import RandomWeightsWarning
from glint.configs import BATCH_IMAGES, MIN_SIDE, EvaluateConfig, FinetuneConfig, PretrainConfig, RunWarning
from glint.options import CROPS_HELP, SCORE_BATCH_HELP
from glint.scale import UNKNOWN_SCALE
from pipelines.cli_common import App, OneLineErrors, Options, config_options, fail_command
from saqt import __version__
from saqt.core.config_options import DATA, DEVICE_HELP, EVALUATION, EXECUTION, MODEL, OUTPUT
from saqt.core.context import RunContext

# The options come from torch-free modules (glint.configs, glint.options); the model, the stages and the data
# (torch, timm, torchvision, cv2) are imported inside the commands and helpers that use them, so that --help and
# --version answer at once.


class GlintCommands(OneLineErrors):
    """The glint command group: warnings, and the use of a deprecated option name, printed as one yellow line each."""

    renamed = {"--test-crops": "--crops"}

    def warn_renamed(self, ctx: click.Context, old: str, new: str) -> None:
        warn(f"{old} is deprecated; use {new}")  # printed, not warnings.warn: filters hide those

    def invoke(self, ctx: click.Context):
        with warnings.catch_warnings():
            for category in (RandomWeightsWarning, RunWarning):  # the toolkit's own: each time, not once a process
                warnings.filterwarnings("always", category=category)
            warnings.showwarning = lambda message, *_args, **_kw: warn(str(message))
            return super().invoke(ctx)


app = App(
    name="glint",
    cls=GlintCommands,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # plain text: "[default]" in a help is not taken for rich markup
    help="Train and run the GlintIQA quality model.",
)

# pretrain, finetune and evaluate take their options from their configs' fields (glint/configs.py, glint/options.py);
# predict, which is no stage, declares its own here.


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
Crops = Annotated[int, typer.Option(min=1, help=CROPS_HELP, rich_help_panel=EVALUATION)]
ScoreBatch = Annotated[int, typer.Option(min=1, help=SCORE_BATCH_HELP, rich_help_panel=EXECUTION)]
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


def print_report(results: dict, out: Path) -> None:
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
        print_report(results, out)


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
        print_report(res, out if rounds == 1 else out / f"round-{round_number}")
    if rounds > 1 and main_process():
        median = median_test(results)
        typer.echo(
            f"median over {rounds} rounds: test SROCC {median['srocc']:.4f}  PLCC {median['plcc']:.4f}  "
            f"KRCC {median['krcc']:.4f}  RMSE {median['rmse']:.4f}  ({out / 'summary.json'})"
        )


@app.command("evaluate")
@config_options(EvaluateConfig, before={"out": "device"})
def evaluate_cmd(
    given: Options,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the metrics and each image's score to this .json file, or each image's score (and label) to "
            "this .csv file.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
) -> None:
    """SROCC, PLCC, KRCC and RMSE (raw, as the release computes them) and the logistic-fitted PLCC and RMSE of a
    checkpoint on a dataset; by default on the checkpoint's own test split, refusing images it was trained on."""
    from glint.evaluate import run_evaluate

    report = run_evaluate(given.make(EvaluateConfig), out, RunContext())
    typer.echo(f"{report['dataset']} {report['split']}: {_metrics_line(report['metrics'])}")
    typer.echo(scale_line(report["score_scale"]), err=True)
    if out:
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

"""What ``glint pretrain`` and ``glint finetune`` are asked (``PretrainConfig``, ``FinetuneConfig``) and the scoring
defaults, without torch: the command line declares its options from these and imports a stage only to run it."""

from __future__ import annotations

from pathlib import Path

from glint.options import (
    CROPS_HELP,
    CSV_HELP,
    CWSA_HELP,
    DATASET_HELP,
    ROOT_HELP,
    SCORE_BATCH_HELP,
    ModelOptions,
    ProtocolOptions,
    RunOptions,
    TrainingFields,
)
from glint.protocol import PROTOCOLS
from saqt.core.config_options import (
    DATA,
    DEVICE_HELP,
    EVALUATION,
    EXECUTION,
    MODEL,
    OUTPUT,
    TRAINING,
    config_class,
    include,
    option,
)

BATCH_IMAGES = 4  # images per forward pass (x crops views): 100 views of 224 px at 25 crops
MIN_SIDE = 32  # smaller images would be enlarged more than 7x to give a 224 crop: nothing left to judge


class RunWarning(UserWarning):
    """A run goes ahead, but with something its user should know."""


@config_class
class PretrainConfig(TrainingFields):
    """What ``glint pretrain`` is asked: the SAQT-IQA set, the protocol and the settings given on top of it (None:
    the protocol's), the model, the held-out images, and how the run goes (device, loader workers, resume, logs)."""

    SETTINGS = ("epochs", "max_steps", "batch_size", "lr", "schedule", "amp", "test_crops", "seed")

    data: str = option(
        help="SAQT-IQA: a `saqt label` folder, a `saqt publish` folder, a published "
        "set's fsspec URL, a Hub id ORG/NAME, or a folder of saqt-iqa shards.",
        panel=DATA,
    )
    protocol_options: ProtocolOptions = include(ProtocolOptions)
    model_options: ModelOptions = include(ModelOptions)
    holdout_images: int | None = option(
        None, "Held-out SAQT-IQA images scored each epoch [500; --smoke: 20].", EVALUATION, min=0
    )
    run_options: RunOptions = include(RunOptions)
    pristine_cache: int = option(
        64, "Decoded pristine images each loader worker keeps for rendering recipe-only sets.", DATA, min=1
    )
    plan_only: int | None = option(
        None,
        "Write OUT/batches.csv (batch, rank, image_id) for the "
        "first N batches in the order training reads them "
        "(ranks: $WORLD_SIZE), and train nothing.",
        OUTPUT,
        min=1,
    )


@config_class
class FinetuneConfig(TrainingFields):
    """What ``glint finetune`` is asked: the dataset, the starting point, the protocol and the settings given on top
    of it (None: the protocol's), the split round(s), the model to build when there is no ``init`` checkpoint, and
    how the run goes (device, loader workers, resume, logs)."""

    SETTINGS = ("epochs", "batch_size", "lr", "schedule", "amp", "select_on", "test_crops", "seed")  # max_steps apart

    dataset: str = option(help=DATASET_HELP, panel=DATA)
    root: Path = option(help=ROOT_HELP, panel=DATA)
    init: Path | None = option(
        None, "Checkpoint to start from: a pretrain's best.pt, or an official release checkpoint.", MODEL
    )
    csv_file: Path | None = option(None, CSV_HELP, DATA, flags=("--csv",))
    protocol_options: ProtocolOptions = include(ProtocolOptions)
    round: int | None = option(
        None, "Split round [honest: 0 (0-9); released: 1 (the release's rounds 1-10)].", DATA, flags=("--round",)
    )
    rounds: int | None = option(
        None,
        "Run this many consecutive rounds and report the median [honest: 1; released: 10, as the release's "
        "--train-test-round; 1 with --round].",
        DATA,
        min=1,
    )
    select_on: str | None = option(
        None, "val (fair) or test (the release's choice, optimistic) [honest: val; released: test].", TRAINING
    )
    model_options: ModelOptions = include(
        ModelOptions,
        defaults={"cwsa": None},
        helps={"cwsa": f"{CWSA_HELP} [released; with --init, the checkpoint's, which no other may replace]."},
    )
    run_options: RunOptions = include(RunOptions)
    eval_images: int | None = option(
        None,
        "Images scored per evaluation split each epoch, spread evenly over it [all: the paper's evaluation; "
        "--smoke: 20]; the test metrics are then of those images only.",
        EVALUATION,
        min=1,
    )


@config_class
class EvaluateConfig:
    """What ``glint evaluate`` is asked: the checkpoint, the dataset, which of its images to score (the split, and
    whether images the checkpoint was trained on may be among them), and how to score them."""

    checkpoint: Path = option(help="A checkpoint: this toolkit's best.pt/last.pt, or an official one.", panel=MODEL)
    dataset: str = option(help=DATASET_HELP, panel=DATA)
    root: Path = option(help=ROOT_HELP, panel=DATA)
    csv_file: Path | None = option(None, CSV_HELP, DATA, flags=("--csv",))
    split: str = option(
        "auto",
        "auto (the checkpoint's own test split when it was trained on this dataset, else all images), test, or all.",
        DATA,
    )
    protocol: str | None = option(
        None, f"With --split test: the split's protocol ({', '.join(PROTOCOLS)}) [the checkpoint's].", DATA
    )
    round: int | None = option(
        None, "With --split test: the split's round [the checkpoint's].", DATA, flags=("--round",)
    )
    seed: int | None = option(None, "With --split test: the split's seed [the checkpoint's].", DATA)
    allow_train_overlap: bool = option(
        False, "Score images the checkpoint was trained on (with a warning) instead of refusing.", DATA
    )
    crops: int = option(25, CROPS_HELP, EVALUATION, min=1)
    batch_size: int = option(BATCH_IMAGES, SCORE_BATCH_HELP, EXECUTION, min=1)
    device: str = option("auto", DEVICE_HELP, EXECUTION)

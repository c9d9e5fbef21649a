"""The encoder protocol and the registry that resolves an encoder spec string.

An encoder maps a batch of preprocessed images to one embedding each. Adding an encoder is one module
that defines a class with this interface and one entry in ``FACTORIES``.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np
import torch


class EncoderError(ValueError):
    """An encoder that cannot be loaded as asked; the message is one line and names what to do instead."""


class Encoder(Protocol):
    """A semantic image encoder."""

    id: str  # the spec it was loaded from, e.g. "effnet-lite0" or "clip:ViT-B-32@laion2b_s34b_b79k"
    weights: str  # provenance of the weights: a file path with its SHA-256, or a hub tag
    dim: int
    model: torch.nn.Module

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 H x W x 3 RGB -> float C x S x S tensor, ready for ``forward`` (runs in loader workers)."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) on the model's device -> (B, dim) features (not yet normalised)."""


# spec prefix -> "module:function" building the encoder from (spec argument, device)
FACTORIES = {
    "effnet-lite0": "saqt.encoders.effnet:load_effnet_lite0",
    "clip": "saqt.encoders.clip:load_clip",
    "resnet50": "saqt.encoders.resnet:load_resnet50",
    "resnet101": "saqt.encoders.resnet:load_resnet101",
}


def pick_device(device: str = "auto", index: int = 0) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` means GPU ``index`` (a process's local rank)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(f"cuda:{index}" if device == "cuda" else device)


def load_encoder(spec: str, device: str = "auto") -> Encoder:
    """Resolve ``effnet-lite0``, ``clip:<open_clip model>@<pretrained tag or checkpoint path>`` or
    ``resnet50|resnet101[@<weights file>]``."""
    name, _, argument = spec.partition(":")
    if name not in FACTORIES:
        name, _, argument = spec.partition("@")
    if name not in FACTORIES:
        raise EncoderError(f"unknown encoder {spec!r}; use effnet-lite0, clip:<model>@<tag or checkpoint path>, "
                           "or resnet50|resnet101[@<weights file>]")  # fmt: skip
    module, _, function = FACTORIES[name].partition(":")
    encoder = getattr(importlib.import_module(module), function)(argument, pick_device(device))
    encoder.model.eval()
    return encoder

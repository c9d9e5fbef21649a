"""The encoder protocol and the registry that resolves an encoder spec string.

An encoder maps a batch of preprocessed images to one embedding each. Adding an encoder is one module
that defines a class with this interface and one entry in ``FACTORIES`` (the error messages and the CLI's help
list the encoders from it). Importing this module does not import torch: the CLI lists encoders without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from saqt.errors import SaqtError
from saqt.registry import resolve

if TYPE_CHECKING:
    import numpy as np
    import torch


class EncoderError(SaqtError, ValueError):
    """An encoder that cannot be loaded as asked; the message is one line and names what to do instead."""


class DeviceError(SaqtError, ValueError):
    """A --device this machine does not have."""


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


@dataclass(frozen=True)
class Factory:
    """One kind of encoder: the ``module:function`` that builds it from (spec argument, device), how a spec names
    it, and what it is."""

    target: str
    form: str
    about: str


# spec prefix -> its factory; a spec is "<prefix>:<argument>", "<prefix>@<argument>" or "<prefix>"
FACTORIES = {
    "clip": Factory(
        "saqt.encoders.clip:load_clip",
        "clip:<open_clip model>@<pretrained tag or checkpoint path>",
        "open_clip's weights",
    ),
    "effnet-lite0": Factory("saqt.encoders.effnet:load_effnet_lite0", "effnet-lite0", "offline, ImageNet"),
    "resnet50": Factory(
        "saqt.encoders.resnet:load_resnet50",
        "resnet50 or resnet50@<weights file>",
        "torchvision ImageNet weights, downloaded unless a file is given",
    ),
    "resnet101": Factory(
        "saqt.encoders.resnet:load_resnet101",
        "resnet101 or resnet101@<weights file>",
        "the authors' encoder: torchvision ImageNet weights, downloaded unless a file is given",
    ),
}


def encoder_forms(about: bool = False) -> str:
    """How a spec may name each encoder of ``FACTORIES``, with what it is when ``about``."""
    return "; ".join(f"{f.form} ({f.about})" if about else f.form for f in FACTORIES.values())


def pick_device(device: str = "auto", index: int = 0) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` means GPU ``index`` (a process's local rank).
    DeviceError for a device that is not written auto, cpu, cuda[:N] or mps, or that this machine lacks."""
    import torch

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise DeviceError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            f"--device {device}: no CUDA GPU is usable here (torch.cuda.is_available() is False); "
            "use --device cpu or auto"
        )
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPUs")
    if device == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("--device mps: Apple's Metal backend is not available here; use --device cpu or auto")
    return torch.device(f"cuda:{index}" if device == "cuda" else device)


def load_encoder(spec: str, device: str = "auto") -> Encoder:
    """The encoder ``spec`` names, as :func:`encoder_forms` lists them, on ``device``."""
    name, _, argument = spec.partition(":")
    if name not in FACTORIES:
        name, _, argument = spec.partition("@")
    if name not in FACTORIES:
        raise EncoderError(f"unknown encoder {spec!r}; use one of: {encoder_forms()}")
    encoder = resolve(FACTORIES[name].target)(argument, pick_device(device))
    encoder.model.eval()
    return encoder

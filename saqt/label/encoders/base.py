"""The encoder protocol and the registry that resolves an encoder spec string.

An encoder maps a batch of preprocessed images to one embedding each. Adding an encoder is one module
that defines a class with this interface and one entry in ``FACTORIES`` (the error messages and the CLI's help
list the encoders from it). Importing this module does not import torch: the CLI lists encoders without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from saqt.core.context import pick_device
from saqt.core.errors import SaqtError
from saqt.core.registry import resolve

if TYPE_CHECKING:
    import numpy as np
    import torch


class EncoderError(SaqtError, ValueError):
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
        "saqt.label.encoders.clip:load_clip",
        "clip:<open_clip model>@<pretrained tag or checkpoint path>",
        "open_clip's weights",
    ),
    "effnet-lite0": Factory("saqt.label.encoders.effnet:load_effnet_lite0", "effnet-lite0", "offline, ImageNet"),
    "resnet50": Factory(
        "saqt.label.encoders.resnet:load_resnet50",
        "resnet50 or resnet50@<weights file>",
        "torchvision ImageNet weights, downloaded unless a file is given",
    ),
    "resnet101": Factory(
        "saqt.label.encoders.resnet:load_resnet101",
        "resnet101 or resnet101@<weights file>",
        "the authors' encoder: torchvision ImageNet weights, downloaded unless a file is given",
    ),
}


def encoder_forms(about: bool = False) -> str:
    """How a spec may name each encoder of ``FACTORIES``, with what it is when ``about``."""
    return "; ".join(f"{f.form} ({f.about})" if about else f.form for f in FACTORIES.values())


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

"""torchvision ResNet-50/101 with ImageNet weights: the encoder of the authors' SAQT pipeline.

As the official release (SYSU-Video/GlintIQA ``dataset_generation``) runs it: the full image at its own
resolution (no resize or crop), scaled to [0, 1] and normalised by the ImageNet mean and std, through the
network up to its global average pool; the 2048-d pooled features are L2-normalised by the embedding stage.
Weights: the files the release downloads (torchvision's original ImageNet checkpoints), or a local copy given
as ``resnet101@/path/to/resnet101-5d3b4d8f.pth`` (a torchvision state dict, read with ``weights_only=True``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

from saqt.core.network import torch_hub_unreachable
from saqt.core.shards import sha256_file
from saqt.label.encoders.base import EncoderError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The checkpoints the official release loads (torchvision's original ImageNet weights, hash-named files).
RELEASE_WEIGHTS = {
    "resnet50": "https://download.pytorch.org/models/resnet50-19c8e357.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth",
}


@dataclass
class ResNetEncoder:
    """Global-average-pooled final features (2048-d) of a torchvision ResNet at the image's own resolution."""

    model: torch.nn.Module
    weights: str
    id: str
    device: torch.device
    dim: int = 2048
    autocast: bool = False  # fp32 as the release: half precision could flip near-tied top-1 matches

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 RGB -> float C x H x W at full resolution: x / 255, then (x - mean) / std per channel."""
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return x.sub(mean).div(std)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Pooled features (the classifier is removed)."""
        return self.model(batch)


def _state_dict(name: str, argument: str) -> tuple[dict, str]:
    """The weights and their provenance: a local file, or the release's download (cached by torch.hub)."""
    if argument:
        path = Path(argument).expanduser()
        if not path.is_file():
            raise EncoderError(f"{name} weights file {argument} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a pickle that is not plain tensors, or not a torch file at all
            raise EncoderError(f"{path} is not a torch state dict readable with weights_only=True ({err})") from None
        digest = sha256_file(path)
        return state, f"{path.name} sha256:{digest[:16]}"
    return _release_state_dict(name)


def _release_state_dict(name: str) -> tuple[dict, str]:
    """The release's checkpoint through torch.hub (its cache, else a download); one line where it cannot be had."""
    url = RELEASE_WEIGHTS[name]
    file = url.rsplit("/", 1)[1]
    instead = f"pass a local copy of {url} as --encoder {name}@/path/to/{file}"
    if why := torch_hub_unreachable(url):
        raise EncoderError(f"cannot download the {name} ImageNet weights {file} ({why}); {instead}")
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True, weights_only=True)
    except Exception as err:  # a cut connection (URLError), a truncated or tampered download (hash mismatch)
        raise EncoderError(
            f"cannot download the {name} ImageNet weights {file} ({type(err).__name__}); {instead}"
        ) from None
    return state, f"torchvision:{file}"


def _load(name: str, argument: str, device: torch.device) -> ResNetEncoder:
    state, weights = _state_dict(name, argument)
    model = getattr(torchvision.models, name)(weights=None)
    if not isinstance(state, dict):
        raise EncoderError(f"{argument} does not hold a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).split("\n\t")[1] if "\n\t" in str(err) else str(err)
        raise EncoderError(
            f"{argument or weights} is not a torchvision {name} state dict ({first.strip()[:200]})"
        ) from None
    model.fc = torch.nn.Identity()
    return ResNetEncoder(model.to(device), weights, name, device)


def load_resnet50(argument: str, device: torch.device) -> ResNetEncoder:
    """``resnet50`` (the authors' first release) or ``resnet50@<weights file>``."""
    return _load("resnet50", argument, device)


def load_resnet101(argument: str, device: torch.device) -> ResNetEncoder:
    """``resnet101`` (the official release's default) or ``resnet101@<weights file>``."""
    return _load("resnet101", argument, device)

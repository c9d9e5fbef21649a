"""CLIP image towers through open_clip: a hub tag for users with internet, or a local checkpoint file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from saqt.core.network import hub_cache_only, hub_unreachable
from saqt.core.shards import sha256_file
from saqt.label.encoders.base import EncoderError

OFFLINE_HINT = "offline alternatives: --encoder effnet-lite0, or --encoder clip:<model>@/path/to/checkpoint"


@dataclass
class ClipEncoder:
    """The image embedding of an open_clip model."""

    model: torch.nn.Module
    transform: object
    weights: str
    id: str
    dim: int
    device: torch.device

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """open_clip's own evaluation transform for this model."""
        return self.transform(Image.fromarray(image))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Image embeddings."""
        return self.model.encode_image(batch)


def load_clip(argument: str, device: torch.device) -> ClipEncoder:
    """``argument`` is ``<open_clip model>@<pretrained tag or checkpoint path>``."""
    import open_clip

    model_name, sep, pretrained = argument.partition("@")
    if not model_name or not sep or not pretrained:
        raise EncoderError(f"CLIP encoders are written clip:<model>@<tag or checkpoint path>, got clip:{argument}")
    if model_name not in open_clip.list_models():
        raise EncoderError(f"open_clip has no model {model_name!r} (see open_clip.list_models())")
    local = Path(pretrained).expanduser()
    if local.exists():
        weights = f"{local.name} sha256:{sha256_file(local)[:16]}"
        pretrained = str(local)
    elif pretrained in open_clip.list_pretrained_tags_by_model(model_name):
        weights = f"open_clip:{model_name}/{pretrained}"
    else:
        raise EncoderError(f"{pretrained!r} is neither a file nor a pretrained tag of {model_name}; {OFFLINE_HINT}")
    offline = None if local.exists() else hub_unreachable()
    try:
        with hub_cache_only(offline is not None):
            model, _, transform = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device
            )
    except RuntimeError as err:
        if "download" in str(err).lower():
            why = f"{offline}, and they are not cached" if offline else "no network?"
            raise EncoderError(
                f"cannot download the {model_name} weights {pretrained!r} ({why}); {OFFLINE_HINT}"
            ) from None
        raise
    dim = model.visual.output_dim
    return ClipEncoder(model, transform, weights, f"clip:{model_name}@{pretrained}", dim, device)

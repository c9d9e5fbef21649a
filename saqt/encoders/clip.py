"""CLIP image towers through open_clip: a hub tag for users with internet, or a local checkpoint file."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image

from saqt.encoders.base import EncoderError
from saqt.shards import sha256_file

OFFLINE_HINT = "offline alternatives: --encoder effnet-lite0, or --encoder clip:<model>@/path/to/checkpoint"
HUB_TIMEOUT_S = 3.0  # a connection to the Hub that takes longer counts as none


def hub_reachable() -> bool:
    """Whether the Hugging Face Hub accepts a connection within HUB_TIMEOUT_S (never in its offline mode; always
    behind a proxy, which decides)."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=HUB_TIMEOUT_S
        ).close()
    except OSError:
        return False
    return True


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """With ``offline``, the Hub's client reads its cache only, at once, without retrying the network (it would
    retry for about a minute) or logging each try."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
        logging.disable(logging.NOTSET)


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
    offline = not local.exists() and not hub_reachable()
    try:
        with _hub_offline(offline):
            model, _, transform = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device
            )
    except RuntimeError as err:
        if "download" in str(err).lower():
            why = "the Hugging Face Hub is unreachable and they are not cached" if offline else "no network?"
            raise EncoderError(
                f"cannot download the {model_name} weights {pretrained!r} ({why}); {OFFLINE_HINT}"
            ) from None
        raise
    dim = model.visual.output_dim
    return ClipEncoder(model, transform, weights, f"clip:{model_name}@{pretrained}", dim, device)

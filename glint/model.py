"""GlintIQA as the official release builds it (SYSU-Video/GlintIQA at commit 34c8936, glintiqa/models/): a ViT-S/16
global branch (VGFE), a CNN local branch aligned to the 14 x 14 token grid (CLFE), channel-wise self-attention
(CWSA), four progressive integration stages (CWSA + SIEM), a regression head. Module names are the release's, so
its state dicts load tensor for tensor.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from glint import scoring
from glint.architecture import CWSA_VARIANTS, LOCAL_BACKBONES, GlintConfig
from glint.backbones import ViTBackbone
from glint.scale import recorded_scale
from saqt.core.errors import ConfigError
from saqt.core.registry import resolve

TOKENS = 196  # 14 x 14 at 224 px
GRID = 14


class CWSA(nn.Module):
    """Channel-wise self-attention on x of shape (B, C, N): each channel's spatial vector is projected to query, key
    and value (Linear N -> N), queries and keys L2-normalised, attention is C x C with scale N^-0.5.

    ``variant="released"`` computes what the release computes: the (B, C, N) attention output is transposed to
    (B, N, C) and its memory read back as (B, C, N), which interleaves channels and tokens; its checkpoints were
    trained so. ``"plain"`` keeps the attention output as it is (a documented alternative).
    """

    def __init__(self, tokens: int = TOKENS, dropout: float = 0.5, variant: str = "released"):
        super().__init__()
        if variant not in CWSA_VARIANTS:
            raise ConfigError(f"CWSA variant must be one of {', '.join(CWSA_VARIANTS)}, got {variant!r}")
        self.c_q, self.c_k, self.c_v = (nn.Linear(tokens, tokens) for _ in range(3))
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(tokens)
        self.scale = tokens**-0.5
        self.variant = variant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        q = nn.functional.normalize(self.c_q(x), dim=-1)
        k = nn.functional.normalize(self.c_k(x), dim=-1)
        mixed = torch.softmax(q @ k.transpose(1, 2) * self.scale, dim=-1) @ self.c_v(x)  # (B, C, N)
        if self.variant == "released":
            mixed = mixed.transpose(1, 2).reshape(b, c, n)
        return x + self.norm(self.drop(mixed))


class SIEM(nn.Module):
    """Spatial interaction enhancement: (B, C, 196) as a 14 x 14 map -> 3 x 3 convolution (no bias) -> (B, 196, C')."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.reshape(x.shape[0], x.shape[1], GRID, GRID)).flatten(2).transpose(1, 2)


class TokenEmbed(nn.Module):
    """A feature map -> (B, 196, dim) tokens by a kernel = stride convolution (with bias), as timm's PatchEmbed."""

    def __init__(self, cin: int, dim: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VGFE(nn.Module):
    """Global branch: the ViT-S/16 token maps of blocks 6-9."""

    def __init__(self, weights: str | None):
        super().__init__()
        self.backbone = ViTBackbone(weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(x)


class CLFE(nn.Module):
    """Local branch: three CNN stages (1/4, 1/8, 1/16) embedded as 196 tokens each (kernel = stride 4, 2, 1)."""

    def __init__(self, local_backbone: str, weights: str | None, dim: int):
        super().__init__()
        cnn_cls = resolve(LOCAL_BACKBONES[local_backbone])
        self.backbone = cnn_cls(weights)
        c1, c2, c3 = cnn_cls.channels
        self.patch_embed1, self.patch_embed2, self.patch_embed3 = (
            TokenEmbed(c1, dim, 4),
            TokenEmbed(c2, dim, 2),
            TokenEmbed(c3, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1, f2, f3 = self.backbone(x)
        return [self.patch_embed1(f1), self.patch_embed2(f2), self.patch_embed3(f3)]


class QualityHead(nn.Module):
    """Linear -> GELU -> Dropout -> Linear(1) on the token mean."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten()


class GlintIQA(nn.Module):
    """A no-reference quality model: (B, 3, 224, 224) images normalised with mean = std = 0.5 -> (B,) scores."""

    def __init__(self, config: GlintConfig = GlintConfig()):
        super().__init__()
        self.config = config
        d = ViTBackbone.dim
        self.vgfe = VGFE(config.vit_weights)
        self.clfe = CLFE(config.local_backbone, config.cnn_weights, d)
        self.local_cwsa = CWSA(dropout=config.dropout, variant=config.cwsa)
        self.local_projection = nn.Linear(3 * d, d)
        for i in range(1, 5):
            setattr(self, f"cwsa{i}", CWSA(dropout=config.dropout, variant=config.cwsa))
        for i in range(1, 5):
            setattr(self, f"siem{i}", SIEM(2 * d, d))
        self.quality_head = QualityHead(d, config.dropout)

    def stages(self) -> list[tuple[CWSA, SIEM]]:
        """The four integration stages, in order."""
        return [(getattr(self, f"cwsa{i}"), getattr(self, f"siem{i}")) for i in range(1, 5)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        global_tokens = self.vgfe(x)  # 4 x (B, 196, 384)
        local = torch.cat(self.clfe(x), dim=2)  # (B, 196, 1152)
        feature = self.local_projection(self.local_cwsa(local.transpose(1, 2)).transpose(1, 2))  # (B, 196, 384)
        for tokens, (cwsa, siem) in zip(global_tokens, self.stages(), strict=True):
            feature = siem(cwsa(torch.cat([tokens, feature], dim=2).transpose(1, 2)))
        return self.quality_head(feature.mean(dim=1))

    def score(
        self, images, crops: int = 25, batch_size: int = scoring.BATCH_IMAGES, seed: int = 0, progress: bool = False
    ) -> np.ndarray:
        """Quality scores (a float64 numpy array, one per image) of file paths, PIL images or uint8 RGB arrays, on
        the model's device, in eval mode: the mean over ``crops`` random 224 crops per image, ``batch_size`` images
        per forward pass; the crop protocol of ``glint evaluate`` and ``glint predict`` (see ``glint.scoring``)."""
        return scoring.score(self, images, crops, batch_size, seed, progress)

    @property
    def score_scale(self) -> str:
        """The scale of ``score``'s values: the range of the labels the model was last trained on, as its checkpoint
        records (``glint.scale.recorded_scale``; ``unknown`` without a record). Scores may fall outside it."""
        return recorded_scale(getattr(getattr(self, "checkpoint", None), "meta", None))


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameters."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


def refuse_random_backbones(config: GlintConfig, random_init: bool) -> None:
    """ConfigError when a backbone would start from random weights and ``random_init`` does not allow it."""
    missing = config.random_backbones()
    if missing and not random_init:
        raise ConfigError(
            f"the {' and '.join(missing)} backbone{'s' if len(missing) > 1 else ''} would start from "
            "random weights: give --vit-weights timm|FILE and --cnn-weights torchvision|FILE (the "
            "downloads need internet), or --random-init to start from random weights on purpose"
        )


def new_model(config: GlintConfig, seed: int, random_init: bool = False) -> GlintIQA:
    """A fresh model, its random parts initialised from ``seed``; refused when a backbone would be random without
    ``random_init`` (random backbones warn with a RandomWeightsWarning)."""
    refuse_random_backbones(config, random_init)
    torch.manual_seed(seed)
    return GlintIQA(config)

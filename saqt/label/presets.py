"""Named settings for ``saqt label``: ``--preset authors`` is how the labels of the published checkpoints were made.

Options given on the command line override the built-in defaults; with a preset they may only repeat it
(a weights file for its encoder aside), so a label set that says ``preset: authors`` is the authors' setup.
"""

from __future__ import annotations

from saqt.core.errors import ConfigError

DEFAULTS = {"encoder": "clip:ViT-B-32@laion2b_s34b_b79k", "rule": "top1", "normalise": "minmax:0:9"}
PRESETS = {
    # The matches the published checkpoints were pretrained on: the official run.sh pretrains with
    # similarity_img_in_kadid-10k_resnet50.csv, and the first release (XiaoqiWang/GlintIQA create_dataset, step 1
    # --model_name resnet50, the default of its utils.py) made similarity_img_in_kadid-10k.csv (``--matches authors``)
    # with torchvision ResNet-50 pooled features of the full image, ImageNet mean/std, L2-normalised; top-1 by
    # cosine similarity; KADID DMOS min-max normalised to [0, 9].
    "authors": {"encoder": "resnet50", "rule": "top1", "normalise": "minmax:0:9"},
    # The same with ResNet-101: the paper's description and the default of SYSU-Video/GlintIQA (34c8936)
    # dataset_generation; no published checkpoint names it.
    "authors-resnet101": {"encoder": "resnet101", "rule": "top1", "normalise": "minmax:0:9"},
}


def label_settings(
    preset: str | None, matches: str | None, encoder: str | None, rule: str | None, normalise: str | None
) -> dict:
    """encoder, rule and normalise for ``saqt label``; ValueError for a preset or combination that cannot hold."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if matches and encoder is not None:
        raise ConfigError("--encoder has no effect with --matches: the given matches replace the encoder")
    base = PRESETS.get(preset, DEFAULTS)
    given = {"encoder": encoder, "rule": rule, "normalise": normalise}
    if preset:
        for name, value in given.items():
            same = value is None or value == base[name] or (name == "encoder" and value.startswith(base[name] + "@"))
            if not same:
                raise ConfigError(f"--preset {preset} uses --{name} {base[name]}; got --{name} {value}")
    return {name: base[name] if value is None else value for name, value in given.items()}

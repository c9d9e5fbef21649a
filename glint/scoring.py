"""Scoring images with the test-time crop protocol: the mean prediction over random 224 crops of each image, the
crops of several images in one forward pass. The per-epoch evaluation, ``glint evaluate``, ``glint predict`` and
``GlintIQA.score`` all score through ``predict_images``.

Each image's crops are drawn from a seed derived from (seed, key): its index in an evaluation set, its file name for
``glint predict`` and for paths given to ``GlintIQA.score``, a digest of its pixels for images given in memory; so a
score does not depend on the order of the images, nor (beyond float rounding) on how they are grouped into passes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from glint.configs import BATCH_IMAGES, MIN_SIDE
from glint.data import crop_views, prepare
from saqt.core.errors import ConfigError, SaqtError
from saqt.core.images import decode_image, to_rgb  # to_rgb: Pillow modes to RGB exactly as a decoded file is
from saqt.core.progress import Progress
from saqt.core.seeding import derive_seed


class UnscorableImageError(SaqtError, ValueError):
    """An input that cannot be scored (too small to judge, not an image); one line naming it and why."""


def crop_seed(seed: int, key: int | str) -> int:
    """The seed of one image's test crops."""
    return derive_seed(seed, "test-crops", key)


def scoring_amp(model: torch.nn.Module) -> bool:
    """Whether to score under fp16 autocast on CUDA: as the checkpoint's training did (fp32 without a record, as the
    release scores)."""
    meta = getattr(getattr(model, "checkpoint", None), "meta", {}) or {}
    return bool(meta.get("train_config", {}).get("amp", False))


@torch.inference_mode()
def predict_images(
    model: torch.nn.Module,
    images: Iterable[tuple[np.ndarray, int]],
    crops: int,
    device: torch.device,
    resize: tuple[int, int] | None = None,
    batch_size: int = BATCH_IMAGES,
    amp: bool = False,
    bar: Progress | None = None,
    released_crops: bool = False,
) -> list[float]:
    """Mean prediction over ``crops`` random 224 crops of each (uint8 RGB image, crop seed), ``batch_size`` images
    per forward pass, the model in eval mode; fp16 autocast on CUDA when ``amp``. ``bar`` is advanced per image.
    ``released_crops``: crops drawn as the release's ``RandomCrop`` draws them (``glint.data.crop_views``)."""
    if crops < 1 or batch_size < 1:
        raise ConfigError(f"crops and batch size must be at least 1, got {crops} and {batch_size}")
    model.eval()
    half = amp and device.type == "cuda"
    out: list[float] = []
    pending: list[torch.Tensor] = []
    for image, seed in images:
        pending.append(crop_views(prepare(image, resize), crops, seed, released_crops))
        if len(pending) == batch_size:
            out += mean_scores(model, pending, device, half, bar)
            pending = []
    if pending:
        out += mean_scores(model, pending, device, half, bar)
    return out


def mean_scores(
    model, views: list[torch.Tensor], device: torch.device, half: bool, bar: Progress | None
) -> list[float]:
    """The mean prediction over each image's crops (``views``: one tensor of crops per image) in one forward pass."""
    x = torch.cat(views).to(device, non_blocking=True)
    with torch.autocast("cuda", dtype=torch.float16, enabled=half):
        y = model(x).float()
    if bar is not None:
        bar.update(len(views))
    return y.view(len(views), -1).mean(dim=1).tolist()


def checked(image: np.ndarray, name: str, min_side: int = MIN_SIDE) -> np.ndarray:
    """``image`` if it is large enough to judge; UnscorableImageError otherwise."""
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        raise UnscorableImageError(f"{name}: {w}x{h} is too small to score (under {min_side} px on a side)")
    return image


def as_rgb(image) -> tuple[np.ndarray, str]:
    """(uint8 H x W x 3 pixels, crop-seed key) of a path, a PIL image or a uint8 array (H x W x 3, or H x W grey)."""
    if isinstance(image, str | Path):
        return decode_image(image), Path(image).name
    if isinstance(image, Image.Image):
        pixels = np.asarray(to_rgb(image))
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise UnscorableImageError(
                f"an image array must be uint8 H x W x 3 (or H x W), got {image.dtype} {image.shape}"
            )
        pixels = np.ascontiguousarray(
            np.broadcast_to(image.reshape(*image.shape[:2], 1), (*image.shape[:2], 3))
            if image.ndim == 2 or image.shape[2] == 1
            else image
        )
    else:
        raise UnscorableImageError(
            f"cannot score a {type(image).__name__}: give file paths, PIL images or uint8 arrays"
        )
    digest = hashlib.blake2b(str(pixels.shape).encode(), digest_size=8)
    digest.update(pixels.tobytes())
    return pixels, digest.hexdigest()


def score(
    model: torch.nn.Module,
    images,
    crops: int = 25,
    batch_size: int = BATCH_IMAGES,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Scores (float64, one per image) of paths, PIL images or uint8 arrays (one, a list, or an N x H x W x 3 array)
    on the model's device.
    A file that cannot be read or an image under 32 px on a side raises a one-line SaqtError naming it."""
    single = isinstance(images, str | Path | Image.Image) or (isinstance(images, np.ndarray) and images.ndim < 4)
    items = [images] if single else list(images)
    device = next(model.parameters()).device

    def stream() -> Iterator[tuple[np.ndarray, int]]:
        for i, item in enumerate(items):
            pixels, key = as_rgb(item)
            yield checked(pixels, key if isinstance(item, str | Path) else f"image {i}"), crop_seed(seed, key)

    with Progress(total=len(items), desc="score", unit="img", disable=not progress) as bar:
        values = predict_images(model, stream(), crops, device, None, batch_size, scoring_amp(model), bar)
    return np.asarray(values, dtype=np.float64)

"""``saqt bank synth``: a labelled bank from any reference images, scored by a full-reference proxy metric.

For demos, tests and users without licensed MOS data. The scores are a metric, not human opinion:
the bank manifest says ``proxy: true`` and every label transferred from it carries that flag.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from saqt import __version__
from saqt.bank import BANK_MANIFEST, Bank, BankError, bank_spec, load_bank
from saqt.build import Executor
from saqt.distortions import PreparedImage, distort
from saqt.images import DEFAULT_MAX_PIXELS, ImageDecodeError, encode_png
from saqt.pool import choose_pool
from saqt.pristine import prepare_pristine
from saqt.screen import Screen
from saqt.seeding import derive_seed
from saqt.shards import write_json_atomic
from saqt.sources import Quota, SourceError, SourceItem, list_source

MS_SSIM_MIN_SIDE = 161  # five scales of an 11-tap window


def ms_ssim(reference: np.ndarray, distorted: list[np.ndarray]) -> list[float]:
    """Multi-scale SSIM (Wang et al. 2003; pytorch_msssim) of each distorted image against the reference."""
    from pytorch_msssim import ms_ssim as msssim

    ref = torch.from_numpy(reference.copy()).permute(2, 0, 1)[None].float()
    out = []
    for i in range(0, len(distorted), 25):
        batch = torch.from_numpy(np.stack(distorted[i : i + 25])).permute(0, 3, 1, 2).float()
        out += msssim(ref.expand(len(batch), -1, -1, -1), batch, data_range=255, size_average=False).tolist()
    return out


def psnr(reference: np.ndarray, distorted: list[np.ndarray]) -> list[float]:
    """PSNR in dB, capped at 100 for identical images."""
    ref = reference.astype(np.float64)
    mse = [np.mean((ref - d) ** 2) for d in distorted]
    return [100.0 if m == 0 else min(100.0, 10 * np.log10(255.0**2 / m)) for m in mse]


METRICS: dict[str, Callable] = {"ms_ssim": ms_ssim, "psnr": psnr}


@dataclass(frozen=True)
class SynthConfig:
    """What a synthetic bank is built from and how it is scored."""

    source: str = "folder"
    root: str | None = None
    list_file: str | None = None
    limit: int | None = None
    seed: int = 0
    size: tuple[int, int] = (512, 384)
    metric: str = "ms_ssim"
    min_side: int = 128
    min_jpeg_quality: int = 90
    max_upscale: float = 1.0
    allow_grey: bool = False
    save_distorted: bool = False

    @property
    def reference_screen(self) -> Screen:
        """The pristine screen each reference must pass, as in ``saqt build``."""
        return Screen(self.min_side, self.min_jpeg_quality, self.allow_grey, self.max_upscale)

    def check(self) -> None:
        """Raise ValueError naming the first option that cannot work."""
        if self.metric not in METRICS:
            raise ValueError(f"--metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.metric == "ms_ssim" and min(self.size) < MS_SSIM_MIN_SIDE:
            raise ValueError(
                f"ms_ssim needs both sides of --size >= {MS_SSIM_MIN_SIDE} px; use a larger --size or --metric psnr"
            )
        if min(self.size) < 48:
            raise ValueError("--size: both sides must be at least 48 px")


def _reference_name(item: SourceItem, pristine_id: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(item.key).stem)[:40]
    return f"images/{stem}_{pristine_id[:8]}.png"


@dataclass(frozen=True)
class _ScoreReference:
    """Distort one reference 125 ways and score each (picklable for worker processes)."""

    config: SynthConfig

    def __call__(
        self, item: SourceItem
    ) -> tuple[str, str | None, bytes | None, list[tuple[int, int, float, bytes | None]]]:
        try:
            p = prepare_pristine(item, self.config.size, self.config.reference_screen, DEFAULT_MAX_PIXELS)
        except ImageDecodeError as err:
            return item.key, str(err), None, []
        src = PreparedImage(p.image)
        cells = [(t, lv) for t in range(1, 26) for lv in range(1, 6)]
        renders = [distort(src, t, lv, seed=derive_seed(self.config.seed, p.pristine_id, t, lv)) for t, lv in cells]
        scores = METRICS[self.config.metric](p.image, renders)
        name = _reference_name(item, p.pristine_id)
        pngs = [encode_png(r) if self.config.save_distorted else None for r in renders]
        return (
            item.key,
            name,
            encode_png(p.image),
            [(t, lv, s, png) for (t, lv), s, png in zip(cells, scores, pngs, strict=True)],
        )

    def describe(self, item: SourceItem) -> str:
        return f"reference {item.key}"


def synth_bank(config: SynthConfig, out: Path, executor: Executor, command: str = "", progress: bool = True) -> Bank:
    """Write a proxy-scored bank to ``out`` (images/, scores.csv, bank.json) and return it."""
    config.check()
    listing = list_source(config.source, Path(config.root) if config.root else None,
                          Path(config.list_file) if config.list_file else None)  # fmt: skip
    pool = choose_pool(listing.items, Quota(listing.items, config.limit), config.seed, config.size,
                       config.reference_screen, DEFAULT_MAX_PIXELS, executor, progress)  # fmt: skip
    items = pool.kept
    if not items:
        raise SourceError(f"no reference image of source {config.source!r} passes the screen "
                          f"(refused: {[list(e) for e in (listing.errors + pool.refused)[:3]]})")  # fmt: skip
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, images, skipped = [], [], [list(e) for e in listing.errors + pool.refused]
    if config.save_distorted:
        (out / "distorted").mkdir(exist_ok=True)
    with tqdm(total=len(items), unit="ref", desc="bank synth", disable=not progress) as bar:
        for key, name, png, scores in executor.map_unordered(_ScoreReference(config), items):
            bar.update(1)
            if png is None:
                skipped.append([key, name])
                continue
            (out / name).write_bytes(png)
            rows += [(name, t, lv, s) for t, lv, s, _ in scores]
            for t, lv, s, distorted in scores:
                if distorted is not None:
                    path = f"distorted/{Path(name).stem}_{t:02d}_{lv:02d}.png"
                    (out / path).write_bytes(distorted)
                    images.append((path, s, name))
    if not rows:
        raise BankError(f"no usable reference images (skipped: {skipped[:3]})")
    with open(out / bank_spec("synth")["score_files"][0], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ref", "type", "level", "score"])
        writer.writerows(sorted(rows))
    if images:  # a small rated dataset of its own, for `glint finetune --dataset csv --csv dataset.csv`
        with open(out / "dataset.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "score", "ref"])
            writer.writerows(sorted(images))
    write_json_atomic(out / BANK_MANIFEST, {
        "kind": "synth", "proxy": True, "metric": config.metric, "score_meaning": f"full-reference {config.metric}, "
        "higher is better; a proxy, not human opinion", "config": json.loads(json.dumps(asdict(config))),
        "command": command, "toolkit_version": __version__, "skipped": skipped,
        "screen": {**config.reference_screen.describe(), "screened": pool.screened, "duplicates": pool.duplicates},
    })  # fmt: skip
    return load_bank(out)

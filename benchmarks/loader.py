"""The pretraining loader: images/s per worker, batch diversity, peak RSS, and the cores one GPU needs.

    python benchmarks/loader.py [--photos ../shared/data/kodak24] [--limit 8] [--batches 6] [--gpu-steps-per-s 8]

1. A real ``saqt build`` of ``--limit`` photos (512x384, all 25 types at level 3), once with pixels and once
   recipe-only, labelled by the mean rule of the KADID-10k table; each read by ``glint.pretrain_data`` in one
   process on one core (the work of one loader worker): batches of 32 training views, images/s and peak RSS.
   Recipe-only is measured twice: every pristine image kept decoded (a set smaller than the cache), and a
   one-image cache (a set far larger than the cache, where almost every render decodes its pristine first).
2. Batch diversity on the layout of the paper's set (125 distortions per pristine image, batch 128) at several
   sizes: distinct pristine images per batch of the epoch order against the uniform-shuffle expectation,
   computed analytically: for a batch of b rows drawn without replacement from N = P x c rows, c per pristine
   image, E[distinct] = P (1 - C(N - c, b) / C(N, b)).
3. Cores per GPU: the released pretraining step (batch 128, ViT-S/16 + ResNet-50, AMP) at ``--gpu-steps-per-s``
   (no GPU measured here; see the printed assumption) divided by each loader's images/s per worker.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from common import one_core, peak_rss_mib
from scipy.special import gammaln

from glint.pretrain_data import SaqtTraining, open_saqt, rank_batches
from glint.train import TrainConfig, make_loader
from pipelines.executors import LocalExecutor
from saqt.build import BuildConfig, run_build
from saqt.context import RunContext
from saqt.label import LabelConfig, run_label

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RELEASED_BATCH = 128
CELLS = 125  # distortions per pristine image in the paper's set
ASSUMPTION = (
    "assumed, not measured (no GPU lent): ViT-S/16 + ResNet-50 at 224, batch 128, fp16 AMP on one "
    "A100-class GPU; each backbone alone trains at roughly 2,000-3,000 images/s there (NVIDIA's published "
    "ResNet-50 AMP figures; ViT-S/16 is of similar cost), so the two in series at about 1,000 images/s"
)


def make_sets(photos: Path, limit: int, work: Path) -> dict[str, Path]:
    """Label folders of a materialised and a recipe-only build of the same photos and recipes."""
    out = {}
    for name, recipe_only in (("materialised", False), ("recipe-only", True)):
        config = BuildConfig(
            source="folder", root=str(photos), limit=limit, levels=(3,), recipe_only=recipe_only, max_upscale=2.0
        )
        run_build(config, work / name / "build", RunContext(LocalExecutor(1), progress=False))
        label = LabelConfig(build=str(work / name / "build"), bank=str(SHARED / "labels" / "KADID10k.csv"), rule="mean")
        run_label(label, work / name / "labels", RunContext(progress=False))
        out[name] = work / name / "labels"
    return out


def loader_rate(labels: str, cache: int, batches: int) -> tuple[float, float, float]:
    """(images per CPU second, images per wall second, peak RSS MiB) of one process on one core reading
    ``batches`` batches of 32 training views. CPU time is what a worker costs, whatever else shares the core."""
    one_core()
    data = SaqtTraining(open_saqt(labels, pristine_cache=cache), seed=0)
    loader = iter(make_loader(data, TrainConfig(batch_size=32, loader_workers=0), epoch=0, rank=0, world=1))
    next(loader)  # warm-up: files opened, first pristine images decoded
    start, cpu, images = time.perf_counter(), time.process_time(), 0
    for _ in range(batches):
        x, _ = next(loader, (None, None))
        if x is None:
            loader = iter(make_loader(data, TrainConfig(batch_size=32, loader_workers=0), 1, 0, 1))
            x, _ = next(loader)
        images += len(x)
    return images / (time.process_time() - cpu), images / (time.perf_counter() - start), peak_rss_mib()


def expected_distinct(pristine: int, cells: int, batch: int) -> float:
    """E[distinct pristine images] in a uniform batch of ``batch`` rows without replacement."""
    n = pristine * cells
    log_none = gammaln(n - cells + 1) - gammaln(n - cells - batch + 1) - gammaln(n + 1) + gammaln(n - batch + 1)
    return pristine * (1 - math.exp(log_none))


def diversity(
    pristine: int, cells: int = CELLS, batch: int = RELEASED_BATCH, epochs: int = 2
) -> tuple[float, int, int]:
    """(mean, min, median) distinct pristine images per full batch of the epoch order, rows ordered by pristine
    image as the shards hold them."""
    owner = np.arange(pristine * cells) // cells
    counts = [
        len(np.unique(owner[b]))
        for e in range(epochs)
        for b in rank_batches(len(owner), 0, e, 0, 1, batch)
        if len(b) == batch
    ]
    return float(np.mean(counts)), int(np.min(counts)), int(np.median(counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=SHARED / "kodak24")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--gpu-steps-per-s", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saqt-loader-") as work:
        sets = make_sets(args.photos, args.limit, Path(work))
        runs = {
            "materialised": (sets["materialised"], 64),
            "recipe-only, pristine cached": (sets["recipe-only"], 64),
            "recipe-only, one-image cache": (sets["recipe-only"], 1),
        }
        rates = {}
        for name, (labels, cache) in runs.items():
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # a fresh process: its own peak
                rates[name] = pool.submit(loader_rate, str(labels), cache, args.batches).result()
    images_per_s = args.gpu_steps_per_s * RELEASED_BATCH
    print(f"loader, one worker on one core ({args.limit} photos x 25 cells, 512x384, batches of 32 views):")
    print(
        f"| set | images per CPU second per worker | (per wall second) | peak RSS MiB | cores for one GPU at "
        f"{images_per_s:.0f} images/s |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, (rate, wall, rss) in rates.items():
        print(f"| {name} | {rate:.1f} | {wall:.1f} | {rss:.0f} | {math.ceil(images_per_s / rate)} |")
    print(f"GPU step rate {args.gpu_steps_per_s:g} steps/s x {RELEASED_BATCH}: {ASSUMPTION}")
    print(f"\nbatch diversity (batch {RELEASED_BATCH}, {CELLS} distortions per pristine image):")
    print("| pristine images | rows | distinct per batch: mean (min, median) | uniform expectation | ratio |")
    print("|---:|---:|---|---:|---:|")
    for pristine in (5, 100, 1000, 10000, 50000):
        mean, low, median = diversity(pristine)
        expected = expected_distinct(pristine, CELLS, RELEASED_BATCH)
        print(
            f"| {pristine:,} | {pristine * CELLS:,} | {mean:.2f} ({low}, {median}) | {expected:.2f} | "
            f"{mean / expected:.3f} |"
        )


if __name__ == "__main__":
    main()

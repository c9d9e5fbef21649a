"""GlintIQA throughput on this machine, against the bare model in the same run.

    python benchmarks/model.py [--photos ../shared/data/clive/images] [--backbone resnet50 efficientnet_lite0]

For each local backbone: training images/s of the real pipeline (files decoded, cropped and flipped in the
loader, L1 + Adam step) against the bare train step on ready tensors; scoring images/s of `glint predict`'s
path (decode, 25 crops, mean) against the bare forward of 25 crops; peak RSS.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
from common import peak_rss_mib

from glint.backbones import RandomWeightsWarning
from glint.data import Sample, TrainingImages
from glint.model import GlintConfig, GlintIQA
from glint.predict import score_files
from glint.train import TrainConfig, make_loader

CLIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clive" / "images"


def train_rates(model: GlintIQA, paths: list[Path], batch: int, steps: int) -> tuple[float, float]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-5)
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = torch.nn.functional.l1_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    x, y = torch.randn(batch, 3, 224, 224), torch.rand(batch) * 100
    step(x, y)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    raw = steps * batch / (time.perf_counter() - start)
    data = TrainingImages([Sample(str(p), 50.0, p.name) for p in paths[: steps * batch]])
    loader = make_loader(data, TrainConfig(batch_size=batch, loader_workers=1), 0, 0, 1)
    start, seen = time.perf_counter(), 0
    for xb, yb in loader:
        step(xb, yb)
        seen += len(xb)
    return raw, seen / (time.perf_counter() - start)


def score_rates(model: GlintIQA, paths: list[Path], images: int) -> tuple[float, float]:
    model.eval()
    x = torch.randn(25, 3, 224, 224)
    with torch.inference_mode():
        model(x)
        start = time.perf_counter()
        for _ in range(images):
            model(x)
        raw = images / (time.perf_counter() - start)
    start = time.perf_counter()
    score_files(model, paths[:images], crops=25, device="cpu")
    return raw, images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=CLIVE)
    parser.add_argument("--backbone", nargs="+", default=["resnet50", "efficientnet_lite0"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--images", type=int, default=6, help="images scored (25 crops each)")
    args = parser.parse_args()
    paths = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in {".jpg", ".png", ".bmp"})
    print(f"{torch.get_num_threads()} torch threads; {len(paths)} photos in {args.photos}")
    for backbone in args.backbone:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            model = GlintIQA(GlintConfig(local_backbone=backbone))
        raw_t, pipe_t = train_rates(model, paths, args.batch_size, args.steps)
        raw_s, pipe_s = score_rates(model, paths, args.images)
        print(
            f"{backbone:<18} training {pipe_t:5.2f} images/s (bare step {raw_t:5.2f}; ratio {pipe_t / raw_t:.2f})  "
            f"scoring {pipe_s:5.2f} images/s at 25 crops (bare forward {raw_s:5.2f}; ratio {pipe_s / raw_s:.2f})"
        )
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()

"""The pristine screen's cost per candidate (``prepare_pristine``) on an ImageNet-shaped mix of JPEGs.

    python benchmarks/screen.py [--images 200] [--rounds 3] [--seed 0]

Synthetic photo-like JPEGs: mostly about 500 x 375 (ImageNet's usual size, which needs upscaling to cover
512 x 384) at quality 75-95, some larger ones below quality 90, some larger colour ones at 90-95 (kept) and a few
larger grey ones (refused for colour, which only the pixels tell). Under the default screen at 512 x 384, prints
candidates per CPU-second (``time.process_time``, best of the rounds, one process, pure PIL and NumPy) for the
refusals the header decides (size, upscaling, JPEG quality), the refusals made on decoded pixels, and the kept
candidates. Run it with another checkout first on PYTHONPATH to compare.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from saqt.build.pristine import prepare_pristine
from saqt.build.screen import Screen
from saqt.build.sources import SourceItem
from saqt.core.images import DEFAULT_MAX_PIXELS, ImageDecodeError

SIZE = (512, 384)
HEADER_REASONS = ("too small", "needs upscaling", "low JPEG quality")
KINDS = ("header-decidable refusals", "refused after decoding", "kept")


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth random colour fields with fine noise: JPEG-compresses and decodes like a photo."""
    coarse = Image.fromarray(rng.integers(0, 256, (height // 32 + 2, width // 32 + 2, 3), np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), np.float32)
    return Image.fromarray(np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8))


def jpeg_mix(rng: np.random.Generator, count: int, folder: Path) -> list[Path]:
    """``count`` JPEGs: 75% ImageNet-sized, 12% large below quality 90, 10% large kept, 3% large grey."""
    paths = []
    for i in range(count):
        draw = rng.random()
        if draw < 0.75:
            size, quality, grey = [(500, 375), (500, 333), (375, 500), (500, 500)][i % 4], rng.integers(75, 96), False
        else:
            size, grey = [(640, 480), (800, 600), (1024, 768)][i % 3], draw > 0.97
            quality = rng.integers(75, 90) if draw < 0.87 else rng.integers(90, 96)
        img = photo(rng, *size)
        buf = io.BytesIO()
        (img.convert("L").convert("RGB") if grey else img).save(buf, "JPEG", quality=int(quality))
        paths.append(folder / f"{i:04d}.jpg")
        paths[-1].write_bytes(buf.getvalue())
    return paths


def kind_of(item: SourceItem, screen: Screen) -> str:
    try:
        prepare_pristine(item, SIZE, screen, DEFAULT_MAX_PIXELS)
    except ImageDecodeError as err:
        return KINDS[0] if str(err).startswith(HEADER_REASONS) else KINDS[1]
    return KINDS[2]


def timed_round(items: list[SourceItem], screen: Screen) -> tuple[dict[str, int], dict[str, float]]:
    counts, seconds = dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0.0)
    for item in items:
        start = time.process_time()
        kind = kind_of(item, screen)
        seconds[kind] += time.process_time() - start
        counts[kind] += 1
    return counts, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saqt-screen-") as tmp:
        paths = jpeg_mix(np.random.default_rng(args.seed), args.images, Path(tmp))
        items = [SourceItem(p.name, str(p)) for p in paths]
        rounds = [timed_round(items, Screen()) for _ in range(args.rounds)]
    counts = rounds[0][0]
    best = {k: min(r[1][k] for r in rounds) for k in KINDS}
    print(f"{args.images} JPEGs screened for {SIZE[0]}x{SIZE[1]} (default screen), best of {args.rounds} rounds")
    for kind in KINDS:
        rate = counts[kind] / best[kind] if best[kind] else float("nan")
        print(f"  {kind:<26} {counts[kind]:4d}  {rate:8.0f} /CPU-s  {1000 / rate:6.2f} ms each")
    total = sum(best.values())
    print(
        f"  {'all':<26} {args.images:4d}  {args.images / total:8.0f} /CPU-s  {1000 * total / args.images:6.2f} ms each"
    )


if __name__ == "__main__":
    main()

"""The pristine screen's defaults against the old ones, on real photos: how many images each keeps, why it refuses
the others, and how far the kept images were enlarged and compressed.

    python experiments/screen_defaults.py [--size 512x384] [--json screen.json]

Photos (no ImageNet is available here, so a stand-in of real camera JPEGs and clean photographs):
  - CLIVE: the 627 JPEGs of ../shared/data/clive (500 x 500, authentic camera distortions, their own encoders);
  - Kodak24 re-encoded: each of the 24 photographs as a JPEG at qualities 95, 85, 75 and 50, in three sizes:
    1000 x 500 (the photograph beside the next one), 500 x 500 (as shipped) and 400 x 300 (downscaled), 288 files.
Old defaults: no upscaling limit, no JPEG-quality limit, shorter side >= 128, greyscale refused, duplicates kept.
Also shown: the default screen with the looser --max-upscale 1.03 that the tests pass for 500 x 500 photos.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.executors import LocalExecutor
from saqt.build.pool import choose_pool
from saqt.build.screen import Screen, cover_scale, jpeg_quality
from saqt.build.sources import Quota, SourceItem, list_source
from saqt.core.counts import reason_kind
from saqt.core.images import decode_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
QUALITIES = (95, 85, 75, 50)
OLD = Screen(min_side=128, min_jpeg_quality=0, allow_grey=False, max_upscale=float("inf"))


def kodak_variants(folder: Path) -> None:
    """The 288 re-encoded Kodak24 files."""
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((SHARED / "kodak24").glob("*.png"))]
    for i, photo in enumerate(photos):
        sizes = {
            "1000x500": np.hstack([photo, photos[(i + 1) % len(photos)]]),
            "500x500": photo,
            "400x300": np.asarray(Image.fromarray(photo).resize((400, 300), Image.Resampling.LANCZOS)),
        }
        for name, image in sizes.items():
            for q in QUALITIES:
                Image.fromarray(image).save(folder / f"kodim{i + 1:02d}_{name}_q{q}.jpg", quality=q)


def describe(items: list[SourceItem], screen: Screen, size: tuple[int, int], dedupe: bool) -> dict:
    """Kept and refused (by reason) under ``screen``; the upscale factors and JPEG qualities of the kept images."""
    pool = choose_pool(items, Quota(items), 0, size, screen, 64_000_000, LocalExecutor(1), progress=False)
    refused = Counter(reason_kind(r) for _, r in pool.refused)
    kept = pool.kept
    if not dedupe:  # the old build kept duplicates (same pictures) as separate images
        kept = kept + [it for it in items if dict(pool.refused).get(it.key, "").startswith("duplicate")]
        refused.pop("duplicate", None)
    scales, qualities = [], []
    for it in kept:
        data = it.read_bytes()
        h, w = decode_image(data).shape[:2]
        scales.append(cover_scale(w, h, size))
        qualities.append(jpeg_quality(data))
    scales, q = np.array(scales), np.array([x for x in qualities if x is not None])
    return {
        "candidates": len(items),
        "kept": len(kept),
        "refused": dict(refused.most_common()),
        "kept_upscaled": int((scales > 1 + 1e-9).sum()),
        "kept_upscaled_over_1.5x": int((scales > 1.5).sum()),
        "largest_upscale": round(float(scales.max()), 3) if len(scales) else None,
        "lowest_jpeg_quality": int(q.min()) if len(q) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x384")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    results = {}
    with tempfile.TemporaryDirectory(prefix="saqt-screen-") as tmp:
        kodak_variants(Path(tmp))
        sets = {
            "CLIVE (627 camera JPEGs, 500x500)": list_source("folder", SHARED / "clive" / "images").items,
            "Kodak24 re-encoded (288 JPEGs)": list_source("folder", Path(tmp)).items,
        }
        for name, items in sets.items():
            results[name] = {
                "default screen": describe(items, Screen(), size, True),
                "default, --max-upscale 1.03": describe(items, Screen(max_upscale=1.03), size, True),
                "old defaults": describe(items, OLD, size, False),
            }
    print(
        "| photos | screen | kept | refused, by reason | kept upscaled (>1.5x) | largest kept scale | lowest kept JPEG q |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        for screen, r in rows.items():
            reasons = ", ".join(f"{n} {k}" for k, n in r["refused"].items()) or "none"
            print(
                f"| {name} | {screen} | {r['kept']} of {r['candidates']} | {reasons} | {r['kept_upscaled']} "
                f"({r['kept_upscaled_over_1.5x']}) | {r['largest_upscale'] or '-'} | {r['lowest_jpeg_quality'] or '-'} |"
            )
    if args.json:
        args.json.write_text(json.dumps({"size": size, **results}, indent=2))


if __name__ == "__main__":
    main()

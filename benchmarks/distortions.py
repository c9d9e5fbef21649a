"""Distortion engine speed on one core: ms per render for each type at 512 x 384, and all 125 renders.

Ratios are printed against two baselines:
  * same run: each render through ``distort(array, ...)`` on its own, with nothing shared between renders;
  * the reference MATLAB code under GNU Octave, per-call seconds recorded on this kind of machine in
    ../shared/golden/manifest.csv (19 of the 25 types run there).
PNG encoding is timed separately and excluded from the render figures.

    python benchmarks/distortions.py [--repeats 3] [--json results.json]
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from common import one_core, peak_rss_mib  # noqa: E402

from saqt.distortions import PreparedImage, catalogue, distort  # noqa: E402
from saqt.images import decode_image, encode_png  # noqa: E402
from saqt.sources import sample_paths  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
LEVELS = range(1, 6)


def test_images() -> list[tuple[str, np.ndarray]]:
    """The two 512 x 384 reference inputs when ../shared is present, else sample photos cropped to that size."""
    if (GOLDEN / "pristine").is_dir():
        return [(p.stem, decode_image(p)) for p in sorted((GOLDEN / "pristine").glob("*.png"))]
    return [(p.stem, decode_image(p)[:384, :512]) for p in sample_paths()[:2]]


def octave_ms_per_render() -> dict[int, float]:
    """Mean seconds per render of the reference under Octave, by type, from the golden manifest."""
    if not (GOLDEN / "manifest.csv").exists():
        return {}
    per_type: dict[int, list[float]] = {}
    with open(GOLDEN / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["ok"] == "yes":
                per_type.setdefault(int(row["type"]), []).append(1000 * float(row["seconds"]))
    return {t: statistics.mean(v) for t, v in per_type.items()}


def time_renders(image: np.ndarray, shared: bool) -> dict[int, float]:
    """Milliseconds per render by type, all 125 renders of one image."""
    src = PreparedImage(image) if shared else image
    ms = {}
    for t in range(1, 26):
        start = time.perf_counter()
        for level in LEVELS:
            distort(src, t, level, seed=level)
        ms[t] = 1000 * (time.perf_counter() - start) / len(LEVELS)
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per image (median is reported)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    one_core()
    images = test_images()
    time_renders(images[0][1], shared=True)  # warm-up: JIT compilation and caches

    shared_runs, isolated_runs, png_ms = [], [], []
    for _, image in images:
        for _ in range(args.repeats):
            shared_runs.append(time_renders(image, shared=True))
            isolated_runs.append(time_renders(image, shared=False))
        outs = [distort(image, t, 3, seed=1) for t in range(1, 26)]
        start = time.perf_counter()
        for out in outs:
            encode_png(out)
        png_ms.append(1000 * (time.perf_counter() - start) / len(outs))

    ours = {t: statistics.median(r[t] for r in shared_runs) for t in range(1, 26)}
    alone = {t: statistics.median(r[t] for r in isolated_runs) for t in range(1, 26)}
    octave = octave_ms_per_render()

    print(
        f"images: {', '.join(n for n, _ in images)} ({images[0][1].shape[1]}x{images[0][1].shape[0]}), "
        f"one core, median of {args.repeats} passes each"
    )
    print(f"{'type':>4} {'name':<28} {'ms/render':>9} {'unshared':>9} {'octave':>8} {'octave/ours':>11}")
    for spec in catalogue():
        t = spec.id
        ref = f"{octave[t]:8.1f} {octave[t] / ours[t]:10.1f}x" if t in octave else f"{'-':>8} {'-':>11}"
        print(f"{t:>4} {spec.name:<28} {ours[t]:9.1f} {alone[t]:9.1f} {ref}")
    total = 5 * sum(ours.values()) / 1000
    total_alone = 5 * sum(alone.values()) / 1000
    common = [t for t in octave]
    ours_common = 5 * sum(ours[t] for t in common) / 1000
    octave_common = 5 * sum(octave[t] for t in common) / 1000
    print(
        f"all 125 renders of one image: {total:.3f} s (unshared: {total_alone:.3f} s, "
        f"sharing speed-up {total_alone / total:.2f}x)"
    )
    print(f"without type 15 (the DnCNN substitute): {total - 5 * ours[15] / 1000:.3f} s")
    if common:
        print(
            f"the {len(common)} types Octave runs ({5 * len(common)} renders): ours {ours_common:.3f} s, "
            f"reference under Octave {octave_common:.3f} s, ratio {octave_common / ours_common:.1f}x"
        )
    print(f"PNG encoding (excluded above): {statistics.mean(png_ms):.1f} ms per image")
    peak_mib = peak_rss_mib()
    print(f"peak RSS: {peak_mib:.0f} MiB")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "ms_per_render": ours,
                    "ms_per_render_unshared": alone,
                    "octave_ms_per_render": octave,
                    "total_s": total,
                    "png_ms": statistics.mean(png_ms),
                    "peak_rss_mib": peak_mib,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

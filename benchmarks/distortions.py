"""Distortion engine speed on one core: ms per render for each type at 512 x 384, and all 125 renders.

Times are this process's CPU time (``time.process_time``; equal to wall time on an idle core, and not
inflated by other processes waiting for the CPU), the minimum over the timed passes. Ratios:
  * ``--baseline DIR``: another copy of the engine, e.g. an earlier commit unpacked with
    ``git archive <rev> saqt manifests | tar -x -C DIR``. It runs in a child process with DIR first on
    the path, in rounds alternating with this copy, so both see the same machine load;
  * same run: each render through ``distort(array, ...)`` on its own, with nothing shared between renders;
  * the reference MATLAB code under GNU Octave, per-call seconds recorded on this kind of machine in
    ../shared/golden/manifest.csv (19 of the 25 types run there).
PNG encoding is timed separately and excluded from the render figures.

    python benchmarks/distortions.py [--repeats 3] [--rounds 3] [--baseline DIR] [--json results.json]
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from common import one_core, peak_rss_mib  # noqa: E402

from saqt.build.distortions import PreparedImage, catalogue, distort  # noqa: E402
from saqt.build.sources import sample_paths  # noqa: E402
from saqt.core.images import decode_image, encode_png  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
LEVELS = range(1, 6)
TYPES = range(1, 26)


def test_images() -> list[tuple[str, np.ndarray]]:
    """The two 512 x 384 reference inputs when ../shared is present, else sample photos cropped to that size."""
    if (GOLDEN / "pristine").is_dir():
        return [(p.stem, decode_image(p)) for p in sorted((GOLDEN / "pristine").glob("*.png"))]
    return [(p.stem, np.ascontiguousarray(decode_image(p)[:384, :512])) for p in sample_paths()[:2]]


def octave_ms_per_render() -> dict[int, float]:
    """Mean milliseconds per render of the reference under Octave, by type, from the golden manifest."""
    if not (GOLDEN / "manifest.csv").exists():
        return {}
    per_type: dict[int, list[float]] = {}
    with open(GOLDEN / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["ok"] == "yes":
                per_type.setdefault(int(row["type"]), []).append(1000 * float(row["seconds"]))
    return {t: statistics.mean(v) for t, v in per_type.items()}


def time_renders(image: np.ndarray, shared: bool) -> dict[int, float]:
    """CPU milliseconds per render by type, all 125 renders of one image (prepared once when ``shared``)."""
    src = PreparedImage(image) if shared else image
    ms = {}
    for t in TYPES:
        start = time.process_time()
        for level in LEVELS:
            distort(src, t, level, seed=level)
        ms[t] = 1000 * (time.process_time() - start) / len(LEVELS)
    return ms


def fastest(runs: list[dict[int, float]]) -> dict[int, float]:
    """Per type, the minimum over the runs."""
    return {t: min(r[t] for r in runs) for t in TYPES}


def measure(images: list[tuple[str, np.ndarray]], repeats: int, unshared: bool = True) -> dict[str, dict[int, float]]:
    """Per-type ms per render over ``repeats`` passes of every image: shared preparation and, if asked, unshared."""
    time_renders(images[0][1], shared=True)  # warm-up: JIT compilation and caches
    runs: dict[str, list] = {"shared": [], "unshared": []}
    for _, image in images:
        for _ in range(repeats):
            runs["shared"].append(time_renders(image, shared=True))
            if unshared:
                runs["unshared"].append(time_renders(image, shared=False))
    return {kind: fastest(r) for kind, r in runs.items() if r}


def measure_baseline(tree: Path, repeats: int) -> dict[int, float]:
    """Per-type ms per render of the engine in ``tree``, measured by this script in a child process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", "--repeats", str(repeats)], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"baseline in {tree} failed: {out.stderr.strip().splitlines()[-1:]}")
    return {int(t): ms for t, ms in json.loads(out.stdout).items()}


def png_ms(images: list[tuple[str, np.ndarray]]) -> float:
    """Mean milliseconds to encode one level-3 render as PNG."""
    times = []
    for _, image in images:
        outs = [distort(image, t, 3, seed=1) for t in TYPES]
        start = time.process_time()
        for out in outs:
            encode_png(out)
        times.append(1000 * (time.process_time() - start) / len(outs))
    return statistics.mean(times)


def print_table(ours: dict, alone: dict, before: dict | None, octave: dict) -> None:
    head = f"{'type':>4} {'name':<28} {'ms/render':>9} {'unshared':>9}"
    head += f" {'before':>8} {'speed-up':>8}" if before else ""
    print(head + f" {'octave':>8} {'octave/ours':>11}")
    for spec in catalogue():
        t = spec.id
        row = f"{t:>4} {spec.name:<28} {ours[t]:9.1f} {alone[t]:9.1f}"
        row += f" {before[t]:8.1f} {before[t] / ours[t]:7.2f}x" if before else ""
        row += f" {octave[t]:8.1f} {octave[t] / ours[t]:10.1f}x" if t in octave else f" {'-':>8} {'-':>11}"
        print(row)


def seconds_for_125(ms: dict[int, float]) -> float:
    return len(LEVELS) * sum(ms.values()) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per image and round (minimum kept)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds alternating with the baseline (with --baseline)")
    parser.add_argument("--baseline", type=Path, help="a source tree of another version of saqt to compare against")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # baseline child: JSON to stdout
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "saqt" / "build" / "distortions").is_dir():
        raise SystemExit(f"--baseline {args.baseline}: no saqt/build/distortions there")

    one_core()
    images = test_images()
    if args.worker:
        print(json.dumps(measure(images, args.repeats, unshared=False)["shared"]))
        return
    rounds = args.rounds if args.baseline else 1
    ours_runs, alone_runs, before_runs = [], [], []
    for _ in range(rounds):
        if args.baseline:
            before_runs.append(measure_baseline(args.baseline, args.repeats))
        run = measure(images, args.repeats)
        ours_runs.append(run["shared"])
        alone_runs.append(run["unshared"])
    ours, alone = fastest(ours_runs), fastest(alone_runs)
    before = fastest(before_runs) if before_runs else None
    octave = octave_ms_per_render()

    print(
        f"images: {', '.join(n for n, _ in images)} ({images[0][1].shape[1]}x{images[0][1].shape[0]}), one core, "
        f"CPU time, minimum of {args.repeats} passes x {rounds} round(s) each"
        + (f"; before = {args.baseline}" if before else "")
    )
    print_table(ours, alone, before, octave)
    total, total_alone = seconds_for_125(ours), seconds_for_125(alone)
    print(
        f"all 125 renders of one image: {total:.3f} s (unshared: {total_alone:.3f} s, "
        f"sharing speed-up {total_alone / total:.2f}x)"
    )
    if before:
        print(f"before: {seconds_for_125(before):.3f} s; speed-up {seconds_for_125(before) / total:.2f}x")
    common = list(octave)
    if common:
        ours_common = len(LEVELS) * sum(ours[t] for t in common) / 1000
        octave_common = len(LEVELS) * sum(octave[t] for t in common) / 1000
        print(
            f"the {len(common)} types Octave runs ({len(LEVELS) * len(common)} renders): ours {ours_common:.3f} s, "
            f"reference under Octave {octave_common:.3f} s, ratio {octave_common / ours_common:.1f}x"
        )
    png = png_ms(images)
    print(f"PNG encoding (excluded above): {png:.1f} ms per image")
    peak_mib = peak_rss_mib()
    print(f"peak RSS: {peak_mib:.0f} MiB")
    if args.json:
        figures = {"ms_per_render": ours, "ms_per_render_unshared": alone, "octave_ms_per_render": octave}
        figures |= {"total_s": total, "png_ms": png, "peak_rss_mib": peak_mib, "clock": "process_time"}
        if before:
            figures |= {"baseline": str(args.baseline), "baseline_ms_per_render": before}
            figures |= {"baseline_total_s": seconds_for_125(before)}
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

"""The whole pipeline as a user runs it, at several sizes: what each stage costs per pristine image, and how it grows.

    python benchmarks/scale.py [--sizes 500,2000,10000] [--modes recipe-only,materialised] [--imagenet 1000x10]
                               [--ray] [--ray-size 1000] [--workers 2] [--work DIR] [--json PATH]

Every stage is a CLI command in a fresh process, with this checkout's code:
  saqt build --source folder --size 64x48 --min-side 48 --images-per-shard 1 [--recipe-only] --workers W
  saqt label --bank KADID10k.csv --matches M.csv --workers W  (given top-1 matches: the cheapest real labelling,
             no embedding, whose cost is linear and not under test here)
  glint pretrain --plan-only 2 --device cpu
  saqt publish [--recipe-only]
  saqt verify
The inputs of size N: N synthetic pristine images (distinct, deterministic, colour, 80x60 PNGs: the costs under test
do not depend on pixels) and 4 refused inputs beside each (two too small, two needing upscaling), 125 cells each.
Figures per stage and size: CPU seconds (user + system of the command's whole process tree, from RUSAGE_CHILDREN;
this process adopts orphaned descendants, so Ray's workers count too) per pristine image, wall seconds, peak summed
RSS of the tree (sampled every 0.1 s), bytes and files of the stage's output folder. Then, per stage: the ratio of
the largest size's CPU per image to the smallest's; with three sizes or more, the ratio of the last marginal CPU per
image (between consecutive sizes, which leaves out start-up) to the first; the slope, CPU per image between the
smallest and the largest size; and a linear extrapolation to 50,000 and 1,000,000 pristine images along that line:
a straight line, which says nothing of costs that grow faster.

--imagenet CLASSESxPER_CLASS: an ImageNet-shaped tree (train/<wnid>/<wnid>_<i>.JPEG, the layout ``saqt build --source
imagenet`` lists first) with a realistic refusal mix for 512x384: 65% typical ImageNet photos (500x375, 500x333,
375x500 at quality 75-95: need upscaling), 29% large enough at quality 70-89, 3% kept (large, quality 90-95), 1% each
greyscale, tiny and truncated. ``saqt build --recipe-only`` (ImageNet's pixels are not published) of the whole tree,
and of a tree of the kept inputs alone: CPU per input and per kept image, the screen's CPU per refused input (the
difference of the two, per refused input), errors.jsonl and build.json sizes, each extrapolated to ImageNet-1k's
1,281,167 inputs.

--ray: build and label of ``--ray-size`` pristine images through ``--executor ray --workers W`` (a local Ray cluster)
against the local executor with the same workers: SHA-256 of every Parquet file of both outputs equal, CPU and wall.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from common import adopt_orphans, checkout_env, run_measured

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KADID = SHARED / "labels" / "KADID10k.csv"
BIN = Path(sys.executable).parent
STAGES = ("build", "label", "plan", "publish", "verify")
SOURCE_SIZE = (80, 60)  # synthetic pristine sources, reduced to --size
REFUSED = ((40, 30), (56, 50), (30, 40), (50, 56))  # at 64x48 and --min-side 48: too small, upscaling, twice
TARGETS = (50_000, 1_000_000)
IMAGENET_INPUTS = 1_281_167
# ImageNet-shaped inputs: (share, kind, (width, height) choices, JPEG qualities)
IMAGENET_MIX = (
    (0.03, "kept", ((640, 480), (800, 600), (600, 800), (1024, 768)), range(90, 96)),
    (0.65, "typical", ((500, 375), (500, 333), (375, 500), (500, 400)), range(75, 96)),
    (0.29, "low quality", ((640, 480), (800, 600), (600, 800)), range(70, 90)),
    (0.01, "greyscale", ((640, 480),), range(90, 96)),
    (0.01, "tiny", ((120, 90), (100, 100)), range(75, 96)),
    (0.01, "truncated", ((640, 480),), range(90, 96)),
)


def synthetic(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A distinct, deterministic colour picture: a smooth random field with a little noise (uint8, H x W x 3)."""
    rng = np.random.default_rng(seed)
    field = cv2.resize(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8), size, interpolation=cv2.INTER_CUBIC)
    return np.clip(field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)


def make_inputs(folder: Path, count: int) -> None:
    """``count`` pristine sources (k<i>.png) and 4 refused inputs beside each (r<i>_<j>.png), made once."""
    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("k*.png")))
    for i in range(have, count):
        cv2.imwrite(str(folder / f"k{i:07d}.png"), synthetic(i, SOURCE_SIZE))
        for j, size in enumerate(REFUSED):
            cv2.imwrite(str(folder / f"r{i:07d}_{j}.png"), synthetic(10**8 + 4 * i + j, size))


def inputs_of_size(pool: Path, folder: Path, size: int) -> Path:
    """A folder of the first ``size`` pristine sources of ``pool`` and their refused inputs (hard links); returns
    the matches file beside it: each pristine source's given top-1 KADID-10k reference (kadis,kadid-10k,sim_value)."""
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for i in range(size):
            for name in (f"k{i:07d}.png", *(f"r{i:07d}_{j}.png" for j in range(len(REFUSED)))):
                os.link(pool / name, folder / name)
    matches = folder.parent / f"{folder.name}-matches.csv"
    lines = [f"k{i:07d}.png,I{i % 81 + 1:02d}.png,0.9" for i in range(size)]
    matches.write_text("kadis,kadid-10k,sim_value\n" + "\n".join(lines) + "\n")
    return matches


def disk(folder: Path | None) -> tuple[int, int]:
    """(bytes, files) under ``folder``."""
    if folder is None or not folder.exists():
        return 0, 0
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def stage(argv: list[str], output: Path | None, pristine: int) -> dict:
    """Run one command and measure it and its output."""
    cost = run_measured([str(a) for a in argv], checkout_env())
    size, files = disk(output)
    return {**vars(cost), "cpu_per_pristine_s": cost.cpu_s / pristine, "bytes": size, "files": files}


def commands(out: Path, src: Path, matches: Path, mode: str, args: argparse.Namespace, executor: str) -> dict:
    """The five commands of one pipeline run and the folder each writes: stage -> (argv, output)."""
    saqt, glint = BIN / "saqt", BIN / "glint"
    run = ["--workers", args.workers, "--executor", executor]
    recipe = ["--recipe-only"] if mode == "recipe-only" else []
    min_side = min(int(v) for v in args.size.split("x"))
    build = [saqt, "build", "--source", "folder", "--root", src, "--size", args.size, "--min-side", min_side]
    label = [saqt, "label", "--build", out / "build", "--bank", KADID, "--matches", matches, "--device", "cpu"]
    plan = [glint, "pretrain", "--data", out / "labels", "--out", out / "plan", "--plan-only", 2, "--device", "cpu"]
    return {
        "build": ([*build, "--images-per-shard", 1, *recipe, "--out", out / "build", *run], out / "build"),
        "label": ([*label, "--out", out / "labels", *run], out / "labels"),
        "plan": (plan, out / "plan"),
        "publish": (
            [saqt, "publish", "--labels", out / "labels", "--out", out / "published", *recipe],
            out / "published",
        ),
        "verify": ([saqt, "verify", out / "published"], None),
    }


def pipeline(work: Path, size: int, mode: str, args: argparse.Namespace, only=STAGES, executor="local") -> dict:
    """Run the stages ``only`` of one mode at one size; stage -> figures."""
    src = work / f"inputs-{size}"
    matches = inputs_of_size(work / "inputs", src, size)
    out = work / f"{mode}-{size}-{executor}"
    steps = commands(out, src, matches, mode, args, executor)
    figures = {}
    for name in only:
        figures[name] = stage(*steps[name], size)
        f = figures[name]
        print(
            f"  {mode:<12} {size:>7,} {executor:<5} {name:<8} {f['cpu_per_pristine_s'] * 1000:9.2f} ms CPU per "
            f"pristine  {f['wall_s']:7.1f} s wall  {f['peak_rss_mib']:6.0f} MiB  {f['bytes'] / 2**20:9.1f} MiB "
            f"{f['files']:7,} files",
            flush=True,
        )
    return figures


def growth(by_size: dict[int, dict]) -> dict:
    """Per stage: per-image CPU ratios (largest / smallest size; last / first marginal) and the linear
    extrapolation (through the smallest and largest sizes) of CPU hours, bytes and files to TARGETS."""
    sizes = sorted(by_size)
    small, large = sizes[0], sizes[-1]
    out = {}
    for name in by_size[small]:
        f = {s: by_size[s][name] for s in sizes}
        entry = {"cpu_per_pristine_ratio": f[large]["cpu_per_pristine_s"] / f[small]["cpu_per_pristine_s"]}
        if len(sizes) >= 3:
            marginal = [(f[b]["cpu_s"] - f[a]["cpu_s"]) / (b - a) for a, b in zip(sizes, sizes[1:], strict=False)]
            entry["marginal_cpu_per_pristine_s"] = marginal
            entry["marginal_ratio"] = marginal[-1] / marginal[0] if marginal[0] > 0 else None
        for key in ("cpu_s", "bytes", "files"):
            slope = (f[large][key] - f[small][key]) / (large - small)
            entry[key] = {n: f[small][key] + slope * (n - small) for n in TARGETS}
            entry[f"{key}_per_pristine_slope"] = slope
        out[name] = entry
    return out


def print_growth(mode: str, table: dict) -> None:
    print(f"\n{mode}: growth and a linear extrapolation (a line through the smallest and largest sizes)")
    head = " | ".join(f"{n:,}: core-h, GB, files" for n in TARGETS)
    print(f"| stage | CPU/image largest / smallest | marginal last / first | slope ms CPU/image | {head} |")
    print("|---|---:|---:|---:|" + "---:|" * len(TARGETS))
    for name, e in table.items():
        marginal = e.get("marginal_ratio")
        cells = " | ".join(
            f"{e['cpu_s'][n] / 3600:,.1f}, {e['bytes'][n] / 1e9:,.1f}, {e['files'][n]:,.0f}" for n in TARGETS
        )
        print(
            f"| {name} | {e['cpu_per_pristine_ratio']:.2f} | {'-' if marginal is None else f'{marginal:.2f}'} | "
            f"{e['cpu_s_per_pristine_slope'] * 1000:.1f} | {cells} |"
        )


# --- ImageNet-shaped ------------------------------------------------------------------------------------------


def imagenet_input(n: int, rng: np.random.Generator) -> tuple[str, bytes]:
    """Input ``n`` of an ImageNet-shaped tree: (kind, JPEG bytes). Kinds follow IMAGENET_MIX's shares closely at any
    count (a golden-ratio sequence); sizes, qualities and pixels are drawn from ``rng``."""
    edges = np.cumsum([share for share, *_ in IMAGENET_MIX])
    u = n * 0.6180339887498949 % 1.0
    _, kind, sizes, qualities = IMAGENET_MIX[min(int(np.searchsorted(edges, u, "right")), len(edges) - 1)]
    w, h = sizes[rng.integers(len(sizes))]
    image = synthetic(int(rng.integers(2**62)), (w, h))
    if kind == "greyscale":
        image = image[:, :, 0]
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.choice(qualities))])[1].tobytes()
    return kind, data[: len(data) // 2] if kind == "truncated" else data


def make_imagenet(root: Path, classes: int, per_class: int) -> tuple[list[str], dict[str, int]]:
    """The tree under ``root`` and a second one, ``root``-kept, of its kept inputs (hard links); returns the kept
    inputs' keys and how many inputs of each kind."""
    kept, kinds = [], {}
    for c in range(classes):
        wnid = f"n{c:08d}"
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            kind, data = imagenet_input(c * per_class + i, np.random.default_rng([c, i]))
            key = f"train/{wnid}/{wnid}_{i}.JPEG"
            (root / key).write_bytes(data)
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "kept":
                kept.append(key)
                (root.parent / f"{root.name}-kept" / key).parent.mkdir(parents=True, exist_ok=True)
                os.link(root / key, root.parent / f"{root.name}-kept" / key)
    return kept, kinds


def imagenet(work: Path, classes: int, per_class: int, workers: str) -> dict:
    """Recipe-only builds of the ImageNet-shaped tree and of its kept inputs alone; see the module docstring."""
    root = work / "imagenet"
    kept, kinds = make_imagenet(root, classes, per_class)
    inputs = classes * per_class
    figures = {"inputs": inputs, "kinds": kinds}
    for name, tree in (("all", root), ("kept only", work / "imagenet-kept")):
        out = work / f"imagenet-build-{name.replace(' ', '-')}"
        argv = [BIN / "saqt", "build", "--source", "imagenet", "--root", tree, "--recipe-only", "--out", out]
        figures[name] = stage([*argv, "--workers", workers], out, inputs if name == "all" else len(kept))
        manifest = json.loads((out / "build.json").read_text())
        figures[name]["counts"] = manifest.get("counts")
        figures[name]["errors_jsonl_bytes"] = (out / "errors.jsonl").stat().st_size
        figures[name]["build_json_bytes"] = (out / "build.json").stat().st_size
    a, b = figures["all"], figures["kept only"]
    refused = inputs - len(kept)
    figures["kept"] = len(kept)
    figures["screen_cpu_per_refused_s"] = (a["cpu_s"] - b["cpu_s"]) / refused
    figures["extrapolated_to_imagenet"] = {
        "inputs": IMAGENET_INPUTS,
        "build_core_hours": a["cpu_s"] / inputs * IMAGENET_INPUTS / 3600,
        "errors_jsonl_bytes": a["errors_jsonl_bytes"] / inputs * IMAGENET_INPUTS,
        "build_json_bytes": a["build_json_bytes"] / inputs * IMAGENET_INPUTS,
    }
    return figures


def print_imagenet(f: dict) -> None:
    a, b, x = f["all"], f["kept only"], f["extrapolated_to_imagenet"]
    print(f"\nImageNet-shaped: {f['inputs']:,} inputs ({f['kinds']}), {f['kept']} kept ({f['kept'] / f['inputs']:.1%})")
    print(f"  counts: {a['counts']}")
    print(
        f"  build of all inputs: {a['cpu_s'] / f['inputs'] * 1000:.1f} ms CPU per input, "
        f"{a['cpu_s'] / max(1, f['kept']):.2f} s per kept image, {a['wall_s']:.0f} s wall, {a['peak_rss_mib']:.0f} MiB"
    )
    print(f"  build of the kept inputs alone: {b['cpu_s'] / max(1, f['kept']):.2f} s CPU per kept image")
    print(f"  screen (the difference): {f['screen_cpu_per_refused_s'] * 1000:.1f} ms CPU per refused input")
    print(
        f"  errors.jsonl {a['errors_jsonl_bytes']:,} bytes, build.json {a['build_json_bytes']:,} bytes; linear to "
        f"{x['inputs']:,} inputs: {x['build_core_hours']:,.1f} core-hours, errors.jsonl "
        f"{x['errors_jsonl_bytes'] / 1e6:,.0f} MB, build.json {x['build_json_bytes'] / 1e6:,.0f} MB"
    )


# --- Ray ------------------------------------------------------------------------------------------------------


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every Parquet file under ``folder``, by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


def ray_run(work: Path, size: int, mode: str, args: argparse.Namespace, local: dict | None) -> dict:
    """Build and label with the Ray executor, and with the local one unless ``local`` holds that run's figures
    already; their figures and whether the outputs are equal."""
    runs = {
        "local": local or pipeline(work, size, mode, args, ("build", "label")),
        "ray": pipeline(work, size, mode, args, ("build", "label"), "ray"),
    }
    same = {
        folder: digests(work / f"{mode}-{size}-local" / folder) == digests(work / f"{mode}-{size}-ray" / folder)
        for folder in ("build", "labels")
    }
    print(f"  Ray against local, {mode}, {size:,} pristine: Parquet files identical: {same}")
    return {**runs, "identical": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500,2000,10000", help="pristine images per run, comma-separated ('' none)")
    parser.add_argument("--modes", default="recipe-only,materialised", help="recipe-only and/or materialised")
    parser.add_argument("--size", default="64x48", help="canonical size WxH of the builds")
    parser.add_argument("--workers", default="2", help="--workers of build and label")
    parser.add_argument("--imagenet", default="1000x10", help="CLASSESxPER_CLASS of the ImageNet-shaped run ('' none)")
    parser.add_argument("--ray", action="store_true", help="also build and label through a local Ray cluster")
    parser.add_argument("--ray-size", type=int, default=1000, help="pristine images of the Ray run")
    parser.add_argument("--work", type=Path, help="work here (kept) instead of a temporary folder")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    modes = [m for m in args.modes.split(",") if m]
    if not KADID.is_file():
        raise SystemExit(f"{KADID} is absent: the labels are transferred from the KADID-10k table")
    adopt_orphans()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="saqt-scale-")
    work = args.work or Path(tmp.name)
    results: dict = {"sizes": sizes, "size": args.size, "workers": args.workers, "stages": {}, "growth": {}}
    try:
        make_inputs(work / "inputs", max([*sizes, args.ray_size if args.ray else 0]))
        for mode in modes:
            runs = {size: pipeline(work, size, mode, args) for size in sizes}
            results["stages"][mode] = runs
            if len(sizes) >= 2:
                results["growth"][mode] = growth(runs)
                print_growth(mode, results["growth"][mode])
        if args.imagenet:
            classes, per_class = (int(v) for v in args.imagenet.split("x"))
            results["imagenet"] = imagenet(work, classes, per_class, args.workers)
            print_imagenet(results["imagenet"])
        if args.ray:
            sweep = results["stages"]
            results["ray"] = {
                mode: ray_run(work, args.ray_size, mode, args, sweep.get(mode, {}).get(args.ray_size)) for mode in modes
            }
    finally:
        if tmp:
            tmp.cleanup()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()

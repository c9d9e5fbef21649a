"""What one pretraining loader worker costs per image at the paper's layout, against the floor and the official loader.

    python benchmarks/loader.py [--materialised 64] [--recipe-only 1000] [--batches 40] [--rounds 2] [--work DIR]
                                [--json PATH]

The sets (the paper's layout): distinct 480x360 crops of Kodak24 (saved as JPEG q95; 1.07x upscaling, a looser
screen by choice) built by ``saqt build`` at 512x384 with all 125 cells (types 1-25, levels 1-5) and the default
``--images-per-shard``, once materialised (``--materialised`` pristine images: each about 44 MB of PNGs) and once
``--recipe-only`` (``--recipe-only`` pristine images), each labelled by ``saqt label --rule mean`` with the
KADID-10k table. The paper's 50,000 pristine images make a worker's cache of 64 decoded pristine images almost
useless; ``--pristine-cache`` defaults to the same fraction of this set (64 x N / 50,000, at least 1). The rows
read are the first ``--batches`` + 1 batches of 32 of epoch 0, as ``glint pretrain --plan-only`` lists them; the
distinct pristine images per batch are printed beside the uniform expectation here and at the paper's size.

Each row is one fresh process started with OMP/MKL/OPENBLAS/NUMBA_NUM_THREADS=1, torch, OpenCV and Arrow then set
to one thread and the process pinned to one core (``common.one_core``), reading a warm-up batch and then
``--batches`` batches of 32:
  ours            ``SaqtTraining(open_saqt(labels, pristine_cache))`` through ``glint.train.make_loader`` with
                  ``loader_workers=0``: what one DataLoader worker does;
  floor           the same rows, their bytes already in memory: materialised, ``saqt.core.images.decode_image`` of each
                  PNG + the training view (``glint.data.prepare``, ``random_view``, ``to_tensor``); recipe-only,
                  decode of the pristine PNG + ``saqt.build.distortions.distort`` with the row's seed (as
                  ``saqt.build.build_reader.BuildReader.image`` renders it) + the view: the per-image work that cannot be avoided;
  official-style  the materialised rows written as PNG files, read as the official release reads its training set
                  (SYSU-Video/GlintIQA, glintiqa/data/datasets.py ``pil_loader``: ``Image.open(f).convert("RGB")``;
                  glintiqa/data/transforms.py ``build_iqa_transform(is_train=True)``: RandomHorizontalFlip,
                  RandomVerticalFlip, RandomCrop(224), ToTensor, Normalize(0.5, 0.5)) through a DataLoader, batch 32,
                  shuffled, ``num_workers=0``. (The release's SAQT-IQA images are .bmp files; PNG here, as ours.)
Figures: images per CPU second (``time.process_time`` of the process, all its threads: what a worker costs,
whatever else shares the core), images per wall second, peak RSS (VmHWM; and above the RSS after the imports, which
a DataLoader's forked workers share), set-up CPU seconds (ours: opening the set and the warm-up batch; floors:
reading the bytes into memory) and the process's threads after the run, by name. The readers are measured
``--rounds`` times in turn; the best round (most images per CPU second: the least disturbed) is shown.
The builds cost about 2.5 CPU s per materialised and 0.1 per recipe-only pristine image, once (kept with --work).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torchvision.transforms as T
from common import checkout_env, one_core, one_thread_env, peak_rss_mib, run_measured, threads
from PIL import Image
from scipy.special import gammaln
from torch.utils.data import DataLoader

from glint.data import prepare, random_view, to_tensor
from glint.pretrain_data import SaqtTraining, open_saqt
from glint.train import TrainConfig, make_loader
from saqt.build.distortions import PreparedImage, distort
from saqt.core.images import decode_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BATCH = 32
CELLS = 125
PAPER_PRISTINE = 50_000
WORKER_CACHE = 64  # glint pretrain --pristine-cache default
CROP = (480, 360)  # source crops of Kodak24's 500x500 photos; 512x384 needs 1.067x
ROWS = (
    "ours, materialised",
    "floor, materialised",
    "ours, recipe-only",
    "floor, recipe-only",
    "official-style, PNG files",
)


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def make_sources(kodak: Path, folder: Path, count: int) -> None:
    """``count`` distinct crops of the Kodak photos (each photo x 4 flips x up to 141 offsets), JPEG q95."""
    photos = sorted(kodak.glob("*.png"))
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        image = Image.open(photos[k % len(photos)]).convert("RGB")
        j = k // len(photos)
        flips, offset = j % 4, j // 4
        if offset >= 141:
            raise SystemExit(f"at most {len(photos) * 4 * 141} distinct crops of {kodak}")
        x, y = offset * 3 % (image.width - CROP[0] + 1), offset * 11 % (image.height - CROP[1] + 1)
        image = image.crop((x, y, x + CROP[0], y + CROP[1]))
        if flips & 1:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if flips & 2:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        image.save(folder / f"crop{k:05d}.jpg", quality=95)


def make_set(work: Path, sources: Path, pristine: int, recipe_only: bool, workers: int) -> Path:
    """Build and label one set as a user does (CLI commands); reused when ``work`` holds it labelled."""
    if (work / "labels" / "label.json").is_file():
        return work
    shutil.rmtree(work, ignore_errors=True)
    saqt, run = bin_path("saqt"), ["--workers", str(workers)]
    build = [saqt, "build", "--source", "folder", "--root", str(sources), "--limit", str(pristine), *run]
    build += ["--max-upscale", "1.07", "--out", str(work / "build"), *(["--recipe-only"] if recipe_only else [])]
    cost = run_measured(build, checkout_env())
    print(
        f"  saqt build ({'recipe-only' if recipe_only else 'materialised'}, {pristine} pristine): {cost.cpu_s:.0f} CPU s"
    )
    label = [saqt, "label", "--build", str(work / "build"), "--bank", str(SHARED / "labels" / "KADID10k.csv")]
    run_measured([*label, "--rule", "mean", "--device", "cpu", "--out", str(work / "labels"), *run], checkout_env())
    return work


def planned(work: Path, batches: int) -> list[list[str]]:
    """The image ids of each of the first ``batches`` batches of 32 of epoch 0, as ``glint pretrain --plan-only``
    lists them."""
    shutil.rmtree(work / "plan", ignore_errors=True)
    plan = [bin_path("glint"), "pretrain", "--data", str(work / "labels"), "--out", str(work / "plan")]
    run_measured([*plan, "--plan-only", str(batches), "--batch-size", str(BATCH), "--device", "cpu"], checkout_env())
    ids: dict[int, list[str]] = {}
    with open(work / "plan" / "batches.csv", newline="") as f:
        for row in csv.DictReader(f):
            ids.setdefault(int(row["batch"]), []).append(row["image_id"])
    return [ids[b] for b in sorted(ids)]


def rows_of(table: Path, key: str, wanted: set[str], columns: list[str]) -> dict[str, dict]:
    """The rows of a build table (its ``*.parquet`` shards) whose ``key`` is in ``wanted``: key -> row."""
    found: dict[str, dict] = {}
    for path in sorted(table.glob("*.parquet")):
        rows = pq.read_table(path, columns=[key, *columns], filters=[(key, "in", sorted(wanted))]).to_pylist()
        found.update((r[key], r) for r in rows)
    return found


def write_png_files(build: Path, batches: list[list[str]], folder: Path) -> None:
    """The PNG bytes of the planned rows of a materialised build, one file per image, unchanged."""
    wanted = {i for b in batches for i in b}
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, row in rows_of(build / "distorted", "image_id", wanted, ["image"]).items():
        (folder / f"{image_id}.png").write_bytes(row["image"])


# --- measured in a fresh process (``--child``) -------------------------------------------------------------


def timed(batches: Iterator, count: int, setup_cpu: float, imported_rss: float) -> dict:
    """Read one warm-up batch, then ``count`` batches; the rates and this process's figures."""
    next(batches)
    setup = time.process_time() - setup_cpu
    images, cpu, wall = 0, time.process_time(), time.perf_counter()
    for _ in range(count):
        x, _ = next(batches)
        images += len(x)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "images": images,
        "images_per_cpu_s": images / cpu,
        "images_per_wall_s": images / wall,
        "peak_rss_mib": peak_rss_mib(),
        "imported_rss_mib": imported_rss,
        "setup_cpu_s": setup,
        "threads": threads(),
    }


def warm_renders() -> None:
    """Load every distortion's compiled kernels (numba's on-disk cache) before anything is timed."""
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for t in range(1, 26):
        distort(image, t, 3, seed=0)


def ours(spec: dict) -> Iterator:
    data = SaqtTraining(open_saqt(spec["labels"], pristine_cache=spec["cache"]), seed=0)
    return iter(make_loader(data, TrainConfig(batch_size=BATCH, loader_workers=0), epoch=0, rank=0, world=1))


def views(images: Iterator, count: int) -> Iterator:
    """Batches of training views of ``images`` (uint8 arrays), as the loader stacks them."""
    rng = random.Random(0)
    while True:
        batch = [to_tensor(random_view(prepare(next(images)), rng)) for _ in range(count)]
        yield torch.stack(batch), None


def floor_materialised(spec: dict) -> Iterator:
    ids = [i for b in spec["batches"] for i in b]
    data = [(Path(spec["files"]) / f"{i}.png").read_bytes() for i in ids]
    return views((decode_image(b) for b in data), BATCH)


def floor_recipe(spec: dict) -> Iterator:
    build = Path(spec["build"])
    ids = [i for b in spec["batches"] for i in b]
    recipes = rows_of(build / "distorted", "image_id", set(ids), ["pristine_id", "dist_type", "level", "seed"])
    pristine = rows_of(build / "pristine", "pristine_id", {r["pristine_id"] for r in recipes.values()}, ["image"])
    rows = [(pristine[recipes[i]["pristine_id"]]["image"], recipes[i]) for i in ids]

    def render() -> Iterator:
        for png, r in rows:
            yield distort(PreparedImage(decode_image(png)), r["dist_type"], r["level"], seed=r["seed"])

    return views(render(), BATCH)


class PngFiles:
    """The official release's training dataset, reduced to what a worker does per image (``IQADataset``)."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.transform = T.Compose(
            [
                T.RandomHorizontalFlip(),
                T.RandomVerticalFlip(),
                T.RandomCrop(size=224),
                T.ToTensor(),
                T.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with open(self.paths[i], "rb") as f:
            image = Image.open(f).convert("RGB")
        return self.transform(image), 0.0


def official(spec: dict) -> Iterator:
    data = PngFiles(sorted(Path(spec["files"]).glob("*.png")))
    shuffle = torch.Generator().manual_seed(0)
    return iter(DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=0, generator=shuffle))


READERS = {"ours": ours, "floor-materialised": floor_materialised, "floor-recipe": floor_recipe, "official": official}


def child(spec: dict) -> None:
    """Measure one reader in this (fresh) process and print its figures as JSON."""
    one_core()
    warm_renders()
    start, imported = time.process_time(), peak_rss_mib()
    print(json.dumps(timed(READERS[spec["reader"]](spec), spec["count"], start, imported)))


def spawn(spec: dict) -> dict:
    argv = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(argv, env=one_thread_env(), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{spec['reader']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- report ---------------------------------------------------------------------------------------------


def expected_distinct(pristine: int, cells: int, batch: int) -> float:
    """E[distinct pristine images] in a uniform batch of ``batch`` rows drawn without replacement from
    ``pristine`` x ``cells`` rows: P (1 - C(N - c, b) / C(N, b))."""
    n = pristine * cells
    log_none = gammaln(n - cells + 1) - gammaln(n - cells - batch + 1) - gammaln(n + 1) + gammaln(n - batch + 1)
    return pristine * (1 - math.exp(log_none))


def diversity(batches: list[list[str]], pristine: int) -> dict:
    """Distinct pristine images per planned batch against the uniform expectation (95% of the pristine images
    train: 5% are held out) and at the paper's size."""
    distinct = [len({i.rsplit("_", 2)[0] for i in b}) for b in batches]
    return {
        "measured": sum(distinct) / len(distinct),
        "uniform": expected_distinct(round(0.95 * pristine), CELLS, BATCH),
        "paper": expected_distinct(round(0.95 * PAPER_PRISTINE), CELLS, BATCH),
    }


def report(rates: dict[str, dict], sets: dict[str, dict], args: argparse.Namespace) -> dict:
    print(
        f"\none loader worker on one core, batches of 32 ({args.batches} after a warm-up batch), 512x384, 125 cells; "
        f"best of {args.rounds} rounds"
    )
    print("| reader | images per CPU s (rounds) | per wall s | peak RSS MiB (above imports) | set-up CPU s | threads |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r in rates.items():
        rounds = ", ".join(f"{x:.1f}" for x in r["rounds"])
        print(
            f"| {name} | {r['images_per_cpu_s']:.1f} ({rounds}) | {r['images_per_wall_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} ({r['peak_rss_mib'] - r['imported_rss_mib']:.0f}) | {r['setup_cpu_s']:.1f} | "
            f"{', '.join(r['threads'])} |"
        )
    cpu = {name: r["images_per_cpu_s"] for name, r in rates.items()}
    ratios = {
        "materialised_floor_ratio": cpu[ROWS[0]] / cpu[ROWS[1]],
        "recipe_only_floor_ratio": cpu[ROWS[2]] / cpu[ROWS[3]],
        "materialised_official_ratio": cpu[ROWS[0]] / cpu[ROWS[4]],
        "official_floor_ratio": cpu[ROWS[4]] / cpu[ROWS[1]],
    }
    print(
        f"ours / floor (images per CPU s): materialised {ratios['materialised_floor_ratio']:.2f}, recipe-only "
        f"{ratios['recipe_only_floor_ratio']:.2f}; ours materialised / official-style "
        f"{ratios['materialised_official_ratio']:.2f}; official-style / materialised floor "
        f"{ratios['official_floor_ratio']:.2f}"
    )
    print(
        "loader cores per 1,000 training images/s (measured rates only): "
        + ", ".join(f"{name} {1000 / rate:.0f}" for name, rate in cpu.items())
    )
    print("\ndistinct pristine images per batch of 32 (how often consecutive samples share a row group):")
    for name, s in sets.items():
        d = s["diversity"]
        print(
            f"  {name}: {s['pristine']} pristine, pristine cache {s['cache']}: measured {d['measured']:.2f}, "
            f"uniform {d['uniform']:.2f}; at the paper's {PAPER_PRISTINE:,}: {d['paper']:.2f}"
        )
    return ratios


def make_sets(args: argparse.Namespace, work: Path) -> tuple[list[dict], dict[str, dict]]:
    """The sets, their plans and the PNG files; the five readers' specs and the sets' description."""
    sources = work / "sources"
    if len(list(sources.glob("*.jpg"))) < max(args.materialised, args.recipe_only):
        make_sources(args.kodak, sources, max(args.materialised, args.recipe_only))
    print("sets (built once; reused with --work):")
    mat = make_set(work / "materialised", sources, args.materialised, False, args.workers)
    rec = make_set(work / "recipe-only", sources, args.recipe_only, True, args.workers)
    cache = args.pristine_cache or max(1, round(WORKER_CACHE * args.recipe_only / PAPER_PRISTINE))
    sets = {
        "materialised": {"pristine": args.materialised, "cache": WORKER_CACHE, "plan": planned(mat, args.batches + 1)},
        "recipe-only": {"pristine": args.recipe_only, "cache": cache, "plan": planned(rec, args.batches + 1)},
    }
    files = work / "png-files"
    shutil.rmtree(files, ignore_errors=True)
    write_png_files(mat / "build", sets["materialised"]["plan"], files)
    specs = [
        {"reader": "ours", "labels": str(mat / "labels"), "cache": WORKER_CACHE},
        {"reader": "floor-materialised", "files": str(files), "batches": sets["materialised"]["plan"]},
        {"reader": "ours", "labels": str(rec / "labels"), "cache": cache},
        {"reader": "floor-recipe", "build": str(rec / "build"), "batches": sets["recipe-only"]["plan"]},
        {"reader": "official", "files": str(files)},
    ]
    for s in sets.values():
        s["diversity"] = diversity(s.pop("plan"), s["pristine"])
    return [{**spec, "count": args.batches} for spec in specs], sets


def measure(specs: list[dict], rounds: int) -> dict[str, dict]:
    """Each reader ``rounds`` times, in turn, each time in a fresh process: the best round's figures (the most
    images per CPU second: the least disturbed by other load), with every round's rate."""
    runs: dict[str, list[dict]] = {name: [] for name in ROWS}
    for _ in range(rounds):
        for name, spec in zip(ROWS, specs, strict=True):
            runs[name].append(spawn(spec))
    return {
        name: {**max(r, key=lambda x: x["images_per_cpu_s"]), "rounds": [x["images_per_cpu_s"] for x in r]}
        for name, r in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kodak", type=Path, default=SHARED / "kodak24", help="folder of the Kodak24 PNGs")
    parser.add_argument("--materialised", type=int, default=64, help="pristine images of the materialised set")
    parser.add_argument("--recipe-only", type=int, default=1000, help="pristine images of the recipe-only set")
    parser.add_argument("--pristine-cache", type=int, help="default: 64 x N / 50,000 of the recipe-only set")
    parser.add_argument("--batches", type=int, default=40, help="timed batches of 32 per reader")
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each reader (the best is shown)")
    parser.add_argument("--workers", type=int, default=2, help="--workers of the build and label commands")
    parser.add_argument("--work", type=Path, help="keep the sets here, and reuse those a run left there")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if not args.kodak.is_dir():
        raise SystemExit(f"{args.kodak} is absent: the sets are built from Kodak24")
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="saqt-loader-")
    try:
        specs, sets = make_sets(args, args.work or Path(tmp.name))
        rates = measure(specs, args.rounds)
    finally:
        if tmp:
            tmp.cleanup()
    ratios = report(rates, sets, args)
    if args.json:
        args.json.write_text(json.dumps({**ratios, "rates": rates, "sets": sets, "batches": args.batches}, indent=2))


if __name__ == "__main__":
    main()

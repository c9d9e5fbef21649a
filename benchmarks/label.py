"""``saqt label`` stages against their raw kernels, measured in the same run.

    python benchmarks/label.py [--photos ../shared/data/kodak24] [--encoder effnet-lite0] [--json out.json]

1. Embedding: images/s of ``embed_images`` on a build's pristine PNGs (read from Parquet, decoded and
   preprocessed in DataLoader workers, forward, normalise) against the bare encoder forward on the same
   preprocessed tensors (goal >= 0.9).
2. Matching: pristine images/s of search + transfer rule (top-3 weights, 125 scores each) against bare FAISS
   search of the same queries (goal >= 0.9), on a 100k-reference bank of random unit vectors.
3. Peak RSS of the whole label stage for builds of 24 and 240 pristine images (goal: flat), embedding in
   batches of 16 in both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import peak_rss_mib
from PIL import Image

from pipelines.executors import LocalExecutor
from saqt.build.build_reader import BuildReader
from saqt.build.build_stage import BuildConfig, run_build
from saqt.core.context import RunContext
from saqt.core.images import decode_image
from saqt.core.shards import read_locator
from saqt.label.embed import auto_loader_workers, embed_images
from saqt.label.encoders import load_encoder
from saqt.label.faiss_index import build_index, search
from saqt.label.label_stage import LabelConfig, run_label
from saqt.label.synth_stage import SynthConfig, run_synth_bank
from saqt.label.transfer import Rule, neighbour_weights, transfer

RSS_BATCH = 16  # smaller than either build, so both runs hold full batches: peak RSS then measures the stage
KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak24"


def pool(photos: list[Path], copies: int, folder: Path) -> Path:
    """``copies`` distinct variants of each photo (shifted crops), so every one is its own pristine image (down to
    460 px: the builds pass a looser --max-upscale 1.2 to keep them all)."""
    folder.mkdir()
    for p in photos:
        image = Image.open(p).convert("RGB")
        for c in range(copies):
            image.crop((4 * c, 3 * c, image.width - 4 * (copies - c), image.height - 3 * (copies - c))).save(
                folder / f"{c:02d}_{p.name}", compress_level=1
            )
    return folder


def embedding_ratio(encoder, locators: list, batch: int, loader_workers: int) -> tuple[float, float]:
    tensors = [encoder.preprocess(decode_image(read_locator(loc))) for loc in locators]
    with torch.inference_mode():
        encoder.forward(torch.stack(tensors[:batch]))  # warm-up
        start = time.perf_counter()
        for i in range(0, len(tensors), batch):
            torch.nn.functional.normalize(encoder.forward(torch.stack(tensors[i : i + batch])), dim=1)
        raw = len(tensors) / (time.perf_counter() - start)
    start = time.perf_counter()
    embed_images(encoder, locators, batch_size=batch, loader_workers=loader_workers)
    return raw, len(locators) / (time.perf_counter() - start)


def matching_ratio(refs: int = 100_000, queries: int = 20_000, dim: int = 512, k: int = 3) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(refs, dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    q = rng.normal(size=(queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores = rng.uniform(0, 9, (refs, 25, 5))
    index = build_index(bank)
    start = time.perf_counter()
    index.search(q, k)
    raw = queries / (time.perf_counter() - start)
    rule = Rule("topk", neighbours=k)
    start = time.perf_counter()
    sims, ids = search(index, q, k)
    transfer(ids, neighbour_weights(sims, rule), scores)
    return raw, queries / (time.perf_counter() - start)


def rss_child(build: Path, bank: Path, out: Path, encoder: str) -> None:
    run_label(
        LabelConfig(build=str(build), bank=str(bank), encoder=encoder, rule="topk", device="cpu", batch_size=RSS_BATCH),
        out,
        RunContext(progress=False),
    )
    print(peak_rss_mib())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=KODAK)
    parser.add_argument("--encoder", default="effnet-lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--loader-workers", type=int, default=None, help="default: chosen for this machine")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rss-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(Path(args.rss_child[0]), Path(args.rss_child[1]), Path(args.rss_child[2]), args.rss_child[3])
        return
    photos = sorted(args.photos.glob("*.png"))
    with tempfile.TemporaryDirectory(prefix="saqt-label-bench-") as tmp:
        work = Path(tmp)
        bank = work / "bank"
        run_synth_bank(
            SynthConfig(root=str(args.photos), size=(256, 192), metric="psnr"),
            bank,
            RunContext(LocalExecutor(2), progress=False),
        )
        builds = {}
        for copies in (1, 10):
            builds[copies] = work / f"build{copies}"
            run_build(
                BuildConfig(
                    source="folder",
                    root=str(pool(photos, copies, work / f"pool{copies}")),
                    recipe_only=True,
                    images_per_shard=24,
                    max_upscale=1.2,
                ),
                builds[copies],
                RunContext(LocalExecutor(2), progress=False),
            )
        encoder = load_encoder(args.encoder, "cpu")
        locators = list(BuildReader(builds[10]).pristine_locators().values())
        raw_embed, stage_embed = embedding_ratio(encoder, locators, args.batch_size, args.loader_workers)
        raw_match, stage_match = matching_ratio()
        rss = {}
        for copies, build in builds.items():
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--rss-child",
                    str(build),
                    str(bank),
                    str(work / f"labels{copies}"),
                    args.encoder,
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            rss[copies * len(photos)] = float(out.strip().splitlines()[-1])
    small, large = sorted(rss)
    workers = auto_loader_workers(torch.device("cpu")) if args.loader_workers is None else args.loader_workers
    print(
        f"encoder {args.encoder}, batch {args.batch_size}, {workers} loader workers, "
        f"{torch.get_num_threads()} torch threads, {len(locators)} pristine images"
    )
    print(
        f"embedding: raw forward {raw_embed:7.1f} images/s, stage {stage_embed:7.1f} images/s "
        f"(ratio {stage_embed / raw_embed:.2f}; goal >= 0.9)"
    )
    print(
        f"matching:  raw FAISS search {raw_match:9.0f} queries/s, search + topk transfer {stage_match:9.0f} "
        f"(ratio {stage_match / raw_match:.2f}; goal >= 0.9; 100k references, d=512)"
    )
    print(
        f"peak RSS of the label stage: {rss[small]:.0f} MiB for {small} pristine ({small * 125} images), "
        f"{rss[large]:.0f} MiB for {large} ({large * 125}); ratio {rss[large] / rss[small]:.2f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"embed": [raw_embed, stage_embed], "match": [raw_match, stage_match], "rss_mib": rss}, indent=2)
        )


if __name__ == "__main__":
    main()

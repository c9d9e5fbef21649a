"""Pinned reproducibility: digests of a small run of every stage, checked by ``tests/core/test_pins.py``.

The run (``run_stages``) builds two bundled sample photos x all 125 distortions, synthesises a 3-reference bank
from the bundled ``sample-bank`` photos, labels the build from it (EfficientNet-Lite0, top-1) and publishes it.
``tests/pins.json`` records, for the toolkit and catalogue versions it was made with:

- ``derive_seed`` of a few keys and ``encode_png`` of a fixed image;
- *content* digests: decoded pixels of every pristine and distorted image, seeds, the bank's and the labels'
  score tables, the published rows. Schema, manifest or PNG-encoder changes that keep the pixels and scores
  do not move them;
- *file* digests: the SHA-256 of every Parquet shard and of the bank's ``scores.csv``: any byte moves them.

A change of any pin is a versioned event: the toolkit version (``saqt.__version__`` and pyproject.toml) must
move, or, when distorted pixels change, the catalogue version (``manifests/distortions/kadid10k.yaml``); and
CHANGELOG.md must have an entry for the new versions that says why. Then record the new digests::

    python -m tests.pin            # compare this checkout with tests/pins.json and print the differences
    python -m tests.pin --update   # the same, then write tests/pins.json (refused while the rules are broken)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from pipelines.executors import LocalExecutor
from saqt import __version__
from saqt.build.build_stage import BuildConfig, run_build
from saqt.build.distortions import catalogue_identity
from saqt.core.context import RunContext
from saqt.core.images import decode_image, encode_png
from saqt.core.seeding import derive_seed
from saqt.label.label_stage import LabelConfig, run_label
from saqt.label.stage_configs import ALL_LEVELS, ALL_TYPES
from saqt.label.synth_stage import SynthConfig, run_synth_bank
from saqt.publish.publish_stage import PublishConfig, run_publish

PINS = Path(__file__).with_name("pins.json")
CHANGELOG = Path(__file__).resolve().parents[1] / "CHANGELOG.md"
SIZE = (96, 64)
SEED = 7
SEED_KEYS = [
    (0, "abc", 3, 2),
    (SEED, "0123456789abcdef0123", 19, 5),
    (SEED, "0123456789abcdef0123", 19, 4),
    (1, "x", "cells"),
    (0, "holdout", "p"),
]
UPDATE_HINT = "python -m tests.pin --update"


def versions() -> dict:
    """What a pins file is valid for: the toolkit version and the distortion catalogue's name and version."""
    identity = catalogue_identity()
    return {"toolkit": __version__, "catalogue": f"{identity['name']} {identity['version']}"}


def run_stages(root: Path) -> dict[str, Path]:
    """Build, bank, label and publish under ``root`` with every option that shapes the output given explicitly
    (screen included), so that changes of defaults do not move the pins. One torch thread: the embeddings, and
    so the similarities in the label shards, do not depend on the machine's core count."""
    paths = {stage: root / stage for stage in ("build", "bank", "labels", "published")}
    build = BuildConfig(
        source="sample",
        limit=2,
        seed=SEED,
        size=SIZE,
        types=ALL_TYPES,
        levels=ALL_LEVELS,
        per_image=None,
        min_side=64,
        min_jpeg_quality=0,
        allow_grey=False,
        max_pixels=64_000_000,
        recipe_only=False,
        images_per_shard=1,
    )
    run_build(build, paths["build"], RunContext(LocalExecutor(1), progress=False))
    bank = SynthConfig(
        source="sample-bank", limit=3, seed=SEED, size=SIZE, metric="psnr", min_side=64, allow_grey=False
    )
    run_synth_bank(bank, paths["bank"], RunContext(LocalExecutor(1), progress=False))
    label = LabelConfig(
        build=str(paths["build"]),
        bank=str(paths["bank"]),
        encoder="effnet-lite0",
        rule="top1",
        normalise="minmax:0:9",
        index="flat",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_label(
            replace(label, device="cpu", batch_size=64, loader_workers=0), paths["labels"], RunContext(progress=False)
        )
    finally:
        torch.set_num_threads(threads)
    config = PublishConfig(str(paths["labels"]), validation=0.5, seed=SEED, shard_bytes=500 * 2**20)
    run_publish(config, str(paths["published"]), RunContext(progress=False))
    return paths


def _digest(rows) -> str:
    """SHA-256 of the rows, sorted, one JSON line each."""
    lines = sorted(json.dumps(row, separators=(",", ":")) for row in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def pixels(png: bytes) -> str:
    """SHA-256 of an encoded image's decoded pixels (with its shape)."""
    image = decode_image(png)
    return hashlib.sha256(np.asarray(image.shape, np.int64).tobytes() + image.tobytes()).hexdigest()


def content_digests(paths: dict[str, Path]) -> dict[str, str]:
    """Digests of what the stages computed, independent of how it is stored."""
    pristine = pq.read_table(paths["build"] / "pristine").to_pylist()
    distorted = pq.read_table(paths["build"] / "distorted").to_pylist()
    out = {
        "build/pristine": _digest([r["pristine_id"], r["source_key"], pixels(r["image"])] for r in pristine),
        "build/seeds": _digest([r["image_id"], r["seed"]] for r in distorted),
    }
    for t in ALL_TYPES:
        out[f"build/distorted/{t:02d}"] = _digest(
            [r["image_id"], pixels(r["image"])] for r in distorted if r["dist_type"] == t
        )
    with open(paths["bank"] / "scores.csv", newline="") as f:
        scores = [[r["ref"], int(r["type"]), int(r["level"]), float(r["score"])] for r in csv.DictReader(f)]
    refs = sorted({r[0] for r in scores})
    out["bank/references"] = _digest([ref, pixels((paths["bank"] / ref).read_bytes())] for ref in refs)
    out["bank/scores"] = _digest(scores)
    labels = pq.read_table(paths["labels"] / "labels").to_pylist()
    out["labels/scores"] = _digest([r["image_id"], r["score"], r["neighbours"]] for r in labels)
    rows = []
    for shard in sorted((paths["published"] / "data").glob("*.parquet")):
        split = shard.name.split("-")[0]
        for r in pq.read_table(shard, columns=["image_id", "score", "image"]).to_pylist():
            rows.append([split, r["image_id"], r["score"], pixels(r["image"]["bytes"])])
    out["published/rows"] = _digest(rows)
    return out


def file_digests(paths: dict[str, Path]) -> dict[str, str]:
    """SHA-256 of every Parquet shard of every stage, and of the bank's score table."""
    files = [paths["bank"] / "scores.csv"]
    for stage in ("build", "labels", "published"):
        files += sorted(p for p in paths[stage].rglob("*.parquet") if "embeddings" not in p.parts)
    root = paths["build"].parent
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def function_pins() -> dict:
    """``derive_seed`` of fixed keys and the PNG bytes of a fixed image: pins that need no pipeline run."""
    gradient = np.stack([*np.meshgrid(np.arange(64), np.arange(48)), np.full((48, 64), 7)], axis=-1) * 3
    image = np.ascontiguousarray(gradient.astype(np.uint8)[:, :, [0, 2, 1]])
    return {
        "derive_seed": {"|".join(map(str, key)): derive_seed(*key) for key in SEED_KEYS},
        "encode_png": hashlib.sha256(encode_png(image)).hexdigest(),
    }


def compute(root: Path) -> dict:
    """Every pin, from a fresh run under ``root``."""
    paths = run_stages(root)
    return {"made_with": versions(), **function_pins(), "content": content_digests(paths), "files": file_digests(paths)}


def differences(old: dict, new: dict) -> list[str]:
    """One line per pin that differs (``made_with`` aside)."""
    lines = []
    for section in sorted((set(old) | set(new)) - {"made_with"}):
        a, b = old.get(section, {}), new.get(section, {})
        if not isinstance(a, dict) or not isinstance(b, dict):
            a, b = {"": a}, {"": b}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                lines.append(f"{section} {key}: {str(a.get(key, '(none)'))[:16]} -> {str(b.get(key, '(none)'))[:16]}")
    return lines


def changelog_heading(made_with: dict) -> str:
    """The CHANGELOG.md entry these versions need: a Keep a Changelog release heading whose section names the
    distortion catalogue."""
    return f"## [{made_with['toolkit']}] - YYYY-MM-DD, naming catalogue {made_with['catalogue']}"


def has_changelog_entry(made_with: dict, text: str) -> bool:
    """Whether the changelog has a ``## [version] - date`` section for this toolkit version that names this catalogue
    and has at least one ``- `` line."""
    heading = re.search(rf"^## \[{re.escape(made_with['toolkit'])}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.M)
    if heading is None:
        return False
    section = text[heading.end() :].split("\n## ", 1)[0]
    return f"catalogue {made_with['catalogue']}" in section and re.search(r"^- \S", section, re.M) is not None


def version_problem(old: dict, new: dict, changelog: str) -> str | None:
    """Why ``new`` may not replace ``old`` (None if it may): changed pins need a moved version and a changelog entry."""
    changed = differences(old, new)
    if not changed:
        return None
    was, now = old.get("made_with"), new["made_with"]
    if was == now:
        return f"outputs changed but neither the toolkit version ({now['toolkit']}) nor the catalogue ({now['catalogue']}) moved"
    pixels_moved = any(line.startswith("content build/distorted/") for line in changed)
    if was and pixels_moved and was["catalogue"] == now["catalogue"]:
        return "distorted pixels changed but the catalogue version did not move (manifests/distortions/kadid10k.yaml)"
    if not has_changelog_entry(now, changelog):
        return f"CHANGELOG.md has no entry '{changelog_heading(now)}' saying why"
    return None


HOW_TO = (
    "If the change is intended: bump saqt.__version__ and pyproject.toml's version (any output change), or the "
    "catalogue version in manifests/distortions/kadid10k.yaml (distorted pixels changed), add a CHANGELOG.md "
    f"entry saying why, then run `{UPDATE_HINT}`. If it is not intended, it is a regression."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.pin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="write the new digests to tests/pins.json")
    args = parser.parse_args(argv)
    old = json.loads(PINS.read_text()) if PINS.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="saqt-pins-") as tmp:
        new = compute(Path(tmp))
    changed = differences(old, new)
    print("\n".join(changed) if changed else "every pin matches tests/pins.json")
    if old.get("made_with") != new["made_with"]:
        print(f"versions: {old.get('made_with')} -> {new['made_with']}")
    if not args.update:
        return 1 if changed or old.get("made_with") != new["made_with"] else 0
    problem = version_problem(old, new, CHANGELOG.read_text() if CHANGELOG.is_file() else "")
    if problem:
        print(f"refused: {problem}. {HOW_TO}", file=sys.stderr)
        return 1
    PINS.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
    print(f"wrote {PINS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

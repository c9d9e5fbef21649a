"""``saqt build``: pristine sources to Parquet shards of canonical pristine images and their distortions.

Work is cut into units of ``images_per_shard`` selected images, in key order; each unit writes one
pristine and one distorted shard. A unit's output depends only on the configuration and its images,
so the build is bit-identical whatever the number of workers and however often it is resumed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from saqt.build.byte_ranges import write_ranges
from saqt.build.distortions import PreparedImage, catalogue_identity, distort, random_params, spec
from saqt.build.pool import Pool, choose_pool
from saqt.build.pristine import prepare_pristine
from saqt.build.sources import Quota, SourceItem, read_selection
from saqt.core.context import DEFAULT_CONTEXT, RunContext
from saqt.core.counts import reason_kind
from saqt.core.error_log import ErrorLog
from saqt.core.errors import SaqtError
from saqt.core.images import ImageDecodeError, encode_png
from saqt.core.progress import Progress
from saqt.core.seeding import derive_seed
from saqt.core.shards import (
    BUILD_ERRORS,
    DISTORTED_SCHEMA,
    PRISTINE_SCHEMA,
    ShardWriter,
    aborting,
)
from saqt.core.stage_contract import StageWriter, new_manifest
from saqt.label.stage_configs import BuildConfig


class NothingBuilt(SaqtError):
    """A build that ended with no usable image."""


@dataclass
class UnitResult:
    """What one unit wrote: its shard entries, the images it skipped with reasons, and counts."""

    index: int
    shards: dict[str, dict]
    errors: list[tuple[str, str]] = field(default_factory=list)
    images: int = 0


def plan_cells(config: BuildConfig, pristine_id: str) -> list[tuple[int, int]]:
    """The (type, level) cells rendered for one pristine image: all selected, or a seeded subset."""
    cells = [(t, lv) for t in config.types for lv in config.levels]
    if config.per_image is None:
        return cells
    rng = np.random.default_rng(derive_seed(config.seed, pristine_id, "cells"))
    return sorted(cells[i] for i in rng.choice(len(cells), config.per_image, replace=False))


def distorted_row(config: BuildConfig, src: PreparedImage, pristine_id: str, key: str, t: int, lv: int) -> dict:
    """One distorted row: its recipe, and its PNG unless the build is recipe-only."""
    seed = derive_seed(config.seed, pristine_id, t, lv)
    h, w = src.shape
    drawn = random_params(t, lv, (h, w), seed)
    entry = spec(t)
    return {
        "image_id": f"{pristine_id}_{t:02d}_{lv:02d}",
        "pristine_id": pristine_id,
        "source_key": key,
        "dist_type": t,
        "dist_name": entry.name,
        "level": lv,
        "param": entry.value(lv),
        "seed": seed,
        "random_params": json.dumps(drawn, sort_keys=True) if drawn else None,
        "width": w,
        "height": h,
        "image": None if config.recipe_only else encode_png(distort(src, t, lv, seed=seed, params=drawn or None)),
    }


def _pristine_row(config: BuildConfig, item: SourceItem) -> tuple[dict, np.ndarray]:
    """The pristine row of one source image; raises ImageDecodeError with the reason to skip it."""
    p = prepare_pristine(item, config.size, config.pristine_screen, config.max_pixels)
    row = {
        "image_id": p.pristine_id,
        "pristine_id": p.pristine_id,
        "source": config.source,
        "source_key": item.key,
        "label": item.label,
        "orig_width": p.orig_width,
        "orig_height": p.orig_height,
        "jpeg_quality": p.jpeg_quality,
        "width": config.size[0],
        "height": config.size[1],
        "image": encode_png(p.image),
    }
    return row, p.image


def build_unit(config: BuildConfig, out: Path, unit: tuple[int, list[SourceItem]]) -> UnitResult:
    """Render one unit into its pristine and distorted shards (runs in a worker process)."""
    index, items = unit
    name = f"part-{index:05d}.parquet"
    pristine = ShardWriter(out / "pristine" / name, PRISTINE_SCHEMA, root=out)
    with aborting(pristine):  # the second cannot be created (a link in the way): the first's file goes too
        distorted = ShardWriter(out / "distorted" / name, DISTORTED_SCHEMA, root=out)
    errors, lengths = [], {"pristine": [], "distorted": []}
    with aborting(pristine, distorted):
        for item in items:
            try:
                row, canon = _pristine_row(config, item)
            except ImageDecodeError as err:
                errors.append((item.key, str(err)))
                continue
            src = PreparedImage(canon)
            pid = row["pristine_id"]
            rows = [distorted_row(config, src, pid, item.key, t, lv) for t, lv in plan_cells(config, pid)]
            distorted.write(rows)
            pristine.write([row])
            lengths["pristine"].append(len(row["image"]))
            lengths["distorted"] += [len(r["image"]) for r in rows if r["image"] is not None]
        shards = {"distorted": distorted.commit(out), "pristine": pristine.commit(out)}
    for table in ("pristine", "distorted"):
        if lengths[table]:  # a recipe-only build's distorted shards hold no images
            shards[f"{table}-ranges"] = write_ranges(out, table, out / shards[table]["path"], lengths[table])
    return UnitResult(index, shards, errors, len(items))


def _units(items: list[SourceItem], size: int) -> list[tuple[int, list[SourceItem]]]:
    return [(i // size, items[i : i + size]) for i in range(0, len(items), size)]


def _fresh_manifest(config: BuildConfig, listing_errors, pool: Pool, units: int, command: str) -> dict:
    digest = hashlib.sha256()
    for item in pool.kept:
        digest.update(item.key.encode() + b"\n")
    inputs = {
        "selection": {"images": len(pool.kept), "keys_sha256": digest.hexdigest()},
        "catalogue": catalogue_identity(),
    }
    manifest = new_manifest("build", config.as_dict(), inputs, units, command)
    manifest["screen"] = {
        **config.pristine_screen.describe(),
        "screened": pool.screened,
        "refused": len(pool.refused),
        "duplicates": pool.duplicates,
    }
    refused = Counter(reason_kind(reason) for _, reason in chain(listing_errors, pool.refused))
    manifest["refused"] = {"inputs": sum(refused.values()), "by_reason": dict(refused)}  # listed in errors.jsonl
    manifest["aux"] = [BUILD_ERRORS]
    return manifest


def run_build(config: BuildConfig, out: Path, ctx: RunContext = DEFAULT_CONTEXT) -> dict:
    """Build (or resume) into ``out``; returns the final manifest. Raises a SaqtError for bad arguments before any
    work, and NothingBuilt (after writing the manifest and the error log) when no input was usable."""
    executor, progress = ctx.executor, ctx.progress
    listing = config.source_options.listing(
        config.split, read_selection(config.selection) if config.selection else None
    )
    quota = Quota(listing.items, config.limit, config.per_class)
    pool = choose_pool(
        listing.items, quota, config.seed, config.size, config.pristine_screen, config.max_pixels, executor, progress
    )
    selection = pool.kept
    units = _units(selection, config.images_per_shard)
    fresh = _fresh_manifest(config, listing.errors, pool, len(units), ctx.command)
    log = ErrorLog(out / BUILD_ERRORS, listing.errors, pool.refused)
    with StageWriter(out, fresh, ctx.overwrite, config.source_options.inputs, on_save=log) as writer:
        pending = [u for u in units if str(u[0]) not in writer.manifest["done"]]
        writer.save()
        done_images = len(selection) - sum(len(u[1]) for u in pending)
        with Progress(total=len(selection), initial=done_images, unit="img", desc="build", disable=not progress) as bar:
            for result in executor.map_unordered(_UnitTask(config, out), pending):
                writer.record(str(result.index), {"files": result.shards, "errors": result.errors})
                log.append(result.errors)
                bar.update(result.images)
        manifest = writer.finish()
    if not manifest["counts"]["pristine"]:
        counts = manifest["counts"]
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(counts["skipped_by_reason"].items()))
        raise NothingBuilt(
            f"nothing built: none of the {counts['skipped']} inputs of source {config.source!r} is "
            f"usable ({reasons or 'none listed'}); see {out / BUILD_ERRORS}"
        )
    return manifest


@dataclass(frozen=True)
class _UnitTask:
    """``build_unit`` bound to a configuration and output folder; picklable for worker processes."""

    config: BuildConfig
    out: Path

    def __call__(self, unit: tuple[int, list[SourceItem]]) -> UnitResult:
        return build_unit(self.config, self.out, unit)

    def describe(self, unit: tuple[int, list[SourceItem]]) -> str:
        index, items = unit
        keys = ", ".join(item.key for item in items[:3]) + (", ..." if len(items) > 3 else "")
        return f"shard part-{index:05d} ({keys})"

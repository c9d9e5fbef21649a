"""``saqt bank synth``: a labelled bank from any reference images, scored by a full-reference proxy metric.

For demos, tests and users without licensed MOS data. The scores are a metric, not human opinion:
the bank manifest says ``proxy: true`` and every label transferred from it carries that flag.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from saqt.build.distortions import PreparedImage, catalogue_identity, distort
from saqt.build.pool import choose_pool
from saqt.build.pristine import prepare_pristine
from saqt.build.sources import Quota, SourceError, SourceItem
from saqt.core.context import DEFAULT_CONTEXT, RunContext
from saqt.core.images import DEFAULT_MAX_PIXELS, ImageDecodeError, encode_png
from saqt.core.progress import Progress
from saqt.core.registry import resolve
from saqt.core.seeding import derive_seed
from saqt.core.shards import BANK_MANIFEST, write_bytes_atomic
from saqt.core.stage_contract import StageConflict, StageWriter, file_entry, new_manifest
from saqt.label.reference_bank import KINDS, Bank, BankError, bank_spec, load_bank
from saqt.label.stage_configs import SYNTH_METRICS, SynthConfig

CELLS = [(t, lv) for t in range(1, 26) for lv in range(1, 6)]
SYNTH_DATASET = "dataset.csv"  # the distortions a synth bank saves, rated: a small dataset for `glint finetune`


def ms_ssim(reference: np.ndarray, distorted: list[np.ndarray]) -> list[float]:
    """Multi-scale SSIM (Wang et al. 2003; pytorch_msssim) of each distorted image against the reference."""
    from pytorch_msssim import ms_ssim as msssim

    ref = torch.from_numpy(reference.copy()).permute(2, 0, 1)[None].float()
    out = []
    for i in range(0, len(distorted), 25):
        batch = torch.from_numpy(np.stack(distorted[i : i + 25])).permute(0, 3, 1, 2).float()
        out += msssim(ref.expand(len(batch), -1, -1, -1), batch, data_range=255, size_average=False).tolist()
    return out


def psnr(reference: np.ndarray, distorted: list[np.ndarray]) -> list[float]:
    """PSNR in dB, capped at 100 for identical images."""
    ref = reference.astype(np.float64)
    mse = [np.mean((ref - d) ** 2) for d in distorted]
    return [100.0 if m == 0 else min(100.0, 10 * np.log10(255.0**2 / m)) for m in mse]


def _reference_name(item: SourceItem, pristine_id: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(item.key).stem)[:40]
    return f"images/{stem}_{pristine_id[:8]}.png"


@dataclass(frozen=True)
class _ScoreReference:
    """Distort one reference 125 ways and score each (picklable for worker processes)."""

    config: SynthConfig

    def __call__(
        self, item: SourceItem
    ) -> tuple[str, str | None, bytes | None, list[tuple[int, int, float, bytes | None]]]:
        try:
            p = prepare_pristine(item, self.config.size, self.config.reference_screen, DEFAULT_MAX_PIXELS)
        except ImageDecodeError as err:
            return item.key, str(err), None, []
        src = PreparedImage(p.image)
        renders = [distort(src, t, lv, seed=derive_seed(self.config.seed, p.pristine_id, t, lv)) for t, lv in CELLS]
        scores = resolve(SYNTH_METRICS[self.config.metric])(p.image, renders)
        name = _reference_name(item, p.pristine_id)
        pngs = [encode_png(r) if self.config.save_distorted else None for r in renders]
        return (
            item.key,
            name,
            encode_png(p.image),
            [(t, lv, s, png) for (t, lv), s, png in zip(CELLS, scores, pngs, strict=True)],
        )

    def describe(self, item: SourceItem) -> str:
        return f"reference {item.key}"


def _fresh_manifest(config: SynthConfig, listing_errors, items: list[SourceItem], command: str) -> dict:
    keys = hashlib.sha256("".join(f"{item.key}\n" for item in items).encode()).hexdigest()
    inputs = {"selection": {"images": len(items), "keys_sha256": keys}, "catalogue": catalogue_identity()}
    return new_manifest(
        "bank",
        json.loads(json.dumps(asdict(config))),
        inputs,
        len(items),
        command,
        kind="synth",
        proxy=True,
        metric=config.metric,
        listing_errors=[list(e) for e in listing_errors],
        score_meaning=f"full-reference {config.metric}, higher is better; a proxy, not human opinion",
    )


def _record(out: Path, key: str, name: str | None, png: bytes | None, scores: list) -> dict:
    """Write one reference's image (and distortions) and return its unit entry: files, key, scores or reason."""
    if png is None:
        return {"files": {}, "key": key, "skipped": name}
    files = {"image": out / name}
    write_bytes_atomic(files["image"], png, out)
    for t, lv, _, distorted in scores:
        if distorted is not None:
            files[f"{t:02d}_{lv:02d}"] = out / f"distorted/{Path(name).stem}_{t:02d}_{lv:02d}.png"
            write_bytes_atomic(files[f"{t:02d}_{lv:02d}"], distorted, out)
    return {
        "files": {k: file_entry(out, p) for k, p in files.items()},
        "key": key,
        "scores": [s for *_, s, _ in scores],
    }


def _write_tables(out: Path, manifest: dict) -> dict:
    """scores.csv (ref, type, level, score) and, with saved distortions, dataset.csv (path, score, ref), from the
    units; returns their entries."""
    rows, images = [], []
    for unit in manifest["done"].values():
        if "scores" in unit:
            name = unit["files"]["image"]["path"]
            rows += [(name, t, lv, s) for (t, lv), s in zip(CELLS, unit["scores"], strict=True)]
            images += [
                (unit["files"][f"{t:02d}_{lv:02d}"]["path"], s, name)
                for (t, lv), s in zip(CELLS, unit["scores"], strict=True)
                if f"{t:02d}_{lv:02d}" in unit["files"]
            ]
    tables = {bank_spec("synth")["score_files"][0]: (["ref", "type", "level", "score"], rows)}
    if images:  # a small rated dataset of its own, for `glint finetune --dataset csv --csv dataset.csv`
        tables[SYNTH_DATASET] = (["path", "score", "ref"], images)
    for name, (header, table) in tables.items():
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(header)
        writer.writerows(sorted(table))
        write_bytes_atomic(out / name, text.getvalue().encode())
    return {name: file_entry(out, out / name) for name in tables}


def _bank_files() -> list[str]:
    """The files that make a folder a bank of some kind, or the rated dataset a synth bank writes."""
    return [*(name for kind in KINDS for name in bank_spec(kind)["score_files"]), SYNTH_DATASET]


def _save(manifest: dict) -> None:
    """The bank's ``skipped`` list, at each compaction: the refused inputs, then the references that failed."""
    skipped = [list(e) for e in manifest["listing_errors"]]
    skipped += [
        [u["key"], u["skipped"]]
        for _, u in sorted(manifest["done"].items(), key=lambda kv: int(kv[0]))
        if "skipped" in u
    ]
    manifest["skipped"] = skipped


def run_synth_bank(config: SynthConfig, out: Path, ctx: RunContext = DEFAULT_CONTEXT) -> Bank:
    """Write a proxy-scored bank to ``out`` (images/, scores.csv, bank.json) and return it.

    Like the other stages it resumes: a rerun keeps the references already scored, and refuses a bank in ``out``
    made with other settings unless ``ctx.overwrite``.
    """
    executor, progress = ctx.executor, ctx.progress
    listing = config.source_options.listing()
    pool = choose_pool(
        listing.items,
        Quota(listing.items, config.limit),
        config.seed,
        config.size,
        config.reference_screen,
        DEFAULT_MAX_PIXELS,
        executor,
        progress,
    )
    items = pool.kept
    if not items:
        raise SourceError(
            f"no reference image of source {config.source!r} passes the screen "
            f"(refused: {[list(e) for e in (listing.errors + pool.refused)[:3]]})"
        )
    if not (out / BANK_MANIFEST).exists() and any((out / n).exists() for n in _bank_files()):
        raise StageConflict(f"{out} holds a bank that `saqt bank synth` did not write; choose another --out")
    fresh = _fresh_manifest(config, listing.errors + pool.refused, items, ctx.command)
    fresh["screen"] = {**config.reference_screen.describe(), "screened": pool.screened, "duplicates": pool.duplicates}
    with StageWriter(out, fresh, ctx.overwrite, config.source_options.inputs, on_save=_save) as writer:
        pending = [(str(i), item) for i, item in enumerate(items) if str(i) not in writer.manifest["done"]]
        writer.save()
        by_key = {item.key: unit for unit, item in pending}
        with Progress(
            total=len(items), initial=len(items) - len(pending), unit="ref", desc="bank synth", disable=not progress
        ) as bar:
            for key, name, png, scores in executor.map_unordered(_ScoreReference(config), [it for _, it in pending]):
                writer.record(by_key[key], _record(out, key, name, png, scores))
                bar.update(1)
        usable = any("scores" in unit for unit in writer.manifest["done"].values())
        writer.manifest["files"] = _write_tables(out, writer.manifest) if usable else {}
        writer.finish(usable)
    if not usable:
        raise BankError(f"no usable reference images (skipped: {writer.manifest['skipped'][:3]})")
    return load_bank(out)

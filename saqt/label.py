"""``saqt label``: give each distorted image of a build the score its nearest labelled references have for
the same distortion, and join images (or recipes), scores and provenance into the SAQT-IQA training set.

Embeddings and neighbours are computed once per pristine image; then each build shard becomes one
``labels/`` and one ``saqt-iqa/`` shard (a unit of work for the executor), written atomically and listed in
``label.json``, so a rerun resumes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from saqt import __version__
from saqt.bank import Bank, BankError, load_bank, normalise_scores
from saqt.build import Executor
from saqt.embed import cached_embeddings, embed_images
from saqt.encoders import load_encoder
from saqt.match import INDEX_KINDS, build_index, search
from saqt.matches import read_matches
from saqt.reader import BuildReader
from saqt.shards import (
    BUILD_MANIFEST,
    LABEL_MANIFEST,
    LABEL_SCHEMA,
    SAQT_IQA_SCHEMA,
    ShardWriter,
    resume_manifest,
    sha256_file,
    write_json_atomic,
)
from saqt.transfer import SELF_MATCH, Rule, cell_means, neighbour_weights, transfer

MANIFEST = LABEL_MANIFEST

@dataclass(frozen=True)
class LabelConfig:
    """Everything that determines the labels (device, batch size and loader workers do not)."""

    build: str
    bank: str
    bank_type: str | None = None
    encoder: str = "clip:ViT-B-32@laion2b_s34b_b79k"
    rule: str = "top1"
    k: int = 3
    temperature: float = 0.05
    normalise: str = "minmax:0:9"
    exclude_refs: tuple[str, ...] = ()
    index: str = "flat"
    matches: str | None = None  # "authors" or a matches CSV: use these top-1 matches instead of embedding
    preset: str | None = None  # recorded when the settings came from a preset (saqt.presets)

    def __post_init__(self):
        Rule(self.rule, self.k, self.temperature)  # raises ValueError for a bad rule, k or temperature
        if self.index not in INDEX_KINDS:
            raise ValueError(f"--index must be one of {', '.join(INDEX_KINDS)}, got {self.index!r}")
        if self.matches and self.rule != "top1":
            raise ValueError(f"--matches gives one reference per image: it needs --rule top1, not {self.rule}")
        if self.matches and self.exclude_refs:
            raise ValueError("--exclude-refs cannot be combined with --matches: the given matches fix each image's "
                             "reference, and images matched to an excluded one would need matching anew")  # fmt: skip

    @property
    def transfer_rule(self) -> Rule:
        """The transfer rule these settings describe."""
        return Rule(self.rule, self.k, self.temperature)


@dataclass(frozen=True)
class RunOptions:
    """How the work runs: no effect on the output."""

    device: str = "auto"
    batch_size: int = 64
    loader_workers: int | None = None  # None: auto_loader_workers
    progress: bool = True


def read_exclusions(path: Path) -> tuple[str, ...]:
    """Reference ids, one per line (``#`` comments allowed), from an exclusion file."""
    if not path.is_file():
        raise BankError(f"--exclude-refs file {path} does not exist")
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return tuple(sorted({line for line in lines if line}))


def _resolve_exclusions(bank: Bank, names: tuple[str, ...]) -> set[str]:
    """Bank ids for ``names``, which may also be given without their extension (``I01`` for ``I01.png``)."""
    by_stem = {Path(r).stem: r for r in bank.ref_ids}
    return {n if n in bank.ref_ids else by_stem.get(Path(n).stem, n) for n in names}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]


@dataclass
class PristineLabels:
    """Per pristine image: its 25 x 5 transferred scores and the neighbours they came from."""

    scores: dict[str, np.ndarray]
    neighbours: dict[str, list[str]]
    similarities: dict[str, list[float]]
    weights: dict[str, list[float]]
    self_matches: int


def transfer_labels(config: LabelConfig, reader: BuildReader, bank: Bank, scores: np.ndarray, out: Path,
                    run: RunOptions, embed: Callable | None = None) -> tuple[PristineLabels, dict]:  # fmt: skip
    """Embed, match and transfer for every pristine image of the build; returns labels and encoder provenance.

    ``embed`` replaces :func:`~saqt.embed.embed_images` (e.g. encoders on a Ray cluster's GPUs); this process
    then loads the encoder on the CPU only for its identity.
    """
    rule = config.transfer_rule
    if config.matches:
        given = read_matches(config.matches)
        keys = {r["pristine_id"]: r["source_key"] for r in reader.rows("pristine", ["pristine_id", "source_key"])}
        ids = sorted(keys)
        nn, sims = given.resolve(keys, bank.ref_ids)
        provenance = {"encoder": given.label, "weights": given.weights, "matches": given.describe()}
        return _labels(ids, sims, nn, rule, bank, scores), provenance
    pristine = reader.pristine_locators()
    ids = sorted(pristine)
    if rule.name == "mean":
        means = cell_means(scores)
        labels = PristineLabels({p: means for p in ids}, {p: [] for p in ids}, {p: [] for p in ids},
                                {p: [] for p in ids}, 0)  # fmt: skip
        return labels, {"encoder": "none", "weights": "none"}
    if not bank.has_images:
        raise BankError(f"rule {rule.name} needs the bank's reference images, and {bank.root} lacks some")
    encoder = load_encoder(config.encoder, "cpu" if embed else run.device)
    kw = {"batch_size": run.batch_size, "loader_workers": run.loader_workers, "progress": run.progress,
          "embed": embed or embed_images}  # fmt: skip
    slug = _slug(f"{encoder.id}|{encoder.weights}")
    refs = cached_embeddings(encoder, {r: str(p) for r, p in zip(bank.ref_ids, bank.images, strict=True)},
                             out / "embeddings" / f"bank-{slug}.parquet", desc="embed bank", **kw)  # fmt: skip
    images = cached_embeddings(encoder, pristine, out / "embeddings" / f"pristine-{slug}.parquet",
                               desc="embed pristine", **kw)  # fmt: skip
    index = build_index(np.stack([refs[r] for r in bank.ref_ids]), kind=config.index)
    sims, nn = search(index, np.stack([images[p] for p in ids]), rule.neighbours)
    return _labels(ids, sims, nn, rule, bank, scores), {"encoder": encoder.id, "weights": encoder.weights}


def _labels(ids: list[str], sims: np.ndarray, nn: np.ndarray, rule: Rule, bank: Bank, scores: np.ndarray):
    """Each pristine image's transferred scores from its neighbours ``nn`` (bank indices) and similarities."""
    weights = neighbour_weights(sims, rule)
    cells = transfer(nn, weights, scores)
    return PristineLabels(
        scores=dict(zip(ids, cells, strict=True)),
        neighbours={p: [bank.ref_ids[j] for j in nn[i]] for i, p in enumerate(ids)},
        similarities={p: sims[i].tolist() for i, p in enumerate(ids)},
        weights={p: weights[i].tolist() for i, p in enumerate(ids)},
        self_matches=int((sims[:, 0] >= SELF_MATCH).sum()),
    )


def _label_unit(reader: BuildReader, unit: str, labels: PristineLabels, constants: dict, out: Path) -> dict:
    """Write the labels and joined SAQT-IQA shards of one build unit."""
    source = reader.root / reader.manifest["shards"][unit]["shards"]["distorted"]["path"]
    name = f"part-{int(unit):05d}.parquet"
    writers = {"labels": ShardWriter(out / "labels" / name, LABEL_SCHEMA),
               "saqt-iqa": ShardWriter(out / "saqt-iqa" / name, SAQT_IQA_SCHEMA)}  # fmt: skip
    try:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=125):
            rows = batch.to_pylist()
            provenance = []
            for r in rows:
                p, score = r["pristine_id"], labels.scores[r["pristine_id"]][r["dist_type"] - 1, r["level"] - 1]
                provenance.append({**constants, "score": None if np.isnan(score) else float(score),
                                   "neighbours": labels.neighbours[p], "similarities": labels.similarities[p],
                                   "weights": labels.weights[p]})  # fmt: skip
            keys = ("image_id", "pristine_id", "dist_type", "level")
            writers["labels"].write([{**{k: r[k] for k in keys}, **v} for r, v in zip(rows, provenance, strict=True)])
            writers["saqt-iqa"].write([{**r, **v} for r, v in zip(rows, provenance, strict=True)])
        return {table: w.commit(out) for table, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise


@dataclass(frozen=True)
class _LabelTask:
    """``_label_unit`` bound to the labels; picklable for worker processes. Returns (unit, its shard entries)."""

    reader: BuildReader
    labels: PristineLabels
    constants: dict
    out: Path

    def __call__(self, unit: str) -> tuple[str, dict]:
        return unit, _label_unit(self.reader, unit, self.labels, self.constants, self.out)

    def describe(self, unit: str) -> str:
        return f"shard part-{int(unit):05d}"


def run_label(config: LabelConfig, out: Path, run: RunOptions = RunOptions(), overwrite: bool = False,
              command: str = "", executor: Executor | None = None) -> dict:  # fmt: skip
    """Label (or resume labelling) a build into ``out``; returns the final manifest.

    The shards are written by ``executor`` (default: here, one after another); an executor with a
    ``gpu_embedder(encoder, device)`` may also embed the images on its GPUs.
    """
    reader = BuildReader(Path(config.build))
    full = load_bank(Path(config.bank), config.bank_type)
    normalised = normalise_scores(full.scores, config.normalise)
    bank = full.without(_resolve_exclusions(full, config.exclude_refs))
    scores = normalised[[full.ref_ids.index(r) for r in bank.ref_ids]]
    units = sorted(reader.manifest["shards"], key=int)
    identity = {
        "config": json.loads(json.dumps(asdict(config))),
        "build": {"root": config.build, "manifest_sha256": sha256_file(Path(config.build) / BUILD_MANIFEST),
                  "complete": reader.manifest["complete"], "units": units},
        "bank": {**bank.describe(), "scores_sha256": _bank_digest(full)},
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    fresh = {"stage": "label", **identity, "shards": {}, "complete": False}
    manifest = resume_manifest(out, MANIFEST, fresh, ("config", "build", "bank"), ("labels", "saqt-iqa"), overwrite,
                               lambda unit: unit.values())  # fmt: skip
    gpu_embedder = getattr(executor, "gpu_embedder", None)
    embed = gpu_embedder(config.encoder, run.device) if gpu_embedder and not config.matches else None
    labels, encoder = transfer_labels(config, reader, bank, scores, out, run, embed)
    manifest.update({"toolkit_version": __version__, "command": command, "encoder": encoder,
                     "rule": config.transfer_rule.describe(), "score_scale": config.normalise,
                     "self_matches": labels.self_matches})  # fmt: skip
    constants = {"score_scale": config.normalise, "bank": f"{bank.kind}:{Path(config.bank).name}",
                 "bank_proxy": bank.proxy, "encoder": encoder["encoder"], "encoder_weights": encoder["weights"],
                 "rule": config.rule, "k": config.transfer_rule.neighbours,
                 "temperature": config.temperature if config.rule == "topk" else None}  # fmt: skip
    pending = [u for u in units if u not in manifest["shards"]]
    task = _LabelTask(reader, labels, constants, out)
    done = executor.map_unordered(task, pending) if executor else map(task, pending)
    for unit, shards in tqdm(done, total=len(pending), desc="label", unit="shard", disable=not run.progress):
        manifest["shards"][unit] = shards
        _save(out, manifest)
    manifest["complete"] = reader.manifest["complete"] and len(manifest["shards"]) == len(units)
    _save(out, manifest)
    return manifest


def _bank_digest(bank: Bank) -> str:
    digest = hashlib.sha256(np.nan_to_num(bank.scores, nan=-1e300).tobytes())
    digest.update("\n".join(bank.ref_ids).encode())
    return digest.hexdigest()


def _save(out: Path, manifest: dict) -> None:
    done = manifest["shards"].values()
    manifest["counts"] = {"labels": sum(s["labels"]["rows"] for s in done), "shards": len(manifest["shards"])}
    write_json_atomic(out / MANIFEST, manifest)

"""``saqt publish``: a labelled SAQT-IQA set as a standard Parquet dataset that loads without this toolkit.

The layout is the Hugging Face Hub's, read by ``datasets.load_dataset("parquet", data_dir=...)`` and
``pyarrow.dataset``::

    README.md                                dataset card: licence, size, features, splits, provenance
    SHA256SUMS                               every other file, in ``sha256sum -c`` format
    data/train-00000-of-00002.parquet        shards of about --shard-size bytes each
    data/validation-00000-of-00001.parquet   optional; split by pristine image

Everything is written to a staging folder and then moved (or, for an fsspec URL, uploaded) into place with
SHA256SUMS last, so an interrupted publish is never mistaken for a complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from saqt import __version__
from saqt.card import hub_features, render_card, size_category
from saqt.distortions import catalogue_identity
from saqt.images import encode_png
from saqt.reader import BuildReader
from saqt.shards import LABEL_MANIFEST, SAQT_IQA_SCHEMA, ShardWriter, sha256_file
from saqt.sources import source_spec

SCHEMA_VERSION = "saqt-iqa-publish/1"
CARD = "README.md"
SUMS = "SHA256SUMS"
SPLITS = ("train", "validation")
ROW_GROUP = 100  # rows per Parquet row group: small enough for dataset viewers to page through images
IMAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])  # the Hub's Image feature

FIELD_MEANINGS = {
    "image_id": "`<pristine_id>_<type>_<level>`: unique per row",
    "pristine_id": "content hash of the canonical pristine image; rows sharing it are one photo's distortions",
    "source_key": "the pristine image's key in its source (path or archive member)",
    "dist_type": "KADID-10k distortion type, 1..25",
    "dist_name": "its name",
    "level": "distortion level, 1 (mild) .. 5 (strong)",
    "param": "the level's parameter value in the distortion catalogue",
    "seed": "seed of the distortion's random draws: the row re-renders bit-identically from pristine + recipe",
    "random_params": "JSON of the random parameters drawn (types 3, 5, 20, 23), else null",
    "width": "image width in pixels",
    "height": "image height in pixels",
    "image": "the distorted image, PNG (`bytes`, `path`); null in a recipe-only set",
    "score": "the transferred quality score (higher is better); null where the bank has no score for the cell",
    "score_scale": "how the bank's scores were normalised before transfer",
    "bank": "the labelled bank the score came from",
    "bank_proxy": "true if the bank's scores are a full-reference metric, not human opinion",
    "encoder": "the image encoder used to find similar references",
    "encoder_weights": "its weights",
    "rule": "transfer rule: top1, topk or mean",
    "k": "neighbours used",
    "temperature": "softmax temperature of the topk weights",
    "neighbours": "bank references the score came from, most similar first",
    "similarities": "their cosine similarities to the pristine image",
    "weights": "their weights in the score",
}


class PublishError(ValueError):
    """The labels cannot be published as asked."""


@dataclass(frozen=True)
class PublishConfig:
    """What determines the published files (where they go does not)."""

    labels: str
    validation: float = 0.0
    seed: int = 0
    shard_bytes: int = 500 * 2**20
    license: str | None = None
    render: bool = False

    def __post_init__(self):
        if not 0.0 <= self.validation < 1.0:
            raise PublishError(f"--validation must be in [0, 1), got {self.validation}")
        if self.shard_bytes < 1:
            raise PublishError(f"--shard-size must be positive, got {self.shard_bytes} bytes")


def publish_schema(dataset_id: str) -> pa.Schema:
    """The published rows: SAQT-IQA's columns with ``image`` as the Hub's Image struct, tagged with the set's id."""
    fields = [pa.field("image", IMAGE) if f.name == "image" else f for f in SAQT_IQA_SCHEMA]
    hub = {"info": {"features": {"image": {"_type": "Image"}}}}  # the rest is inferred from the Arrow types
    return pa.schema(fields, metadata={"saqt.schema": SCHEMA_VERSION, "saqt.dataset_id": dataset_id,
                                       "saqt.image_format": "png", "huggingface": json.dumps(hub)})  # fmt: skip


def validation_ids(pristine_ids: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` of the pristine images (at least one when the fraction is positive, never all)."""
    if fraction == 0 or len(pristine_ids) < 2:
        return set()
    count = min(max(1, round(fraction * len(pristine_ids))), len(pristine_ids) - 1)
    ranked = sorted(pristine_ids, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    return set(ranked[:count])


def _label_manifest(labels: Path) -> dict:
    path = labels / LABEL_MANIFEST
    if not path.is_file():
        raise PublishError(f"{labels} has no {LABEL_MANIFEST}: not a `saqt label` output folder")
    manifest = json.loads(path.read_text())
    if not manifest.get("complete"):
        raise PublishError(f"{labels} is an unfinished labelling run: rerun `saqt label` to complete it first")
    return manifest


def provenance(config: PublishConfig, label: dict, build: dict, command: str) -> dict:
    """Where every part of the set came from, as recorded in the card."""
    bc, lc = build["config"], label["config"]
    spec = source_spec(bc["source"])
    bank_command = label["bank"].get("command")
    return {
        "toolkit_version": __version__,
        "source": {"name": bc["source"], "root": bc["root"], "list": bc["list_file"], "split": bc["split"],
                   "description": spec.get("description", ""), "license": spec.get("license", "unknown"),
                   "license_note": spec.get("license_note", "")},
        "selection": {"selected": build["selection"]["images"], "keys_sha256": build["selection"]["keys_sha256"],
                      "limit": bc["limit"], "per_class": bc["per_class"], "pristine": build["counts"]["pristine"],
                      "skipped": build["counts"]["skipped"], "skipped_by_reason": build["counts"]["skipped_by_reason"]},
        "canonical_size": bc["size"],
        "screen": {"min_side": bc["min_side"], "min_jpeg_quality": bc["min_jpeg_quality"],
                   "allow_grey": bc["allow_grey"], "max_pixels": bc["max_pixels"], **build.get("screen", {})},
        "distortions": {"catalogue": build.get("catalogue", catalogue_identity()), "types": bc["types"],
                        "levels": bc["levels"], "per_image": bc["per_image"], "recipe_only": bc["recipe_only"],
                        "rendered_at_publish": config.render},
        "bank": {k: label["bank"].get(k) for k in ("kind", "references", "proxy", "metric", "score_meaning",
                                                   "scores_sha256", "excluded")},
        "encoder": {"id": label["encoder"]["encoder"], "weights": label["encoder"]["weights"]},
        "transfer": {"rule": lc["rule"], "k": label["rule"]["k"], "temperature": label["rule"].get("temperature"),
                     "score_scale": label["score_scale"], "index": lc["index"]},
        "self_matches": label["self_matches"],
        "seeds": {"build": bc["seed"], "bank": label["bank"].get("config", {}).get("seed"), "split": config.seed},
        "split": {"validation_fraction": config.validation, "by": "pristine_id", "seed": config.seed},
        "inputs": {"build_manifest_sha256": label["build"]["manifest_sha256"],
                   "label_shards_sha256": [label["shards"][u]["saqt-iqa"]["sha256"]
                                           for u in sorted(label["shards"], key=int)]},
        "commands": [build.get("command", ""), bank_command or "", label.get("command", ""), command],
    }  # fmt: skip


def _dataset_id(prov: dict, config: PublishConfig) -> str:
    """Names this set's content: the same inputs and publish settings give the same id."""
    core = {"inputs": prov["inputs"], "split": prov["split"], "render": config.render, "shard_bytes": config.shard_bytes}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:32]


class _SplitWriter:
    """One split's shards, each rolled over once it holds about ``shard_bytes`` of images."""

    def __init__(self, root: Path, split: str, schema: pa.Schema, shard_bytes: int):
        self.root, self.split, self.schema, self.shard_bytes = root, split, schema, shard_bytes
        self.done: list[dict] = []
        self._writer: ShardWriter | None = None
        self._bytes = 0

    def add(self, table: pa.Table) -> None:
        """Append ``table`` as one row group; start a new shard once this one is full."""
        if not table.num_rows:
            return
        if self._writer is None:
            self._writer = ShardWriter(self.root / "data" / f"{self.split}-{len(self.done):05d}.parquet", self.schema)
        self._writer.write_table(table)
        self._bytes += table.get_total_buffer_size()
        if self._bytes >= self.shard_bytes:
            self._commit()

    def _commit(self) -> None:
        self.done.append(self._writer.commit(self.root))
        self._writer, self._bytes = None, 0

    def close(self) -> list[dict]:
        """Finish the last shard; rename the shards to ``<split>-<i>-of-<n>.parquet``; return their entries."""
        if self._writer is not None:
            self._commit()
        for i, entry in enumerate(self.done):
            final = f"data/{self.split}-{i:05d}-of-{len(self.done):05d}.parquet"
            os.replace(self.root / entry["path"], self.root / final)
            entry["path"] = final
        return self.done

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


def _batches(labels: Path, label: dict, schema: pa.Schema, reader: BuildReader | None) -> Iterator[pa.Table]:
    """Published rows in label-shard order, ROW_GROUP at a time, the image wrapped as the Hub's Image struct
    (rendered from its recipe when ``reader`` is given)."""
    for unit in sorted(label["shards"], key=int):
        shard = pq.ParquetFile(labels / label["shards"][unit]["saqt-iqa"]["path"])
        for batch in shard.iter_batches(batch_size=ROW_GROUP):
            images = batch.column("image")
            if reader is not None and images.null_count:
                images = pa.array([r["image"] if r["image"] is not None else encode_png(reader.image(r))
                                   for r in batch.to_pylist()], pa.binary())  # fmt: skip
            paths = pc.binary_join_element_wise(batch.column("image_id"), ".png", "")
            wrapped = pa.StructArray.from_arrays([images, paths], fields=list(IMAGE), mask=pc.is_null(images))
            columns = [wrapped if name == "image" else batch.column(name) for name in schema.names]
            yield pa.Table.from_arrays(columns, schema=schema)


def write_dataset(config: PublishConfig, label: dict, staging: Path, command: str = "", progress: bool = True) -> dict:
    """Write the whole dataset, from the labels whose manifest is ``label``, into the empty folder ``staging``;
    returns the card's front matter."""
    labels = Path(config.labels)
    build_root = Path(label["config"]["build"])
    reader = BuildReader(build_root)
    prov = provenance(config, label, reader.manifest, command)
    dataset_id = _dataset_id(prov, config)
    schema = publish_schema(dataset_id)
    pristine_ids = sorted({r["pristine_id"] for r in reader.rows("pristine", ["pristine_id"])})
    held_out = validation_ids(pristine_ids, config.validation, config.seed)
    writers = {s: _SplitWriter(staging, s, schema, config.shard_bytes) for s in SPLITS}
    render = reader if config.render else None
    total = label["counts"]["labels"]
    held = pa.array(sorted(held_out), pa.string())
    try:
        with tqdm(total=total, desc="publish", unit="img", disable=not progress) as bar:
            for table in _batches(labels, label, schema, render):
                in_validation = pc.is_in(table.column("pristine_id"), value_set=held)
                writers["validation"].add(table.filter(in_validation))
                writers["train"].add(table.filter(pc.invert(in_validation)))
                bar.update(table.num_rows)
        files = {s: w.close() for s, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    splits = [{"name": s, "num_bytes": sum(e["bytes"] for e in files[s]), "num_examples": sum(e["rows"] for e in files[s])}
              for s in SPLITS if files[s]]  # fmt: skip
    rows = sum(s["num_examples"] for s in splits)
    recipe_only = reader.manifest["config"]["recipe_only"] and not config.render
    meta = {
        "license": config.license or prov["source"]["license"],
        "pretty_name": f"SAQT-IQA ({prov['source']['name']}, {rows:,} images)",
        "tags": ["image-quality-assessment", "iqa", "synthetic-distortions", "transferred-labels"],
        "size_categories": [size_category(rows)],
        "configs": [{"config_name": "default", "default": True,
                     "data_files": [{"split": s["name"], "path": f"data/{s['name']}-*"} for s in splits]}],
        "dataset_info": {"features": hub_features(schema), "splits": splits,
                         "download_size": sum(e["bytes"] for f in files.values() for e in f),
                         "dataset_size": sum(s["num_bytes"] for s in splits)},
        "saqt": {"schema": SCHEMA_VERSION, "dataset_id": dataset_id, "recipe_only": recipe_only,
                 "files": {s: len(files[s]) for s in SPLITS if files[s]}, "provenance": prov},
    }  # fmt: skip
    (staging / CARD).write_text(render_card(meta, [(f.name, FIELD_MEANINGS[f.name]) for f in schema]))
    listed = [e["path"] for f in files.values() for e in f] + [CARD]
    (staging / SUMS).write_text("".join(f"{sha256_file(staging / p)}  {p}\n" for p in sorted(listed)))
    return meta


def publish(config: PublishConfig, out: str, overwrite: bool = False, command: str = "", staging_dir: str | None = None,
            progress: bool = True) -> dict:  # fmt: skip
    """Publish to ``out``, a local folder or an fsspec URL; returns the card's front matter.

    An existing dataset at ``out`` is refused unless ``overwrite``. Local output is staged beside ``out`` and
    renamed into place; remote output is staged in ``staging_dir`` (default: the system's temporary folder)
    and uploaded file by file, SHA256SUMS last.
    """
    label = _label_manifest(Path(config.labels))  # refuse a bad input before touching the output
    fs, root = fsspec.core.url_to_fs(out)
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    if fs.exists(root) and fs.ls(root) and not overwrite:
        raise PublishError(f"{out} is not empty: use --overwrite to replace it or choose another --out")
    if local:
        target = Path(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.publishing"
        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging = Path(tempfile.mkdtemp(prefix="saqt-publish-", dir=staging_dir))
    staging.mkdir(parents=True, exist_ok=True)
    try:
        meta = write_dataset(config, label, staging, command, progress)
        if local:
            _swap_in(staging, target)
        else:
            _upload(staging, fs, root, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with renames, so readers see the old or the new set, never a mix."""
    old = target.parent / f".{target.name}.replaced"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _upload(staging: Path, fs: fsspec.AbstractFileSystem, root: str, overwrite: bool) -> None:
    """Copy the staged files to ``root`` on ``fs``: data first, then the card, SHA256SUMS last."""
    if overwrite and fs.exists(root):
        fs.rm(root, recursive=True)
    order = sorted(p.relative_to(staging).as_posix() for p in (staging / "data").iterdir()) + [CARD, SUMS]
    fs.makedirs(f"{root}/data", exist_ok=True)
    for rel in order:
        fs.put_file(str(staging / rel), f"{root}/{rel}")


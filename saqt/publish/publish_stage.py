"""``saqt publish``: a labelled SAQT-IQA set as a standard Parquet dataset that loads without this toolkit.

The layout is the Hugging Face Hub's, read by ``datasets.load_dataset("parquet", data_dir=...)`` and
``pyarrow.dataset``::

    README.md                                dataset card: licence, size, features, splits, provenance
    SHA256SUMS                               every other file, in ``sha256sum -c`` format
    data/train-00000-of-00002.parquet        shards of about --shard-size bytes each
    data/validation-00000-of-00001.parquet   optional; split by pristine image

Everything is written to a staging folder and then moved (or, for an fsspec URL, uploaded) into place with
SHA256SUMS last, so an interrupted publish is never mistaken for a complete one. ``--overwrite`` replaces only
the files an earlier publish listed in its SHA256SUMS; a folder holding anything else is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from saqt import __version__
from saqt.build.screen import cover_scale
from saqt.build.sources import source_spec
from saqt.core.config_options import NOT_PATHS
from saqt.core.context import DEFAULT_CONTEXT, RunContext
from saqt.core.errors import PublishError
from saqt.core.images import encode_png
from saqt.core.progress import Progress
from saqt.core.safe_files import fresh_folder, make_folders, replace
from saqt.core.shards import (
    ShardWriter,
    aborting,
    sha256_file,
    write_bytes_atomic,
    writing,
)
from saqt.core.stage_contract import CARD, SUMS, FolderLock, Stage, check_apart, published_file, read_sums
from saqt.label.stage_configs import PublishConfig
from saqt.read.api import (
    IMAGE,
    PRISTINE_FIELDS,
    SCHEMA_VERSION,
    BuildReader,
    filesystem,
    open_labels,
    publish_schema,
    with_build_images,
)
from saqt.read.card import hub_features, is_saqt_card, render_card, size_category

SPLITS = ("train", "validation")
STAGING_SENTINEL = ".saqt-publish-staging"  # marks a local staging folder as a publish's own
ROW_GROUP = 100  # rows per Parquet row group: small enough for dataset viewers to page through images
SHARD_ROWS = 250_000  # rows a shard holds at most: each row group's metadata stays in memory until its shard is
# closed, and rows without pixels (recipe-only) never fill --shard-size, so one shard would hold them all

FIELD_MEANINGS = {
    "image_id": "`<pristine_id>_<type>_<level>`: unique per row",
    "pristine_id": "content hash of the canonical pristine image; rows sharing it are one photo's distortions",
    "source_key": "the pristine image's key in its source, relative to the source's root (path or archive member)",
    "source_class": "the source image's class where the source has one (ImageNet: its synset, e.g. `n01440764`), "
    "else null",
    "orig_width": "width of the source image before canonicalisation, pixels",
    "orig_height": "height of the source image before canonicalisation, pixels",
    "jpeg_quality": "estimated IJG quality (1..100) of the source image if it is a JPEG, else null",
    "upscale_factor": "factor by which the source image was resized to cover the canonical size (above 1: enlarged)",
    "dist_type": "KADID-10k distortion type, 1..25",
    "dist_name": "its name",
    "level": "distortion level, 1 (mild) .. 5 (strong)",
    "param": "the level's parameter value in the distortion catalogue",
    "seed": "seed of the distortion's random draws: the row re-renders bit-identically from pristine + recipe",
    "random_params": "JSON of the random parameters drawn (types 3, 5, 20, 23), else null",
    "width": "image width in pixels",
    "height": "image height in pixels",
    "image": "the distorted image, PNG (`bytes`, `path`); null in a recipe-only set",
    "score": "the transferred quality score (higher is better), on the scale named in the card",
    "neighbours": "the bank references matched to the pristine image, most similar first (their ids in the bank)",
    "similarities": "their cosine similarities to the pristine image",
    "weights": "their weights in the score",
}


# The Hub lists no image-regression task; IQA sets are filed under image classification, the scores' nature is in the
# tags. ``datasets.utils.metadata.known_task_ids`` holds the categories the Hub knows (tests check against it).
TASK_CATEGORIES = ["image-classification"]
TAGS = [
    "image-quality-assessment",
    "no-reference-iqa",
    "iqa",
    "regression",
    "synthetic-distortions",
    "transferred-labels",
    "kadid-10k",
]


class LicenceWarning(UserWarning):
    """The published pixels come from a source whose terms may not allow redistributing them."""


def card_license(config: PublishConfig, spec: dict) -> dict:
    """The card's ``license`` (with ``license_name`` and ``license_link`` when it is ``other``, as the Hub asks):
    ``--license`` and its name and link if given, else the source's."""
    if config.license:
        chosen = {"license": config.license, "license_name": config.license_name, "license_link": config.license_link}
    else:
        chosen = {k: spec.get(k) for k in ("license", "license_name", "license_link")}
        chosen["license"] = chosen["license"] or "unknown"
    return {k: v for k, v in chosen.items() if v is not None}


def licence_warning(config: PublishConfig, spec: dict, has_pixels: bool) -> str | None:
    """One line when the set would carry pixels of a source whose licence restricts redistribution (or is unknown
    and no --license was given); None otherwise."""
    if not has_pixels:
        return None
    if spec.get("restricted"):
        return (
            f"warning: publishing pixels derived from {spec['name']} ({spec.get('license_note', 'see its terms')});"
            " check you may redistribute them, or publish with --recipe-only (no pixels; users re-render from "
            "their own copy of the source)"
        )
    if spec.get("license", "unknown") == "unknown" and not config.license:
        return (
            f"warning: the licence of the {spec['name']} images is unknown; name it with --license, or publish "
            "with --recipe-only (no pixels)"
        )
    return None


def validation_ids(pristine_ids: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` of the pristine images (at least one when the fraction is positive, never all)."""
    if fraction == 0 or len(pristine_ids) < 2:
        return set()
    count = min(max(1, round(fraction * len(pristine_ids))), len(pristine_ids) - 1)
    ranked = sorted(pristine_ids, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    return set(ranked[:count])


# Options whose values name files, folders or hosts of the publisher's machine, or a secret: the card shows placeholders.
PRIVATE_OPTIONS = {
    "--root",
    "--list",
    "--selection",
    "--build",
    "--bank",
    "--labels",
    "--matches",
    "--exclude-refs",
    "--out",
    "-o",
    "--staging",
    "--images",
    "--json",
    "--fidelity",
    "--dest",
    "--from",
    "--ray-address",
    "--token",
}
ABSOLUTE = re.compile(r"^(~|/|[A-Za-z]:[\\/]|\\\\)")


def redact_command(command: str) -> str:
    """``command`` with every local file, folder, host or token replaced by a placeholder (``<root>``, ``<path>``)."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: not a command line this toolkit recorded
        return "<command not shown>"
    out = []
    for i, word in enumerate(words):
        option, eq, value = word.partition("=")
        if eq and option in PRIVATE_OPTIONS and value not in NOT_PATHS:
            word = f"{option}=<{option.lstrip('-')}>"
        elif i and words[i - 1] in PRIVATE_OPTIONS and word not in NOT_PATHS:
            word = f"<{words[i - 1].lstrip('-')}>"
        elif ABSOLUTE.match(word):
            word = "<path>"
        out.append(word)
    if out == words:
        return command
    return " ".join(w if w.startswith("<") or "=<" in w else shlex.quote(w) for w in out)


def provenance(config: PublishConfig, label: dict, build: dict, command: str) -> dict:
    """Where every part of the set came from, as recorded in the card; no path of the publisher's machine."""
    bc, lc, bank = build["config"], label["config"], label["inputs"]["bank"]
    return {
        "toolkit_version": __version__,
        "source": _source_record(bc),
        "selection": _selection_record(build),
        "canonical_size": bc["size"],
        "screen": {
            "min_side": bc["min_side"],
            "min_jpeg_quality": bc["min_jpeg_quality"],
            "allow_grey": bc["allow_grey"],
            "max_pixels": bc["max_pixels"],
            **build.get("screen", {}),
        },
        "distortions": _distortions_record(config, build),
        "bank": {
            k: bank.get(k)
            for k in ("kind", "references", "proxy", "metric", "score_meaning", "scores_sha256", "excluded")
        },
        "encoder": {"id": label["encoder"]["encoder"], "weights": label["encoder"]["weights"]},
        "transfer": {
            "rule": lc["rule"],
            "k": label["rule"]["k"],
            "temperature": label["rule"].get("temperature"),
            "score_scale": label["score_scale"],
            "index": lc["index"],
        },
        "self_matches": label["self_matches"],
        "seeds": {"build": bc["seed"], "bank": bank.get("config", {}).get("seed"), "split": config.seed},
        "split": {"validation_fraction": config.validation, "by": "pristine_id", "seed": config.seed},
        "inputs": {
            "build_digest": label["inputs"]["build"]["digest"],
            "label_shards_sha256": [
                label["done"][u]["files"]["saqt-iqa"]["sha256"] for u in sorted(label["done"], key=int)
            ],
        },
        "commands": [
            redact_command(c)
            for c in (build.get("command", ""), bank.get("command") or "", label.get("command", ""), command)
        ],
    }


def _source_record(bc: dict) -> dict:
    """The build's source as the card names it: a catalogue name and its licence, never a local path."""
    spec = source_spec(bc["source"])
    return {
        "name": bc["source"],
        "split": bc["split"],
        "description": spec.get("description", ""),
        "license": spec.get("license", "unknown"),
        "license_note": spec.get("license_note", ""),
        "selection": bc.get("selection")
        if bc.get("selection") in NOT_PATHS
        else "a file of image names"
        if bc.get("selection")
        else None,
    }


def _selection_record(build: dict) -> dict:
    """Which images the build selected, kept and skipped (build manifest: ``inputs.selection`` and ``counts``)."""
    bc = build["config"]
    return {
        "selected": build["inputs"]["selection"]["images"],
        "keys_sha256": build["inputs"]["selection"]["keys_sha256"],
        "limit": bc["limit"],
        "per_class": bc["per_class"],
        "pristine": build["counts"]["pristine"],
        "skipped": build["counts"]["skipped"],
        "skipped_by_reason": build["counts"]["skipped_by_reason"],
    }


def _distortions_record(config: PublishConfig, build: dict) -> dict:
    """The catalogue and cells the build used, and whether publish rendered or withheld the images."""
    bc = build["config"]
    return {
        "catalogue": build["inputs"]["catalogue"],
        "types": bc["types"],
        "levels": bc["levels"],
        "per_image": bc["per_image"],
        "recipe_only": bc["recipe_only"],
        "rendered_at_publish": config.render,
        "withheld_at_publish": config.recipe_only,
    }


def run_constants(prov: dict) -> dict:
    """The label columns that hold one value per run, as the card records them instead of repeating them per row
    (``bank`` names the bank's kind, never its folder)."""
    transfer = prov["transfer"]
    return {
        "score_scale": transfer["score_scale"],
        "bank": prov["bank"]["kind"],
        "bank_proxy": prov["bank"]["proxy"],
        "encoder": prov["encoder"]["id"],
        "encoder_weights": prov["encoder"]["weights"],
        "rule": transfer["rule"],
        "k": transfer["k"],
        "temperature": transfer["temperature"],
    }


def _dataset_id(prov: dict, config: PublishConfig) -> str:
    """Names this set's content: the same inputs and publish settings give the same id."""
    core = {
        "inputs": prov["inputs"],
        "split": prov["split"],
        "render": config.render,
        "shard_bytes": config.shard_bytes,
        **({"recipe_only": True} if config.recipe_only else {}),
    }
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:32]


class _SplitWriter:
    """One split's shards, each rolled over once it holds about ``shard_bytes`` of images or ``SHARD_ROWS`` rows."""

    def __init__(self, root: Path, split: str, schema: pa.Schema, shard_bytes: int):
        self.root, self.split, self.schema, self.shard_bytes = root, split, schema, shard_bytes
        self.done: list[dict] = []
        self._writer: ShardWriter | None = None
        self._bytes = self._rows = 0

    def add(self, table: pa.Table) -> None:
        """Append ``table`` as one row group; start a new shard once this one is full."""
        if not table.num_rows:
            return
        if self._writer is None:
            path = self.root / "data" / f"{self.split}-{len(self.done):05d}.parquet"
            self._writer = ShardWriter(path, self.schema, root=self.root)
        self._writer.write_table(table)
        self._bytes += table.get_total_buffer_size()
        self._rows += table.num_rows
        if self._bytes >= self.shard_bytes or self._rows >= SHARD_ROWS:
            self._commit()

    def _commit(self) -> None:
        self.done.append(self._writer.commit(self.root))
        self._writer, self._bytes, self._rows = None, 0, 0

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


def pristine_records(reader: BuildReader) -> dict[str, dict]:
    """pristine_id -> the published columns taken from its pristine record (class, original size, JPEG quality,
    upscale factor)."""
    size = reader.manifest["config"]["size"]
    columns = ["pristine_id", "label", "orig_width", "orig_height", "jpeg_quality"]
    return {
        r["pristine_id"]: {
            "source_class": r["label"],
            "orig_width": r["orig_width"],
            "orig_height": r["orig_height"],
            "jpeg_quality": r["jpeg_quality"],
            "upscale_factor": cover_scale(r["orig_width"], r["orig_height"], size),
        }
        for r in reader.rows("pristine", columns)
    }


def _images(batch: pa.RecordBatch, reader: BuildReader | None, withhold: bool) -> pa.Array:
    """The Hub's Image structs of a batch: none when ``withhold``, rendered from the recipe where ``reader`` is
    given and the row has no pixels."""
    images = batch.column("image")
    if withhold:
        images = pa.nulls(batch.num_rows, pa.binary())
    elif reader is not None and images.null_count:
        images = pa.array(
            [r["image"] if r["image"] is not None else encode_png(reader.image(r)) for r in batch.to_pylist()],
            pa.binary(),
        )
    paths = pc.binary_join_element_wise(batch.column("image_id"), ".png", "")
    return pa.StructArray.from_arrays([images, paths], fields=list(IMAGE), mask=pc.is_null(images))


def _batches(
    labels: Stage, schema: pa.Schema, pristine: dict[str, dict], reader: BuildReader, render: bool, withhold: bool
) -> Iterator[pa.Table]:
    """Published rows in label-shard order, ROW_GROUP at a time: pixels from the build (see ``_images``), the
    source image's record joined in."""
    for unit in labels.units():
        shard, built = (
            pq.ParquetFile(labels.path(unit, "saqt-iqa")),
            pq.ParquetFile(reader.stage.path(unit, "distorted")),
        )
        for group in range(shard.num_row_groups):
            table = with_build_images(shard.read_row_group(group), built, group, str(labels.path(unit, "saqt-iqa")))
            for batch in table.to_batches(max_chunksize=ROW_GROUP):
                records = [pristine[p] for p in batch.column("pristine_id").to_pylist()]
                joined = {f.name: pa.array([r[f.name] for r in records], f.type) for f in PRISTINE_FIELDS}
                joined["image"] = _images(batch, reader if render else None, withhold)
                columns = [joined[name] if name in joined else batch.column(name) for name in schema.names]
                yield pa.Table.from_arrays(columns, schema=schema)


def write_dataset(
    config: PublishConfig, labels: Stage, reader: BuildReader, staging: Path, command: str = "", progress: bool = True
) -> dict:
    """Write the whole dataset, from ``labels`` and their build, into the empty folder ``staging``; returns the
    card's front matter."""
    prov = provenance(config, labels.manifest, reader.manifest, command)
    dataset_id = _dataset_id(prov, config)
    schema = publish_schema(dataset_id)
    files = _write_splits(config, labels, reader, staging, schema, progress)
    recipe_only = config.recipe_only or (reader.manifest["config"]["recipe_only"] and not config.render)
    meta = _card_meta(config, prov, dataset_id, schema, files, recipe_only)
    write_bytes_atomic(staging / CARD, render_card(meta, [(f.name, FIELD_MEANINGS[f.name]) for f in schema]).encode())
    listed = [e["path"] for f in files.values() for e in f] + [CARD]
    write_bytes_atomic(staging / SUMS, "".join(f"{sha256_file(staging / p)}  {p}\n" for p in sorted(listed)).encode())
    return meta


def _write_splits(
    config: PublishConfig, labels: Stage, reader: BuildReader, staging: Path, schema: pa.Schema, progress: bool
) -> dict[str, list[dict]]:
    """Stream every labelled row into the train or validation shards (by pristine image); each split's files."""
    pristine_ids = sorted({r["pristine_id"] for r in reader.rows("pristine", ["pristine_id"])})
    held_out = validation_ids(pristine_ids, config.validation, config.seed)
    writers = {s: _SplitWriter(staging, s, schema, config.shard_bytes) for s in SPLITS}
    total = labels.manifest["counts"]["labels"]
    held = pa.array(sorted(held_out), pa.string())
    pristine = pristine_records(reader)
    with aborting(*writers.values()):
        with Progress(total=total, desc="publish", unit="img", disable=not progress) as bar:
            for table in _batches(labels, schema, pristine, reader, config.render, config.recipe_only):
                in_validation = pc.is_in(table.column("pristine_id"), value_set=held)
                writers["validation"].add(table.filter(in_validation))
                writers["train"].add(table.filter(pc.invert(in_validation)))
                bar.update(table.num_rows)
        return {s: w.close() for s, w in writers.items()}


def _card_meta(
    config: PublishConfig, prov: dict, dataset_id: str, schema: pa.Schema, files: dict, recipe_only: bool
) -> dict:
    """The card's front matter: the Hub's fields (licence, size, features, splits, data files), then ``saqt:``."""
    splits = [
        {"name": s, "num_bytes": sum(e["bytes"] for e in files[s]), "num_examples": sum(e["rows"] for e in files[s])}
        for s in SPLITS
        if files[s]
    ]
    rows = sum(s["num_examples"] for s in splits)
    return {
        **card_license(config, source_spec(prov["source"]["name"])),
        "pretty_name": f"SAQT-IQA ({prov['source']['name']}, {rows:,} images)",
        "task_categories": TASK_CATEGORIES,
        "tags": TAGS + (["recipe-only"] if recipe_only else []),
        "size_categories": [size_category(rows)],
        "configs": [
            {
                "config_name": "default",
                "default": True,
                "data_files": [{"split": s["name"], "path": f"data/{s['name']}-*"} for s in splits],
            }
        ],
        "dataset_info": {
            "features": hub_features(schema),
            "splits": splits,
            "download_size": sum(e["bytes"] for f in files.values() for e in f),
            "dataset_size": sum(s["num_bytes"] for s in splits),
        },
        "saqt": {
            "schema": SCHEMA_VERSION,
            "dataset_id": dataset_id,
            "recipe_only": recipe_only,
            "files": {s: len(files[s]) for s in SPLITS if files[s]},
            "run_constants": run_constants(prov),
            "provenance": prov,
        },
    }


def run_publish(config: PublishConfig, out: str, ctx: RunContext = DEFAULT_CONTEXT) -> dict:
    """Publish to ``out``, a local folder or an fsspec URL; returns the card's front matter.

    The labels and their build are checked against their manifests first. A non-empty ``out`` is refused unless
    ``ctx.overwrite`` and it holds a published set, of which only the files its SHA256SUMS lists are replaced. Local
    output is staged beside ``out`` (which is locked meanwhile) and moved into place; remote output is staged in
    ``config.staging`` (default: the system's temporary folder) and uploaded; SHA256SUMS comes last either way.
    Pixels of a source with restrictive or unknown terms are published with a one-line warning, through
    ``ctx.warn`` (default: ``warnings.warn``).
    """
    if out.split("://")[0] in ("hf", "huggingface") and "://" in out:
        raise PublishError(
            f"--out {out}: the Hub is not a folder; publish with --push-to-hub ORG/NAME (and --out a "
            "local folder to keep a copy)"
        )
    labels, reader = open_labels(Path(config.labels))  # refuse a bad input before touching the output
    fs, root = filesystem(out, "--out")
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    spec = source_spec(reader.manifest["config"]["source"])
    has_pixels = not config.recipe_only and (config.render or not reader.manifest["config"]["recipe_only"])
    notice = licence_warning(config, spec, has_pixels)
    if notice:
        (ctx.warn or (lambda line: warnings.warn(line, LicenceWarning, stacklevel=3)))(notice)
    lock = nullcontext()
    if local:
        target = Path(root)
        check_apart(target, {"--labels": config.labels, "the labels' build": reader.root})
        with writing(target.parent):
            target.parent.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(target.parent / f".{target.name}.saqt.lock", out)
    with lock:
        previous = _previous_set(fs, root, out, ctx.overwrite)
        if local:  # an interrupted publish to this --out left it, or a folder of someone else's is refused
            staging = fresh_folder(target.parent / f".{target.name}.publishing", STAGING_SENTINEL)
        else:
            staging = Path(tempfile.mkdtemp(prefix="saqt-publish-", dir=config.staging))
        try:
            meta = write_dataset(config, labels, reader, staging, ctx.command, ctx.progress)
            _install(staging, fs, root, previous, local)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return meta


def _previous_set(fs: fsspec.AbstractFileSystem, root: str, out: str, overwrite: bool) -> list[str]:
    """The files of the published set already at ``root`` that a publish replaces, SHA256SUMS first; PublishError
    if ``root`` holds anything but such a set (and, under data/, anything its SHA256SUMS does not list)."""
    present = sorted(p[len(root) + 1 :] for p in fs.find(root)) if fs.exists(root) else []
    if not present:
        return []
    if not overwrite:
        raise PublishError(f"{out} is not empty: use --overwrite to replace the set there or choose another --out")
    if SUMS not in present:
        raise PublishError(
            f"{out} holds files `saqt publish` did not write ({', '.join(present[:3])}"
            f"{', ...' if len(present) > 3 else ''}); --overwrite replaces only a published set: "
            "choose another --out"
        )
    try:
        listed = read_sums(fs.cat_file(f"{root}/{SUMS}").decode())
    except UnicodeDecodeError:
        raise PublishError(f"{out}/{SUMS} is not a text file; choose another --out") from None
    card = fs.cat_file(f"{root}/{CARD}").decode(errors="replace") if CARD in present else None
    if card is not None and not is_saqt_card(card):  # a SHA256SUMS of someone's own files vouches for nothing
        raise PublishError(
            f"{out}/{CARD} is not a card `saqt publish` wrote; --overwrite replaces only a published set"
        )
    strays = [p for p in present if p.startswith("data/") and p not in listed]
    if strays:
        raise PublishError(
            f"{out}/data holds files its {SUMS} does not list ({', '.join(strays[:3])}); move them "
            "away or choose another --out"
        )
    return [SUMS, *sorted(p for p in listed if p in present and published_file(p) and p != SUMS)]


def _install(staging: Path, fs: fsspec.AbstractFileSystem, root: str, previous: list[str], local: bool) -> None:
    """Remove the previous set's files (SHA256SUMS first), then move or upload the staged ones: data, the card,
    SHA256SUMS last, so an interrupted publish never looks complete."""
    for rel in previous:
        fs.rm_file(f"{root}/{rel}")
    order = sorted(p.relative_to(staging).as_posix() for p in (staging / "data").iterdir()) + [CARD, SUMS]
    if local:  # data/ a real folder, and nothing but earlier files of ours replaced
        with writing(Path(root)):
            Path(root).mkdir(parents=True, exist_ok=True)
        make_folders(Path(root) / "data", Path(root))
        for rel in order:
            replace(staging / rel, Path(root) / rel)
        return
    with writing(Path(root)):
        fs.makedirs(f"{root}/data", exist_ok=True)
        for rel in order:
            fs.put_file(str(staging / rel), f"{root}/{rel}")

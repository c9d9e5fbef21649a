"""``saqt label``: give each distorted image of a build the score its nearest labelled references have for
the same distortion, and join images (or recipes), scores and provenance into the SAQT-IQA training set.

Embeddings and neighbours are computed once per pristine image; then each build shard becomes one
``labels/`` and one ``saqt-iqa/`` shard (a unit of work for the executor), written atomically and listed in
``label.json``, so a rerun resumes. The saqt-iqa shards hold recipes and labels, not pixels: their row groups
mirror the build's distorted shards row for row, and the images stay in the build (``saqt publish`` writes the
one self-contained copy).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from saqt.build.build_reader import BuildReader
from saqt.core.config_options import recorded
from saqt.core.context import DEFAULT_CONTEXT, RunContext, pick_device
from saqt.core.progress import Progress
from saqt.core.shards import LABEL_MANIFEST, LABEL_SCHEMA, SAQT_IQA_SCHEMA, ShardWriter, aborting
from saqt.core.stage_contract import Stage, StageError, StageWriter, new_manifest
from saqt.label.bank_fit import bank_fit
from saqt.label.embed import cached_embeddings, embed_images
from saqt.label.encoders import load_encoder
from saqt.label.faiss_index import build_index, search
from saqt.label.given_matches import read_matches
from saqt.label.reference_bank import Bank, BankError, check_scorable, load_bank, normalise_scores
from saqt.label.row_index import check_index_place, replace_row_index
from saqt.label.sets import SaqtFiles, build_ranges, row_index_entries
from saqt.label.stage_configs import LabelConfig
from saqt.label.transfer import SELF_MATCH, Rule, cell_means, neighbour_weights, transfer

MANIFEST = LABEL_MANIFEST


def read_exclusions(path: Path) -> tuple[str, ...]:
    """Reference ids, one per line (``#`` comments allowed), from an exclusion file."""
    if not path.is_file():
        raise BankError(f"--exclude-refs file {path} does not exist")
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return tuple(sorted({line for line in lines if line}))


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
    caches: tuple[str, ...] = ()  # the embedding caches written, relative to the output folder

    def fit(self, references: int) -> dict | None:
        """How these images use a bank of ``references`` (``saqt.label.bank_fit``), for the manifest; None without
        neighbours (the mean rule)."""
        fit = bank_fit(self.neighbours.values(), self.similarities.values(), references)
        return fit.record() if fit else None

    def only(self, pristine_ids: list[str]) -> PristineLabels:
        """These labels restricted to ``pristine_ids``."""

        def pick(values: dict) -> dict:
            return {p: values[p] for p in pristine_ids}

        return PristineLabels(
            pick(self.scores), pick(self.neighbours), pick(self.similarities), pick(self.weights), self.self_matches
        )


def transfer_labels(
    config: LabelConfig,
    reader: BuildReader,
    bank: Bank,
    scores: np.ndarray,
    out: Path,
    progress: bool = True,
    embed: Callable | None = None,
) -> tuple[PristineLabels, dict]:
    """Embed, match and transfer for every pristine image of the build; returns labels and encoder provenance.

    ``embed`` replaces :func:`~saqt.label.embed.embed_images` (e.g. encoders on a Ray cluster's GPUs); this process
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
        labels = PristineLabels(
            {p: means for p in ids}, {p: [] for p in ids}, {p: [] for p in ids}, {p: [] for p in ids}, 0
        )
        return labels, {"encoder": "none", "weights": "none"}
    if not bank.has_images:
        raise BankError(f"rule {rule.name} needs the bank's reference images, and {bank.root} lacks some")
    encoder = load_encoder(config.encoder, "cpu" if embed else config.device)
    kw = {
        "batch_size": config.batch_size,
        "loader_workers": config.loader_workers,
        "progress": progress,
        "embed": embed or embed_images,
    }
    slug = _slug(f"{encoder.id}|{encoder.weights}")
    caches = (f"embeddings/bank-{slug}.parquet", f"embeddings/pristine-{slug}.parquet")
    refs = cached_embeddings(
        encoder,
        {r: str(p) for r, p in zip(bank.ref_ids, bank.images, strict=True)},
        out / caches[0],
        desc="embed bank",
        **kw,
    )
    images = cached_embeddings(encoder, pristine, out / caches[1], desc="embed pristine", **kw)
    index = build_index(np.stack([refs[r] for r in bank.ref_ids]), kind=config.index)
    sims, nn = search(index, np.stack([images[p] for p in ids]), rule.neighbours)
    labels = _labels(ids, sims, nn, rule, bank, scores, caches)
    return labels, {"encoder": encoder.id, "weights": encoder.weights}


def _labels(
    ids: list[str],
    sims: np.ndarray,
    nn: np.ndarray,
    rule: Rule,
    bank: Bank,
    scores: np.ndarray,
    caches: tuple[str, ...] = (),
) -> PristineLabels:
    """Each pristine image's transferred scores from its neighbours ``nn`` (bank indices) and similarities;
    ``caches`` names the embedding caches written for them."""
    weights = neighbour_weights(sims, rule)
    cells = transfer(nn, weights, scores)
    return PristineLabels(
        scores=dict(zip(ids, cells, strict=True)),
        neighbours={p: [bank.ref_ids[j] for j in nn[i]] for i, p in enumerate(ids)},
        similarities={p: sims[i].tolist() for i, p in enumerate(ids)},
        weights={p: weights[i].tolist() for i, p in enumerate(ids)},
        self_matches=int((sims[:, 0] >= SELF_MATCH).sum()),
        caches=caches,
    )


def _label_unit(source: Path, unit: str, labels: PristineLabels, constants: dict, out: Path) -> dict:
    """Write the labels and joined SAQT-IQA shards of one build unit, whose distorted shard is ``source``."""
    name = f"part-{int(unit):05d}.parquet"
    labels_writer = ShardWriter(out / "labels" / name, LABEL_SCHEMA, root=out)
    with aborting(labels_writer):  # the second cannot be created (a link in the way): the first's file goes too
        writers = {"labels": labels_writer, "saqt-iqa": ShardWriter(out / "saqt-iqa" / name, SAQT_IQA_SCHEMA, root=out)}
    built = pq.ParquetFile(source)
    recipe = [f.name for f in SAQT_IQA_SCHEMA if f.name in built.schema_arrow.names]
    with aborting(*writers.values()):
        for group in range(built.num_row_groups):  # row group for row group, so rows line up with the build's
            rows = built.read_row_group(group, columns=recipe).to_pylist()
            provenance = []
            for r in rows:
                p, score = r["pristine_id"], labels.scores[r["pristine_id"]][r["dist_type"] - 1, r["level"] - 1]
                provenance.append(
                    {
                        **constants,
                        "score": None if np.isnan(score) else float(score),
                        "neighbours": labels.neighbours[p],
                        "similarities": labels.similarities[p],
                        "weights": labels.weights[p],
                    }
                )
            keys = ("image_id", "pristine_id", "dist_type", "level")
            writers["labels"].write([{**{k: r[k] for k in keys}, **v} for r, v in zip(rows, provenance, strict=True)])
            writers["saqt-iqa"].write([{**r, **v} for r, v in zip(rows, provenance, strict=True)])
        return {table: w.commit(out) for table, w in writers.items()}


def rendered_cells(reader: BuildReader) -> list[tuple[int, int]]:
    """The (type, level) cells the build rendered, read from its distorted shards' recipe columns."""
    cells: set[tuple[int, int]] = set()
    for path in reader.shard_paths("distorted"):
        table = pq.read_table(path, columns=["dist_type", "level"])
        cells.update(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
    return sorted(cells)


def refuse_unscored(reader: BuildReader, labels: PristineLabels, cells: list[tuple[int, int]]) -> None:
    """BankError if any distorted image of the build would be labelled with no score (its neighbours have none
    for its type and level), naming how many and the first."""
    types, levels = np.array([t - 1 for t, _ in cells]), np.array([lv - 1 for _, lv in cells])
    if not any(np.isnan(s[types, levels]).any() for s in labels.scores.values()):
        return  # every rendered cell of every image is scored
    missing, first = 0, None
    for path in reader.shard_paths("distorted"):
        table = pq.read_table(path, columns=["image_id", "pristine_id", "dist_type", "level"]).to_pydict()
        for image, p, t, lv in zip(*table.values(), strict=True):
            if np.isnan(labels.scores[p][t - 1, lv - 1]):
                missing += 1
                first = first or (image, t, lv, labels.neighbours[p])
    if missing:
        image, t, lv, refs = first
        raise BankError(
            f"{missing} distorted images would get no score, e.g. {image} (type {t} level {lv}): its "
            f"nearest references {refs} have none for it; use a bank that scores every cell the build "
            "renders, or --rule topk with a larger --neighbours"
        )


@dataclass(frozen=True)
class _LabelTask:
    """``_label_unit`` bound to the run's constants; picklable for worker processes. Each item is one unit with its
    distorted shard and the labels of its own pristine images only, so what travels to a worker per unit does not
    grow with the build. Returns (unit, its shard entries)."""

    constants: dict
    out: Path

    def __call__(self, item: tuple[str, str, PristineLabels]) -> tuple[str, dict]:
        unit, source, labels = item
        return unit, _label_unit(Path(source), unit, labels, self.constants, self.out)

    def describe(self, item: tuple[str, str, PristineLabels]) -> str:
        return f"shard part-{int(item[0]):05d}"


def unit_items(reader: BuildReader, units: list[str], labels: PristineLabels) -> list[tuple[str, str, PristineLabels]]:
    """(unit, its distorted shard, the labels of its pristine images) for each of ``units``."""
    unit_of = {str(reader.stage.path(u, "pristine")): u for u in units}
    members: dict[str, list[str]] = {u: [] for u in units}
    for pristine_id, (shard, _, _) in reader.pristine_locators().items():
        if shard in unit_of:
            members[unit_of[shard]].append(pristine_id)
    return [(u, str(reader.stage.path(u, "distorted")), labels.only(members[u])) for u in units]


def run_label(config: LabelConfig, out: Path, ctx: RunContext = DEFAULT_CONTEXT) -> dict:
    """Label (or resume labelling) a build into ``out``; returns the final manifest.

    The build is checked against its manifest's checksums and the bank's scores are checked before any work; a
    build, bank and rule that would leave any image without a score are refused before any shard is written.
    The shards are written by ``ctx.executor``, whose ``gpu_embedder`` may also embed the images on its GPUs.
    """
    pick_device(config.device)  # refuse a device this machine lacks before any work
    reader = BuildReader(Path(config.build))
    if not reader.manifest["counts"].get("pristine"):
        raise StageError(f"the build {config.build} holds no images: nothing to label")
    full = load_bank(Path(config.bank), config.bank_type)
    normalised = normalise_scores(full.scores, config.normalise)
    bank = full.without(set(config.exclude_refs))
    scores = normalised[[full.ref_ids.index(r) for r in bank.ref_ids]]
    cells = rendered_cells(reader)
    check_scorable(bank, cells, config.build)
    units = reader.stage.units()
    inputs = {
        "build": {"root": config.build, "digest": reader.stage.digest(), "complete": reader.manifest["complete"]},
        "bank": {**bank.describe(), "scores_sha256": _bank_digest(full)},
    }
    if config.matches:
        inputs["matches"] = {"source": config.matches, "sha256": read_matches(config.matches).sha256}
    fresh = new_manifest("label", recorded(config), inputs, len(units), ctx.command)
    with StageWriter(out, fresh, ctx.overwrite, {"--build": config.build, "--bank": config.bank}) as writer:
        check_index_place(out, row_index_entries(writer.manifest))  # before any work
        embed = None if config.matches else ctx.executor.gpu_embedder(config.encoder, config.device)
        labels, encoder = transfer_labels(config, reader, bank, scores, out, ctx.progress, embed)
        refuse_unscored(reader, labels, cells)
        writer.manifest.update(
            {
                "encoder": encoder,
                "rule": config.transfer_rule.describe(),
                "score_scale": config.normalise,
                "self_matches": labels.self_matches,
                "bank_fit": labels.fit(len(bank.ref_ids)),
                "aux": list(labels.caches),
            }
        )
        constants = {
            "score_scale": config.normalise,
            "bank": f"{bank.kind}:{Path(config.bank).name}",
            "bank_proxy": bank.proxy,
            "encoder": encoder["encoder"],
            "encoder_weights": encoder["weights"],
            "rule": config.rule,
            "k": config.transfer_rule.neighbours,
            "temperature": config.temperature if config.rule == "topk" else None,
        }
        pending = writer.pending(units)
        done = ctx.executor.map_unordered(_LabelTask(constants, out), unit_items(reader, pending, labels))
        for unit, shards in Progress(done, total=len(pending), desc="label", unit="shard", disable=not ctx.progress):
            writer.record(unit, {"files": shards})
        if len(writer.manifest["done"]) == len(units):
            writer.manifest["files"] = _row_index(writer, reader, out, relabelled=bool(pending))
        return writer.finish(reader.manifest["complete"])


def _row_index(writer: StageWriter, reader: BuildReader, out: Path, relabelled: bool) -> dict[str, dict]:
    """The row index of the finished labels (``saqt.label.row_index``) in ``out/index``, what pretraining reads instead of
    the shards: the earlier run's kept when no unit was relabelled and every file of it is intact, else written
    anew. Returns the manifest's file entries."""
    manifest, listed = writer.manifest, row_index_entries(writer.manifest)
    stage = Stage("label", out, manifest)
    if listed and not relabelled and not any(stage.problem(e) for e in listed.values()):
        return listed

    def record(entries: dict[str, dict]) -> None:
        manifest["files"] = entries
        writer.save()

    units = sorted(manifest["done"], key=int)
    files = SaqtFiles(
        [str(out / manifest["done"][u]["files"]["saqt-iqa"]["path"]) for u in units],
        None,
        reader,
        {"labels": str(out)},
        images=[str(reader.stage.path(u, "distorted")) for u in units],
        ranges=build_ranges(reader, units, checksums=False),  # the build was checked whole when it was opened
    )
    return replace_row_index(out, files, listed, record)


def _bank_digest(bank: Bank) -> str:
    digest = hashlib.sha256(np.nan_to_num(bank.scores, nan=-1e300).tobytes())
    digest.update("\n".join(bank.ref_ids).encode())
    return digest.hexdigest()

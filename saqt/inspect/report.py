"""``saqt report``: one self-contained HTML page showing what a stage folder holds. Every image and plot is inline
(a data: URI in the page; no folder next to it): thumbnails are small JPEGs, and the number of images shown is
bounded (``--images``, ``--pairs``, the ten most used references), not the set's size.

Sections: summary; matches (pristine images next to the bank references they were matched to, the similarity and
the labels they inherited); the pristine screen (settings, what was kept and refused and why, upscale factors and
JPEG qualities of the kept images); a type x level thumbnail grid for a few pristine images; score histograms per
type; score against level per type; the neighbour-similarity histogram; bank usage with thumbnails; transfer
fidelity (given its JSON); skipped inputs by reason. A build folder has no scores, so its report shows the screen,
the grid and errors only. A note says when the bank is too small or too far from the images (``saqt.label.bank_fit``) or
the rule predicts no better than the content-agnostic mean. A file at ``--out`` is replaced only with ``overwrite``
and only if it is a report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from saqt.build.distortions import catalogue
from saqt.core.errors import OutputError, SaqtError
from saqt.core.images import ImageDecodeError, decode_image
from saqt.core.safe_files import in_the_way, own_file, write_bytes_atomic, writing
from saqt.core.shards import BUILD_ERRORS
from saqt.core.stage_contract import StageError
from saqt.inspect.info import summarise
from saqt.label.bank_fit import bank_fit
from saqt.label.reference_bank import Bank, load_bank
from saqt.label.transfer import SELF_MATCH
from saqt.read.api import BuildReader, SaqtSet, open_set

CELL_COLUMNS = ["pristine_id", "dist_type", "level", "score"]
MATCH_COLUMNS = ["pristine_id", "neighbours", "similarities", "weights"]
THUMB_WIDTH = 208  # pixels encoded; shown at half size, full size on hover
MATCH_THUMB_WIDTH = 224  # pristine images and references in the matches and bank-usage sections, shown at 112 px
PRISTINE_COLUMNS = ["source_key", "orig_width", "orig_height", "jpeg_quality", "width", "height"]
HEAD = "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>SAQT-IQA report"  # how every report begins
KINDS = {"label": "labels (saqt label)", "build": "a build (saqt build)", "published": "a published set (saqt publish)"}
NAMED_BARS = 40  # the bank-usage plot names each reference of a bank this small, and ranks those of a larger one
LEVEL_COLOURS = colormaps["viridis"](np.linspace(0.05, 0.85, 5))


@dataclass
class StageData:
    """What a report shows, read from a build, label or published folder."""

    kind: str
    folder: Path
    cells: pa.Table  # one row per distorted image: pristine_id, dist_type, level, score
    matches: pa.Table | None  # one row per pristine image: its neighbours, similarities and weights
    bank_size: int | None
    errors: Counter = field(default_factory=Counter)
    error_examples: list[dict] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)  # shards holding the distorted images
    build: BuildReader | None = None
    bank: Bank | None = None  # for the references' thumbnails
    bank_note: str = ""  # why there are no reference thumbnails, where there are none
    screen: dict | None = None  # the build manifest's screen record
    _thumbs: dict = field(default_factory=dict)  # reference id -> its thumbnail's HTML


def _read(paths: list[str]) -> tuple[pa.Table, pa.Table]:
    """The cells (one row per image) and the matches (the first row of each pristine image), streamed batch by
    batch so that the neighbour lists of every image are never held at once."""
    cells, matches, seen = [], [], set()
    for batch in pads.dataset(paths).to_batches(columns=CELL_COLUMNS + MATCH_COLUMNS[1:]):
        cells.append(batch.select(CELL_COLUMNS))
        ids, first = np.unique(batch.column("pristine_id").to_numpy(zero_copy_only=False), return_index=True)
        new = [i for p, i in zip(ids, first, strict=True) if p not in seen]
        seen.update(ids)
        matches.append(batch.select(MATCH_COLUMNS).take(pa.array(sorted(new), pa.int64())))
    return pa.Table.from_batches(cells), pa.Table.from_batches(matches)


def _build_errors(reader: BuildReader) -> tuple[Counter, list[dict]]:
    errors = Counter(reader.manifest["counts"]["skipped_by_reason"])
    log = reader.root / BUILD_ERRORS
    examples = []
    for line in log.read_text(errors="replace").splitlines()[:10] if log.is_file() else []:
        try:
            examples.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a damaged log line: the counts come from the manifest anyway
    return errors, examples


def load_stage(folder: Path) -> StageData:
    """Read the columns a report needs (never the images) from ``folder``, through its manifest."""
    try:
        found = open_set(folder)
    except StageError as err:
        raise StageError(f"{err}: nothing to report") from None
    readers = {"label": _label_data, "build": _build_data, "published": _published_data}
    if found.kind not in readers:
        raise StageError(f"{folder} is a {found.kind}: a report shows a label, build or published folder")
    return readers[found.kind](folder, found)


def _label_data(folder: Path, found: SaqtSet) -> StageData:
    """A label folder's cells and matches, its build (if still there) and its bank."""
    label = found.stage  # `saqt verify` checks the checksums
    cells, matches = _read(found.shards("labels"))
    try:
        build = found.build
    except StageError:
        build = None  # the build is gone or changed: the report shows what the labels hold
    errors, examples = _build_errors(build) if build else (Counter(), [])
    shards = found.shards()
    bank, note = _open_bank(label.manifest["config"])
    return StageData(
        "label",
        folder,
        cells,
        matches,
        label.manifest["inputs"]["bank"]["references"],
        errors,
        examples,
        shards,
        build,
        bank,
        note,
        build.manifest.get("screen") if build else None,
    )


def _build_data(folder: Path, found: SaqtSet) -> StageData:
    """A build folder's cells (no scores) and its screen."""
    build = found.build
    shards = found.shards()
    table = pads.dataset(shards).to_table(columns=CELL_COLUMNS[:3])
    table = table.append_column("score", pa.nulls(len(table), pa.float64()))
    return StageData(
        "build",
        folder,
        table,
        None,
        None,
        *_build_errors(build),
        shards,
        build,
        screen=build.manifest.get("screen"),
    )


def _published_data(folder: Path, found: SaqtSet) -> StageData:
    """A published set's cells and matches, its provenance from the card."""
    prov = found.card()["saqt"]["provenance"]
    shards = found.shards()
    cells, matches = _read(shards)
    return StageData(
        "published",
        folder,
        cells,
        matches,
        prov["bank"]["references"],
        Counter(prov["selection"]["skipped_by_reason"]),
        [],
        shards,
        bank_note="a published set does not carry its bank's reference images",
        screen=prov.get("screen"),
    )


def _open_bank(config: dict) -> tuple[Bank | None, str]:
    """The labels' bank, for its reference images; or None and why it cannot show them."""
    try:
        bank = load_bank(Path(config["bank"]), config.get("bank_type"))
    except SaqtError:
        return None, f"the bank {Path(config['bank']).name} is no longer where the labels were made from it"
    if not any(p is not None and p.is_file() for p in bank.images):
        return bank, "the bank was given by its score table only: it has no reference images to show"
    return bank, ""


# ---------------------------------------------------------------- embedding helpers


def _subplots(figsize: tuple[float, float], rows: int = 1, cols: int = 1, **kwargs) -> tuple[Figure, np.ndarray]:
    """A figure and its axes, made with matplotlib's object API (no pyplot state, no backend to switch)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, **kwargs)


def _png_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb_uri(pixels: np.ndarray, width: int = THUMB_WIDTH) -> str:
    img = Image.fromarray(pixels)
    width = min(width, img.width)  # never enlarged: a small image stays small in the page
    img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(uri: str, alt: str, cls: str = "") -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}" class="{cls}">'


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ---------------------------------------------------------------- sections


def _grid(data: StageData, images: int) -> str:
    """Each type x level for the first ``images`` pristine images (sorted by id), two side by side, with scores."""
    ids = sorted(set(data.cells.column("pristine_id").to_pylist()))[:images]
    if not ids:
        return "<p>No images.</p>"
    columns = ["image_id", "pristine_id", "dist_type", "level", "seed"] + (["score"] if data.kind != "build" else [])
    keep = pc.field("pristine_id").isin(ids)
    if data.kind == "label":  # the labels' pixels stay in their build
        shards = [str(p) for p in data.build.shard_paths("distorted")] if data.build is not None else []
        images = pads.dataset(shards).to_table(columns=["image_id", "image"], filter=keep).to_pydict() if shards else {}
        by_id = dict(zip(images.get("image_id", []), images.get("image", []), strict=True))
        rows = [
            {**r, "image": by_id.get(r["image_id"])}
            for r in pads.dataset(data.shards).to_table(columns=columns, filter=keep).to_pylist()
        ]
    else:
        rows = pads.dataset(data.shards).to_table(columns=[*columns, "image"], filter=keep).to_pylist()
    by_cell = {(r["pristine_id"], r["dist_type"], r["level"]): r for r in rows}
    keys = _source_keys(data, ids)
    names = {s.id: s.name for s in catalogue()}
    types = sorted(set(data.cells.column("dist_type").to_pylist()))  # the build's selection, not all 25 x 5
    levels = sorted(set(data.cells.column("level").to_pylist()))
    tables = []
    for pair in (ids[i : i + 2] for i in range(0, len(ids), 2)):
        head = "<th></th>" + "".join(
            f'<th colspan="{len(levels)}" class="pid">{_pristine_header(data, pid, keys.get(pid))}</th>' for pid in pair
        )
        level_row = "<th>type</th>" + "".join(f"<th>level {lv}</th>" for _ in pair for lv in levels)
        body = []
        for t in types:
            cells = [f'<td class="tname"><span class="tid">{t}</span> {names[t]}</td>']
            for pid in pair:
                cells += [
                    f'<td class="{"gap" if lv == levels[0] else ""}">{_cell(data, by_cell.get((pid, t, lv)))}</td>'
                    for lv in levels
                ]
            body.append("<tr>" + "".join(cells) + "</tr>")
        tables.append(
            f'<table class="grid"><thead><tr>{head}</tr><tr>{level_row}</tr></thead><tbody>{"".join(body)}'
            "</tbody></table>"
        )
    return "<p class='lead'>Hover a thumbnail to enlarge it.</p>" + "".join(tables)


def _pristine_header(data: StageData, pid: str, key: str | None) -> str:
    """The pristine image above its column of the grid, named by its source file (its id on hover)."""
    thumb = ""
    if data.build is not None:
        thumb = _img(_thumb_uri(data.build.pristine(pid).u8, 2 * THUMB_WIDTH), f"pristine {pid}", "pristine")
    return f'{thumb}<code title="pristine id {html.escape(pid)}">{_name(key or pid)}</code>'


def _source_keys(data: StageData, ids: list[str] | set[str]) -> dict[str, str]:
    """Pristine id -> its source file (``source_key``), for the pristine images ``ids``."""
    keep = pc.field("pristine_id").isin(list(ids))
    table = pads.dataset(data.shards).to_table(columns=["pristine_id", "source_key"], filter=keep)
    return dict(zip(table.column("pristine_id").to_pylist(), table.column("source_key").to_pylist(), strict=True))


def _name(text: str) -> str:
    """``text`` (a file or reference name) escaped, with a line break allowed after each ``/ _ -`` and before each
    ``.``, never inside a word."""
    return re.sub(r"([/_-])", r"\1<wbr>", html.escape(text)).replace(".", "<wbr>.")


def _cell(data: StageData, row: dict | None) -> str:
    if row is None:
        return '<span class="na">not rendered</span>'
    pixels = _pixels(data, row)
    thumb = (
        _img(_thumb_uri(pixels), f"type {row['dist_type']} level {row['level']}", "thumb")
        if pixels is not None
        else '<span class="na">recipe only</span>'
    )
    score = row.get("score")
    return thumb + (f'<div class="cap">{score:.2f}</div>' if score is not None else "")


def _pixels(data: StageData, row: dict) -> np.ndarray | None:
    png = row["image"]
    if isinstance(png, dict):  # a published row: the Hub's Image struct
        png = png.get("bytes")
    if png is not None:
        return decode_image(png)
    return data.build.image(row) if data.build is not None else None


def _per_type_figure(count: int):
    """A grid of small panels, five per row, one per distortion type present."""
    rows, cols = -(-count // 5), min(count, 5)
    fig, axes = _subplots((2.6 * cols, 2.1 * rows + 0.5), rows, cols, sharex=True, sharey=True, squeeze=False)
    axes = axes.ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes


def _label_axes(axes, x: str, y: str) -> None:
    for ax in axes[-5:]:
        ax.set_xlabel(x, fontsize=8)
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[::5]:
        ax.set_ylabel(y, fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=y == "images"))


def _legend_above(ax) -> None:
    """The axes' legend in one row above them, never over what they plot."""
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(labels), fontsize=8, frameon=False)


def _score_histograms(scores: np.ndarray, types: np.ndarray, levels: np.ndarray) -> str:
    lo, hi = np.nanmin(scores), np.nanmax(scores)
    bins = np.linspace(lo, hi, 21) if hi > lo else np.linspace(lo - 0.5, hi + 0.5, 21)
    present, built = np.unique(types), np.unique(levels)  # the legend names only the levels that were built
    fig, axes = _per_type_figure(len(present))
    for t, ax in zip(present, axes, strict=False):
        stacks = [scores[(types == t) & (levels == lv)] for lv in built]
        ax.hist(
            [s[np.isfinite(s)] for s in stacks],
            bins=bins,
            stacked=True,
            color=LEVEL_COLOURS[::-1][built - 1],
            label=[f"level {lv}" for lv in built],
        )
        ax.set_title(f"{t} {catalogue()[t - 1].name}", fontsize=8)
        ax.tick_params(labelsize=7)
    _label_axes(axes, "score", "images")
    fig.tight_layout()
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncol=len(built),
        fontsize=9,
        frameon=False,
    )
    return _img(_png_uri(fig), "score histograms per type")


def _score_vs_level(scores: np.ndarray, types: np.ndarray, levels: np.ndarray, pristine: np.ndarray) -> str:
    present = np.unique(types)
    fig, axes = _per_type_figure(len(present))
    for t, ax in zip(present, axes, strict=False):
        sel = types == t
        for pid in np.unique(pristine[sel])[:200]:
            mine = sel & (pristine == pid)
            order = np.argsort(levels[mine])
            ax.plot(levels[mine][order], scores[mine][order], color="0.75", lw=0.7)
        shown = np.unique(levels[sel])
        ax.plot(
            shown, [np.nanmean(scores[sel & (levels == lv)]) for lv in shown], color="black", lw=1.8, marker="o", ms=3
        )
        ax.set_title(f"{t} {catalogue()[t - 1].name}", fontsize=8)
        ax.set_xticks(np.unique(levels))
        ax.tick_params(labelsize=7)
    _label_axes(axes, "level", "score")
    fig.tight_layout()
    return _img(_png_uri(fig), "score against level per type")


def _similarities(matches: pa.Table) -> str:
    sims = matches.column("similarities").to_pylist()
    top1 = np.array([s[0] for s in sims if s])
    rest = np.array([x for s in sims for x in s[1:]])
    fig, ax = _subplots((8, 3.4))
    bins = np.linspace(min(top1.min(), rest.min() if len(rest) else 1), 1.0, 41)
    ax.hist(top1, bins=bins, color="#1f77b4", alpha=0.85, label="nearest reference")
    if len(rest):
        ax.hist(rest, bins=bins, color="#ff7f0e", alpha=0.5, label="2nd..k-th references")
    ax.axvline(SELF_MATCH, color="crimson", ls="--", lw=1, label=f"self-match threshold {SELF_MATCH}")
    ax.set_xlabel("cosine similarity to the pristine image")
    ax.set_ylabel("neighbours")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _legend_above(ax)
    fig.tight_layout()
    stats = (
        f"Nearest-reference similarity: median {np.median(top1):.3f}, 5th percentile {np.percentile(top1, 5):.3f}, "
        f"minimum {top1.min():.3f}; {int((top1 >= SELF_MATCH).sum())} pristine images are (nearly) references."
    )
    return f"<p>{stats}</p>" + _img(_png_uri(fig), "neighbour similarity histogram")


def _fit_warning(data: StageData) -> str:
    """The sentence of ``saqt.label.bank_fit`` when the bank is too small or too far from the images, else nothing."""
    neighbours = data.matches.column("neighbours").to_pylist()
    fit = bank_fit(neighbours, data.matches.column("similarities").to_pylist(), data.bank_size or 0)
    warning = fit.warning() if fit else None
    return f"<p class='warn'><b>Note:</b> {html.escape(warning)}.</p>" if warning else ""


def _usage_figure(counts: np.ndarray, names: list[str] | None, unused: int, log: bool) -> str:
    """Bars of how many images each reference labelled, most used first: one named row per reference (``names``),
    or by rank for a large bank; a ``log`` count axis."""
    label = "pristine images labelled (as nearest reference)"
    if names is not None:
        fig, ax = _subplots((8, 0.9 + 0.25 * len(names)))
        ax.barh(np.arange(len(names)), counts, height=0.7, color="#1f77b4")
        ax.set_yticks(np.arange(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"bank references, most used first ({unused} never nearest: no bar)", fontsize=9, loc="left")
        ax.set_xlabel(label)
        axis = ax.xaxis
    else:
        fig, ax = _subplots((8, 3.4))
        ax.bar(np.arange(1, len(counts) + 1), counts, width=1.0 if len(counts) > 50 else 0.8, color="#1f77b4")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"bank references by rank, most used first ({unused} never nearest); the tables name them")
        ax.set_ylabel(label.replace(" (", "\n("))
        axis = ax.yaxis
    axis.set_major_locator(MaxNLocator(integer=True))
    if log:
        (ax.set_xscale if names is not None else ax.set_yscale)("log")
    fig.tight_layout()
    return _img(_png_uri(fig), "bank usage")


def _bank_usage(data: StageData) -> str:
    matches, bank_size = data.matches, data.bank_size
    neighbours = matches.column("neighbours").to_pylist()
    weights = matches.column("weights").to_pylist()
    top1 = Counter(n[0] for n in neighbours if n)
    weighted: Counter = Counter()
    for ns, ws in zip(neighbours, weights, strict=True):
        for n, w in zip(ns, ws, strict=True):
            weighted[n] += w
    used, total = len(top1), max(bank_size or 0, len(top1))
    ranked = sorted(top1.items(), key=lambda kv: (-kv[1], kv[0]))  # most used first, ties by name
    counts = np.array([n for _, n in ranked] + [0] * (total - used))
    names = None
    if total <= NAMED_BARS:  # few enough bars to name each reference beside its bar
        unnamed = [r for r in (data.bank.ref_ids if data.bank else []) if r not in top1]
        names = [r for r, _ in ranked] + unnamed + [""] * (total - used - len(unnamed))
    figure = _usage_figure(counts, names, total - used, counts.max() > 20 * max(1, np.median(counts[:used])))
    stats = (
        f"{used} of {total} references are the nearest for at least one of {counts.sum():,} pristine images. "
        f"The most used is nearest for {counts[0]:,} ({counts[0] / counts.sum():.0%}); among references in use, "
        f"the median is {np.median(counts[:used]):g}. For comparison, in the authors' release one reference "
        "labelled 3,251 images and another 16."
    )

    def row(ref: str) -> list[str]:
        return [_ref_thumb(data, ref), f"<code>{_name(ref)}</code>", f"{top1[ref]:,}", f"{weighted[ref]:.1f}"]

    header = ["", "reference", "nearest for (pristine images)", "total weight"]
    tables = "<h3>Most used references</h3>" + _table(header, [row(r) for r, _ in ranked[:10]], "compact reftable")
    if len(ranked) > 10:
        tables += "<h3>Least used references (of those in use)</h3>" + _table(
            header, [row(r) for r, _ in ranked[-min(5, len(ranked) - 10) :]], "compact reftable"
        )
    return f"<p>{stats}</p>" + figure + _bank_note(data) + tables


# ---------------------------------------------------------------- matches: pristine images and their references


def _ref_thumb(data: StageData, ref: str) -> str:
    """The thumbnail of bank reference ``ref`` (made once), or a box saying why there is none."""
    if ref not in data._thumbs:
        why = "no reference image: " + (data.bank_note or "not in the bank")
        if not data.bank_note and ref in data.bank.ref_ids:
            path = data.bank.images[data.bank.ref_ids.index(ref)]
            try:
                if path is not None and path.is_file():
                    why = ""
                    data._thumbs[ref] = _img(
                        _thumb_uri(decode_image(path), MATCH_THUMB_WIDTH), f"reference {ref}", "ref"
                    )
                else:
                    why = "no reference image: the bank lacks this reference's file"
            except ImageDecodeError as err:
                why = f"reference image unreadable: {err}"
        if why:
            data._thumbs[ref] = f'<div class="noimg" title="{html.escape(why)}">no image</div>'
    return data._thumbs[ref]


def _bank_note(data: StageData) -> str:
    return f"<p class='na'>No reference thumbnails: {html.escape(data.bank_note)}.</p>" if data.bank_note else ""


def _colour(value: float, lo: float, hi: float) -> str:
    if not np.isfinite(value):
        return "#d9dce2"
    r, g, b, _ = colormaps["viridis"]((value - lo) / (hi - lo) if hi > lo else 0.5)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def _inherited(scores: dict, types: list[int], levels: list[int], lo: float, hi: float) -> str:
    """The labels one pristine image inherited: a small type x level table coloured by score (exact on hover), and
    the mean per level."""
    names = {s.id: s.name for s in catalogue()}
    head = "<th></th>" + "".join(f"<th>{t}</th>" for t in types)
    rows = []
    for lv in levels:
        cells = "".join(
            f'<td style="background:{_colour(scores.get((t, lv), np.nan), lo, hi)}" title="type {t} '
            f'{names[t]}, level {lv}: {scores.get((t, lv), np.nan):.2f}"></td>'
            for t in types
        )
        rows.append(f"<tr><th>L{lv}</th>{cells}</tr>")
    means = " · ".join(f"L{lv} {np.nanmean([scores.get((t, lv), np.nan) for t in types]):.2f}" for lv in levels)
    return (
        f'<table class="heat"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        f'<div class="cap">mean by level: {means}</div>'
    )


def _pristine_thumb(data: StageData, pid: str) -> str:
    if data.build is None:
        return '<div class="noimg" title="the build is not at hand">no image</div>'
    return _img(_thumb_uri(data.build.pristine(pid).u8, MATCH_THUMB_WIDTH), f"pristine {pid}", "ref")


def _matches(data: StageData, pairs: int) -> str:
    """Up to ``pairs`` pristine images, evenly spread from the closest match to the farthest, each next to the
    reference(s) it was matched to, with similarity, weight and the labels it inherited."""
    rows = sorted((r for r in data.matches.to_pylist() if r["neighbours"]), key=lambda r: -r["similarities"][0])
    picks = [rows[i] for i in sorted({round(x) for x in np.linspace(0, len(rows) - 1, min(pairs, len(rows)))})]
    wanted = {r["pristine_id"] for r in picks}
    cells = data.cells.filter(pc.field("pristine_id").isin(list(wanted))).to_pylist()
    scores: dict[str, dict] = {p: {} for p in wanted}
    for c in cells:
        scores[c["pristine_id"]][(c["dist_type"], c["level"])] = np.nan if c["score"] is None else c["score"]
    all_scores = data.cells.column("score").to_numpy(zero_copy_only=False).astype(float)
    lo, hi = float(np.nanmin(all_scores)), float(np.nanmax(all_scores))
    types = sorted(set(data.cells.column("dist_type").to_pylist()))
    levels = sorted(set(data.cells.column("level").to_pylist()))
    keys = _source_keys(data, wanted)
    body = []
    for r in picks:
        pid = r["pristine_id"]
        refs = "".join(
            f'<div class="match">{_ref_thumb(data, ref)}<div class="cap"><code>{_name(ref)}</code><br>'
            f"similarity {sim:.3f}{' (self-match)' if sim >= SELF_MATCH else ''}"
            f"{f'<br>weight {w:.2f}' if len(r['neighbours']) > 1 else ''}</div></div>"
            for ref, sim, w in zip(r["neighbours"], r["similarities"], r["weights"], strict=True)
        )
        name = f'<code title="pristine id {html.escape(pid)}">{_name(keys.get(pid, pid))}</code>'
        body.append(
            [
                f'<div class="match">{_pristine_thumb(data, pid)}<div class="cap">{name}</div></div>',
                f'<div class="refs">{refs}</div>',
                _inherited(scores[pid], types, levels, lo, hi),
            ]
        )
    legend = (
        f"<p>{len(picks)} of {len(rows):,} pristine images, from the closest match to the farthest. Colours: "
        f'score from {lo:.2f} <span class="scale"></span> {hi:.2f}; hover a cell for its score.</p>'
    )
    header = ["pristine image", "matched to (bank references)", "labels inherited (type x level)"]
    return legend + _bank_note(data) + _table(header, body, "matches")


# ---------------------------------------------------------------- the pristine screen


def _reason_examples(data: StageData, limit: int = 20_000) -> dict[str, str]:
    """One logged example (input and full reason) per skip reason, from the first ``limit`` lines of the log."""
    log = data.build.root / BUILD_ERRORS if data.build is not None else None
    examples: dict[str, str] = {}
    if log is None or not log.is_file():
        return examples
    with log.open(errors="replace") as lines:
        for _, line in zip(range(limit), lines, strict=False):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            reason = next((r for r in data.errors if str(entry.get("reason", "")).startswith(r)), None)
            if reason and reason not in examples:
                examples[reason] = f"{entry.get('key', '')}: {entry.get('reason', '')}"
            if len(examples) == len(data.errors):
                break
    return examples


def _screen(data: StageData) -> str:
    sc = data.screen
    if not sc:
        return "<p class='na'>No screen record: the build is not at hand.</p>"
    if not sc.get("applied", True):
        intro = "<p>The screen was <b>off</b>: every decodable image was kept.</p>"
    else:
        looser = sc.get("looser_than_default", {})
        setting = lambda k, text: text + (f" <b>(looser than the default {looser[k][1]})</b>" if k in looser else "")  # noqa: E731
        rows = [
            ["enlarging to cover the size", setting("max_upscale", f"at most {sc.get('max_upscale', '?')}x")],
            ["JPEG quality", setting("min_jpeg_quality", f"at least {sc.get('min_jpeg_quality', '?')} (0: any)")],
            ["shorter side", setting("min_side", f"at least {sc.get('min_side', '?')} px")],
            ["greyscale", "kept" if sc.get("allow_grey") else "refused"],
        ]
        intro = _table(["screen", "setting"], rows, "compact") + f"<p>{screen_counts(sc)}</p>"
    examples = _reason_examples(data)
    refused = [[html.escape(r), f"{n:,}", html.escape(examples.get(r, ""))] for r, n in data.errors.most_common()]
    refusals = _table(["reason", "inputs", "example"], refused, "compact") if refused else "<p>Nothing was refused.</p>"
    return intro + "<h3>Refused, and why</h3>" + refusals + (_kept(data, sc) if data.build is not None else "")


def screen_counts(sc: dict) -> str:
    """How many candidates the screen read and refused, duplicates among them (named only if any)."""
    if "screened" not in sc:
        return ""
    dups = sc.get("duplicates", 0)
    which = f" ({dups:,} of them {'a duplicate' if dups == 1 else 'duplicates'} of an image kept)" if dups else ""
    return f"{sc['screened']:,} candidates screened, {sc.get('refused', 0):,} refused{which}."


def _kept(data: StageData, sc: dict) -> str:
    """What the kept pristine images needed: their upscale factors and JPEG qualities."""
    rows = list(data.build.rows("pristine", PRISTINE_COLUMNS))
    if not rows:
        return ""
    factor = np.array([max(r["width"] / r["orig_width"], r["height"] / r["orig_height"]) for r in rows])
    quality = np.array([r["jpeg_quality"] for r in rows if r["jpeg_quality"] is not None], dtype=float)
    most = int(np.argmax(factor))
    enlarged = int((factor > 1).sum())
    largest = (
        f", at most {factor[most]:.2f}x (<code>{html.escape(rows[most]['source_key'])}</code>)" if enlarged else ""
    )
    jpegs = (
        f" (estimated quality {quality.min():.0f} to {quality.max():.0f}, median {np.median(quality):.0f})"
        if len(quality)
        else ""
    )
    text = (
        f"Of the {len(rows):,} images kept: enlarged {enlarged:,}{largest}; reduced or kept at size "
        f"{len(rows) - enlarged:,}. JPEGs {len(quality):,}{jpegs}; other formats {len(rows) - len(quality):,}."
    )
    fig, (left, right) = _subplots((9, 2.6), 1, 2)
    left.hist(factor, bins=min(30, max(5, len(factor))), color="#1f77b4")
    left.axvline(
        sc.get("max_upscale", 1.0), color="crimson", ls="--", lw=1, label=f"--max-upscale {sc.get('max_upscale', 1.0)}"
    )
    left.set_xlabel("upscale factor (size / original; above 1: enlarged)")
    right.hist(quality, bins=np.arange(0, 102, 2), color="#ff7f0e")
    right.axvline(
        sc.get("min_jpeg_quality", 0),
        color="crimson",
        ls="--",
        lw=1,
        label=f"--min-jpeg-quality {sc.get('min_jpeg_quality', 0)}",
    )
    right.set_xlabel("estimated JPEG quality (JPEGs only)")
    for ax in (left, right):
        ax.set_ylabel("images kept", fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        _legend_above(ax)
    fig.tight_layout()
    return f"<h3>Kept</h3><p>{text}</p>" + _img(_png_uri(fig), "upscale factors and JPEG qualities of the kept images")


def _fidelity(path: Path | None) -> str:
    if path is None:
        return (
            "<p class='na'>No fidelity figures given: run <code>saqt fidelity --json F</code> and pass "
            "<code>--fidelity F</code>.</p>"
        )
    report = json.loads(path.read_text())
    if "matches" in report:
        return _matches_fidelity(report["matches"])
    predictors = report["predictors"]
    fmt = lambda v: "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"  # noqa: E731
    rows = [[html.escape(name), fmt(row["srocc"]), fmt(row["plcc"])] for name, row in predictors.items()]
    intro = (
        f"Leave-one-reference-out on {report['references']} references of <code>{html.escape(str(report['bank']))}"
        f"</code>, encoder <code>{html.escape(str(report['encoder']))}</code>: each reference's scores predicted "
        "from the others. <code>mean</code> ignores content, <code>random</code> copies a random other reference, "
        "<code>oracle</code> picks the best other reference by looking at the answer (a ceiling)."
    )
    shown = [n for n, row in predictors.items() if row.get("per_type")]
    per_type = [
        [f"{t} {catalogue()[t - 1].name}", *(fmt(predictors[n]["per_type"].get(str(t))) for n in shown)]
        for t in range(1, 26)
    ]
    verdict = _below_mean(report.get("rule"), predictors)
    detail = f"<details><summary>per type SROCC</summary>{_table(['type', *shown], per_type, 'compact')}</details>"
    return f"<p>{intro}</p>" + _table(["predictor", "SROCC", "PLCC"], rows, "compact") + verdict + detail


def _below_mean(rule: str | None, predictors: dict) -> str:
    """A note when the transfer rule predicts held-out scores no better than the content-agnostic mean."""
    srocc = {name: (predictors.get(name) or {}).get("srocc") for name in (rule, "mean")}
    if rule == "mean" or not all(isinstance(v, float) and np.isfinite(v) for v in srocc.values()):
        return ""
    if srocc[rule] > srocc["mean"]:
        return ""
    return (
        f"<p class='warn'><b>Note:</b> the rule <code>{html.escape(rule)}</code> (SROCC {srocc[rule]:.3f}) predicts "
        f"held-out references' scores no better than the content-agnostic <code>mean</code> ({srocc['mean']:.3f}): "
        "with this bank and encoder, matching adds nothing over the bank's mean scores.</p>"
    )


def _matches_fidelity(m: dict) -> str:
    """A ``saqt fidelity --matches`` result: how the given matches use the bank, and agreement where measured."""
    u, a = m["usage"], m.get("agreement")
    rows = [
        ["images matched", f"{u['images']:,}"],
        ["references used", u["references_used"]],
        ["most used", f"{u['most_used'][0]}: {u['most_used'][1]:,}"],
        ["least used", f"{u['least_used'][0]}: {u['least_used'][1]:,}"],
        ["top-5 share", f"{u['top5_share']:.1%}"],
        ["effective number of references", f"{u['effective_references']:.1f}"],
        [
            "top-1 agreement",
            "not measured"
            if a is None
            else f"{a['agree']:,} of {a['compared']:,} ({a['rate']:.1%}) with {html.escape(a['encoder'])}",
        ],
    ]
    return f"<p>Given matches: {html.escape(m['how'])} (<code>{html.escape(m['file'])}</code>).</p>" + _table(
        ["", ""], rows, "compact"
    )


def _errors(data: StageData) -> str:
    if not data.errors:
        return "<p>No inputs were skipped.</p>"
    rows = [[html.escape(reason), n] for reason, n in data.errors.most_common()]
    examples = [[html.escape(e.get("key", "")), html.escape(e.get("reason", ""))] for e in data.error_examples]
    more = f"<h3>First skipped inputs</h3>{_table(['input', 'reason'], examples, 'compact')}" if examples else ""
    return _table(["reason", "inputs skipped"], rows, "compact") + more


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d1e0}nav{padding:8px 32px;background:#fff;border-bottom:1px solid #dde1e8;
position:sticky;top:0;z-index:2}nav a{margin-right:18px;color:#2456c7;text-decoration:none}
main{max-width:1280px;margin:0 auto;padding:8px 32px 48px}section{background:#fff;border:1px solid #dde1e8;
border-radius:6px;padding:14px 20px;margin:18px 0}h2{margin:4px 0 8px;font-size:18px}h3{font-size:15px;margin:14px 0 6px}
p.lead{color:#4a5568;margin-top:0}pre.summary{background:#f0f2f5;padding:10px;border-radius:4px;white-space:pre-wrap}
table{border-collapse:collapse}table.compact td,table.compact th{border-bottom:1px solid #e5e8ee;padding:3px 10px;
text-align:left}table.grid{margin-bottom:20px}table.grid td{padding:1px 2px;vertical-align:top;text-align:center;
font-size:11px}td.tname{text-align:left!important;white-space:nowrap;font-size:12px!important;padding-right:8px!important;
vertical-align:middle!important}td.gap{padding-left:14px}table.grid th{font-size:12px;color:#4a5568;font-weight:600}
th.pid{padding:6px 0 4px 14px;text-align:left}.tid{display:inline-block;min-width:1.6em;color:#8a94a6}
.cap{color:#4a5568;line-height:1.2}.na{color:#8a94a6;font-style:italic}img{max-width:100%}
img.thumb{width:104px;display:block;transition:transform .1s}img.thumb:hover{transform:scale(2.4);position:relative;
z-index:5;box-shadow:0 4px 18px rgba(0,0,0,.45)}img.pristine{display:block;width:208px;margin:0 0 4px}
code{background:#f0f2f5;padding:0 3px;border-radius:3px}
p.warn{background:#fff4e0;border-left:4px solid #e8a33d;padding:8px 12px}
table.matches{width:100%}table.matches>tbody>tr>td{border-bottom:1px solid #e5e8ee;padding:10px 24px 10px 0;
vertical-align:top}table.matches>thead>tr>th{text-align:left;font-size:12px;color:#4a5568;padding:0 24px 6px 0;
white-space:nowrap}table.matches>tbody>tr>td:first-child{width:112px}table.matches>tbody>tr>td:nth-child(2){width:40%}
.refs{display:flex;gap:14px;flex-wrap:wrap}.match{width:112px;font-size:11px;overflow-wrap:break-word}
.match code{font-size:11px}img.ref{width:112px;display:block;margin-bottom:3px}
.noimg{width:110px;height:80px;border:1px dashed #b8bfcc;color:#8a94a6;font-size:11px;display:flex;margin-bottom:3px;
align-items:center;justify-content:center;text-align:center;font-style:italic}
table.heat{border-collapse:separate;border-spacing:1px;margin-bottom:3px}table.heat td{width:15px;height:15px;padding:0}
table.heat th{font-size:9px;font-weight:400;color:#8a94a6;padding:0 3px 0 0;text-align:center}
table.reftable td{vertical-align:middle}
.scale{display:inline-block;width:120px;height:10px;vertical-align:middle;
background:linear-gradient(to right,#440154,#3b528b,#21918c,#5ec962,#fde725)}
"""


Section = tuple[str, str, str, str]  # anchor, title, lead text, HTML content


def render_report(folder: Path, images: int = 2, fidelity: Path | None = None, pairs: int = 12) -> str:
    """The report of ``folder`` as one HTML string: ``images`` pristine images in the type x level grid, ``pairs``
    next to the references they were matched to."""
    data = load_stage(folder)
    return _page(folder, data.kind, _sections(folder, data, images, fidelity, pairs))


def _sections(folder: Path, data: StageData, images: int, fidelity: Path | None, pairs: int) -> list[Section]:
    """The report's sections in page order, each where it applies: scores only for labels, matches only where
    the labels were matched, fidelity for all but a build."""
    scores = data.cells.column("score").to_numpy(zero_copy_only=False).astype(float)
    types = data.cells.column("dist_type").to_numpy()
    levels = data.cells.column("level").to_numpy()
    pristine = data.cells.column("pristine_id").to_numpy(zero_copy_only=False)
    labelled = data.kind != "build" and np.isfinite(scores).any()
    matched = labelled and data.matches is not None and any(data.matches.column("neighbours").to_pylist())
    sections = [_summary_section(folder, data, scores, labelled, matched)]
    if matched:
        sections.append(_matches_section(data, pairs))
    sections += _build_sections(data, images, len(set(pristine)), labelled)
    if labelled:
        sections += _score_sections(scores, types, levels, pristine)
    if matched:
        sections += _bank_sections(data)
    if data.kind != "build":
        sections.append(
            (
                "fidelity",
                "Transfer fidelity",
                "How well the transfer rule predicts held-out references' scores.",
                _fidelity(fidelity),
            )
        )
    sections.append(("errors", "Skipped inputs", "Source images the build left out, by reason.", _errors(data)))
    return sections


def _summary_section(folder: Path, data: StageData, scores: np.ndarray, labelled: bool, matched: bool) -> Section:
    """What ``saqt info`` says of the folder, the scores' spread where it is labelled, and the bank-fit note."""
    spread = (
        f"<p>Scores: {np.isfinite(scores).sum():,} of {len(scores):,} images scored; mean {np.nanmean(scores):.2f}, "
        f"range {np.nanmin(scores):.2f} to {np.nanmax(scores):.2f}.</p>"
        if labelled
        else ""
    )
    summary = f"<pre class='summary'>{html.escape(chr(10).join(summarise(folder)))}</pre>"
    return ("summary", "Summary", "What this folder holds.", summary + spread + (_fit_warning(data) if matched else ""))


def _matches_section(data: StageData, pairs: int) -> Section:
    return (
        "matches",
        "Matches",
        "The heart of the method: each pristine image inherits, for every "
        "distortion type and level, the score of the same distortion of the bank reference(s) it "
        "was matched to.",
        _matches(data, pairs),
    )


def _build_sections(data: StageData, images: int, pristine_count: int, labelled: bool) -> list[Section]:
    """The pristine screen and the type x level grid: what every folder shows."""
    return [
        (
            "screen",
            "Pristine screen",
            "Which source images were kept as pristine, which were refused and "
            "why: an enlarged or heavily compressed photo is not pristine.",
            _screen(data),
        ),
        (
            "grid",
            "Distortions",
            f"Every type x level for {min(images, pristine_count)} pristine images"
            + (", with each image's transferred score." if labelled else "."),
            _grid(data, images),
        ),
    ]


def _score_sections(scores: np.ndarray, types: np.ndarray, levels: np.ndarray, pristine: np.ndarray) -> list[Section]:
    return [
        (
            "histograms",
            "Score histograms",
            "How the transferred scores spread within each type; stronger levels "
            "should sit further left (lower quality). Bars are stacked by level.",
            _score_histograms(scores, types, levels),
        ),
        (
            "levels",
            "Score against level",
            "One grey line per pristine image, the mean in black. Scores should fall "
            "as the level rises; flat or rising lines point to a type the bank's references score inconsistently.",
            _score_vs_level(scores, types, levels, pristine),
        ),
    ]


def _bank_sections(data: StageData) -> list[Section]:
    return [
        (
            "similarity",
            "Neighbour similarity",
            "How close each pristine image's bank references are in the "
            "encoder's space: low similarities mean labels borrowed from unlike content.",
            _similarities(data.matches),
        ),
        (
            "bank",
            "Bank usage",
            "How many pristine images each reference labelled: a few dominant references narrow the labels' diversity.",
            _bank_usage(data),
        ),
    ]


def _page(folder: Path, kind: str, sections: list[Section]) -> str:
    """The HTML page: header naming the folder, a link per section, the sections."""
    nav = "".join(f'<a href="#{key}">{title}</a>' for key, title, _, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{title}</h2><p class="lead">{lead}</p>{content}</section>'
        for key, title, lead, content in sections
    )
    where = folder.resolve()
    title = f"SAQT-IQA report: {where.parent.name}/{where.name}"  # the folder and its parent say which run it was
    return (
        f"{HEAD}{html.escape(title.removeprefix('SAQT-IQA report'))}</title><style>{CSS}</style></head><body><header>"
        f"<h1>{html.escape(title)}</h1><p>{KINDS[kind]} · {html.escape(str(where))} · one self-contained file: "
        f"thumbnails and plots are inline, no folder next to it</p></header><nav>{nav}</nav><main>{body}</main>"
        "</body></html>"
    )


def check_report_out(out: Path, overwrite: bool) -> None:
    """OutputError unless ``out`` may receive a report: nothing there, or (``overwrite``) a report saqt wrote, a
    regular file (never a link or anything else)."""
    if not own_file(out):
        return
    if not overwrite:
        raise OutputError(f"{out} exists: use --overwrite to replace it or choose another --out")
    with writing(out), out.open("rb") as f:
        if f.read(len(HEAD)) != HEAD.encode():
            raise in_the_way(out)


def write_report(
    folder: Path, out: Path, images: int = 2, fidelity: Path | None = None, pairs: int = 12, overwrite: bool = False
) -> Path:
    """Write the report atomically to ``out``, refused where something is there already, unless ``overwrite`` and
    it is an earlier report (``check_report_out``)."""
    check_report_out(out, overwrite)
    text = render_report(folder, images, fidelity, pairs)
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    check_report_out(out, overwrite)  # another process may have written there meanwhile
    write_bytes_atomic(out, text.encode())
    return out

"""The dataset card of a published SAQT-IQA set: ``README.md`` with YAML front matter, as the Hugging Face Hub
reads it (licence, size, features, splits, data files), plus the toolkit's provenance under ``saqt:``."""

from __future__ import annotations

import json

import pyarrow as pa
import yaml

from saqt.distortions import catalogue
from saqt.errors import SaqtError

FRONT_MATTER = "---\n"


class CardError(SaqtError, ValueError):
    """A dataset card that cannot be read."""


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket for a row count."""
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")):  # fmt: skip
        if rows < bound:
            return name
    return "n>100M"


def hub_features(schema: pa.Schema) -> list[dict]:
    """``dataset_info.features`` in the Hub's card format."""

    def dtype(kind: pa.DataType) -> dict:
        if pa.types.is_struct(kind) and {kind.field(i).name for i in range(kind.num_fields)} == {"bytes", "path"}:
            return {"dtype": "image"}
        if pa.types.is_list(kind):
            return {"list": dtype(kind.value_type)["dtype"]}
        return {"dtype": {"double": "float64", "float": "float32", "halffloat": "float16"}.get(str(kind), str(kind))}

    return [{"name": f.name, **dtype(f.type)} for f in schema]


def read_card(text: str) -> tuple[dict, str]:
    """The front matter (a dict) and the body of a card; CardError if it has no readable front matter."""
    if not text.startswith(FRONT_MATTER):
        raise CardError("README.md has no YAML front matter")
    head, sep, body = text[len(FRONT_MATTER) :].partition("\n---\n")
    if not sep:
        raise CardError("README.md's YAML front matter is not closed by a '---' line")
    try:
        meta = yaml.safe_load(head)
    except yaml.YAMLError as err:
        where = f" at line {err.problem_mark.line + 2}" if getattr(err, "problem_mark", None) else ""
        raise CardError(f"README.md's YAML front matter is malformed{where} ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(meta, dict):
        raise CardError("README.md's YAML front matter is not a mapping")
    return meta, body


def _screen_line(screen: dict) -> str:
    """The pristine screen, with any setting looser than the toolkit's defaults called out."""
    if "applied" not in screen:
        return (f"- **Pristine screen:** shorter side >= {screen['min_side']} px, estimated JPEG quality >= "
                f"{screen['min_jpeg_quality']}, greyscale {'kept' if screen['allow_grey'] else 'refused'} "
                "(upscaling was not limited: a build of an earlier toolkit).")  # fmt: skip
    if not screen["applied"]:
        return ("- **Pristine screen: off** (the selection was taken as given); only undecodable images and "
                f"duplicates were dropped ({screen['duplicates']} duplicates).")  # fmt: skip
    looser = screen["looser_than_default"]
    note = ("; **looser than the toolkit's defaults, by the builder's choice:** "
            + ", ".join(f"`{k}` {v} (default {d})" for k, (v, d) in looser.items())) if looser else ""  # fmt: skip
    return (f"- **Pristine screen:** upscaling at most {screen['max_upscale']}x, estimated JPEG quality >= "
            f"{screen['min_jpeg_quality']}, shorter side >= {screen['min_side']} px, greyscale "
            f"{'kept' if screen['allow_grey'] else 'refused'}, each picture kept once ({screen['duplicates']} "
            f"duplicates dropped){note}.")  # fmt: skip


def _matching_line(encoder: dict, transfer: dict) -> str:
    if encoder["id"] == "matches:authors":
        return ("- **Matching:** the authors' published top-1 matches (their ImageNet ResNet features; "
                f"`{encoder['weights']}`, MIT licence, (c) 2025 Xiaoqi Wang) instead of an encoder.")  # fmt: skip
    if encoder["id"].startswith("matches:"):
        return (f"- **Matching:** given top-1 matches `{encoder['id'].removeprefix('matches:')}` "
                f"(`{encoder['weights']}`) instead of an encoder.")  # fmt: skip
    return f"- **Matching:** encoder `{encoder['id']}` with weights `{encoder['weights']}`; FAISS index `{transfer['index']}`."


def render_card(meta: dict, fields: list[tuple[str, str]]) -> str:
    """README.md text: ``meta`` as front matter, then a readable description built from it.

    Long because it is the card's template: one line of it per line of the card."""
    p = meta["saqt"]["provenance"]
    splits = {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]}
    bank, transfer, dist = p["bank"], p["transfer"], p["distortions"]
    types = [catalogue()[t - 1].name for t in dist["types"]]
    proxy = ("**The scores are a proxy, not human opinion:** the bank was scored by a full-reference metric "
             f"({bank.get('score_meaning', bank['kind'])}).\n\n") if bank["proxy"] else ""  # fmt: skip
    split_text = ", ".join(f"{n:,} {name}" for name, n in splits.items())
    lines = [
        f"# {meta['pretty_name']}",
        "",
        f"{sum(splits.values()):,} distorted images ({split_text}) of {p['selection']['pristine']:,} pristine images "
        f"from `{p['source']['name']}`, each distorted by {len(types)} KADID-10k distortion types x "
        f"{len(dist['levels'])} levels and scored by transferring the opinion scores of the most similar labelled "
        f"reference images (SAQT-IQA). Scores are on the scale `{transfer['score_scale']}`; higher is better.",
        "",
        proxy + "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("parquet", data_dir="data")  # or the Hub id of this dataset',
        'ds["train"][0]["image"]  # a PIL image; "score" is its transferred score',
        "```",
        "",
        "```python",
        "import pyarrow.dataset as pads",
        'table = pads.dataset("data", format="parquet").to_table(columns=["image_id", "dist_type", "level", "score"])',
        "```",
        "",
        "Check the files with `sha256sum -c SHA256SUMS`, or `saqt verify .` with the toolkit.",
        "",
        "## Fields",
        "",
        "| field | meaning |",
        "|---|---|",
        *(f"| `{name}` | {meaning} |" for name, meaning in fields),
        "",
        "## How it was made",
        "",
        f"- **Pristine images:** source `{p['source']['name']}` ({p['source'].get('description', '')}); "
        f"{p['selection']['selected']:,} selected (limit {p['selection']['limit'] or 'none'}, per class "
        f"{p['selection']['per_class'] or 'no limit'}, seed {p['seeds']['build']}), {p['selection']['skipped']} "
        "skipped by the "
        f"screen; canonical size {p['canonical_size'][0]}x{p['canonical_size'][1]}.",
        _screen_line(p["screen"]),
        f"- **Distortions:** catalogue `{dist['catalogue']['name']}` version {dist['catalogue']['version']} "
        f"(manifest SHA-256 `{dist['catalogue']['sha256'][:16]}...`); types {', '.join(types)}; levels "
        f"{', '.join(map(str, dist['levels']))}; per image {dist['per_image'] or 'all cells'}.",
        f"- **Labelled bank:** `{bank['kind']}` with {bank['references']} references "
        f"({'proxy scores' if bank['proxy'] else 'human opinion scores'}); scores SHA-256 "
        f"`{bank['scores_sha256'][:16]}...`; excluded references: {len(bank['excluded'])}.",
        _matching_line(p["encoder"], transfer),
        f"- **Transfer rule:** `{transfer['rule']}` (k={transfer['k']}, temperature {transfer['temperature']}); "
        f"{p['self_matches']} pristine images were (nearly) bank references themselves.",
        f"- **Splits:** validation fraction {p['split']['validation_fraction']} by pristine image (seed "
        f"{p['split']['seed']}), so no pristine image is in two splits.",
        f"- **Toolkit:** saqt-iqa {p['toolkit_version']}. Commands, in order:",
        "",
        "```sh",
        *(c for c in p["commands"] if c),
        "```",
        "",
        "## Licence",
        "",
        f"`{meta['license']}`. Images: {p['source'].get('license_note', 'see the source')}. Scores derive from the "
        f"bank `{bank['kind']}`; its terms apply to them too.",
        "",
        "The complete provenance, machine-readable, is the `saqt:` entry of this card's front matter.",
    ]
    front = yaml.safe_dump(json.loads(json.dumps(meta)), sort_keys=False, allow_unicode=True, width=120, default_flow_style=None)
    return FRONT_MATTER + front + "---\n\n" + "\n".join(lines) + "\n"

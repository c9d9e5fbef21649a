"""The dataset card of a published SAQT-IQA set: ``README.md`` with YAML front matter, as the Hugging Face Hub
reads it (licence, size, features, splits, data files), plus the toolkit's provenance under ``saqt:``."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import yaml

from saqt.build.distortions import catalogue
from saqt.core.stage_contract import FRONT_MATTER, CardError, read_card

# What to cite (as CITATION.cff, which tests/core/test_citation.py checks): the paper whose method the set follows, its
# preprint, and KADID-10k, whose distortions and human scores it transfers.
CITATIONS = """\
@article{wang2026glintiqa,
  author  = {Wang, Xiaoqi and Zhang, Yun},
  title   = {Global-Local Progressive Integration and Semantic-Aligned Quality Transfer for No-Reference Image
             Quality Assessment},
  journal = {ACM Transactions on Multimedia Computing, Communications and Applications},
  year    = {2026},
  doi     = {10.1145/3815779}
}
@article{wang2024glintiqa,
  author  = {Wang, Xiaoqi and Zhang, Yun},
  title   = {No-Reference Image Quality Assessment with Global-Local Progressive Integration and Semantic-Aligned
             Quality Transfer},
  journal = {arXiv preprint arXiv:2408.03885},
  year    = {2024}
}
@inproceedings{lin2019kadid,
  author    = {Lin, Hanhe and Hosu, Vlad and Saupe, Dietmar},
  title     = {{KADID-10k}: A Large-scale Artificially Distorted {IQA} Database},
  booktitle = {2019 Eleventh International Conference on Quality of Multimedia Experience (QoMEX)},
  pages     = {1--3},
  year      = {2019},
  doi       = {10.1109/QoMEX.2019.8743252}
}"""


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket for a row count."""
    for bound, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
    ):
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


def is_saqt_card(text: str) -> bool:
    """Whether ``text`` is a card ``saqt publish`` wrote: readable front matter with a ``saqt:`` dataset id."""
    try:
        meta, _ = read_card(text)
    except CardError:
        return False
    return isinstance(meta.get("saqt"), dict) and bool(meta["saqt"].get("dataset_id"))


def _one_line(text: object) -> str:
    """``text`` as one line: control characters (newlines, ANSI escapes) written as ``\\xNN``."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m[0]):02x}", str(text))


def code(text: object, table: bool = False) -> str:
    """``text`` (from an input or option: free text) as one Markdown code span that nothing in it can end: fenced
    by more backticks than it holds in a row; ``table``: with ``|`` escaped, for a table cell."""
    text = _one_line(text)
    ticks = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) else ""
    if table:
        text = text.replace("|", "\\|")
    return f"{ticks}{pad}{text}{pad}{ticks}"


def plain(text: object) -> str:
    """``text`` (free text) as one line of Markdown prose: no markup, link, HTML or entity of its own."""
    return re.sub(r"([\\`*_\[\]<>&])", r"\\\1", _one_line(text))


def code_block(lines: list[str], language: str = "") -> list[str]:
    """``lines`` (free text, one line each) as a fenced code block that none of them can close."""
    lines = [_one_line(line) for line in lines]
    fence = "`" * max([3] + [len(run) + 1 for line in lines for run in re.findall("`{3,}", line)])
    return [fence + language, *lines, fence]


def _screen_line(screen: dict) -> str:
    """The pristine screen, with any setting looser than the toolkit's defaults called out."""
    if "applied" not in screen:
        return (
            f"- **Pristine screen:** shorter side >= {screen['min_side']} px, estimated JPEG quality >= "
            f"{screen['min_jpeg_quality']}, greyscale {'kept' if screen['allow_grey'] else 'refused'} "
            "(upscaling was not limited: a build of an earlier toolkit)."
        )
    if not screen["applied"]:
        return (
            "- **Pristine screen: off** (the selection was taken as given); only undecodable images and "
            f"duplicates were dropped ({screen['duplicates']} duplicates)."
        )
    looser = screen["looser_than_default"]
    note = (
        (
            "; **looser than the toolkit's defaults, by the builder's choice:** "
            + ", ".join(f"`{k}` {v} (default {d})" for k, (v, d) in looser.items())
        )
        if looser
        else ""
    )
    return (
        f"- **Pristine screen:** upscaling at most {screen['max_upscale']}x, estimated JPEG quality >= "
        f"{screen['min_jpeg_quality']}, shorter side >= {screen['min_side']} px, greyscale "
        f"{'kept' if screen['allow_grey'] else 'refused'}, each picture kept once ({screen['duplicates']} "
        f"duplicates dropped){note}."
    )


def _matching_line(encoder: dict, transfer: dict) -> str:
    weights = code(encoder["weights"])
    if encoder["id"] == "matches:authors":
        return (
            "- **Matching:** the authors' published top-1 matches (their ImageNet ResNet features; "
            f"{weights}, MIT licence, (c) 2025 Xiaoqi Wang) instead of an encoder."
        )
    if encoder["id"].startswith("matches:"):
        return (
            f"- **Matching:** given top-1 matches {code(encoder['id'].removeprefix('matches:'))} "
            f"({weights}) instead of an encoder."
        )
    index = code(transfer["index"])
    return f"- **Matching:** encoder {code(encoder['id'])} with weights {weights}; FAISS index {index}."


def render_card(meta: dict, fields: list[tuple[str, str]]) -> str:
    """README.md text: ``meta`` as front matter, then a readable description built from it (one line of the
    parts' templates per line of the card)."""
    p = meta["saqt"]["provenance"]
    types = [catalogue()[t - 1].name for t in p["distortions"]["types"]]
    lines = [
        *_intro_section(meta, types),
        *_fields_section(fields),
        *_constants_section(meta["saqt"]["run_constants"]),
        *_how_made_section(p, types),
        *_rerender_section(meta),
        *_licence_section(meta),
        *_citation_section(),
    ]
    front = yaml.safe_dump(
        json.loads(json.dumps(meta)), sort_keys=False, allow_unicode=True, width=120, default_flow_style=None
    )
    return FRONT_MATTER + front + "---\n\n" + "\n".join(lines) + "\n"


def _intro_section(meta: dict, types: list[str]) -> list[str]:
    """The title, what the set holds, the proxy warning where the bank's scores are a metric's, how to load it."""
    p = meta["saqt"]["provenance"]
    splits = {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]}
    bank, transfer = p["bank"], p["transfer"]
    proxy = (
        (
            "**The scores are a proxy, not human opinion:** the bank was scored by a full-reference metric "
            f"({plain(bank.get('score_meaning', bank['kind']))}).\n\n"
        )
        if bank["proxy"]
        else ""
    )
    split_text = ", ".join(f"{n:,} {name}" for name, n in splits.items())
    return [
        f"# {meta['pretty_name']}",
        "",
        f"{sum(splits.values()):,} distorted images ({split_text}) of {p['selection']['pristine']:,} pristine images "
        f"from `{p['source']['name']}`, each distorted by {len(types)} KADID-10k distortion types x "
        f"{len(p['distortions']['levels'])} levels and scored by transferring the opinion scores of the most similar "
        f"labelled reference images (SAQT-IQA). Scores are on the scale `{transfer['score_scale']}`; higher is better.",
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
    ]


def _fields_section(fields: list[tuple[str, str]]) -> list[str]:
    return [
        "## Fields",
        "",
        "| field | meaning |",
        "|---|---|",
        *(f"| `{name}` | {meaning} |" for name, meaning in fields),
        "",
    ]


def _how_made_section(p: dict, types: list[str]) -> list[str]:
    """The provenance ``p`` in words: source, screen, distortions, bank, matching, rule, splits, commands."""
    bank, transfer, dist = p["bank"], p["transfer"], p["distortions"]
    return [
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
        *code_block([c for c in p["commands"] if c], "sh"),
        "",
    ]


def _citation_section() -> list[str]:
    return [
        "## Citation",
        "",
        "If you use this dataset, cite the paper whose method made it (SAQT-IQA, with the GlintIQA model) and "
        "KADID-10k, whose distortions and human opinion scores it transfers:",
        "",
        "```bibtex",
        CITATIONS,
        "```",
        "",
        "The complete provenance, machine-readable, is the `saqt:` entry of this card's front matter.",
    ]


def _constants_section(constants: dict) -> list[str]:
    """The label values shared by every row, recorded once (front matter: ``saqt.run_constants``)."""
    return [
        "## Values shared by every row",
        "",
        "These hold for every row, so they are recorded here (and under `saqt.run_constants` in the front matter) "
        "instead of in the rows:",
        "",
        "| field | value |",
        "|---|---|",
        *(f"| {code(k, table=True)} | {code(json.dumps(v), table=True)} |" for k, v in constants.items()),
        "",
    ]


def _licence_section(meta: dict) -> list[str]:
    p, bank = meta["saqt"]["provenance"], meta["saqt"]["provenance"]["bank"]
    named = f" ([{meta['license_name']}]({meta['license_link']}))" if meta.get("license_name") else ""
    pixels = (
        "This set holds no pixels: only recipes, source keys and scores. "
        if meta["saqt"]["recipe_only"]
        else f"Images: {p['source'].get('license_note') or 'see the source'}. "
    )
    return [
        "## Licence",
        "",
        f"`{meta['license']}`{named}. {pixels}Scores derive from the bank `{bank['kind']}`; its "
        "terms apply to them too.",
        "",
    ]


def build_command(p: dict) -> str:
    """The ``saqt build`` that re-renders this set's images from one's own copy of its source."""
    source, dist = p["source"], p["distortions"]
    words = ["saqt", "build", "--source", source["name"]]
    if source["name"] not in ("sample", "sample-bank"):
        words += ["--root", "<your copy of the source>"] + (
            ["--list", "<its list file>"] if source["name"] == "list" else []
        )
    words += ["--split", source["split"]] if source.get("split") else []
    words += [
        "--selection",
        "keys.txt",
        "--size",
        "{}x{}".format(*p["canonical_size"]),
        "--types",
        ",".join(map(str, dist["types"])),
        "--levels",
        ",".join(map(str, dist["levels"])),
        "--seed",
        str(p["seeds"]["build"]),
    ]
    words += ["--per-image", str(dist["per_image"])] if dist["per_image"] else []
    return " ".join(words + ["--out", "rebuilt"])


def _rerender_section(meta: dict) -> list[str]:
    """How to get the pixels of a recipe-only set (nothing for a set with pixels)."""
    if not meta["saqt"]["recipe_only"]:
        return []
    keys = (
        "import pyarrow.dataset as pads; keys = pads.dataset('data').to_table(columns=['source_key'])"
        ".column(0).unique().to_pylist(); open('keys.txt', 'w').write('\\n'.join(sorted(keys)) + '\\n')"
    )
    return [
        "## Re-rendering the images",
        "",
        "This set is **recipe-only**: `image` is null in every row, as the source images were not redistributed "
        "(see the licence below). Every row carries its recipe (`source_key`, `dist_type`, `level`, `seed`, "
        "`random_params`), so with your own copy of the source the SAQT-IQA toolkit (`saqt`, version "
        f"{meta['saqt']['provenance']['toolkit_version']} or one with the same distortion catalogue) re-renders "
        "every image bit for bit: list the source images, then build them with this set's settings (from this "
        "folder):",
        "",
        "```sh",
        f'python -c "{keys}"',
        build_command(meta["saqt"]["provenance"]),
        "```",
        "",
        "`rebuilt/distorted/*.parquet` then holds each row's `image_id` with its PNG in `image`; join on "
        "`image_id`. The `pristine_id` of a rebuilt image equals the row's only if your copy of the source image "
        "is the same file: rows whose `pristine_id` is not in `rebuilt/pristine` cannot be re-rendered from your "
        "copy.",
        "",
    ]

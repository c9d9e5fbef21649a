"""What each ``saqt`` stage is asked: one frozen config per stage, every option of its command declared on a field
(``saqt.core.config_options.option``: help, help panel, flags), or, where configs share it, on a group they include
(``SourceOptions``, ``ScreenOptions``, ``TransferOptions``), so a new option is added in one place. Light on purpose: the
command line imports this module at start, the stages' heavy modules only when a command runs."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from saqt.build.screen import Screen
from saqt.build.sources import Listing, list_source, source_names
from saqt.core.config_options import (
    DEVICE_HELP,
    EXECUTION,
    INPUTS,
    MATCHING,
    OUTPUT,
    PLAN,
    SCREEN,
    SELECTION,
    SOURCE,
    TRANSFER,
    config_class,
    include,
    option,
    resolve_paths,
)
from saqt.core.errors import ConfigError, PublishError
from saqt.core.images import DEFAULT_MAX_PIXELS
from saqt.label.encoders.base import encoder_forms
from saqt.label.faiss_index import INDEX_KINDS
from saqt.label.transfer import Rule

ALL_TYPES = tuple(range(1, 26))
ALL_LEVELS = tuple(range(1, 6))
MAX_SIDE = 4096  # canonical images are distorted 125 ways in memory: a ceiling well above the paper's 512 x 384
DEFAULT_ENCODER = "clip:ViT-B-32@laion2b_s34b_b79k"
ENCODER_HELP = f"One of: {encoder_forms(about=True)}."
BANK_TYPE_HELP = "kadid10k, csv or synth (default: detected)."


LICENCE_ID = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")  # the Hub's licence ids: cc-by-4.0, apache-2.0, openrail++
LICENCE_NAME = re.compile(r"(?=.{1,64}$)[a-z0-9]+(?:[.-][a-z0-9]+)*")  # a slug, as the Hub asks: my-license-1.0
WEB_LINK = re.compile(r"https?://[A-Za-z0-9.-]+(?::\d+)?(?:[/?#][A-Za-z0-9._~:/?#@!$&*+,;=%-]*)?")  # no ()[]<>'"`


def check_licence(license: str | None, name: str | None, link: str | None) -> None:
    """PublishError unless ``license`` is a Hub licence id, ``name`` a slug and ``link`` an http(s) URL that
    Markdown shows as one link (no spaces, quotes, brackets or parentheses: percent-encode them)."""
    for flag, value, form, what in (
        ("--license", license, LICENCE_ID, "a Hub licence id (lowercase letters, digits, '.', '+', '-')"),
        ("--license-name", name, LICENCE_NAME, "a short slug like my-license-1.0 (at most 64 characters)"),
        ("--license-link", link, WEB_LINK, "an http(s) URL without spaces, quotes, brackets or parentheses"),
    ):
        if value is not None and not (len(value) <= 2000 and form.fullmatch(value)):
            raise PublishError(f"{flag} {value[:80]!r} is not {what}")


def check_size(size: tuple[int, int], least: int = 48) -> None:
    """ConfigError unless both sides of the canonical ``size`` (width, height) lie in [least, MAX_SIDE]."""
    if min(size) < least:
        raise ConfigError(f"--size {size[0]}x{size[1]}: both sides must be at least {least} px")
    if max(size) > MAX_SIDE:
        raise ConfigError(f"--size {size[0]}x{size[1]}: each side must be at most {MAX_SIDE} px")


@dataclass(frozen=True)
class SourceOptions:
    """Where a stage's images come from: a source (``saqt.build.sources``), its root folder and its list file."""

    source: str = option("sample", f"Pristine source: {', '.join(source_names())}.", SOURCE)
    root: str | None = option(
        None, "Source root folder (all paths must stay inside it).", SOURCE, cli_type=Path | None, path=True
    )
    list_file: str | None = option(
        None,
        "For --source list: .txt/.csv/.parquet of paths.",
        SOURCE,
        flags=("--list",),
        cli_type=Path | None,
        path=True,
    )

    def listing(self, split: str | None = None, selection: list[str] | None = None) -> Listing:
        """The source's images (only those named in ``selection`` when given); SourceError for a bad source."""
        root, list_file = (Path(p) if p else None for p in (self.root, self.list_file))
        return list_source(self.source, root, list_file, split, selection)

    @property
    def inputs(self) -> dict[str, str | None]:
        """The local inputs, by option, that a stage's output must lie apart from."""
        return {"--root": self.root, "--list": self.list_file}


@dataclass(frozen=True)
class ScreenOptions:
    """The pristine screen's settings (``saqt.build.screen.Screen``), checked as given."""

    max_upscale: float = option(
        1.0,
        "Screen: refuse images that must be enlarged by more than this to cover --size (1.0: none; "
        "looser values are recorded in the manifest and dataset card).",
        SCREEN,
    )
    min_jpeg_quality: int = option(
        90,
        "Screen: refuse JPEGs of lower estimated quality, and lossy WebP and palette images (GIF, palette PNG) "
        "(0 = off: keep them all).",
        SCREEN,
    )
    min_side: int = option(128, "Screen: refuse images whose shorter side is below this (at least 1).", SCREEN, min=1)
    allow_grey: bool = option(False, "Screen: keep greyscale images (refused by default).", SCREEN)

    def __post_init__(self):
        if self.min_side < 1:
            raise ConfigError(f"--min-side must be at least 1, got {self.min_side}")
        if not 0 <= self.min_jpeg_quality <= 100 or not 0 < self.max_upscale < 1e6:
            raise ConfigError("--min-jpeg-quality must be in 0..100 and --max-upscale a positive number")

    @property
    def screen(self) -> Screen:
        """The screen these settings describe."""
        return Screen(self.min_side, self.min_jpeg_quality, self.allow_grey, self.max_upscale)


_rule = lru_cache(maxsize=64)(Rule)  # a Rule is frozen: one per settings, however often a config is asked


@dataclass(frozen=True)
class TransferOptions:
    """How the matched references' scores become an image's label: the rule (``saqt.label.transfer.Rule``) and the scale."""

    rule: str = option("top1", "top1 (the authors'), topk (similarity-weighted) or mean.", TRANSFER)
    neighbours: int = option(
        3, "Neighbours for topk: the k nearest references.", TRANSFER, flags=("--neighbours", "-k"), key="k"
    )
    temperature: float = option(0.05, "Softmax temperature of the topk weights.", TRANSFER)
    normalise: str = option("minmax:0:9", "Score scale: minmax:0:9 (the authors'), none or zscore.", TRANSFER)

    def __post_init__(self):
        _ = self.transfer_rule  # raises ConfigError for a bad rule, count or temperature

    @property
    def transfer_rule(self) -> Rule:
        """The transfer rule these settings describe, built once for all configs that describe it."""
        return _rule(self.rule, self.neighbours, self.temperature)


class TransferRule:
    """A config that includes ``TransferOptions``: its transfer rule one attribute away."""

    @property
    def transfer_rule(self) -> Rule:
        """The transfer rule these settings describe, built once (``TransferOptions.transfer_rule``)."""
        return self.transfer_options.transfer_rule


@config_class
class BuildConfig:
    """Everything that determines a build's output (how it runs, workers and overwrite, does not)."""

    source_options: SourceOptions = include(SourceOptions)
    split: str | None = option(None, "For --source imagenet: train (default) or val.", SOURCE)
    limit: int | None = option(None, "Use at most N images (a seeded random subset).", SELECTION)
    per_class: int | None = option(None, "Use at most K images per class (seeded).", SELECTION)
    selection: str | None = option(
        None,
        "Build exactly these images: 'authors' (the 50,000 KADIS-700k images of the "
        "authors' SAQT-IQA) or a .txt/.csv of file names; each missing one is logged.",
        SELECTION,
        path=True,
    )
    seed: int = option(0, "Global seed for selection and every random draw.", SELECTION)
    screen: bool = option(  # False: every decodable image passes (a selection taken as given)
        True,
        "Apply the pristine screen (default: on, off for a --selection, which is taken as given).",
        SCREEN,
        flags=("--screen/--no-screen",),
        cli_type=bool | None,
        cli_default=None,
    )
    screen_options: ScreenOptions = include(ScreenOptions)
    size: tuple[int, int] = option(
        (512, 384), "Canonical size WxH: resize to cover, then centre-crop.", PLAN, cli_type=str, cli_default="512x384"
    )
    types: tuple[int, ...] = option(
        ALL_TYPES, "Distortion types, e.g. '1-25' or '1,3,10-12'.", PLAN, cli_type=str, cli_default="1-25"
    )
    levels: tuple[int, ...] = option(ALL_LEVELS, "Levels, e.g. '1-5'.", PLAN, cli_type=str, cli_default="1-5")
    per_image: int | None = option(None, "Render a seeded random N of the cells per image.", PLAN)
    recipe_only: bool = option(False, "Write distorted rows without pixels (render from the recipe).", OUTPUT)
    images_per_shard: int = option(8, "Pristine images per shard (x cells = distorted rows).", OUTPUT)
    max_pixels: int = DEFAULT_MAX_PIXELS  # the decompression-bomb limit: library only

    def __post_init__(self):
        """Hold the paths absolute; raise ConfigError naming the first option that cannot work."""
        resolve_paths(self)
        check_size(self.size)
        for name in ("limit", "per_class", "per_image", "images_per_shard"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        cells = len(self.types) * len(self.levels)
        if self.per_image is not None and self.per_image > cells:
            raise ConfigError(f"--per-image {self.per_image} exceeds the {cells} (type, level) cells selected")
        if not self.types or not self.levels:
            raise ConfigError("no distortion types or levels selected")

    @property
    def pristine_screen(self) -> Screen:
        """The screen every pristine image must pass."""
        return self.screen_options.screen if self.screen else Screen.off()

    def as_dict(self) -> dict:
        """JSON-ready form, as recorded in the manifest."""
        return json.loads(json.dumps(asdict(self)))


SYNTH_METRICS = {
    "ms_ssim": "saqt.label.synth_stage:ms_ssim",
    "psnr": "saqt.label.synth_stage:psnr",
}  # full-reference proxies
MS_SSIM_MIN_SIDE = 161  # five scales of an 11-tap window


@config_class
class SynthConfig:
    """What a synthetic bank is built from and how it is scored."""

    source_options: SourceOptions = include(
        SourceOptions,
        defaults={"source": "folder"},
        helps={
            "source": f"Reference images: {', '.join(source_names())}.",
            "list_file": "For --source list: the list file.",
        },
    )
    limit: int | None = option(None, "Use at most N reference images (seeded).", SELECTION)
    seed: int = option(0, "Seed of the selection and of the distortions' random draws.", SELECTION)
    size: tuple[int, int] = option(
        (512, 384), "Canonical size WxH of the references.", PLAN, cli_type=str, cli_default="512x384"
    )
    metric: str = option("ms_ssim", f"Full-reference proxy score: {' or '.join(SYNTH_METRICS)}.", PLAN)
    screen_options: ScreenOptions = include(ScreenOptions)
    save_distorted: bool = option(
        False, "Also write the distorted images and dataset.csv (path, score, ref) for glint.", OUTPUT
    )

    def __post_init__(self):
        """Hold the paths absolute; raise ConfigError naming the first option that cannot work."""
        resolve_paths(self)
        if self.metric not in SYNTH_METRICS:
            raise ConfigError(f"--metric must be one of {', '.join(SYNTH_METRICS)}, got {self.metric!r}")
        if self.metric == "ms_ssim" and min(self.size) < MS_SSIM_MIN_SIDE:
            raise ConfigError(
                f"ms_ssim needs both sides of --size >= {MS_SSIM_MIN_SIDE} px; use a larger --size or --metric psnr"
            )
        check_size(self.size)

    @property
    def reference_screen(self) -> Screen:
        """The pristine screen each reference must pass, as in ``saqt build``."""
        return self.screen_options.screen


@config_class
class LabelConfig(TransferRule):
    """Everything that determines the labels, and how the embedding runs (device, batch size and loader workers,
    which do not change them and are not recorded)."""

    build: str = option(help="A `saqt build` output folder.", panel=INPUTS, cli_type=Path, path=True)
    bank: str = option(
        help="A labelled bank folder (KADID-10k layout, scores.csv, or bank synth), "
        "or a KADID-10k score table (dmos.csv / KADID10k.csv) alone.",
        panel=INPUTS,
        cli_type=Path,
        path=True,
    )
    bank_type: str | None = option(None, BANK_TYPE_HELP, INPUTS)
    exclude_refs: tuple[str, ...] = option(
        (),
        "File of bank references to leave out (e.g. a test split), one per line: as "
        "named in the bank's score table (KADID-10k: I01), with or without the "
        "extension (I01.png). An unknown name is refused, listing the bank's names.",
        INPUTS,
        cli_type=Path | None,
        cli_default=None,
    )
    preset: str | None = option(  # recorded when the settings came from a preset (saqt.label.presets)
        None,
        "authors: how the published checkpoints' labels were made (ResNet-50, top1, minmax:0:9); "
        "authors-resnet101: the same with the paper's ResNet-101.",
        MATCHING,
    )
    matches: str | None = option(  # "authors" or a matches CSV: use these top-1 matches instead of embedding
        None,
        "Use given top-1 matches instead of embedding: 'authors' (their 50,000, "
        "shipped with the toolkit) or a CSV kadis,kadid-10k,sim_value.",
        MATCHING,
        path=True,
    )
    encoder: str = option(  # the command line's None: the --preset's encoder, else DEFAULT_ENCODER (saqt.label.presets)
        DEFAULT_ENCODER,
        f"{ENCODER_HELP} Default {DEFAULT_ENCODER}, or the --preset's.",
        MATCHING,
        cli_type=str | None,
        cli_default=None,
    )
    index: str = option("flat", "FAISS index: flat (exact), ivf or hnsw.", MATCHING)
    transfer_options: TransferOptions = include(TransferOptions)
    device: str = option("auto", DEVICE_HELP, EXECUTION, recorded=False)
    batch_size: int = option(64, "Embedding batch size.", EXECUTION, recorded=False)
    loader_workers: int | None = option(  # None: auto_loader_workers
        None, "DataLoader processes decoding images (default: chosen for this machine).", EXECUTION, recorded=False
    )

    def __post_init__(self):
        resolve_paths(self)
        if self.index not in INDEX_KINDS:
            raise ConfigError(f"--index must be one of {', '.join(INDEX_KINDS)}, got {self.index!r}")
        if self.matches and self.rule != "top1":
            raise ConfigError(f"--matches gives one reference per image: it needs --rule top1, not {self.rule}")
        if self.matches and self.exclude_refs:
            raise ConfigError(
                "--exclude-refs cannot be combined with --matches: the given matches fix each image's "
                "reference, and images matched to an excluded one would need matching anew"
            )


@dataclass(frozen=True)
class PublishConfig:
    """What determines the published files (where they go does not), and where a remote upload is staged."""

    labels: str = option(help="A finished `saqt label` output folder.", cli_type=Path, path=True)
    validation: float = option(0.0, "Fraction of pristine images held out as the validation split (0: none).")
    seed: int = option(0, "Seed of the validation split.")
    shard_bytes: int = option(
        500 * 2**20,
        "Target Parquet shard size, e.g. 500MB or 1GB.",
        flags=("--shard-size",),
        cli_type=str,
        cli_default="500MB",
    )
    license: str | None = option(None, "Hub licence id for the card (default: the source's).", flags=("--license",))
    license_name: str | None = option(None, "With --license other: a short name (slug).")
    license_link: str | None = option(None, "With --license other: a link to the terms.")
    render: bool = option(False, "Render the pixels of a recipe-only set (needs its build folder).")
    recipe_only: bool = option(
        False,
        "Publish no pixels, only each row's recipe: users re-render from their own copy "
        "of the source (the card says how).",
    )
    staging: str | None = option(
        None, "Local folder to stage a remote upload in (default: the temp folder).", recorded=False
    )

    def __post_init__(self):
        resolve_paths(self)
        if self.render and self.recipe_only:
            raise PublishError("--render and --recipe-only contradict each other: choose one")
        check_licence(self.license, self.license_name, self.license_link)
        if (self.license_name or self.license_link) and self.license != "other":
            raise PublishError("--license-name and --license-link go with --license other")
        if self.license == "other" and not (self.license_name and self.license_link):
            raise PublishError("--license other needs --license-name (a short slug) and --license-link (its terms)")
        if not 0.0 <= self.validation < 1.0:
            raise PublishError(f"--validation must be in [0, 1), got {self.validation}")
        if self.shard_bytes < 1:
            raise PublishError(f"--shard-size must be positive, got {self.shard_bytes} bytes")


@config_class
class FidelityConfig(TransferRule):
    """What ``saqt fidelity`` measures: leave-one-reference-out on ``bank`` with the transfer rule, or, given
    ``matches``, how a matches file uses the bank and (with ``images``) how often ``encoder`` agrees with it."""

    bank: Path | None = option(None, "A labelled bank folder (or a KADID-10k score table).")
    bank_type: str | None = option(None, BANK_TYPE_HELP)
    matches: str | None = option(
        None,
        "Score a matches file instead ('authors' or a CSV kadis,kadid-10k,sim_value): "
        "its bank-usage skew, and with --images its top-1 agreement with --encoder.",
    )
    images: Path | None = option(None, "With --matches: the folder holding the matched pristine images.")
    encoder: str = option(DEFAULT_ENCODER, ENCODER_HELP)
    transfer_options: TransferOptions = include(
        TransferOptions, helps={"rule": "top1, topk or mean.", "normalise": "Score scale: minmax:0:9, none, zscore."}
    )
    seed: int = option(0, "Seed of the random-reference baseline.")
    device: str = option("auto", DEVICE_HELP)

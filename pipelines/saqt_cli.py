"""The ``saqt`` command: build, label and publish SAQT-IQA datasets."""

from __future__ import annotations

import json
import shlex
import sys
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli_common import OneLineErrors, fail_command, parse_bytes, parse_int_set, parse_size
from pipelines.executors import ExecutorKind, open_executor
from saqt.encoders.base import encoder_forms
from saqt.executor import UnitsFailed, WorkerDied
from saqt.sources import sample_paths, source_names

# The stages' modules (torch, matplotlib, numba kernels) are imported inside the commands that use them: the
# CLI starts fast, and the build's worker processes, which re-import this module, stay small. Expected failures
# (saqt.errors.SaqtError) end a command with one line and exit 2 (OneLineErrors); anything else is a bug.

app = typer.Typer(
    name="saqt",
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    help="Build quality-labelled image datasets (SAQT-IQA).",
)
distortions_app = typer.Typer(
    cls=OneLineErrors, no_args_is_help=True, help="The 25 KADID-10k distortion types x 5 levels."
)
bank_app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, help="Labelled reference banks.")


def _show_version(value: bool) -> None:
    if value:
        from saqt import __version__

        typer.echo(f"saqt {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Print the toolkit's version and exit."),
    ] = False,
) -> None:
    """Build quality-labelled image datasets (SAQT-IQA)."""


app.add_typer(distortions_app, name="distortions")
app.add_typer(bank_app, name="bank")
RESUME = "finished shards are kept; run the same command again to resume"
MAX_UPSCALE_HELP = (
    "Screen: refuse images that must be enlarged by more than this to cover --size (1.0: none; "
    "looser values are recorded in the manifest and dataset card)."
)
MIN_JPEG_QUALITY_HELP = "Screen: refuse JPEGs of lower estimated quality (0 = off)."


@distortions_app.command("list")
def list_distortions(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the distortion catalogue: id, name, group, level parameter and values, randomness, fidelity."""
    from saqt.distortions import catalogue

    entries = catalogue()
    if as_json:
        typer.echo(json.dumps([e.__dict__ for e in entries], indent=2))
        return
    header = f"{'id':>2}  {'name':<28} {'group':<18} {'parameter':<18} {'levels 1..5':<36} {'fidelity':<13} random"
    typer.echo(header)
    typer.echo("-" * len(header))
    for e in entries:
        values = ", ".join(f"{v:g}" for v in e.values)
        typer.echo(
            f"{e.id:>2}  {e.name:<28} {e.group:<18} {e.parameter:<18} {values:<36} {e.fidelity:<13} {e.random or '-'}"
        )


@distortions_app.command("render")
def render(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNGs and contact sheets.")],
    images: Annotated[list[Path] | None, typer.Argument(help="Image files to distort (or use --sample).")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Render the bundled sample photos.")] = False,
    types: Annotated[str, typer.Option(help="Distortion types, e.g. '1-5,10'.")] = "1-25",
    levels: Annotated[str, typer.Option(help="Levels, e.g. '1,3,5'.")] = "1-5",
    seed: Annotated[int, typer.Option(help="Global seed; each (type, level) draws from a seed derived from it.")] = 0,
    thumb_width: Annotated[int, typer.Option(min=32, help="Thumbnail width in the contact sheet.")] = 192,
) -> None:
    """Render distortions of images to <stem>_<TT>_<LL>.png plus a labelled <stem>_contact.png."""
    from tqdm import tqdm

    from saqt.distortions import PreparedImage, distort
    from saqt.distortions.sheet import contact_sheet
    from saqt.images import ImageDecodeError, decode_image, encode_png
    from saqt.seeding import derive_seed

    type_ids = parse_int_set(types, 1, 25, "--types")
    level_ids = parse_int_set(levels, 1, 5, "--levels")
    paths = list(images or []) + (sample_paths() if sample else [])
    if not paths:
        raise typer.BadParameter("give one or more IMAGE paths, or --sample")
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in paths:
        try:
            src = PreparedImage(decode_image(path))
        except ImageDecodeError as err:
            typer.echo(f"skipped {err}", err=True)
            failed += 1
            continue
        renders = {}
        cells = [(t, lv) for t in type_ids for lv in level_ids]
        for t, lv in tqdm(cells, desc=path.stem, unit="img", leave=False):
            renders[(t, lv)] = distort(src, t, lv, seed=derive_seed(seed, t, lv))
            (out / f"{path.stem}_{t:02d}_{lv:02d}.png").write_bytes(encode_png(renders[(t, lv)]))
        sheet = out / f"{path.stem}_contact.png"
        contact_sheet(src.u8, renders, thumb_width).save(sheet)
        typer.echo(f"{path.name}: {len(renders)} renders in {out}/, contact sheet {sheet}")
    if failed:
        raise typer.Exit(1)


# Help panels (`saqt build --help`, `saqt label --help`): options grouped by what they decide.
SOURCE, SELECTION, SCREEN, PLAN, OUTPUT, EXECUTION = "Source", "Selection", "Screen", "Plan", "Output", "Execution"
INPUTS, MATCHING, TRANSFER = "Inputs", "Matching", "Transfer"

ExecutorOption = Annotated[
    ExecutorKind,
    typer.Option(
        help="local: worker processes here; ray: Ray tasks (a local cluster, or --ray-address).",
        rich_help_panel=EXECUTION,
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        help="With --executor ray: use this running Ray cluster (e.g. auto, ray://head:10001).",
        rich_help_panel=EXECUTION,
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        help="Parallel units: worker processes (local), CPUs of the local Ray cluster, or the most tasks "
        "in flight on a --ray-address cluster. Default 1; on a --ray-address cluster, its CPUs.",
        rich_help_panel=EXECUTION,
    ),
]
NeighboursOption = Annotated[
    int,
    typer.Option("--neighbours", "-k", help="Neighbours for topk: the k nearest references.", rich_help_panel=TRANSFER),
]
OldNeighboursOption = Annotated[int | None, typer.Option("--k", hidden=True, help="Deprecated name of --neighbours.")]


@app.command("build")
def build(
    source: Annotated[
        str, typer.Option(help=f"Pristine source: {', '.join(source_names())}.", rich_help_panel=SOURCE)
    ] = "sample",
    root: Annotated[
        Path | None, typer.Option(help="Source root folder (all paths must stay inside it).", rich_help_panel=SOURCE)
    ] = None,
    list_file: Annotated[
        Path | None,
        typer.Option("--list", help="For --source list: .txt/.csv/.parquet of paths.", rich_help_panel=SOURCE),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="For --source imagenet: train (default) or val.", rich_help_panel=SOURCE)
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Use at most N images (a seeded random subset).", rich_help_panel=SELECTION)
    ] = None,
    per_class: Annotated[
        int | None, typer.Option(help="Use at most K images per class (seeded).", rich_help_panel=SELECTION)
    ] = None,
    selection: Annotated[
        str | None,
        typer.Option(
            help="Build exactly these images: 'authors' (the 50,000 KADIS-700k images of the "
            "authors' SAQT-IQA) or a .txt/.csv of file names; each missing one is logged.",
            rich_help_panel=SELECTION,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Global seed for selection and every random draw.", rich_help_panel=SELECTION)
    ] = 0,
    screen: Annotated[
        bool | None,
        typer.Option(
            "--screen/--no-screen",
            help="Apply the pristine screen (default: on, off for a --selection, which is taken as given).",
            rich_help_panel=SCREEN,
        ),
    ] = None,
    max_upscale: Annotated[float, typer.Option(help=MAX_UPSCALE_HELP, rich_help_panel=SCREEN)] = 1.0,
    min_jpeg_quality: Annotated[int, typer.Option(help=MIN_JPEG_QUALITY_HELP, rich_help_panel=SCREEN)] = 90,
    min_side: Annotated[
        int, typer.Option(help="Screen: refuse images whose shorter side is below this.", rich_help_panel=SCREEN)
    ] = 128,
    allow_grey: Annotated[
        bool, typer.Option(help="Screen: keep greyscale images (refused by default).", rich_help_panel=SCREEN)
    ] = False,
    size: Annotated[
        str, typer.Option(help="Canonical size WxH: resize to cover, then centre-crop.", rich_help_panel=PLAN)
    ] = "512x384",
    types: Annotated[
        str, typer.Option(help="Distortion types, e.g. '1-25' or '1,3,10-12'.", rich_help_panel=PLAN)
    ] = "1-25",
    levels: Annotated[str, typer.Option(help="Levels, e.g. '1-5'.", rich_help_panel=PLAN)] = "1-5",
    per_image: Annotated[
        int | None, typer.Option(help="Render a seeded random N of the cells per image.", rich_help_panel=PLAN)
    ] = None,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output folder (pristine/, distorted/, build.json).", rich_help_panel=OUTPUT),
    ] = Path("outputs/saqt-build"),
    recipe_only: Annotated[
        bool, typer.Option(help="Write distorted rows without pixels (render from the recipe).", rich_help_panel=OUTPUT)
    ] = False,
    images_per_shard: Annotated[
        int, typer.Option(help="Pristine images per shard (x cells = distorted rows).", rich_help_panel=OUTPUT)
    ] = 8,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing build in --out instead of resuming it.", rich_help_panel=OUTPUT)
    ] = False,
    workers: WorkersOption = None,
    executor: ExecutorOption = ExecutorKind.local,
    ray_address: RayAddressOption = None,
) -> None:
    """Distort pristine images into Parquet shards; rerun the same command to resume."""
    from saqt.build import BuildConfig, run_build
    from saqt.shards import BUILD_MANIFEST

    w, h = parse_size(size)
    config = BuildConfig(
        source=source,
        root=str(root) if root else None,
        list_file=str(list_file) if list_file else None,
        split=split,
        limit=limit,
        per_class=per_class,
        seed=seed,
        size=(w, h),
        types=tuple(parse_int_set(types, 1, 25, "--types")),
        levels=tuple(parse_int_set(levels, 1, 5, "--levels")),
        per_image=per_image,
        selection=selection,
        screen=selection is None if screen is None else screen,
        min_side=min_side,
        min_jpeg_quality=min_jpeg_quality,
        max_upscale=max_upscale,
        allow_grey=allow_grey,
        recipe_only=recipe_only,
        images_per_shard=images_per_shard,
    )
    with running("build", RESUME), open_executor(executor, workers, ray_address) as runner:
        manifest = run_build(config, out, runner, overwrite, _command_line())
    counts = manifest["counts"]
    typer.echo(
        f"built {counts['pristine']} pristine and {counts['distorted']} distorted images in "
        f"{len(manifest['done'])} shard pairs under {out}/ (manifest {out / BUILD_MANIFEST})"
    )
    if counts["skipped"]:
        reasons = ", ".join(f"{n} {kind}" for kind, n in sorted(counts["skipped_by_reason"].items()))
        typer.echo(f"skipped {counts['skipped']} inputs ({reasons}); see {out / 'errors.jsonl'}")
    looser = manifest["screen"]["looser_than_default"]
    if not manifest["screen"]["applied"]:
        typer.echo("pristine screen off: every decodable image was kept (recorded in build.json and the card)")
    elif looser:
        typer.echo(
            "screen looser than the defaults: "
            + ", ".join(f"{k} {v} (default {d})" for k, (v, d) in looser.items())
            + " (recorded in build.json)"
        )


fail = partial(fail_command, "saqt")


def _renamed(command: str, old: str, old_value, new: str, value):
    """The value of an option given under its deprecated name ``old`` (with a warning), else of ``new``."""
    if old_value is None:
        return value
    typer.echo(f"saqt {command}: {old} is deprecated; use {new}", err=True)
    return old_value


def _command_line() -> str:
    """This invocation, as recorded in a stage's provenance."""
    return shlex.join(["saqt", *sys.argv[1:]])


@contextmanager
def running(command: str, advice: str):
    """Turn a stage's executor failures into one-line messages: a dead worker exits 1; units that failed on every
    attempt get one line each, then ``advice``, and exit 1."""
    try:
        yield
    except WorkerDied as err:
        fail(command, err, 1)
    except UnitsFailed as err:
        for unit, reason in err.failures:
            typer.echo(f"saqt {command}: {unit} failed: {reason}", err=True)
        fail(command, f"{len(err.failures)} failed; {advice}", 1)


DATASETS = Path("datasets")


@app.command("fetch")
def fetch_command(
    names: Annotated[list[str] | None, typer.Argument(help="Datasets to fetch, e.g. kadid10k (none: list).")] = None,
    dest: Annotated[Path, typer.Option(help="Datasets go to DEST/NAME, downloads to DEST/.downloads.")] = DATASETS,
    from_dir: Annotated[
        Path | None, typer.Option("--from", help="A folder of archives downloaded by hand (the releases' file names).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be downloaded, its size and terms.")] = False,
    retries: Annotated[int, typer.Option(min=0, help="Resumed retries after a cut connection.")] = 3,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 30.0,
    remove_archives: Annotated[bool, typer.Option(help="Delete downloaded archives once unpacked.")] = False,
) -> None:
    """Download IQA datasets from their publishers, verify, unpack where the loaders look (rerun to resume)."""
    from saqt import fetch

    sources = fetch.fetch_sources()
    if not names:
        typer.echo("\n".join(fetch.catalogue_lines(sources)))
        return
    if unknown := [n for n in names if n not in sources]:
        fail("fetch", f"unknown dataset {', '.join(unknown)}; choose from: {', '.join(sources)}", 2)
    options = fetch.FetchOptions(from_dir, timeout, retries, remove_archives=remove_archives, say=typer.echo)
    failed = 0
    for name in names:
        try:
            if dry_run:
                lines = fetch.describe(sources[name], dest, timeout)
            else:
                lines = fetch.ready_lines(sources[name], fetch.fetch_dataset(sources[name], dest, options))
        except fetch.FetchError as err:
            typer.echo(f"saqt fetch {name}: {err}", err=True)
            failed += 1
            continue
        typer.echo("\n".join(lines))
    if failed:
        raise typer.Exit(1)


ENCODER_HELP = f"One of: {encoder_forms(about=True)}. Default clip:ViT-B-32@laion2b_s34b_b79k."


@bank_app.command("synth")
def bank_synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Bank folder to write (images/, scores.csv, bank.json).")],
    source: Annotated[
        str, typer.Option(help="Reference images: folder, list, kadis700k, imagenet, sample.")
    ] = "folder",
    root: Annotated[Path | None, typer.Option(help="Source root folder.")] = None,
    list_file: Annotated[Path | None, typer.Option("--list", help="For --source list: the list file.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use at most N reference images (seeded).")] = None,
    metric: Annotated[str, typer.Option(help="Full-reference proxy score: ms_ssim or psnr.")] = "ms_ssim",
    size: Annotated[str, typer.Option(help="Canonical size WxH of the references.")] = "512x384",
    seed: Annotated[int, typer.Option(help="Seed of the distortions' random draws.")] = 0,
    max_upscale: Annotated[float, typer.Option(help=MAX_UPSCALE_HELP)] = 1.0,
    min_jpeg_quality: Annotated[int, typer.Option(help=MIN_JPEG_QUALITY_HELP)] = 90,
    workers: WorkersOption = None,
    executor: ExecutorOption = ExecutorKind.local,
    ray_address: RayAddressOption = None,
    save_distorted: Annotated[
        bool, typer.Option(help="Also write the distorted images and dataset.csv (path, score, ref) for glint.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bank in --out instead of resuming it.")] = False,
) -> None:
    """Build a labelled bank from any reference images, scored by a full-reference metric (a proxy for MOS); rerun the
    same command to resume."""
    from saqt.bank_synth import SynthConfig, synth_bank

    config = SynthConfig(
        source=source,
        root=str(root) if root else None,
        list_file=str(list_file) if list_file else None,
        limit=limit,
        seed=seed,
        size=parse_size(size),
        metric=metric,
        save_distorted=save_distorted,
        max_upscale=max_upscale,
        min_jpeg_quality=min_jpeg_quality,
    )
    with running("bank synth", RESUME), open_executor(executor, workers, ray_address) as runner:
        bank = synth_bank(config, out, runner, _command_line(), overwrite=overwrite)
    typer.echo(
        f"bank of {len(bank.ref_ids)} references x 125 distortions, scored by {metric} (a proxy, not MOS), in {out}/"
    )


@app.command("label")
def label(
    build: Annotated[Path, typer.Option(help="A `saqt build` output folder.", rich_help_panel=INPUTS)],
    bank: Annotated[
        Path,
        typer.Option(
            help="A labelled bank folder (KADID-10k layout, scores.csv, or bank synth), "
            "or a KADID-10k score table (dmos.csv / KADID10k.csv) alone.",
            rich_help_panel=INPUTS,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output folder (labels/, saqt-iqa/, label.json).", rich_help_panel=OUTPUT),
    ],
    bank_type: Annotated[
        str | None, typer.Option(help="kadid10k, csv or synth (default: detected).", rich_help_panel=INPUTS)
    ] = None,
    exclude_refs: Annotated[
        Path | None,
        typer.Option(
            help="File of bank references to leave out (e.g. a test split), one per line: as "
            "named in the bank's score table (KADID-10k: I01), with or without the "
            "extension (I01.png). An unknown name is refused, listing the bank's names.",
            rich_help_panel=INPUTS,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="authors: what the official SAQT release does (ResNet-101, top1, minmax:0:9).",
            rich_help_panel=MATCHING,
        ),
    ] = None,
    matches: Annotated[
        str | None,
        typer.Option(
            help="Use given top-1 matches instead of embedding: 'authors' (their 50,000, "
            "shipped with the toolkit) or a CSV kadis,kadid-10k,sim_value.",
            rich_help_panel=MATCHING,
        ),
    ] = None,
    encoder: Annotated[str | None, typer.Option(help=ENCODER_HELP, rich_help_panel=MATCHING)] = None,
    index: Annotated[
        str, typer.Option(help="FAISS index: flat (exact), ivf or hnsw.", rich_help_panel=MATCHING)
    ] = "flat",
    rule: Annotated[
        str | None,
        typer.Option(
            help="top1 (the authors', default), topk (similarity-weighted) or mean.", rich_help_panel=TRANSFER
        ),
    ] = None,
    neighbours: NeighboursOption = 3,
    old_k: OldNeighboursOption = None,
    temperature: Annotated[
        float, typer.Option(help="Softmax temperature of the topk weights.", rich_help_panel=TRANSFER)
    ] = 0.05,
    normalise: Annotated[
        str | None,
        typer.Option(help="Score scale: minmax:0:9 (the authors', default), none, zscore.", rich_help_panel=TRANSFER),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace existing labels in --out instead of resuming.", rich_help_panel=OUTPUT)
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.", rich_help_panel=EXECUTION)] = "auto",
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.", rich_help_panel=EXECUTION)] = 64,
    loader_workers: Annotated[
        int | None,
        typer.Option(
            help="DataLoader processes decoding images (default: chosen for this machine).", rich_help_panel=EXECUTION
        ),
    ] = None,
    workers: WorkersOption = None,
    executor: ExecutorOption = ExecutorKind.local,
    ray_address: RayAddressOption = None,
) -> None:
    """Transfer scores from a labelled bank to every distorted image of a build."""
    from saqt.label import LabelConfig, RunOptions, read_exclusions, run_label
    from saqt.presets import label_settings

    with running("label", RESUME):
        settings = label_settings(preset, matches, encoder, rule, normalise)
        config = LabelConfig(
            build=str(build.resolve()),
            bank=str(bank.resolve()),
            bank_type=bank_type,
            k=_renamed("label", "--k", old_k, "--neighbours", neighbours),
            temperature=temperature,
            index=index,
            preset=preset,
            **settings,
            matches=matches if matches in (None, "authors") else str(Path(matches).resolve()),
            exclude_refs=read_exclusions(exclude_refs) if exclude_refs else (),
        )
        with open_executor(executor, workers, ray_address) as runner:
            manifest = run_label(
                config, out, RunOptions(device, batch_size, loader_workers), overwrite, _command_line(), runner
            )
    typer.echo(
        f"labelled {manifest['counts']['labels']} images in {manifest['counts']['shards']} shards under "
        f"{out}/ (labels/, saqt-iqa/, manifest label.json)"
    )
    if manifest["encoder"].get("matches"):
        typer.echo(f"matches: {manifest['encoder']['matches']['how']} ({manifest['encoder']['weights']})")
    if manifest["self_matches"]:
        typer.echo(
            f"warning: {manifest['self_matches']} pristine images are (nearly) bank references themselves "
            "(cosine >= 0.999): their labels copy their own scores",
            err=True,
        )


@app.command("fidelity")
def fidelity(
    bank: Annotated[Path | None, typer.Option(help="A labelled bank folder (or a KADID-10k score table).")] = None,
    bank_type: Annotated[str | None, typer.Option(help="kadid10k, csv or synth (default: detected).")] = None,
    matches: Annotated[
        str | None,
        typer.Option(
            help="Score a matches file instead ('authors' or a CSV kadis,kadid-10k,sim_value): "
            "its bank-usage skew, and with --images its top-1 agreement with --encoder."
        ),
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="With --matches: the folder holding the matched pristine images.")
    ] = None,
    encoder: Annotated[str, typer.Option(help=ENCODER_HELP)] = "clip:ViT-B-32@laion2b_s34b_b79k",
    rule: Annotated[str, typer.Option(help="top1, topk or mean.", rich_help_panel=TRANSFER)] = "top1",
    neighbours: NeighboursOption = 3,
    old_k: OldNeighboursOption = None,
    temperature: Annotated[
        float, typer.Option(help="Softmax temperature of the topk weights.", rich_help_panel=TRANSFER)
    ] = 0.05,
    normalise: Annotated[
        str, typer.Option(help="Score scale: minmax:0:9, none, zscore.", rich_help_panel=TRANSFER)
    ] = "minmax:0:9",
    seed: Annotated[int, typer.Option(help="Seed of the random-reference baseline.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    as_json: Annotated[Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")] = None,
) -> None:
    """Leave-one-reference-out: how well the rule predicts each reference's scores from the others. With
    --matches: how a file of given matches uses the bank, and how often this toolkit's encoder agrees with it."""
    from saqt.fidelity import FidelityConfig, run_fidelity
    from saqt.transfer import Rule

    count = _renamed("fidelity", "--k", old_k, "--neighbours", neighbours)
    config = FidelityConfig(
        bank, bank_type, matches, images, encoder, Rule(rule, count, temperature), normalise, seed, device
    )
    figures, lines = run_fidelity(config)
    for line in lines:
        typer.echo(line)
    if as_json:
        as_json.write_text(json.dumps(figures, indent=2))


@app.command("publish")
def publish_command(
    labels: Annotated[Path, typer.Option(help="A finished `saqt label` output folder.")],
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="Folder or fsspec URL (e.g. s3://bucket/saqt-iqa) to write; optional with --push-to-hub.",
        ),
    ] = None,
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            metavar="ORG/NAME",
            help="Upload the verified set to this Hugging Face Hub dataset repository. It replaces only an earlier "
            "push's card and data/ files (those its SHA256SUMS lists, unchanged); any other file there is left, "
            "and one under data/ (or another card) refuses the push.",
        ),
    ] = None,
    private: Annotated[bool, typer.Option(help="With --push-to-hub: create the repository private.")] = False,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="HF_TOKEN",
            show_envvar=True,
            show_default=False,
            help="Hub token (default: HF_TOKEN, or the one `hf auth login` saved).",
        ),
    ] = None,
    validation: Annotated[
        float, typer.Option(help="Fraction of pristine images held out as the validation split (0: none).")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the validation split.")] = 0,
    shard_size: Annotated[str, typer.Option(help="Target Parquet shard size, e.g. 500MB or 1GB.")] = "500MB",
    license: Annotated[
        str | None, typer.Option("--license", help="Hub licence id for the card (default: the source's).")
    ] = None,
    license_name: Annotated[str | None, typer.Option(help="With --license other: a short name (slug).")] = None,
    license_link: Annotated[str | None, typer.Option(help="With --license other: a link to the terms.")] = None,
    render: Annotated[
        bool, typer.Option(help="Render the pixels of a recipe-only set (needs its build folder).")
    ] = False,
    recipe_only: Annotated[
        bool,
        typer.Option(
            help="Publish no pixels, only each row's recipe: users re-render from their own copy "
            "of the source (the card says how)."
        ),
    ] = False,
    staging: Annotated[
        str | None, typer.Option(help="Local folder to stage a remote upload in (default: the temp folder).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset at --out.")] = False,
) -> None:
    """Publish labels as a standard Parquet dataset: data/ shards, a dataset card (README.md) and SHA256SUMS."""
    import tempfile

    from saqt.publish import PublishConfig, PublishError, publish

    if out is None and push_to_hub is None:
        raise PublishError("give --out (a folder or fsspec URL), --push-to-hub ORG/NAME, or both")
    if push_to_hub and out and "://" in out and not out.startswith("file://"):
        raise PublishError("--push-to-hub uploads a local folder: give --out a local folder, or leave it out")
    if push_to_hub:
        from saqt.hub import check_repo_id

        check_repo_id(push_to_hub)
    config = PublishConfig(
        labels=str(labels.resolve()),
        validation=validation,
        seed=seed,
        shard_bytes=parse_bytes(shard_size, "--shard-size"),
        license=license,
        license_name=license_name,
        license_link=license_link,
        render=render,
        recipe_only=recipe_only,
    )
    with tempfile.TemporaryDirectory(prefix="saqt-hub-", dir=staging) if out is None else nullcontext() as scratch:
        target = out or str(Path(scratch) / "published")
        meta = publish(
            config, target, overwrite, _command_line(), staging, warn=lambda line: typer.echo(line, err=True)
        )
        splits = ", ".join(f"{s['num_examples']} {s['name']}" for s in meta["dataset_info"]["splits"])
        files = sum(meta["saqt"]["files"].values())
        where = f" to {out}" if out else ""
        typer.echo(
            f"published {splits} rows in {files} shards{where} (card README.md, checksums SHA256SUMS, "
            f"dataset id {meta['saqt']['dataset_id']})"
        )
        if push_to_hub:
            from saqt.hub import push_to_hub as push

            url = push(Path(target.removeprefix("file://")), push_to_hub, private, token)
            typer.echo(f"pushed to {url}")


@app.command("verify")
def verify_command(
    target: Annotated[str, typer.Argument(help="A published folder or fsspec URL, or a build or label folder.")],
    sample: Annotated[int, typer.Option(help="Images to decode, chosen at random (seeded).")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the decoded sample.")] = 0,
) -> None:
    """Check checksums, schema, row counts and a sample of images; exit 1 naming the first problem."""
    from saqt.verify import VerifyError, verify

    try:
        result = verify(target, sample, seed)
    except VerifyError as err:
        fail("verify", err, 1)
    decoded = f", {result.decoded} sampled images decoded" if result.decoded else ""
    typer.echo(f"{target}: intact {result.kind} set ({result.files} files, {result.rows} rows checked{decoded})")


@app.command("info")
def info_command(
    folder: Annotated[Path, typer.Argument(help="A build, label, bank, published or glint run folder.")],
) -> None:
    """Summarise a stage folder: kind, rows, shards, settings, errors."""
    from saqt.info import summarise

    typer.echo("\n".join(summarise(folder)))


@app.command("report")
def report_command(
    folder: Annotated[Path, typer.Argument(help="A label, build or published folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    images: Annotated[int, typer.Option(min=1, help="Pristine images shown in the type x level grid.")] = 2,
    pairs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Pristine images shown next to the bank references they were "
            "matched to (from the closest match to the farthest).",
        ),
    ] = 12,
    fidelity_json: Annotated[
        Path | None, typer.Option("--fidelity", help="A `saqt fidelity --json` file to include.")
    ] = None,
) -> None:
    """Write one self-contained HTML report (images inline): matches, screen, thumbnails, score plots, bank usage,
    fidelity, errors."""
    from saqt.report import write_report

    path = write_report(folder, out, images, fidelity_json, pairs)
    typer.echo(f"report written to {path} ({path.stat().st_size / 2**10:,.0f} KiB, self-contained: images inline)")

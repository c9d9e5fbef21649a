"""The ``saqt`` command: build, label and publish SAQT-IQA datasets."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from PIL import Image
from tqdm import tqdm

from pipelines.cli_common import add_stub, parse_int_set, parse_size
from pipelines.executors import LocalExecutor, WorkerDied
from saqt.build import BuildConfig, BuildConflict, run_build
from saqt.distortions import PreparedImage, catalogue, distort
from saqt.distortions.sheet import contact_sheet
from saqt.images import ImageDecodeError, decode_image
from saqt.seeding import derive_seed
from saqt.sources import SourceError, sample_paths, source_names

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Build quality-labelled image datasets (SAQT-IQA).")
distortions_app = typer.Typer(no_args_is_help=True, help="The 25 KADID-10k distortion types x 5 levels.")
bank_app = typer.Typer(no_args_is_help=True, help="Labelled reference banks.")
app.add_typer(distortions_app, name="distortions")
app.add_typer(bank_app, name="bank")

add_stub(app, "saqt", "label", 4, "Transfer MOS labels from a labelled bank by semantic matching.")
add_stub(app, "saqt", "fidelity", 4, "Measure label-transfer fidelity on a bank (leave one reference out).")
add_stub(bank_app, "saqt bank", "synth", 4, "Build a proxy-labelled bank from reference images.")
add_stub(app, "saqt", "publish", 6, "Publish labels as a standard Parquet dataset with a dataset card.")
add_stub(app, "saqt", "verify", 6, "Verify a published dataset's checksums and schema.")
add_stub(app, "saqt", "report", 6, "Write an HTML report of a stage directory.")
add_stub(app, "saqt", "info", 6, "Summarise a stage directory.")


@distortions_app.command("list")
def list_distortions(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the distortion catalogue: id, name, group, level parameter and values, randomness, fidelity."""
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
        except (ImageDecodeError, ValueError) as err:
            typer.echo(f"skipped {err}" if isinstance(err, ImageDecodeError) else f"skipped {path}: {err}", err=True)
            failed += 1
            continue
        renders = {}
        cells = [(t, lv) for t in type_ids for lv in level_ids]
        for t, lv in tqdm(cells, desc=path.stem, unit="img", leave=False):
            renders[(t, lv)] = distort(src, t, lv, seed=derive_seed(seed, t, lv))
            Image.fromarray(renders[(t, lv)]).save(out / f"{path.stem}_{t:02d}_{lv:02d}.png", compress_level=1)
        sheet = out / f"{path.stem}_contact.png"
        contact_sheet(src.u8, renders, thumb_width).save(sheet)
        typer.echo(f"{path.name}: {len(renders)} renders in {out}/, contact sheet {sheet}")
    if failed:
        raise typer.Exit(1)


@app.command("build")
def build(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (pristine/, distorted/, build.json).")] = Path(
        "outputs/saqt-build"
    ),
    source: Annotated[str, typer.Option(help=f"Pristine source: {', '.join(source_names())}.")] = "sample",
    root: Annotated[Path | None, typer.Option(help="Source root folder (all paths must stay inside it).")] = None,
    list_file: Annotated[
        Path | None, typer.Option("--list", help="For --source list: .txt/.csv/.parquet of paths.")
    ] = None,
    split: Annotated[str | None, typer.Option(help="For --source imagenet: train (default) or val.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use at most N images (a seeded random subset).")] = None,
    per_class: Annotated[int | None, typer.Option(help="Use at most K images per class (seeded).")] = None,
    seed: Annotated[int, typer.Option(help="Global seed for selection and every random draw.")] = 0,
    size: Annotated[str, typer.Option(help="Canonical size WxH: resize to cover, then centre-crop.")] = "512x384",
    types: Annotated[str, typer.Option(help="Distortion types, e.g. '1-25' or '1,3,10-12'.")] = "1-25",
    levels: Annotated[str, typer.Option(help="Levels, e.g. '1-5'.")] = "1-5",
    per_image: Annotated[int | None, typer.Option(help="Render a seeded random N of the cells per image.")] = None,
    min_side: Annotated[int, typer.Option(help="Screen: reject images whose shorter side is below this.")] = 128,
    min_jpeg_quality: Annotated[
        int, typer.Option(help="Screen: reject JPEGs of lower estimated quality (0 = off).")
    ] = 0,
    allow_grey: Annotated[bool, typer.Option(help="Screen: keep greyscale images (refused by default).")] = False,
    recipe_only: Annotated[
        bool, typer.Option(help="Write distorted rows without pixels (render from the recipe).")
    ] = False,
    images_per_shard: Annotated[int, typer.Option(help="Pristine images per shard (x cells = distorted rows).")] = 8,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing build in --out instead of resuming it.")] = False,
) -> None:
    """Distort pristine images into Parquet shards; rerun the same command to resume."""
    w, h = parse_size(size)
    config = BuildConfig(
        source=source, root=str(root) if root else None, list_file=str(list_file) if list_file else None,
        split=split, limit=limit, per_class=per_class, seed=seed, size=(w, h),
        types=tuple(parse_int_set(types, 1, 25, "--types")), levels=tuple(parse_int_set(levels, 1, 5, "--levels")),
        per_image=per_image, min_side=min_side, min_jpeg_quality=min_jpeg_quality, allow_grey=allow_grey,
        recipe_only=recipe_only,
        images_per_shard=images_per_shard,
    )  # fmt: skip
    try:
        manifest = run_build(config, out, LocalExecutor(workers), overwrite, shlex.join(["saqt", *sys.argv[1:]]))
    except (SourceError, BuildConflict, ValueError) as err:
        typer.echo(f"saqt build: {err}", err=True)
        raise typer.Exit(2) from None
    except WorkerDied as err:
        typer.echo(f"saqt build: {err}", err=True)
        raise typer.Exit(1) from None
    counts = manifest["counts"]
    typer.echo(f"built {counts['pristine']} pristine and {counts['distorted']} distorted images in "
               f"{len(manifest['shards'])} shard pairs under {out}/ (manifest {out / 'build.json'})")  # fmt: skip
    if counts["skipped"]:
        reasons = ", ".join(f"{n} {kind}" for kind, n in sorted(counts["skipped_by_reason"].items()))
        typer.echo(f"skipped {counts['skipped']} inputs ({reasons}); see {out / 'errors.jsonl'}")

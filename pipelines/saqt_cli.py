"""The ``saqt`` command: build, label and publish SAQT-IQA datasets."""

from __future__ import annotations

import json
import shlex
import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli_common import (
    App,
    OneLineErrors,
    Options,
    config_options,
    fail_command,
    parse_bytes,
    parse_int_set,
    parse_size,
)
from pipelines.executors import ExecutorKind, open_executor
from saqt.build.sources import sample_paths
from saqt.core.config_options import EXECUTION, OUTPUT
from saqt.core.context import RunContext
from saqt.core.executor import UnitsFailed, WorkerDied
from saqt.label.stage_configs import (
    BuildConfig,
    FidelityConfig,
    LabelConfig,
    PublishConfig,
    SynthConfig,
)

# The stages' modules (torch, matplotlib, numba kernels) are imported inside the commands that use them: the
# CLI starts fast, and the build's worker processes, which re-import this module, stay small. Expected failures
# (saqt.core.errors.SaqtError) end a command with one line and exit 2 (OneLineErrors); anything else is a bug.


class SaqtCommands(OneLineErrors):
    """The saqt command group; its commands still accept the deprecated option names below."""

    renamed = {"--k": "--neighbours"}


app = App(
    name="saqt",
    cls=SaqtCommands,
    no_args_is_help=True,
    add_completion=False,
    help="Build quality-labelled image datasets (SAQT-IQA).",
)
distortions_app = App(cls=OneLineErrors, no_args_is_help=True, help="The 25 KADID-10k distortion types x 5 levels.")
bank_app = App(cls=OneLineErrors, no_args_is_help=True, help="Labelled reference banks.")


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


@distortions_app.command("list")
def list_distortions(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the distortion catalogue: id, name, group, level parameter and values, randomness, fidelity."""
    from saqt.build.distortions import catalogue

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
    from saqt.build.distortions.sheet import render_sheets
    from saqt.core.images import ImageDecodeError

    type_ids = parse_int_set(types, 1, 25, "--types")
    level_ids = parse_int_set(levels, 1, 5, "--levels")
    paths = list(images or []) + (sample_paths() if sample else [])
    if not paths:
        raise typer.BadParameter("give one or more IMAGE paths, or --sample")
    failed = 0
    for path, sheet in render_sheets(paths, out, type_ids, level_ids, seed, thumb_width):
        if isinstance(sheet, ImageDecodeError):
            typer.echo(f"skipped {sheet}", err=True)
            failed += 1
        else:
            typer.echo(f"{path.name}: {len(type_ids) * len(level_ids)} renders in {out}/, contact sheet {sheet}")
    if failed:
        raise typer.Exit(1)


# The options of build, label, fidelity and publish are the fields of their configs (saqt/label/stage_configs.py), grouped in
# help panels there; the options written here are the command line's own: the output and the executor.

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


@app.command("build")
@config_options(BuildConfig, before={"out": "recipe_only"})
def build(
    given: Options,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output folder (pristine/, distorted/, build.json).", rich_help_panel=OUTPUT),
    ] = Path("outputs/saqt-build"),
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace an existing build in --out instead of resuming it.", rich_help_panel=OUTPUT
        ),
    ] = False,
    workers: WorkersOption = None,
    executor: ExecutorOption = ExecutorKind.local,
    ray_address: RayAddressOption = None,
) -> None:
    """Distort pristine images into Parquet shards; rerun the same command to resume."""
    from saqt.build.build_stage import run_build
    from saqt.core.shards import BUILD_MANIFEST

    config = given.make(
        BuildConfig,
        size=parse_size(given["size"]),
        types=tuple(parse_int_set(given["types"], 1, 25, "--types")),
        levels=tuple(parse_int_set(given["levels"], 1, 5, "--levels")),
        screen=given["selection"] is None if given["screen"] is None else given["screen"],
    )
    with running("build", RESUME), open_executor(executor, workers, ray_address) as runner:
        manifest = run_build(config, out, RunContext(runner, overwrite, _command_line()))
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
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be downloaded, its size and terms.")
    ] = False,
    retries: Annotated[int, typer.Option(min=0, help="Resumed retries after a cut connection.")] = 3,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 30.0,
    remove_archives: Annotated[
        bool, typer.Option("--remove-archives", help="Delete downloaded archives once unpacked.")
    ] = False,
) -> None:
    """Download IQA datasets from their publishers, verify, unpack where the loaders look (rerun to resume)."""
    from saqt.fetch import archives as fetch

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


@bank_app.command("synth")
@config_options(SynthConfig)
def bank_synth(
    given: Options,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Bank folder to write (images/, scores.csv, bank.json).", rich_help_panel=OUTPUT
        ),
    ],
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace an existing bank in --out instead of resuming it.", rich_help_panel=OUTPUT
        ),
    ] = False,
    workers: WorkersOption = None,
    executor: ExecutorOption = ExecutorKind.local,
    ray_address: RayAddressOption = None,
) -> None:
    """Build a labelled bank from any reference images, scored by a full-reference metric (a proxy for MOS); rerun the
    same command to resume."""
    from saqt.label.synth_stage import run_synth_bank

    config = given.make(
        SynthConfig,
        size=parse_size(given["size"]),
    )
    with running("bank synth", RESUME), open_executor(executor, workers, ray_address) as runner:
        bank = run_synth_bank(config, out, RunContext(runner, overwrite, _command_line()))
    typer.echo(
        f"bank of {len(bank.ref_ids)} references x 125 distortions, scored by {config.metric} (a proxy, not MOS), "
        f"in {out}/"
    )


@app.command("label")
@config_options(LabelConfig, before={"out": "bank_type"})
def label(
    given: Options,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output folder (labels/, saqt-iqa/, label.json).", rich_help_panel=OUTPUT),
    ],
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace existing labels in --out instead of resuming.", rich_help_panel=OUTPUT
        ),
    ] = False,
    workers: WorkersOption = None,
    executor: ExecutorOption = ExecutorKind.local,
    ray_address: RayAddressOption = None,
) -> None:
    """Transfer scores from a labelled bank to every distorted image of a build."""
    from saqt.label.label_stage import read_exclusions, run_label
    from saqt.label.presets import label_settings

    matches, exclude_refs = given["matches"], given["exclude_refs"]
    with running("label", RESUME):
        settings = label_settings(given["preset"], matches, given["encoder"], given["rule"], given["normalise"])
        config = given.make(
            LabelConfig,
            **settings,
            exclude_refs=read_exclusions(exclude_refs) if exclude_refs else (),
        )
        with open_executor(executor, workers, ray_address) as runner:
            manifest = run_label(config, out, RunContext(runner, overwrite, _command_line()))
    typer.echo(
        f"labelled {manifest['counts']['labels']} images in {manifest['counts']['shards']} shards under "
        f"{out}/ (labels/, saqt-iqa/, manifest label.json)"
    )
    if manifest["encoder"].get("matches"):
        typer.echo(f"matches: {manifest['encoder']['matches']['how']} ({manifest['encoder']['weights']})")
    if (manifest.get("bank_fit") or {}).get("warning"):
        typer.echo(f"warning: {manifest['bank_fit']['warning']}", err=True)
    if manifest["self_matches"]:
        typer.echo(
            f"warning: {manifest['self_matches']} pristine images are (nearly) bank references themselves "
            "(cosine >= 0.999): their labels copy their own scores",
            err=True,
        )


@app.command("fidelity")
@config_options(FidelityConfig)
def fidelity(
    given: Options,
    as_json: Annotated[Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")] = None,
) -> None:
    """Leave-one-reference-out: how well the rule predicts each reference's scores from the others. With
    --matches: how a file of given matches uses the bank, and how often this toolkit's encoder agrees with it."""
    from saqt.label.fidelity import run_fidelity

    config = given.make(FidelityConfig)
    for line in run_fidelity(config, as_json):
        typer.echo(line)


@app.command("publish")
@config_options(PublishConfig, before={name: "validation" for name in ("out", "push_to_hub", "private", "token")})
def publish_command(
    given: Options,
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
    private: Annotated[
        bool, typer.Option("--private", help="With --push-to-hub: create the repository private.")
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="HF_TOKEN",
            show_envvar=True,
            show_default=False,
            help="Hub token (default: HF_TOKEN, or the one `hf auth login` saved).",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing dataset at --out.")] = False,
) -> None:
    """Publish labels as a standard Parquet dataset: data/ shards, a dataset card (README.md) and SHA256SUMS."""
    from saqt.publish.hub import check_push, publish_and_push

    check_push(out, push_to_hub)  # before the config: a bad target is the first thing said
    config = given.make(PublishConfig, shard_bytes=parse_bytes(given["shard_bytes"], "--shard-size"))
    ctx = RunContext(overwrite=overwrite, command=_command_line(), warn=lambda line: typer.echo(line, err=True))

    def published(meta: dict) -> None:
        splits = ", ".join(f"{s['num_examples']} {s['name']}" for s in meta["dataset_info"]["splits"])
        where = f" to {out}" if out else ""
        typer.echo(
            f"published {splits} rows in {sum(meta['saqt']['files'].values())} shards{where} (card README.md, "
            f"checksums SHA256SUMS, dataset id {meta['saqt']['dataset_id']})"
        )

    _, url = publish_and_push(config, out, push_to_hub, ctx, private=private, token=token, published=published)
    if url:
        typer.echo(f"pushed to {url}")


@app.command("verify")
def verify_command(
    target: Annotated[str, typer.Argument(help="A published folder or fsspec URL, or a build or label folder.")],
    sample: Annotated[int, typer.Option(help="Images to decode, chosen at random (seeded).")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the decoded sample.")] = 0,
) -> None:
    """Check checksums, schema, row counts and a sample of images; exit 1 naming the first problem."""
    from saqt.read.api import VerifyError, verify

    try:
        result = verify(target, sample, seed)
    except VerifyError as err:
        fail("verify", err, 1)
    decoded = f", {result.decoded} sampled images decoded" if result.decoded else ""
    typer.echo(
        f"{target}: intact {result.kind} set ({result.files} files match {result.listed_in}, {result.rows} rows "
        f"checked{decoded})"
    )


@app.command("info")
def info_command(
    folder: Annotated[Path, typer.Argument(help="A build, label, bank, published or glint run folder.")],
) -> None:
    """Summarise a stage folder: kind, rows, shards, settings, errors."""
    from saqt.inspect.info import summarise

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
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier report at --out (and nothing else).")
    ] = False,
) -> None:
    """Write one self-contained HTML report (images inline): matches, screen, thumbnails, score plots, bank usage,
    fidelity, errors."""
    from saqt.inspect.report import write_report

    path = write_report(folder, out, images, fidelity_json, pairs, overwrite)
    typer.echo(f"report written to {path} ({path.stat().st_size / 2**10:,.0f} KiB, self-contained: images inline)")

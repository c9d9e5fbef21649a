"""saqt publish / verify / info / report on a real tiny build, synth bank and labelling of the bundled photos."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from conftest import REPORT_SECTIONS, self_contained
from typer.testing import CliRunner

from pipelines.executors import LocalExecutor
from pipelines.saqt_cli import app
from saqt.build.build_stage import BuildConfig, run_build
from saqt.build.distortions import catalogue_identity
from saqt.build.sources import sample_paths
from saqt.core.context import RunContext
from saqt.core.images import decode_image
from saqt.inspect.info import summarise
from saqt.inspect.report import render_report
from saqt.label.label_stage import LabelConfig, run_label
from saqt.label.synth_stage import SynthConfig, run_synth_bank
from saqt.publish.publish_stage import PublishConfig, PublishError, run_publish, validation_ids
from saqt.read.api import VerifyError, verify
from saqt.read.card import read_card

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

runner = CliRunner()
SIZE = (192, 176)  # MS-SSIM (the synth bank's metric) needs both sides > 160
TYPES, LEVELS = (1, 10, 16), (1, 3, 5)
SHARD_BYTES = 400_000  # about 8 of these images: several shards per split
PRIVATE = "home-of-jane-doe"  # in the path of every stage folder: it must not reach any published byte


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A finished label folder: 5 sample photos x 9 cells, scored from a 3-reference synth bank; every stage under a
    folder named PRIVATE, and recorded with the command lines that name it."""
    root = tmp_path_factory.mktemp(PRIVATE)
    run_build(
        BuildConfig(size=SIZE, types=TYPES, levels=LEVELS, images_per_shard=2),
        root / "build",
        RunContext(LocalExecutor(1), command=f"saqt build --out {root / 'build'} --size 192x176", progress=False),
    )
    run_synth_bank(
        SynthConfig(source="sample-bank", size=SIZE, limit=3),
        root / "bank",
        RunContext(LocalExecutor(1), progress=False),
    )
    config = LabelConfig(
        build=str(root / "build"), bank=str(root / "bank"), encoder="effnet-lite0", rule="topk", neighbours=2
    )
    run_label(
        replace(config, device="cpu"),
        root / "labels",
        RunContext(
            progress=False, command=f"saqt label --build={root / 'build'} --bank {root / 'bank'} -o {root / 'labels'}"
        ),
    )
    return root / "labels"


@pytest.fixture(scope="module")
def published(labelled, tmp_path_factory):
    out = tmp_path_factory.mktemp(PRIVATE) / "saqt-iqa"
    run_publish(
        PublishConfig(str(labelled), validation=0.4, shard_bytes=SHARD_BYTES),
        str(out),
        RunContext(
            command=f"saqt publish --labels {labelled} --out {out} --staging {labelled.parent}/tmp", progress=False
        ),
    )
    return out


def _label_rows(labelled: Path) -> list[dict]:
    return pads.dataset(str(labelled / "saqt-iqa")).to_table().to_pylist()


def test_layout_card_and_checksums(published, labelled):
    names = sorted(p.name for p in (published / "data").iterdir())
    train = [n for n in names if n.startswith("train-")]
    assert len(train) >= 2 and all(n == f"train-{i:05d}-of-{len(train):05d}.parquet" for i, n in enumerate(train))
    assert any(n.startswith("validation-00000-of-") for n in names)
    assert sorted(p.name for p in published.iterdir()) == ["README.md", "SHA256SUMS", "data"]
    sums = dict(line.split("  ")[::-1] for line in (published / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {"README.md", *(f"data/{n}" for n in names)}
    assert all(hashlib.sha256((published / p).read_bytes()).hexdigest() == h for p, h in sums.items())

    meta, body = read_card((published / "README.md").read_text())
    rows = len(_label_rows(labelled))
    assert meta["license"] == "cc0-1.0" and meta["size_categories"] == ["n<1K"]
    assert sum(s["num_examples"] for s in meta["dataset_info"]["splits"]) == rows == 5 * 9
    assert {"name": "image", "dtype": "image"} in meta["dataset_info"]["features"]
    assert {"name": "similarities", "list": "float32"} in meta["dataset_info"]["features"]
    prov = meta["saqt"]["provenance"]
    assert prov["source"]["name"] == "sample" and prov["selection"]["pristine"] == 5
    assert prov["distortions"]["catalogue"] == catalogue_identity() and prov["distortions"]["types"] == list(TYPES)
    assert prov["bank"]["kind"] == "synth" and prov["bank"]["proxy"] is True and prov["bank"]["references"] == 3
    assert prov["encoder"]["id"] == "effnet-lite0" and "sha256:" in prov["encoder"]["weights"]
    assert prov["transfer"] == {
        "rule": "topk",
        "k": 2,
        "temperature": 0.05,
        "score_scale": "minmax:0:9",
        "index": "flat",
    }
    assert prov["seeds"]["build"] == 0 and prov["toolkit_version"]
    assert prov["commands"] == [
        "saqt build --out <out> --size 192x176",
        prov["commands"][1],
        "saqt label --build=<build> --bank <bank> -o <o>",
        "saqt publish --labels <labels> --out <out> --staging <staging>",
    ]  # no local paths
    assert "proxy, not human opinion" in body and "saqt build --out <out> --size 192x176" in body


def test_splits_are_by_pristine_image(published, labelled):
    tables = {
        s: pads.dataset(sorted(str(p) for p in (published / "data").glob(f"{s}-*"))).to_table()
        for s in ("train", "validation")
    }
    ids = {s: set(t.column("pristine_id").to_pylist()) for s, t in tables.items()}
    assert len(ids["validation"]) == 2 and len(ids["train"]) == 3 and not ids["train"] & ids["validation"]
    assert all(t.num_rows == 9 * len(ids[s]) for s, t in tables.items())
    assert validation_ids(sorted(ids["train"] | ids["validation"]), 0.4, 0) == ids["validation"]
    assert validation_ids(["a", "b"], 0.9, 0) != {"a", "b"}  # never the whole set


def test_loads_without_the_toolkit(published, labelled):
    datasets = pytest.importorskip("datasets", reason="the `datasets` test dependency is not installed")
    source = {r["image_id"]: r for r in _label_rows(labelled)}
    table = pads.dataset(str(published / "data"), format="parquet").to_table(columns=["image_id", "score"])
    assert table.num_rows == len(source)
    ds = datasets.load_dataset("parquet", data_dir=str(published), cache_dir=str(published.parent / "hf-cache"))
    assert {name: len(split) for name, split in ds.items()} == {"train": 27, "validation": 18}
    row = ds["validation"][0]
    original = source[row["image_id"]]
    built = pads.dataset(str(Path(json.loads((labelled / "label.json").read_text())["config"]["build"]) / "distorted"))
    png = built.to_table(columns=["image"], filter=pads.field("image_id") == row["image_id"]).column(0)[0].as_py()
    assert np.array_equal(np.asarray(row["image"].convert("RGB")), decode_image(png))  # the build's pixels
    assert row["score"] == original["score"] and row["neighbours"] == original["neighbours"]


def test_publish_is_deterministic_and_refuses_to_overwrite(published, labelled, tmp_path):
    again = tmp_path / "again"
    run_publish(
        PublishConfig(str(labelled), validation=0.4, shard_bytes=SHARD_BYTES),
        str(again),
        RunContext(command=f"saqt publish --labels {labelled} --out {again} --staging {tmp_path}", progress=False),
    )
    assert (again / "SHA256SUMS").read_text() == (published / "SHA256SUMS").read_text()  # wherever it is published
    with pytest.raises(PublishError, match="not empty"):
        run_publish(PublishConfig(str(labelled)), str(again), RunContext(progress=False))
    run_publish(PublishConfig(str(labelled)), str(again), RunContext(overwrite=True, progress=False))
    assert sorted(p.name for p in (again / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert not list(tmp_path.glob(".again*")), "staging and replaced folders are cleaned up"


def test_publish_refuses_unfinished_labels(labelled, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(labelled, partial)
    manifest = json.loads((partial / "label.json").read_text())
    (partial / "label.json").write_text(json.dumps({**manifest, "complete": False}))
    result = runner.invoke(app, ["publish", "--labels", str(partial), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unfinished" in result.output and not (tmp_path / "o").exists()


def test_publish_to_an_fsspec_url_then_verify_it(labelled):
    url = "memory://saqt-test/published"
    run_publish(PublishConfig(str(labelled), shard_bytes=SHARD_BYTES), url, RunContext(progress=False))
    result = verify(url, sample=5)
    assert result.kind == "published" and result.rows == 45 and result.decoded == 5


def test_verify_passes_an_intact_set(published):
    result = runner.invoke(app, ["verify", str(published), "--sample", "10"])
    assert result.exit_code == 0, result.output
    assert "intact published set" in result.output and "45 rows" in result.output and "10 sampled" in result.output
    listed = (published / "SHA256SUMS").read_text().splitlines()  # every file but SHA256SUMS itself
    assert len(listed) == sum(1 for p in published.rglob("*") if p.is_file()) - 1
    assert f"({len(listed)} files match SHA256SUMS," in result.output


def _copy(published: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(published, target)
    return target


def _shard(target: Path, split: str, i: int) -> Path:
    return next((target / "data").glob(f"{split}-{i:05d}-of-*.parquet"))


def _fails(target: Path, pattern: str) -> None:
    result = runner.invoke(app, ["verify", str(target)])
    assert result.exit_code == 1 and re.search(pattern, result.output), result.output


def test_verify_catches_a_flipped_byte(published, tmp_path):
    target = _copy(published, tmp_path)
    shard = _shard(target, "train", 1)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    _fails(target, rf"data/{shard.name}: SHA-256 mismatch")


def test_verify_catches_a_truncated_shard(published, tmp_path):
    target = _copy(published, tmp_path)
    shard = _shard(target, "validation", 0)
    shard.write_bytes(shard.read_bytes()[:-1000])
    _fails(target, rf"{shard.name}: SHA-256 mismatch")
    _rewrite_sums(target)  # even with checksums recomputed, the damaged file is named
    _fails(target, rf"{shard.name}: not a readable Parquet file")


def test_verify_catches_a_missing_shard(published, tmp_path):
    target = _copy(published, tmp_path)
    shard = _shard(target, "train", 0)
    shard.unlink()
    _fails(target, rf"data/{shard.name} is missing")
    _rewrite_sums(target)  # even when SHA256SUMS no longer lists it, the numbering gap is found
    _fails(target, rf"data/{shard.name} is missing")


def test_verify_catches_a_shard_from_another_build(published, labelled, tmp_path):
    other = tmp_path / "other"
    run_publish(
        PublishConfig(str(labelled), validation=0.4, seed=7, shard_bytes=SHARD_BYTES),
        str(other),
        RunContext(progress=False),
    )
    target = _copy(published, tmp_path)
    name = _shard(target, "validation", 0).name
    assert (other / "data" / name).is_file()
    shutil.copy(other / "data" / name, target / "data" / name)
    _fails(target, rf"data/{name}: SHA-256 mismatch")
    _rewrite_sums(target)
    _fails(target, rf"data/{name}: belongs to another dataset")


def test_verify_catches_an_edited_card(published, tmp_path):
    """README.md is listed in SHA256SUMS like the shards: an edit that leaves it a valid card is still caught."""
    target = _copy(published, tmp_path)
    card = (target / "README.md").read_text()
    (target / "README.md").write_text(card.replace("## Licence", "## Licence (edited)"))
    assert read_card((target / "README.md").read_text())[0] == read_card(card)[0]
    _fails(target, r"README.md: SHA-256 mismatch")


def test_verify_catches_unlisted_files_and_a_bad_card(published, tmp_path):
    target = _copy(published, tmp_path)
    (target / "data" / "extra.parquet").write_bytes(b"x")
    _fails(target, r"data/extra.parquet is not listed in SHA256SUMS")
    (target / "data" / "extra.parquet").unlink()
    card = (target / "README.md").read_text()
    (target / "README.md").write_text(card.replace("num_examples: 27", "num_examples: 28"))
    _rewrite_sums(target)
    _fails(target, r"row counts .* differ from the card's")
    (target / "SHA256SUMS").unlink()
    _fails(target, r"SHA256SUMS is missing")
    _fails(tmp_path / "nowhere", r"nowhere is not a folder")


def _rewrite_sums(target: Path) -> None:
    """What someone who 'fixes' a failing check with sha256sum would do."""
    files = sorted(
        p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file() and p.name != "SHA256SUMS"
    )
    (target / "SHA256SUMS").write_text(
        "".join(f"{hashlib.sha256((target / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    )


def test_verify_checks_build_and_label_folders(labelled, tmp_path):
    assert verify(str(labelled)).kind == "label" and verify(str(labelled)).rows == 2 * 45
    build = Path(json.loads((labelled / "label.json").read_text())["config"]["build"])
    assert verify(str(build)).rows == 5 + 45
    target = tmp_path / "b"
    shutil.copytree(build, target)
    shard = sorted((target / "distorted").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(VerifyError, match=f"distorted/{shard.name}: SHA-256 differs from build.json"):
        verify(str(target))


def test_info_summarises_each_stage(labelled, published):
    build = Path(json.loads((labelled / "label.json").read_text())["config"]["build"])
    assert summarise(build)[:2] == ["saqt build (complete)", "rows: 5 pristine, 45 distorted (with pixels)"]
    label_lines = summarise(labelled)
    assert label_lines[0] == "saqt label (complete)" and label_lines[1].startswith(
        "rows: 45 labelled images in 3 shards"
    )
    assert any("rule topk k=2" in line for line in label_lines)
    shards = len(list((published / "data").iterdir()))
    assert summarise(published)[1].startswith(f"rows: 27 train, 18 validation; {shards} shards")
    result = runner.invoke(app, ["info", str(build.parent / "bank")])
    assert result.exit_code == 0 and "labelled bank (synth, 3 references, proxy scores)" in result.output
    result = runner.invoke(app, ["info", str(build.parent)])
    assert result.exit_code == 2 and "holds no build.json" in result.output


def _section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', page)


def test_report_of_labels_has_every_section_and_embeds_everything(labelled, tmp_path):
    fidelity = tmp_path / "fidelity.json"
    fidelity.write_text(
        json.dumps(
            {
                "bank": "b",
                "encoder": "e",
                "references": 3,
                "predictors": {
                    "topk": {"srocc": 0.91, "plcc": 0.88, "per_type": {"1": 0.5}},
                    "mean": {"srocc": 0.85, "plcc": 0.8, "per_type": {}},
                },
            }
        )
    )
    page = render_report(labelled, images=3, fidelity=fidelity)
    assert _section_ids(page) == REPORT_SECTIONS
    assert self_contained(page)
    assert page.count('class="thumb"') == 3 * 9 and page.count('class="pristine"') == 3
    assert "not rendered" not in page and page.count('class="tname"') == 2 * len(TYPES)  # only the cells built
    assert "0.910" in page and "0.850" in page
    matches = pads.dataset(str(labelled / "labels")).to_table(columns=["pristine_id", "neighbours"]).to_pylist()
    nearest = {r["pristine_id"]: r["neighbours"][0] for r in matches}
    used = len(set(nearest.values()))
    assert f"{used} of 3 references are the nearest for at least one of 5 pristine images" in page


def test_report_of_a_build_shows_skipped_inputs(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(sample_paths()[1], folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    run_build(
        BuildConfig(source="folder", root=str(folder), size=SIZE, types=(1,), levels=(1, 5)),
        tmp_path / "b",
        RunContext(LocalExecutor(1), progress=False),
    )
    result = runner.invoke(app, ["report", str(tmp_path / "b"), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert _section_ids(page) == ["summary", "screen", "grid", "errors"] and self_contained(page)
    assert "broken.png" in page and page.count('class="thumb"') == 2


def test_report_of_a_published_set(published):
    page = render_report(published, images=1)
    assert _section_ids(page) == REPORT_SECTIONS
    assert page.count('class="thumb"') == 9 and "No fidelity figures given" in page


def test_report_refuses_a_folder_it_cannot_read(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "nothing to report" in result.output and not (tmp_path / "r.html").exists()


def test_publish_renders_a_recipe_only_set(labelled, tmp_path):
    build = Path(json.loads((labelled / "label.json").read_text())["config"]["build"])
    bank = labelled.parent / "bank"
    run_build(
        BuildConfig(size=SIZE, types=(10, 16), levels=(1, 5), limit=2, recipe_only=True),
        tmp_path / "b",
        RunContext(LocalExecutor(1), progress=False),
    )
    config = LabelConfig(build=str(tmp_path / "b"), bank=str(bank), encoder="effnet-lite0", rule="top1")
    run_label(replace(config, device="cpu"), tmp_path / "l", RunContext(progress=False))
    run_publish(PublishConfig(str(tmp_path / "l")), str(tmp_path / "recipes"), RunContext(progress=False))
    run_publish(PublishConfig(str(tmp_path / "l"), render=True), str(tmp_path / "pixels"), RunContext(progress=False))
    assert read_card((tmp_path / "recipes" / "README.md").read_text())[0]["saqt"]["recipe_only"] is True
    recipes = pads.dataset(str(tmp_path / "recipes" / "data")).to_table()
    assert recipes.num_rows == 8 and recipes.column("image").null_count == 8
    assert verify(str(tmp_path / "recipes")).decoded == 0
    rendered = {r["image_id"]: r for r in pads.dataset(str(tmp_path / "pixels" / "data")).to_table().to_pylist()}
    full = {r["image_id"]: r["image"] for r in pads.dataset(str(build / "distorted")).to_table().to_pylist()}
    assert len(rendered) == 8 and set(rendered) <= set(full)  # the same images, selected from the same sample
    assert all(np.array_equal(decode_image(r["image"]["bytes"]), decode_image(full[i])) for i, r in rendered.items())
    assert verify(str(tmp_path / "pixels"), sample=8).decoded == 8


def test_verify_decodes_the_sampled_images(published, tmp_path):
    target = _copy(published, tmp_path)
    shard = _shard(target, "train", 0)
    table = pq.read_table(shard)
    images = table.column("image").to_pylist()
    images[-1] = {"bytes": images[-1]["bytes"][:200], "path": images[-1]["path"]}  # a cut-off PNG
    pq.write_table(
        table.set_column(
            table.schema.get_field_index("image"),
            table.schema.field("image"),
            pa.array(images, table.schema.field("image").type),
        ),
        shard,
    )
    _rewrite_sums(target)
    assert runner.invoke(app, ["verify", str(target), "--sample", "0"]).exit_code == 0  # only decoding can tell
    result = runner.invoke(app, ["verify", str(target), "--sample", "1000"])
    bad = table.column("image_id")[-1].as_py()
    assert result.exit_code == 1 and f"{shard.name}: {bad} does not decode" in result.output, result.output


def test_card_passes_the_hubs_offline_metadata_checks(published):
    """What can be checked without the Hub's /api/validate-yaml (network): huggingface_hub parses the card into
    DatasetCardData and back unchanged; `datasets` reads its configs and its dataset_info into the same Features as
    the shards' own schema; task category and size bucket are ones the Hub knows; the citations are CITATION.cff's."""
    datasets = pytest.importorskip("datasets", reason="the `datasets` test dependency is not installed")
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs, known_task_ids
    from huggingface_hub import DatasetCard

    text = (published / "README.md").read_text()
    card, (meta, body) = DatasetCard(text), read_card(text)
    assert card.data.to_dict() == meta
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert [f["split"] for f in configs["default"]["data_files"]] == ["train", "validation"]
    info = DatasetInfosDict.from_dataset_card_data(card.data)["default"]
    shard = next((published / "data").glob("train-*.parquet"))
    assert info.features == datasets.Features.from_arrow_schema(pq.read_schema(shard))
    assert isinstance(info.features["image"], datasets.Image)
    assert set(meta["task_categories"]) <= set(known_task_ids) and "image-quality-assessment" in meta["tags"]
    sizes = json.loads((Path(datasets.__file__).parent / "utils" / "resources" / "size_categories.json").read_text())
    assert set(meta["size_categories"]) <= set(sizes)

    cff = (Path(__file__).resolve().parents[2] / "CITATION.cff").read_text()
    dois = set(re.findall(r"doi: (\S+)", cff))
    assert len(dois) == 2 and all(f"doi     = {{{d}}}" in body or f"doi       = {{{d}}}" in body for d in dois)
    assert "arXiv:2408.03885" in body and "## Citation" in body


def test_run_constants_move_to_the_card_and_rows_keep_what_varies(published, labelled):
    """The label columns with one value per run are recorded once, in the card, with the values the labels hold; the
    published rows keep the columns glint and users read, with the labels' values."""
    meta, body = read_card((published / "README.md").read_text())
    rows = pads.dataset(str(published / "data")).to_table()
    labels = pads.dataset(str(labelled / "saqt-iqa")).to_table()
    constants = meta["saqt"]["run_constants"]
    for name in ("score_scale", "bank_proxy", "encoder", "encoder_weights", "rule", "k", "temperature"):
        assert labels.column(name).unique().to_pylist() == [constants[name]], name
    assert labels.column("bank").unique().to_pylist() == ["synth:bank"]  # the bank folder's name stays home:
    assert constants["bank"] == "synth" and "bank" not in rows.column_names  # the card names the bank's kind
    assert not set(constants) & set(rows.column_names) and set(constants) <= set(labels.column_names)
    assert {"image_id", "pristine_id", "dist_type", "level", "seed", "image", "score"} <= set(rows.column_names)
    for name in ("source_class", "orig_width", "orig_height", "jpeg_quality", "upscale_factor"):
        assert name in rows.column_names and f"| `{name}` |" in body
    mine = {r["image_id"]: r for r in labels.to_pylist()}
    for row in rows.to_pylist():
        source = mine[row["image_id"]]
        assert (row["score"], row["neighbours"], row["similarities"]) == (
            source["score"],
            source["neighbours"],
            source["similarities"],
        )
        assert row["source_class"] is None  # the bundled sample has no classes


def test_a_shard_closes_at_its_row_limit_even_when_its_images_are_few_bytes(published, labelled, tmp_path, monkeypatch):
    """Rows without pixels never fill --shard-size; a shard still closes after SHARD_ROWS rows (its row groups'
    metadata is held until then), and the rows are the same as in one shard."""
    import saqt.publish.publish_stage as publish

    monkeypatch.setattr(publish, "SHARD_ROWS", 5)
    out = tmp_path / "capped"
    run_publish(PublishConfig(str(labelled), validation=0.4, shard_bytes=2**40), str(out), RunContext(progress=False))
    for split in ("train", "validation"):
        shards = sorted((out / "data").glob(f"{split}-*.parquet"))
        rows = [pq.ParquetFile(p).metadata.num_rows for p in shards]
        assert len(shards) > 1 and all(p.name.endswith(f"-of-{len(shards):05d}.parquet") for p in shards)
        assert all(5 <= n < 5 + publish.ROW_GROUP for n in rows[:-1]) and 0 < rows[-1] < 5 + publish.ROW_GROUP

    def scores(root: Path) -> dict:
        table = pads.dataset(str(root / "data")).to_table(columns=["image_id", "score"])
        return dict(zip(table.column("image_id").to_pylist(), table.column("score").to_pylist(), strict=True))

    assert scores(out) == scores(published)
    assert verify(str(out)).decoded > 0

"""Publishing a source with restrictive terms: the licence warning, recipe-only sets and re-rendering them as their
card says, and the per-row columns users filter on. Real builds of an ImageNet-layout folder of real photos."""

from __future__ import annotations

import re
import shlex
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.executors import LocalExecutor
from pipelines.saqt_cli import app
from saqt.build.build_stage import BuildConfig, run_build
from saqt.build.sources import sample_paths, source_spec
from saqt.core.context import RunContext
from saqt.core.images import decode_image
from saqt.label.label_stage import LabelConfig, run_label
from saqt.label.synth_stage import SynthConfig, run_synth_bank
from saqt.publish.publish_stage import LicenceWarning, PublishConfig, PublishError, card_license, run_publish
from saqt.read.card import read_card

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

runner = CliRunner()
SIZE = (192, 176)
SYNSETS = {"astronaut.png": "n09999901", "chelsea.png": "n02123045", "coffee.png": "n07920052"}
JPEG_QUALITY = 95  # the photos are stored as JPEGs of this IJG quality: the published estimate must say so
PRIVATE = "home-of-john-roe"


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    """An ImageNet train layout (train/<synset>/<name>.JPEG) of three real photos, JPEG quality 95."""
    root = tmp_path_factory.mktemp(PRIVATE) / "imagenet"
    for path in sample_paths():
        if path.name in SYNSETS:
            folder = root / "train" / SYNSETS[path.name]
            folder.mkdir(parents=True)
            Image.open(path).convert("RGB").save(folder / f"{path.stem}.JPEG", quality=JPEG_QUALITY)
    return root


@pytest.fixture(scope="module")
def labelled(imagenet, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp(PRIVATE)
    build = BuildConfig(source="imagenet", root=str(imagenet), size=SIZE, types=(1, 16), levels=(1, 4))
    run_build(
        build,
        root / "build",
        RunContext(
            LocalExecutor(1),
            progress=False,
            command=f"saqt build --source imagenet --root {imagenet} --out {root / 'build'}",
        ),
    )
    run_synth_bank(
        SynthConfig(source="sample-bank", size=SIZE, limit=2, metric="psnr"),
        root / "bank",
        RunContext(LocalExecutor(1), progress=False),
    )
    config = LabelConfig(build=str(root / "build"), bank=str(root / "bank"), encoder="effnet-lite0", rule="top1")
    run_label(replace(config, device="cpu"), root / "labels", RunContext(progress=False))
    return root / "labels"


def test_pixels_of_a_restricted_source_warn_in_one_line(labelled, tmp_path):
    with pytest.warns(LicenceWarning) as caught:
        run_publish(PublishConfig(str(labelled)), str(tmp_path / "lib"), RunContext(progress=False))
    [message] = [str(w.message) for w in caught]
    assert "imagenet" in message and "non-commercial" in message and "--recipe-only" in message
    result = runner.invoke(app, ["publish", "--labels", str(labelled), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "ImageNet terms of access" in warned[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pixels, no warning
        run_publish(
            PublishConfig(str(labelled), recipe_only=True), str(tmp_path / "recipes"), RunContext(progress=False)
        )


def test_other_licence_comes_with_its_name_and_link(labelled, tmp_path):
    run_publish(PublishConfig(str(labelled), recipe_only=True), str(tmp_path / "p"), RunContext(progress=False))
    meta, body = read_card((tmp_path / "p" / "README.md").read_text())
    assert meta["license"] == "other" and meta["license_name"] == "imagenet-terms-of-access"
    assert meta["license_link"].startswith("https://") and f"]({meta['license_link']})" in body
    assert card_license(PublishConfig("l"), source_spec("sample")) == {"license": "cc0-1.0"}
    mine = PublishConfig("l", license="other", license_name="my-terms", license_link="https://example.org/terms")
    assert card_license(mine, source_spec("imagenet"))["license_name"] == "my-terms"
    for bad in ({"license": "other"}, {"license": "mit", "license_link": "https://example.org"}):
        with pytest.raises(PublishError, match="--license"):
            PublishConfig("l", **bad)
    with pytest.raises(PublishError, match="contradict"):
        PublishConfig("l", render=True, recipe_only=True)


def test_rows_carry_what_users_filter_on(labelled, tmp_path):
    run_publish(PublishConfig(str(labelled)), str(tmp_path / "p"), RunContext(progress=False, warn=lambda line: None))
    rows = pads.dataset(str(tmp_path / "p" / "data")).to_table().to_pylist()
    originals = {p.stem: Image.open(p).size for p in sample_paths() if p.name in SYNSETS}
    assert len(rows) == 3 * 4
    for row in rows:
        stem = Path(row["source_key"]).stem
        assert row["source_key"] == f"train/{SYNSETS[stem + '.png']}/{stem}.JPEG"
        assert row["source_class"] == SYNSETS[stem + ".png"]
        assert (row["orig_width"], row["orig_height"]) == originals[stem]
        assert row["jpeg_quality"] == JPEG_QUALITY
        w, h = originals[stem]
        assert row["upscale_factor"] == pytest.approx(max(SIZE[0] / w, SIZE[1] / h), rel=1e-6)
        assert len(row["neighbours"]) == len(row["similarities"]) == 1 and -1 <= row["similarities"][0] <= 1


def test_recipe_only_set_re_renders_as_its_card_says(labelled, imagenet, tmp_path, monkeypatch):
    """Follow the card of a recipe-only set: list its source keys, run its build command on one's own copy of the
    source, join on image_id: every image is the one a set with pixels holds."""
    recipes, pixels = tmp_path / "recipes", tmp_path / "pixels"
    result = runner.invoke(app, ["publish", "--labels", str(labelled), "--out", str(recipes), "--recipe-only"])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    run_publish(PublishConfig(str(labelled)), str(pixels), RunContext(progress=False, warn=lambda line: None))
    meta, body = read_card((recipes / "README.md").read_text())
    assert meta["saqt"]["recipe_only"] is True and "recipe-only" in meta["tags"]
    rows = pads.dataset(str(recipes / "data")).to_table()
    assert rows.column("image").null_count == rows.num_rows == 12
    assert runner.invoke(app, ["verify", str(recipes)]).exit_code == 0

    snippet = re.search(r"## Re-rendering the images.*?```sh\n(.*?)```", body, re.S)[1].splitlines()
    assert len(snippet) == 2 and snippet[0].startswith("python -c ") and snippet[1].startswith("saqt build ")
    monkeypatch.chdir(recipes)
    exec(shlex.split(snippet[0])[2], {})  # noqa: S102 - the card's own snippet, run as a user would
    args = shlex.split(snippet[1].replace("<your copy of the source>", str(imagenet)))[1:]
    built = runner.invoke(app, [*args[:-1], str(tmp_path / "rebuilt")])  # --out rebuilt, kept out of the set
    assert built.exit_code == 0, built.output
    rebuilt = {
        r["image_id"]: r["image"] for r in pads.dataset(str(tmp_path / "rebuilt" / "distorted")).to_table().to_pylist()
    }
    published = pads.dataset(str(pixels / "data")).to_table().to_pylist()
    assert set(rebuilt) == {r["image_id"] for r in published} == set(rows.column("image_id").to_pylist())
    for row in published:
        assert np.array_equal(decode_image(rebuilt[row["image_id"]]), decode_image(row["image"]["bytes"]))


def test_no_local_path_of_the_publisher_reaches_the_set(labelled, imagenet, tmp_path):
    """Published from folders named PRIVATE with command lines naming them: no byte of the set (raw, or decoded
    from Parquet: rows, schema metadata) holds that name or the source's root, and ``bank`` is not a column."""
    out = tmp_path / "p"
    command = f"saqt publish --labels={labelled} --out {out} --push-to-hub my-lab/x --token hf_SECRET"
    run_publish(
        PublishConfig(str(labelled)), str(out), RunContext(command=command, progress=False, warn=lambda line: None)
    )
    secrets = [
        PRIVATE.encode(),
        str(imagenet).encode(),
        str(labelled.parent).encode(),
        str(tmp_path).encode(),
        b"SECRET",
    ]
    for path in (p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        texts = [data]
        if path.suffix == ".parquet":
            table = pads.dataset(str(path)).to_table()
            texts.append(repr(table.schema.metadata).encode())
            texts.append(repr(table.drop_columns(["image"]).to_pylist()).encode())
            assert "bank" not in table.column_names and "encoder" not in table.column_names
        for text in texts:
            assert not [s for s in secrets if s in text], path
    card = (out / "README.md").read_text()
    assert "saqt publish --labels=<labels> --out <out> --push-to-hub my-lab/x --token <token>" in card
    assert "saqt build --source imagenet --root <root> --out <out>" in card  # the commands, without their paths

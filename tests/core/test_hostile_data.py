"""Hostile data for the ``saqt`` stages and ``glint predict`` (issue 21, its data cases): non-finite scores, files in
``--out`` that the toolkit did not write, FIFOs named like images, the image format policy, option bounds, free text in
the dataset card, and malformed release files for ``saqt fetch``. Each test failed before the fix (but the controls:
own output still replaced, palette images still decoded).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import shutil
import socket
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy.io import savemat
from typer.testing import CliRunner

from glint.data import load_table
from pipelines.executors import LocalExecutor
from pipelines.saqt_cli import app
from saqt.build.build_stage import BuildConfig, run_build
from saqt.build.pristine import prepare_pristine
from saqt.build.screen import Screen
from saqt.build.sources import SourceItem, sample_paths
from saqt.core.context import RunContext
from saqt.core.errors import PublishError
from saqt.core.images import ImageDecodeError, decode_image
from saqt.core.scores import ScoreError
from saqt.core.shards import sha256_file
from saqt.fetch.archives import FetchError, FetchOptions, fetch_dataset, fetch_sources
from saqt.label.label_stage import LabelConfig, run_label
from saqt.label.reference_bank import BankError, load_bank
from saqt.label.stage_configs import ConfigError, PublishConfig
from saqt.label.synth_stage import SynthConfig, run_synth_bank
from saqt.publish.publish_stage import FIELD_MEANINGS, run_publish
from saqt.read.card import read_card, render_card

runner = CliRunner()
SMALL = ["--size", "96x64", "--types", "1", "--levels", "1"]
QUIET = RunContext(progress=False)
FIFO_WAIT = 30  # seconds a run may take before the FIFO it blocks on is opened for writing, to free it


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> Path:
    """A small build (5 sample photos, 1 cell, 3 units), a 2-reference PSNR bank, its labels (rule mean) and their
    published set."""
    root = tmp_path_factory.mktemp("sets")
    one = RunContext(LocalExecutor(1), progress=False)
    run_build(BuildConfig(size=(96, 64), types=(1,), levels=(1,), images_per_shard=2), root / "build", one)
    run_synth_bank(SynthConfig(source="sample-bank", size=(96, 64), limit=2, metric="psnr"), root / "bank", one)
    label = LabelConfig(build=str(root / "build"), bank=str(root / "bank"), rule="mean", device="cpu")
    run_label(label, root / "labels", QUIET)
    run_publish(PublishConfig(str(root / "labels")), str(root / "published"), QUIET)
    return root


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(sample_paths()[1]).convert("RGB").resize((200, 150))


def one_line_failure(result, fragment: str, code: int = 2) -> None:
    """The command ended with ``code`` on a one-line message holding ``fragment``, never an uncaught exception."""
    assert result.exit_code == code and isinstance(result.exception, SystemExit), (result.output, result.exception)
    assert any(fragment in line for line in result.output.splitlines()), result.output
    assert "Traceback" not in result.output, result.output


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def poison(shard: Path, value: float) -> None:
    """Set the first row's score of a Parquet shard to ``value``, keeping its schema (and the set id it carries)."""
    table = pq.read_table(shard)
    scores = table.column("score").to_pylist()
    scores[0] = value
    i = table.schema.get_field_index("score")
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(scores, table.schema.field(i).type)), shard)


def reseal_stage(folder: Path, manifest: str, rel: str) -> None:
    """Record the new size and SHA-256 of ``rel`` in the stage's manifest, so only a content check can tell."""
    path = folder / manifest
    m = json.loads(path.read_text())
    entries = [e for unit in m["done"].values() for e in unit["files"].values()] + list(m["files"].values())
    for entry in entries:
        if entry["path"] == rel:
            entry.update(sha256=sha256_file(folder / rel), bytes=(folder / rel).stat().st_size)
    path.write_text(json.dumps(m, indent=2, sort_keys=True))


# --- non-finite scores: label, publish, verify ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("table", "value"), [("labels", math.nan), ("saqt-iqa", math.inf)])
def test_verify_refuses_a_label_folder_holding_a_non_finite_score(sets, tmp_path, table, value):
    labels = copy(sets / "labels", tmp_path / "labels")
    poison(labels / table / "part-00001.parquet", value)
    reseal_stage(labels, "label.json", f"{table}/part-00001.parquet")
    result = runner.invoke(app, ["verify", str(labels)])
    one_line_failure(result, f"{table}/part-00001.parquet: 1 scores are NaN or infinite (row 0)", 1)


@pytest.mark.slow
def test_publish_refuses_labels_holding_a_nan_score(sets, tmp_path):
    labels = copy(sets / "labels", tmp_path / "labels")
    poison(labels / "saqt-iqa" / "part-00002.parquet", math.nan)
    reseal_stage(labels, "label.json", "saqt-iqa/part-00002.parquet")
    result = runner.invoke(app, ["publish", "--labels", str(labels), "--out", str(tmp_path / "pub")])
    one_line_failure(result, "part-00002.parquet: 1 scores are NaN or infinite")
    assert not (tmp_path / "pub").exists()


@pytest.mark.slow
def test_verify_refuses_a_published_set_holding_a_nan_score(sets, tmp_path):
    published = copy(sets / "published", tmp_path / "pub")
    rel = "data/train-00000-of-00001.parquet"
    poison(published / rel, math.nan)
    sums = (published / "SHA256SUMS").read_text().splitlines()
    resealed = [f"{sha256_file(published / rel)}  {rel}" if line.endswith(rel) else line for line in sums]
    (published / "SHA256SUMS").write_text("\n".join(resealed) + "\n")
    one_line_failure(runner.invoke(app, ["verify", str(published)]), f"{rel}: 1 scores are NaN or infinite", 1)


@pytest.mark.slow
def test_verify_refuses_a_bank_folder_holding_a_nan_score_and_loading_it_names_the_cell(sets, tmp_path):
    bank = copy(sets / "bank", tmp_path / "bank")
    rows = list(csv.reader((bank / "scores.csv").open()))
    score = rows[0].index("score")
    rows[3][score] = "nan"
    with open(bank / "scores.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    reseal_stage(bank, "bank.json", "scores.csv")
    one_line_failure(runner.invoke(app, ["verify", str(bank)]), "scores.csv:4: score 'nan' is not a finite number", 1)
    with pytest.raises(BankError, match=r"scores\.csv:4: score 'nan' is not a finite number"):
        load_bank(bank)


@pytest.mark.slow
def test_label_refuses_a_normalisation_that_leaves_scores_infinite(sets, tmp_path):
    out = tmp_path / "labels"
    huge = "9" * 400  # parses as a float: infinity
    args = ["label", "--build", str(sets / "build"), "--bank", str(sets / "bank"), "--out", str(out)]
    result = runner.invoke(app, [*args, "--rule", "mean", "--normalise", f"minmax:0:{huge}"])
    one_line_failure(result, "scores are NaN or infinite")
    assert not list(out.rglob("*.parquet"))


def test_a_label_table_with_a_nan_score_is_refused_in_the_words_of_every_score_check(tmp_path):
    (tmp_path / "1024x768").mkdir()
    (tmp_path / "koniq10k_scores_and_distributions.csv").write_text("image_name,MOS_zscore\na.jpg,nan\n")
    with pytest.raises(ScoreError, match=r"csv:2: score 'nan' is not a finite number$"):
        load_table("koniq10k", tmp_path)


# --- only files the toolkit wrote are replaced ------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_build_never_replaces_an_errors_jsonl_it_did_not_write(tmp_path, overwrite):
    out = tmp_path / "out"
    out.mkdir()
    (out / "errors.jsonl").write_text("my own notes\n")
    result = runner.invoke(app, ["build", "--out", str(out), "--limit", "1", *SMALL, *overwrite])
    one_line_failure(result, "errors.jsonl is in the way")
    assert (out / "errors.jsonl").read_text() == "my own notes\n" and sorted(os.listdir(out)) == ["errors.jsonl"]


@pytest.mark.parametrize("text", ['{"model": "mine", "stage": "build"}', "not json", '{"stage": "build"}'])
def test_build_overwrite_never_replaces_a_build_json_it_did_not_write(tmp_path, text):
    out = tmp_path / "out"
    out.mkdir()
    (out / "build.json").write_text(text)
    for overwrite in ([], ["--overwrite"]):
        result = runner.invoke(app, ["build", "--out", str(out), "--limit", "1", *SMALL, *overwrite])
        one_line_failure(result, "is not a build manifest saqt wrote")
        assert (out / "build.json").read_text() == text and sorted(os.listdir(out)) == ["build.json"]


@pytest.mark.slow
def test_build_overwrite_still_replaces_its_own_output(sets, tmp_path):
    out = copy(sets / "build", tmp_path / "build")
    result = runner.invoke(app, ["build", "--out", str(out), "--limit", "1", *SMALL, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "build.json").read_text())["counts"]["pristine"] == 1


# --- FIFOs, sockets and devices are listed with a reason, never opened -----------------------------------------


def build_folder(root: Path, out: Path, *options: str):
    """``saqt build --source folder`` of ``root`` into ``out`` at the small test settings."""
    return runner.invoke(app, ["build", "--source", "folder", "--root", str(root), "--out", str(out), *options, *SMALL])


def build_errors(out: Path) -> list[dict]:
    """The lines of a build's errors.jsonl."""
    return [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]


def run_beside_fifo(fifo: Path, call):
    """``call()``, with a watchdog that opens ``fifo`` for writing (ending any read blocked on it) if the call is
    still running after FIFO_WAIT seconds; returns (result, whether the call blocked)."""
    done, blocked = threading.Event(), []

    def watchdog():
        if not done.wait(FIFO_WAIT):
            blocked.append(True)
            while not done.is_set():
                with contextlib.suppress(OSError):  # no reader yet
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                done.wait(0.1)

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    try:
        return call(), bool(blocked)
    finally:
        done.set()
        thread.join()


def test_special_files_are_named_and_never_opened(tmp_path):
    from saqt.core.images import NotRegularFile, not_regular, open_regular

    os.mkfifo(tmp_path / "pipe.png")
    assert not_regular(tmp_path / "pipe.png") == "a FIFO, not a regular file: never read"
    assert not_regular("/dev/null") == "a device, not a regular file: never read"
    assert not_regular(tmp_path) == "a folder, not a regular file: never read"
    assert not_regular(tmp_path / "absent.png") == "no such file"
    with tempfile.TemporaryDirectory(dir="/tmp") as short, socket.socket(socket.AF_UNIX) as sock:
        sock.bind(f"{short}/s.png")  # a socket's path must be short
        assert not_regular(f"{short}/s.png") == "a socket, not a regular file: never read"
        with pytest.raises(ImageDecodeError, match="s.png: a socket, not a regular file: never read$"):
            decode_image(f"{short}/s.png")  # opening a socket fails (ENXIO): named as such
    with pytest.raises(NotRegularFile, match="a FIFO"):
        run_beside_fifo(tmp_path / "pipe.png", lambda: open_regular(tmp_path / "pipe.png"))


def test_build_logs_a_fifo_named_like_an_image_and_builds_the_rest(photo, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    photo.save(root / "real.png")
    os.mkfifo(root / "pipe.png")
    out = tmp_path / "out"
    result, blocked = run_beside_fifo(root / "pipe.png", lambda: build_folder(root, out))
    assert not blocked and result.exit_code == 0, result.output
    errors = build_errors(out)
    assert errors == [{"key": "pipe.png", "reason": "a FIFO, not a regular file: never read", "stage": "list"}]
    assert json.loads((out / "build.json").read_text())["counts"]["pristine"] == 1


@pytest.fixture(scope="module")
def model():
    """The smoke-test GlintIQA model of ``glint predict --random-init`` (random weights), built once."""
    from glint.checkpoint import random_model

    with pytest.warns(UserWarning, match="RANDOM weights"):
        return random_model()


@pytest.mark.slow
def test_predict_lists_a_fifo_with_its_reason_whether_named_or_in_a_folder(model, photo, tmp_path):
    from glint.predict import image_paths, score_files

    folder = tmp_path / "in"
    folder.mkdir()
    photo.save(folder / "real.png")
    os.mkfifo(folder / "pipe.png")
    assert image_paths([folder]) == [folder / "pipe.png", folder / "real.png"]  # listed, to carry its reason
    for paths in ([folder / "pipe.png"], image_paths([folder / "pipe.png"])):
        rows, blocked = run_beside_fifo(folder / "pipe.png", lambda p=paths: score_files(model, p, 1, "cpu"))
        assert not blocked
        assert rows == [(folder / "pipe.png", None, f"{folder / 'pipe.png'}: a FIFO, not a regular file: never read")]


# --- one image format policy ------------------------------------------------------------------------------------


def encoded(image: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, **save)
    return buf.getvalue()


def screened(data: bytes, tmp_path: Path, screen: Screen) -> str | None:
    """Why the screen refuses the image ``data`` as a pristine source of a 96x64 build, or None if it passes."""
    path = tmp_path / hashlib.sha256(data).hexdigest()[:12]
    path.write_bytes(data)
    try:
        prepare_pristine(SourceItem(path.name, str(path)), (96, 64), screen, 10**8)
    except Exception as err:  # ImageDecodeError: the reason
        return str(err)
    return None


def test_the_screen_keeps_only_full_colour_lossless_sources_and_good_jpegs(photo, tmp_path):
    turned = photo.rotate(90, expand=True).resize(photo.size)
    cases = {
        "png": (encoded(photo, format="PNG"), None),
        "jpeg 95": (encoded(photo, format="JPEG", quality=95), None),
        "lossless webp": (encoded(photo, format="WEBP", lossless=True), None),
        "lossless animated webp": (
            encoded(photo, format="WEBP", lossless=True, save_all=True, append_images=[turned]),
            None,
        ),
        "palette png": (
            encoded(photo.quantize(256), format="PNG"),
            "not pristine: PNG of at most 256 colours (mode P)",
        ),
        "gif": (encoded(photo, format="GIF"), "not pristine: GIF of at most 256 colours (mode P)"),
        "lossy webp": (encoded(photo, format="WEBP", quality=90), "not pristine: lossy WebP"),
        "lossy animated webp": (
            encoded(photo, format="WEBP", quality=90, save_all=True, append_images=[turned]),
            "not pristine: lossy WebP",
        ),
    }
    for name, (data, reason) in cases.items():
        found = screened(data, tmp_path, Screen())
        assert found == (
            None if reason is None else f"{reason} (--min-jpeg-quality 0 turns the compression checks off)"
        )
        assert screened(data, tmp_path, Screen(min_jpeg_quality=0)) is None, name  # the compression checks off


def test_build_on_a_folder_screens_a_gif_by_its_content(photo, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    photo.save(root / "a.png")
    photo.save(root / "b.gif")
    out = tmp_path / "out"
    result = build_folder(root, out)
    assert result.exit_code == 0, result.output
    assert [(e["key"], e["stage"]) for e in build_errors(out)] == [("b.gif", "screen")]
    result = build_folder(root, tmp_path / "o3", "--min-jpeg-quality", "0")
    assert result.exit_code == 0 and json.loads((tmp_path / "o3" / "build.json").read_text())["counts"]["pristine"] == 2


def test_palette_images_are_still_decoded_everywhere_transparency_onto_white(tmp_path):
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[:, :30] = (200, 30, 40, 255)  # left: opaque red; right: fully transparent
    Image.fromarray(rgba, "RGBA").quantize(4).save(tmp_path / "p.png", transparency=0)
    assert Image.open(tmp_path / "p.png").mode == "P"
    pixels = decode_image(tmp_path / "p.png")
    assert (pixels[:, 30:] == 255).all() and (pixels[:, :30] == (200, 30, 40)).all()


@pytest.mark.slow
def test_predict_lists_and_scores_an_animated_gif_by_its_first_frame(model, photo, tmp_path):
    from glint.predict import image_paths, score_files

    folder, still, second = tmp_path / "in", tmp_path / "still", tmp_path / "second"
    for f in (folder, still, second):
        f.mkdir()
    turned = photo.rotate(90, expand=True).resize(photo.size)
    photo.save(folder / "anim.gif", save_all=True, append_images=[turned], duration=100)
    assert Image.open(folder / "anim.gif").n_frames == 2
    first = decode_image(folder / "anim.gif")
    Image.fromarray(first).save(still / "anim.gif", format="PNG")  # the first frame, same name: same crops
    turned.save(second / "anim.gif", format="PNG")  # the second frame
    paths = image_paths([folder])
    assert paths == [folder / "anim.gif"]
    scored = [score_files(model, [p], 1, "cpu")[0] for p in (*paths, still / "anim.gif", second / "anim.gif")]
    (_, score, error), (_, first_frame, _), (_, second_frame, _) = scored
    assert error is None and score == first_frame != second_frame


# --- option bounds ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["build", "--out", "o"], ["bank", "synth", "--out", "o"]])
@pytest.mark.parametrize("value", ["-5", "0"])
def test_min_side_below_one_is_refused_at_parsing(command, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*command, "--min-side", value])
    assert result.exit_code == 2 and "Invalid value for '--min-side'" in result.output, result.output
    assert not (tmp_path / "o").exists()
    for config, given in ((BuildConfig, {}), (SynthConfig, {"metric": "psnr"})):
        with pytest.raises(ConfigError, match="--min-side must be at least 1"):
            config(min_side=int(value), **given)


# --- free text in the dataset card ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "link", "fragment"),
    [
        ("x](javascript:alert(1))", "https://example.org/terms", "--license-name"),
        ("My Terms", "https://example.org/terms", "--license-name"),
        ("my-terms", "javascript:alert(1)", "--license-link"),
        ("my-terms", "https://example.org/a) [click](https://evil.example", "--license-link"),
        ("my-terms", "https://example.org/\n# heading", "--license-link"),
    ],
)
def test_licence_name_and_link_are_a_slug_and_an_http_url(sets, tmp_path, name, link, fragment):
    with pytest.raises(PublishError, match=fragment):
        PublishConfig("l", license="other", license_name=name, license_link=link)
    args = ["publish", "--labels", str(sets / "labels"), "--out", str(tmp_path / "p"), "--license", "other"]
    result = runner.invoke(app, [*args, "--license-name", name, "--license-link", link])
    one_line_failure(result, fragment)
    assert not (tmp_path / "p").exists()
    with pytest.raises(PublishError, match="--license "):
        PublishConfig("l", license="MIT <b>")
    good = PublishConfig("l", license="other", license_name="my-terms-1.0", license_link="https://example.org/t?a=1")
    assert good.license_link == "https://example.org/t?a=1"


@pytest.mark.slow
def test_free_text_in_the_provenance_cannot_change_the_cards_markdown(sets):
    markdown_it = pytest.importorskip("markdown_it")
    meta, _ = read_card((sets / "published" / "README.md").read_text())
    p = meta["saqt"]["provenance"]
    p["commands"].append('saqt label --matches "```\n# Pwned <script>x</script>"')
    p["encoder"] = {"id": "matches:a`b<img src=x>.csv", "weights": "w|``x``"}
    p["bank"].update(proxy=True, score_meaning="<img src=y> [link](https://evil.example) *bold*")
    meta["saqt"]["run_constants"]["encoder"] = "a|b`c"
    text = render_card(meta, list(FIELD_MEANINGS.items()))
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(text.split("\n---\n", 1)[1])
    assert "<img" not in html and "<script" not in html and "<h1>Pwned" not in html
    assert 'href="https://evil.example"' not in html and "<em>bold</em>" not in html
    assert "<code>a`b&lt;img src=x&gt;.csv</code>" in html and "<code>w|``x``</code>" in html
    assert "<td><code>&quot;a|b`c&quot;</code></td>" in html  # one cell: the pipe does not split the row
    assert "```\\x0a# Pwned &lt;script&gt;x&lt;/script&gt;&quot;\n</code></pre>" in html  # one line, in its block


# --- saqt fetch: release files that are not what they should be ------------------------------------------------


def quiet(**kw) -> FetchOptions:
    return FetchOptions(backoff=0.0, say=lambda _: None, **kw)


def mat_bytes(name: str, value) -> bytes:
    buf = io.BytesIO()
    savemat(buf, {name: value})
    return buf.getvalue()


def clive_zip(folder: Path, images: bytes, mos: np.ndarray) -> Path:
    members = {
        "Data/AllImages_release.mat": images,
        "Data/AllMOS_release.mat": mat_bytes("AllMOS_release", mos[None, :]),
        "Data/AllStdDev_release.mat": mat_bytes("AllStdDev_release", np.ones((1, len(mos)))),
    }
    folder.mkdir()
    with zipfile.ZipFile(folder / "ChallengeDB_release.zip", "w") as z:
        for name, data in members.items():
            z.writestr(f"ChallengeDB_release/{name}", data)
    return folder


@pytest.mark.parametrize(
    ("images", "mos", "fragment"),
    [
        (b"", [1.0, 2.0], "AllImages_release.mat is not a MATLAB file of the release"),
        (b"<html>Box: sign in</html>", [1.0, 2.0], "AllImages_release.mat is not a MATLAB file of the release"),
        (None, [1.0, np.nan], "AllMOS_release.mat entry 2 (b.bmp): score nan is not a finite number"),
    ],
)
def test_clive_release_files_that_are_not_the_releases_are_one_line(tmp_path, images, mos, fragment):
    names = np.array([["a.bmp"], ["b.bmp"]], dtype=object)
    data = mat_bytes("AllImages_release", names) if images is None else images
    downloads = clive_zip(tmp_path / "browser", data, np.array(mos))
    with pytest.raises(FetchError) as err:
        fetch_dataset(fetch_sources()["clive"], tmp_path / "d", quiet(from_dir=downloads))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_tid2013_label_file_in_latin1_is_one_line_naming_its_line(tmp_path):
    release = tmp_path / "d" / "tid2013" / "tid2013"
    (release / "reference_images").mkdir(parents=True)
    (release / "distorted_images").mkdir()
    (release / "reference_images" / "I01.BMP").write_bytes(b"BM")
    (release / "mos_with_names.txt").write_bytes("5.51429 i01_01_1.bmp\n4.5 i01_01_é.bmp\n".encode("latin-1"))
    with pytest.raises(FetchError) as err:
        fetch_dataset(fetch_sources()["tid2013"], tmp_path / "d", quiet())
    assert str(err.value) == (
        f"{release / 'mos_with_names.txt'}:2: byte 0xe9 is not UTF-8 text; the release's file is ASCII: fetch it "
        "again or convert it to UTF-8"
    )
    assert not (release / "TID2013.csv").exists()

"""The pristine screen on real photos (Kodak24, CLIVE) re-encoded at known sizes and JPEG qualities: defaults,
refusals with their reasons and counts, duplicates, topping up to --limit, the no-resample guarantee for
512 x 384 inputs, bank synth, and the dataset card's record of looser settings."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SHARED, needs_shared
from PIL import Image
from typer.testing import CliRunner

from pipelines.executors import LocalExecutor
from pipelines.saqt_cli import app
from saqt.build.pool import choose_pool
from saqt.build.screen import Screen, jpeg_quality
from saqt.build.sources import Quota, list_source
from saqt.core.images import canonicalise, decode_image

KODAK = SHARED / "data" / "kodak24"
CLIVE = SHARED / "data" / "clive" / "images"
KADID = SHARED / "data" / "labels" / "KADID10k.csv"
runner = CliRunner()


def invoke(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def build_folder(root: Path, *options) -> str:
    """``saqt build`` of the images in ``root``, type 1 at level 1, with ``options`` (``--out`` among them)."""
    return invoke("build", "--source", "folder", "--root", root, "--types", "1", "--levels", "1", *options)


def kodak(i: int) -> np.ndarray:
    return np.asarray(Image.open(needs_shared(KODAK) / f"kodim{i:02d}.png").convert("RGB"))


def mosaic(i: int) -> np.ndarray:
    """A real 1000 x 500 photo: two 500 x 500 Kodak photographs side by side (covers 512 x 384 by downscaling)."""
    return np.hstack([kodak(i), kodak(i + 1)])


def jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.mark.parametrize("quality", [35, 75, 89, 90, 95])
def test_quality_is_estimated_exactly_on_real_photos_saved_at_a_known_quality(quality):
    clive = decode_image(sorted(needs_shared(CLIVE).iterdir())[0])
    for image in (kodak(1), clive):
        assert jpeg_quality(jpeg(image, quality)) == quality


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Real photos of known size and quality, and what the default screen must decide for each."""
    root = tmp_path_factory.mktemp("screen")
    (root / "big_q95.jpg").write_bytes(jpeg(mosaic(1), 95))  # 1000x500: kept
    (root / "big_q90.jpg").write_bytes(jpeg(mosaic(3), 90))  # the threshold itself: kept
    (root / "big_q89.jpg").write_bytes(jpeg(mosaic(5), 89))  # low JPEG quality
    (root / "big_q35.jpg").write_bytes(jpeg(mosaic(7), 35))  # low JPEG quality
    Image.fromarray(mosaic(9)).save(root / "big.png")  # lossless: kept
    Image.fromarray(kodak(11)).save(root / "kodak_500.png")  # 500x500: 1.024x upscale to cover 512x384
    clive = sorted(needs_shared(CLIVE).iterdir())[0]
    (root / f"clive_{clive.name}").write_bytes(clive.read_bytes())  # CLIVE's own 500x500 JPEG: upscale
    return root


EXPECTED = {
    "big_q89.jpg": "low JPEG quality (estimated 89; --min-jpeg-quality 90)",
    "big_q35.jpg": "low JPEG quality (estimated 35; --min-jpeg-quality 90)",
    "kodak_500.png": "needs upscaling (500x500 by 1.02x to cover 512x384; --max-upscale 1)",
}


@pytest.mark.slow
def test_default_screen_refuses_upscaled_and_compressed_images_with_one_reason_each(folder, tmp_path):
    out = tmp_path / "b"
    printed = build_folder(folder, "--out", out)
    errors = {e["key"]: e for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    clive = next(k for k in errors if k.startswith("clive_"))
    assert errors.pop(clive)["reason"] == "needs upscaling (500x500 by 1.02x to cover 512x384; --max-upscale 1)"
    assert {k: e["reason"] for k, e in errors.items()} == EXPECTED
    assert all(e["stage"] == "screen" for e in errors.values())
    kept = {r["source_key"] for r in pq.read_table(out / "pristine", columns=["source_key"]).to_pylist()}
    assert kept == {"big_q95.jpg", "big_q90.jpg", "big.png"}
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["counts"]["skipped_by_reason"] == {"low JPEG quality": 2, "needs upscaling": 2}
    assert manifest["screen"] == {
        "applied": True,
        "max_upscale": 1.0,
        "min_jpeg_quality": 90,
        "min_side": 128,
        "allow_grey": False,
        "looser_than_default": {},
        "screened": 7,
        "refused": 4,
        "duplicates": 0,
    }
    assert "skipped 4 inputs (2 low JPEG quality, 2 needs upscaling)" in printed
    info = invoke("info", out)
    assert (
        "skipped: 4 (2 low JPEG quality, 2 needs upscaling)" in info and "max_upscale=1.0, min_jpeg_quality=90" in info
    )
    invoke("report", out, "--out", tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "needs upscaling" in html and "low JPEG quality" in html


@pytest.mark.slow
def test_the_old_defaults_keep_everything_and_are_recorded_as_looser(folder, tmp_path):
    out = tmp_path / "b"
    printed = build_folder(folder, "--out", out, "--max-upscale", "100", "--min-jpeg-quality", "0")
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["counts"]["pristine"] == 7 and manifest["counts"]["skipped"] == 0
    assert manifest["screen"]["looser_than_default"] == {"max_upscale": [100.0, 1.0], "min_jpeg_quality": [0, 90]}
    assert "screen looser than the defaults" in printed and "LOOSER than the defaults" in invoke("info", out)


def test_a_512x384_image_passes_canonicalisation_bit_identically(tmp_path):
    exact = mosaic(13)[50:434, 200:712]  # 512 x 384 of a real photo
    assert canonicalise(exact, (512, 384)) is not None and np.array_equal(canonicalise(exact, (512, 384)), exact)
    wide = mosaic(13)[50:434, 100:700]  # 600 x 384: cropped, never resampled
    assert np.array_equal(canonicalise(wide, (512, 384)), wide[:, 44:556])
    root = tmp_path / "kadis" / "ref_imgs"
    root.mkdir(parents=True)
    Image.fromarray(exact).save(root / "photo-1.png")
    (root / "photo-2.jpg").write_bytes(jpeg(exact[::-1], 95))
    out = tmp_path / "b"
    invoke("build", "--source", "kadis700k", "--root", root.parent, "--types", "1", "--levels", "1", "--out", out)
    rows = {r["source_key"]: r for r in pq.read_table(out / "pristine").to_pylist()}
    assert np.array_equal(decode_image(rows["ref_imgs/photo-1.png"]["image"]), exact)
    assert np.array_equal(decode_image(rows["ref_imgs/photo-2.jpg"]["image"]), decode_image(root / "photo-2.jpg"))


@pytest.mark.slow
def test_duplicates_are_kept_once_and_counted(folder, tmp_path):
    root = tmp_path / "dups"
    root.mkdir()
    for name in ("big_q95.jpg", "big.png"):
        (root / name).write_bytes((folder / name).read_bytes())
    (root / "same_as_big.png").write_bytes((folder / "big.png").read_bytes())
    Image.open(folder / "big.png").save(root / "resaved_big.png", compress_level=9)  # other bytes, same pixels
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"b{workers}"
        build_folder(root, "--out", out, "--workers", workers)
        outs.append(out)
    manifest = json.loads((outs[0] / "build.json").read_text())
    assert manifest["counts"]["pristine"] == 2 and manifest["counts"]["duplicates"] == 2
    assert manifest["counts"]["skipped_by_reason"] == {"duplicate": 2}
    reasons = [json.loads(line)["reason"] for line in (outs[0] / "errors.jsonl").read_text().splitlines()]
    kept = {r["source_key"] for r in pq.read_table(outs[0] / "pristine", columns=["source_key"]).to_pylist()}
    assert all(r == f"duplicate (same pixels as {(kept - {'big_q95.jpg'}).pop()})" for r in reasons)
    assert (outs[0] / "errors.jsonl").read_bytes() == (outs[1] / "errors.jsonl").read_bytes()


@pytest.mark.slow
def test_limit_tops_up_past_refusals_so_n_means_n_kept(folder):
    items = list_source("folder", folder).items
    pools = {}
    for limit in (2, 3):
        for workers in (1, 2):
            pools[limit, workers] = choose_pool(
                items, Quota(items, limit), 7, (512, 384), Screen(), 64_000_000, LocalExecutor(workers), progress=False
            )
    assert [it.key for it in pools[2, 1].kept] == [it.key for it in pools[2, 2].kept]
    assert len(pools[2, 1].kept) == 2 and len(pools[3, 1].kept) == 3  # 3 of the 7 pass, 4 are refused
    assert set(pools[2, 1].kept) <= set(pools[3, 1].kept)
    assert pools[3, 1].screened == 7 and len(pools[3, 1].refused) == 4
    refused_before = {k for k, _ in pools[2, 1].refused}
    assert refused_before <= {k for k, _ in pools[3, 1].refused} and pools[2, 1].screened == 2 + len(refused_before)


@pytest.mark.slow
def test_bank_synth_screens_its_references_the_same_way(folder, tmp_path):
    root = tmp_path / "refs"
    root.mkdir()
    for name in ("big.png", "big_q35.jpg"):
        (root / name).write_bytes((folder / name).read_bytes())
    Image.fromarray(kodak(11)[:250, :250]).save(root / "small.png")  # 250x250: 1.024x upscale to cover 256x192
    bank = tmp_path / "bank"
    invoke(
        "bank", "synth", "--source", "folder", "--root", root, "--metric", "psnr", "--size", "256x192", "--out", bank
    )
    manifest = json.loads((bank / "bank.json").read_text())
    assert [p.name.split("_")[0] for p in (bank / "images").iterdir()] == ["big"]
    assert dict(manifest["skipped"]) == {
        "big_q35.jpg": "low JPEG quality (estimated 35; --min-jpeg-quality 90)",
        "small.png": "needs upscaling (250x250 by 1.02x to cover 256x192; --max-upscale 1)",
    }
    assert manifest["screen"]["max_upscale"] == 1.0 and manifest["screen"]["min_jpeg_quality"] == 90


@pytest.mark.slow
def test_the_dataset_card_records_a_looser_screen(tmp_path):
    root = tmp_path / "kodak"
    root.mkdir()
    Image.fromarray(kodak(2)).save(root / "kodim02.png")
    build_folder(root, "--max-upscale", "1.03", "--out", tmp_path / "b")
    invoke("label", "--build", tmp_path / "b", "--bank", needs_shared(KADID), "--rule", "mean", "--out", tmp_path / "l")
    invoke("publish", "--labels", tmp_path / "l", "--out", tmp_path / "p")
    card = (tmp_path / "p" / "README.md").read_text()
    assert "looser than the toolkit's defaults, by the builder's choice:** `max_upscale` 1.03 (default 1.0)" in card
    assert "max_upscale: 1.03" in card  # the machine-readable front matter too

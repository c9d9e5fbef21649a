"""The authors' SAQT-IQA, reproduced: their selection and matches as package data, ``saqt build --selection``,
``saqt label --matches`` against a computation from the two CSVs, and ``saqt fidelity --matches``.

KADIS-700k itself is not here: the images are tiny stand-ins named like the authors' files (their pixels do not
matter to labels that come from given matches)."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SHARED, needs_shared
from PIL import Image
from typer.testing import CliRunner

from pipelines.saqt_cli import app
from saqt.build import authors
from saqt.label.given_matches import MatchesError, read_matches

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

AUTHORS = SHARED / "data" / "authors"
KADID = SHARED / "data" / "labels" / "KADID10k.csv"
TYPES, LEVELS = (1, 13, 25), (1, 3, 5)
runner = CliRunner()


def invoke(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def authors_csv() -> list[dict]:
    with open(needs_shared(AUTHORS / "similarity_img_in_kadid-10k.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def chosen(authors_csv) -> list[dict]:
    """Six of the authors' images: the first two, and one matched to each of I27 (most used), I44 (least used),
    I01 and I81."""
    rows = authors_csv[:2]
    for ref in ("I27.png", "I44.png", "I01.png", "I81.png"):
        rows.append(next(r for r in authors_csv if r["kadid-10k"] == ref and r not in rows))
    return rows


@pytest.fixture(scope="module")
def kadis_root(tmp_path_factory, chosen) -> Path:
    """ref_imgs/ with the six images (distinct noise, 64 x 48) and one more that the authors did not select."""
    root = tmp_path_factory.mktemp("kadis700k")
    (root / "ref_imgs").mkdir()
    rng = np.random.default_rng(0)
    for name in [r["kadis"] for r in chosen] + ["not-selected-1.png"]:
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "ref_imgs" / name)
    return root


@pytest.fixture(scope="module")
def build(tmp_path_factory, kadis_root) -> Path:
    out = tmp_path_factory.mktemp("build") / "b"
    invoke(
        "build",
        "--source",
        "kadis700k",
        "--root",
        kadis_root,
        "--selection",
        "authors",
        "--size",
        "64x48",
        "--types",
        ",".join(map(str, TYPES)),
        "--levels",
        ",".join(map(str, LEVELS)),
        "--out",
        out,
    )
    return out


def kadid_dmos() -> dict[str, float]:
    with open(needs_shared(KADID), newline="") as f:
        return {row["dist_name"]: float(row["dmos"]) for row in csv.DictReader(f)}


def test_the_packaged_files_are_the_release_files():
    data = authors.matches_text().encode()
    assert (
        hashlib.sha256(data).hexdigest()
        == hashlib.sha256(needs_shared(AUTHORS / "similarity_img_in_kadid-10k.csv").read_bytes()).hexdigest()
    )
    assert authors.selection() == (AUTHORS / "selected_kadis_imgs50k.txt").read_text().split()
    assert authors.licence_text() == (AUTHORS / "LICENSE").read_text() and "MIT License" in authors.licence_text()
    assert hashlib.sha256((AUTHORS / "selected_kadis_imgs50k.txt").read_bytes()).hexdigest() == authors.SELECTION_SHA256


def test_build_with_the_authors_selection_logs_every_missing_file(build, chosen):
    manifest = json.loads((build / "build.json").read_text())
    built = {r["source_key"] for r in pq.read_table(build / "pristine", columns=["source_key"]).to_pylist()}
    assert built == {f"ref_imgs/{r['kadis']}" for r in chosen}  # the extra image is not in the selection
    errors = [json.loads(line) for line in (build / "errors.jsonl").read_text().splitlines()]
    missing = {e["key"] for e in errors if e["stage"] == "list" and e["reason"].startswith("not found under --root")}
    assert len(errors) == len(missing) == 50_000 - 6
    assert missing == set(authors.selection()) - {r["kadis"] for r in chosen}
    assert manifest["counts"]["skipped_by_reason"] == {"not found under --root": 49_994}
    assert manifest["config"]["selection"] == "authors" and manifest["screen"]["applied"] is False


def test_labels_from_the_authors_matches_are_the_released_rule_exactly(build, chosen, tmp_path):
    out = tmp_path / "labels"
    printed = invoke("label", "--build", build, "--bank", needs_shared(KADID), "--matches", "authors", "--out", out)
    assert "the authors' top-1" in printed
    dmos = kadid_dmos()
    assert len(dmos) == 10_125
    lo, hi = min(dmos.values()), max(dmos.values())
    match = {r["kadis"]: (r["kadid-10k"], float(r["sim_value"])) for r in chosen}
    rows = pq.read_table(
        out / "saqt-iqa",
        columns=["source_key", "dist_type", "level", "score", "neighbours", "similarities", "encoder", "rule"],
    ).to_pylist()
    assert len(rows) == 6 * len(TYPES) * len(LEVELS)
    for row in rows:
        ref, sim = match[Path(row["source_key"]).name]
        truth = dmos[f"{Path(ref).stem}_{row['dist_type']:02d}_{row['level']:02d}.png"]
        assert row["score"] == (truth - lo) / (hi - lo) * 9  # 9 * min-max over all 10,125 KADID scores, in float64
        released = (np.float32(truth) - np.float32(lo)) / (np.float32(hi) - np.float32(lo)) * np.float32(9)
        assert abs(row["score"] - float(released)) < 5e-6  # the release computes the same in float32
        assert row["neighbours"] == [Path(ref).stem] and row["similarities"] == [pytest.approx(sim, abs=1e-7)]
        assert row["encoder"] == "matches:authors" and row["rule"] == "top1"
    manifest = json.loads((out / "label.json").read_text())
    given = manifest["encoder"]["matches"]
    assert given["source"] == "authors" and given["sha256"] == authors.MATCHES_SHA256 and "MIT" in given["licence"]
    assert manifest["inputs"]["bank"]["references"] == 81 and manifest["inputs"]["bank"]["score_file"] == "KADID10k.csv"


def test_a_matches_file_of_the_same_form_is_used_as_given(build, chosen, tmp_path):
    path = tmp_path / "mine.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kadis", "kadid-10k", "sim_value"])
        writer.writerows([r["kadis"], f"I{i + 10:02d}.png", 0.5] for i, r in enumerate(chosen))
    out = tmp_path / "labels"
    invoke("label", "--build", build, "--bank", needs_shared(KADID), "--matches", path, "--out", out)
    dmos, expect = kadid_dmos(), {r["kadis"]: f"I{i + 10:02d}" for i, r in enumerate(chosen)}
    lo, hi = min(dmos.values()), max(dmos.values())
    for row in pq.read_table(
        out / "saqt-iqa", columns=["source_key", "dist_type", "level", "score", "encoder"]
    ).to_pylist():
        ref = expect[Path(row["source_key"]).name]
        assert row["score"] == (dmos[f"{ref}_{row['dist_type']:02d}_{row['level']:02d}.png"] - lo) / (hi - lo) * 9
        assert row["encoder"] == "matches:mine.csv"


def test_the_official_pipeline_form_uses_its_rank_one_rows(tmp_path):
    path = tmp_path / "top2_semantic_matches.csv"
    path.write_text(
        "source_image,source_path,target_reference,cosine_similarity,rank\n"
        "a.png,/x/a.png,I03.png,0.9,1\na.png,/x/a.png,I07.png,0.8,2\nb.png,/x/b.png,I07.png,0.7,1\n"
    )
    assert read_matches(str(path)).pairs == {"a.png": ("I03.png", 0.9), "b.png": ("I07.png", 0.7)}
    path.write_text("kadis,kadid-10k,sim_value\na.png,I03.png,0.9\na.png,I04.png,0.9\n")
    with pytest.raises(MatchesError, match="matched twice"):
        read_matches(str(path))
    path.write_text("image,reference\na.png,I03.png\n")
    with pytest.raises(MatchesError, match="has neither the columns"):
        read_matches(str(path))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rule", "topk"], "needs --rule top1"),
        (["--encoder", "effnet-lite0"], "--encoder has no effect"),
        (["--preset", "authors", "--rule", "mean"], "--preset authors uses --rule top1"),
        (["--matches", "/no/such.csv"], "neither 'authors' nor an existing CSV"),
    ],
)
def test_matches_mode_refuses_what_cannot_hold(build, tmp_path, args, message):
    base = ["label", "--build", str(build), "--bank", str(needs_shared(KADID)), "--out", str(tmp_path / "l")]
    result = runner.invoke(app, base + (args if "--matches" in args else ["--matches", "authors", *args]))
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


def test_an_image_the_matches_do_not_cover_is_named(tmp_path, chosen):
    root = tmp_path / "kadis"
    (root / "ref_imgs").mkdir(parents=True)
    Image.fromarray(np.full((48, 64, 3), (200, 30, 30), np.uint8)).save(root / "ref_imgs" / "unmatched-1.png")
    invoke(
        "build",
        "--source",
        "kadis700k",
        "--root",
        root,
        "--size",
        "64x48",
        "--min-side",
        "48",
        "--types",
        "1",
        "--levels",
        "1",
        "--out",
        tmp_path / "b",
    )
    result = runner.invoke(
        app,
        [
            "label",
            "--build",
            str(tmp_path / "b"),
            "--bank",
            str(needs_shared(KADID)),
            "--matches",
            "authors",
            "--out",
            str(tmp_path / "l"),
        ],
    )
    assert result.exit_code == 2 and "1 pristine images of the build have no match" in result.output
    assert "ref_imgs/unmatched-1.png" in result.output


def test_fidelity_reports_the_bank_usage_skew_of_the_authors_matches(authors_csv, tmp_path):
    out = tmp_path / "f.json"
    printed = invoke("fidelity", "--matches", "authors", "--bank", needs_shared(KADID), "--json", out)
    counts = Counter(r["kadid-10k"] for r in authors_csv)
    usage = json.loads(out.read_text())["matches"]["usage"]
    assert usage["most_used"] == ["I27.png", 3251] == list(counts.most_common(1)[0])
    assert usage["least_used"] == ["I44.png", 16] and min(counts.values()) == 16
    assert usage["references_used"] == 81 and usage["counts"] == dict(sorted(counts.items()))
    assert "most used I27.png: 3,251 images; least used I44.png: 16" in printed and "not measured" in printed


def test_fidelity_measures_top1_agreement_where_the_images_exist(tmp_path):
    bank = tmp_path / "bank"
    invoke("bank", "synth", "--source", "sample-bank", "--size", "96x64", "--metric", "psnr", "--out", bank)
    refs = json.loads((bank / "bank.json").read_text())
    ref_ids = sorted(p.relative_to(bank).as_posix() for p in (bank / "images").glob("*.png"))
    assert len(ref_ids) == 4, refs
    images = tmp_path / "kadis"
    images.mkdir()
    for i in range(3):  # each pristine image is a bank reference itself, so its own top-1 is that reference
        (images / f"copy-{i}.png").write_bytes((bank / ref_ids[i]).read_bytes())
    matches = tmp_path / "m.csv"
    matches.write_text(
        f"kadis,kadid-10k,sim_value\ncopy-0.png,{ref_ids[0]},1\ncopy-1.png,{ref_ids[1]},1\n"
        f"copy-2.png,{ref_ids[0]},1\nabsent.png,{ref_ids[3]},1\n"
    )
    out = tmp_path / "f.json"
    printed = invoke(
        "fidelity", "--matches", matches, "--images", images, "--bank", bank, "--encoder", "effnet-lite0", "--json", out
    )
    agreement = json.loads(out.read_text())["matches"]["agreement"]
    assert (agreement["agree"], agreement["compared"], agreement["missing_images"]) == (2, 3, 1)
    assert agreement["own_top1"]["copy-2.png"] == ref_ids[2] and "2 of 3 (66.7%)" in printed

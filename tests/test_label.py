"""``saqt label`` and ``saqt bank synth`` end to end: a real build, a synthetic bank from Kodak24, EfficientNet-Lite0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SHARED, needs_shared
from typer.testing import CliRunner

from pipelines.executors import LocalExecutor
from pipelines.saqt_cli import app
from saqt.bank import load_bank, normalise_scores
from saqt.bank_synth import SynthConfig, synth_bank
from saqt.build import BuildConfig, run_build
from saqt.label import LabelConfig, RunOptions, run_label
from saqt.shards import sha256_file
from saqt.stage import StageConflict

KODAK = SHARED / "data" / "kodak24"
SIZE = (192, 176)  # MS-SSIM needs both sides > 160
runner = CliRunner()
QUIET = RunOptions(device="cpu", loader_workers=0, progress=False)


@pytest.fixture(scope="module")
def kodak_bank(tmp_path_factory):
    out = tmp_path_factory.mktemp("bank") / "kodak"
    synth_bank(SynthConfig(root=str(needs_shared(KODAK)), size=SIZE, limit=12), out, LocalExecutor(2), progress=False)
    return out


@pytest.fixture(scope="module")
def sample_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "b"
    run_build(BuildConfig(size=SIZE, types=(1, 9, 16), levels=(1, 3, 5), images_per_shard=2), out, LocalExecutor(1),
              progress=False)  # fmt: skip
    return out


def test_synth_bank_is_a_marked_proxy(kodak_bank):
    bank = load_bank(kodak_bank)
    manifest = json.loads((kodak_bank / "bank.json").read_text())
    assert bank.kind == "synth" and bank.proxy and manifest["proxy"] is True and manifest["metric"] == "ms_ssim"
    assert len(bank.ref_ids) == 12 and bank.has_images and not np.isnan(bank.scores).any()
    assert bank.scores.max() <= 1.0 and bank.scores[:, 0, 4].mean() < bank.scores[:, 0, 1].mean()  # blur hurts


def test_labels_follow_the_rule_and_carry_provenance(tmp_path, sample_build, kodak_bank):
    config = LabelConfig(build=str(sample_build), bank=str(kodak_bank), encoder="effnet-lite0", rule="topk", k=3)
    manifest = run_label(config, tmp_path / "l", QUIET)
    labels = pq.read_table(tmp_path / "l" / "labels").to_pylist()
    assert manifest["complete"] and len(labels) == 5 * 9 == manifest["counts"]["labels"]
    bank = load_bank(kodak_bank)
    scores = normalise_scores(bank.scores, "minmax:0:9")
    for row in labels[:12]:
        ids = [bank.ref_ids.index(n) for n in row["neighbours"]]
        assert len(ids) == 3 and sum(row["weights"]) == pytest.approx(1.0, abs=1e-6)
        assert row["similarities"] == sorted(row["similarities"], reverse=True)
        expected = np.dot(row["weights"], scores[ids, row["dist_type"] - 1, row["level"] - 1])
        assert row["score"] == pytest.approx(expected, rel=1e-5)
        assert row["bank_proxy"] and row["score_scale"] == "minmax:0:9" and row["rule"] == "topk"
        assert row["encoder"] == "effnet-lite0" and row["encoder_weights"].startswith("efficientnet-lite0")
    joined = pq.read_table(tmp_path / "l" / "saqt-iqa").to_pylist()
    built = {r["image_id"]: r["image"] for r in pq.read_table(sample_build / "distorted").to_pylist()}
    assert {r["image_id"] for r in joined} == set(built)
    assert all(r["image"] == built[r["image_id"]] and r["score"] is not None for r in joined)


def test_top1_and_exclusion(tmp_path, sample_build, kodak_bank):
    bank = load_bank(kodak_bank)
    first = run_label(
        LabelConfig(build=str(sample_build), bank=str(kodak_bank), encoder="effnet-lite0"), tmp_path / "a", QUIET
    )
    top = {r["neighbours"][0] for r in pq.read_table(tmp_path / "a" / "labels").to_pylist()}
    excluded = tuple(sorted(top))
    second = run_label(LabelConfig(build=str(sample_build), bank=str(kodak_bank), encoder="effnet-lite0",
                                   exclude_refs=excluded), tmp_path / "b", QUIET)  # fmt: skip
    rows = pq.read_table(tmp_path / "b" / "labels").to_pylist()
    assert not {r["neighbours"][0] for r in rows} & top
    assert second["inputs"]["bank"]["excluded"] == list(excluded) and second["inputs"]["bank"]["references"] == len(bank.ref_ids) - len(top)
    assert first["rule"] == {"rule": "top1", "k": 1, "temperature": None}


def test_labels_are_deterministic_and_resume(tmp_path, sample_build, kodak_bank):
    config = LabelConfig(build=str(sample_build), bank=str(kodak_bank), encoder="effnet-lite0", rule="topk")
    run_label(config, tmp_path / "x", QUIET)
    run_label(config, tmp_path / "y", RunOptions(device="cpu", loader_workers=2, batch_size=3, progress=False))
    digest = {p.name: sha256_file(p) for p in sorted((tmp_path / "x").glob("*/*.parquet"))}
    assert digest == {p.name: sha256_file(p) for p in sorted((tmp_path / "y").glob("*/*.parquet"))}
    (tmp_path / "x" / "labels" / "part-00001.parquet").unlink()
    kept = (tmp_path / "x" / "saqt-iqa" / "part-00000.parquet").stat().st_mtime_ns
    run_label(config, tmp_path / "x", QUIET)
    assert {p.name: sha256_file(p) for p in sorted((tmp_path / "x").glob("*/*.parquet"))} == digest
    assert (tmp_path / "x" / "saqt-iqa" / "part-00000.parquet").stat().st_mtime_ns == kept
    with pytest.raises(StageConflict, match="another config \\(k\\)"):
        run_label(LabelConfig(**{**config.__dict__, "k": 5}), tmp_path / "x", QUIET)


def test_recipe_only_build_joins_recipes(tmp_path, kodak_bank):
    build = tmp_path / "r"
    run_build(
        BuildConfig(size=SIZE, types=(5,), levels=(2,), recipe_only=True), build, LocalExecutor(1), progress=False
    )
    run_label(LabelConfig(build=str(build), bank=str(kodak_bank), rule="mean"), tmp_path / "l", QUIET)
    rows = pq.read_table(tmp_path / "l" / "saqt-iqa").to_pylist()
    assert len(rows) == 5 and all(r["image"] is None and r["seed"] and r["neighbours"] == [] for r in rows)
    means = np.nanmean(normalise_scores(load_bank(kodak_bank).scores, "minmax:0:9"), axis=0)
    assert rows[0]["score"] == pytest.approx(means[4, 1]) and rows[0]["encoder"] == "none"


def test_pristine_images_in_the_bank_are_flagged(tmp_path, sample_build):
    bank = tmp_path / "selfbank"
    synth_bank(SynthConfig(source="sample", size=SIZE, metric="psnr"), bank, LocalExecutor(1), progress=False)
    manifest = run_label(
        LabelConfig(build=str(sample_build), bank=str(bank), encoder="effnet-lite0"), tmp_path / "l", QUIET
    )
    assert manifest["self_matches"] == 5


def test_cli_forms_of_the_issue(tmp_path, sample_build):
    refs = needs_shared(KODAK)
    bank = tmp_path / "bank"
    result = runner.invoke(app, ["bank", "synth", "--source", "folder", "--root", str(refs), "--out", str(bank),
                                 "--metric", "psnr", "--size", "96x64", "--limit", "6"])  # fmt: skip
    assert result.exit_code == 0 and "proxy" in result.output, result.output
    result = runner.invoke(app, ["label", "--build", str(sample_build), "--bank", str(bank), "--bank-type", "synth",
                                 "--encoder", "effnet-lite0", "--rule", "topk", "--k", "3", "--out", str(tmp_path / "l"),
                                 "--loader-workers", "0"])  # fmt: skip
    assert result.exit_code == 0 and "labelled 45 images" in result.output, result.output
    report = tmp_path / "f.json"
    result = runner.invoke(app, ["fidelity", "--bank", str(bank), "--encoder", "effnet-lite0", "--rule", "topk",
                                 "--k", "3", "--json", str(report)])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split("SROCC")[0].strip() for line in lines[1:5]] == [
        "topk (effnet-lite0, k=3)", "mean baseline (content-agnostic)", "random other reference",
        "oracle: best other reference (ceiling)"]  # fmt: skip
    data = json.loads(report.read_text())
    assert set(data["predictors"]) == {"topk", "mean", "random", "oracle"} and data["references"] == 6


@pytest.mark.parametrize(
    "args, message",
    [(["--rule", "nearest"], "--rule must be one of"), (["--encoder", "resnet"], "unknown encoder"),
     (["--normalise", "minmax"], "minmax:LO:HI"), (["--index", "lsh"], "--index must be one of")],
)  # fmt: skip
def test_label_refuses_bad_arguments(tmp_path, sample_build, kodak_bank, args, message):
    result = runner.invoke(app, ["label", "--build", str(sample_build), "--bank", str(kodak_bank), "--out",
                                 str(tmp_path / "l"), "--encoder", "effnet-lite0", *args])  # fmt: skip
    assert result.exit_code == 2 and message in result.output, result.output


def test_synth_bank_can_save_a_rated_dataset_for_glint(tmp_path):
    from glint.data import DatasetError, load_table, split_table

    bank = tmp_path / "bank"
    synth_bank(SynthConfig(source="sample-bank", size=(96, 64), metric="psnr", limit=2, save_distorted=True), bank,
               LocalExecutor(1), progress=False)  # fmt: skip
    table = load_table("csv", bank, bank / "dataset.csv")
    assert len(table.samples) == 250 and table.kind == "synthetic" and len({s.group for s in table.samples}) == 2
    assert all(Path(s.path).is_file() for s in table.samples)
    with pytest.raises(DatasetError, match="2 references are too few"):
        split_table(table)

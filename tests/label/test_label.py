"""``saqt label`` and ``saqt bank synth`` end to end: a real build, a synthetic bank from Kodak24, EfficientNet-Lite0."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SHARED, needs_shared
from typer.testing import CliRunner

from pipelines.executors import LocalExecutor
from pipelines.saqt_cli import app
from saqt.build.build_stage import BuildConfig, run_build
from saqt.core.context import RunContext
from saqt.core.shards import sha256_file
from saqt.core.stage_contract import StageConflict
from saqt.label.label_stage import LabelConfig, run_label
from saqt.label.reference_bank import load_bank
from saqt.label.synth_stage import SynthConfig, run_synth_bank

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

KODAK = SHARED / "data" / "kodak24"
SIZE = (192, 176)  # MS-SSIM needs both sides > 160
runner = CliRunner()
QUIET = RunContext(progress=False)


def on_cpu(config: LabelConfig) -> LabelConfig:
    return replace(config, device="cpu", loader_workers=0)


@pytest.fixture(scope="module")
def kodak_bank(tmp_path_factory):
    out = tmp_path_factory.mktemp("bank") / "kodak"
    run_synth_bank(
        SynthConfig(root=str(needs_shared(KODAK)), size=SIZE, limit=12),
        out,
        RunContext(LocalExecutor(2), progress=False),
    )
    return out


@pytest.fixture(scope="module")
def sample_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "b"
    run_build(
        BuildConfig(size=SIZE, types=(1, 9, 16), levels=(1, 3, 5), images_per_shard=2),
        out,
        RunContext(LocalExecutor(1), progress=False),
    )
    return out


def bank_table(bank: Path) -> tuple[list[str], np.ndarray]:
    """The bank's scores.csv read with the csv module: reference ids, and (R, 25, 5) scores min-max normalised
    to [0, 9] over every score of the whole bank (the authors' rule, and what `saqt label` documents)."""
    with open(bank / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    refs = sorted({r["ref"] for r in rows})
    table = np.full((len(refs), 25, 5), np.nan)
    for r in rows:
        table[refs.index(r["ref"]), int(r["type"]) - 1, int(r["level"]) - 1] = float(r["score"])
    lo, hi = np.nanmin(table), np.nanmax(table)
    return refs, 9 * (table - lo) / (hi - lo)


def nearest(labels: Path, pristine_id: str, candidates: list[str], k: int) -> tuple[list[str], np.ndarray]:
    """The k candidates most cosine-similar to the pristine image, from the embeddings the run cached."""
    (bank,) = (labels / "embeddings").glob("bank-*.parquet")
    (pristine,) = (labels / "embeddings").glob("pristine-*.parquet")
    vectors = {r["id"]: np.asarray(r["embedding"], np.float64) for r in pq.read_table(bank).to_pylist()}
    query = next(
        np.asarray(r["embedding"], np.float64) for r in pq.read_table(pristine).to_pylist() if r["id"] == pristine_id
    )
    sims = np.array([vectors[c] @ query for c in candidates])
    order = np.argsort(-sims, kind="stable")[:k]
    return [candidates[i] for i in order], sims[order]


def test_synth_bank_is_a_marked_proxy(kodak_bank):
    bank = load_bank(kodak_bank)
    manifest = json.loads((kodak_bank / "bank.json").read_text())
    assert bank.kind == "synth" and bank.proxy and manifest["proxy"] is True and manifest["metric"] == "ms_ssim"
    assert len(bank.ref_ids) == 12 and bank.has_images and not np.isnan(bank.scores).any()
    assert bank.scores.max() <= 1.0 and bank.scores[:, 0, 4].mean() < bank.scores[:, 0, 1].mean()  # blur hurts


def test_labels_follow_the_rule_and_carry_provenance(tmp_path, sample_build, kodak_bank):
    config = LabelConfig(
        build=str(sample_build), bank=str(kodak_bank), encoder="effnet-lite0", rule="topk", neighbours=3
    )
    manifest = run_label(on_cpu(config), tmp_path / "l", QUIET)
    labels = pq.read_table(tmp_path / "l" / "labels").to_pylist()
    assert manifest["complete"] and len(labels) == 5 * 9 == manifest["counts"]["labels"]
    refs, scores = bank_table(kodak_bank)
    for row in labels:  # expected: the 3 nearest references, softmax(similarity / 0.05), the bank's own table
        names, sims = nearest(tmp_path / "l", row["pristine_id"], refs, 3)
        weights = np.exp((sims - sims.max()) / 0.05) / np.exp((sims - sims.max()) / 0.05).sum()
        expected = weights @ scores[[refs.index(n) for n in names], row["dist_type"] - 1, row["level"] - 1]
        assert row["neighbours"] == names and row["similarities"] == pytest.approx(sims, abs=1e-5)
        assert row["score"] == pytest.approx(expected, rel=1e-4) and row["weights"] == pytest.approx(weights, abs=1e-4)
        assert row["bank_proxy"] and row["score_scale"] == "minmax:0:9" and row["rule"] == "topk"
        assert row["encoder"] == "effnet-lite0" and row["encoder_weights"].startswith("efficientnet-lite0")
    joined = pq.read_table(tmp_path / "l" / "saqt-iqa")
    built = pq.read_table(sample_build / "distorted")
    assert "image" not in joined.column_names  # the pixels stay in the build: the rows mirror its rows, in order
    assert joined.column("image_id").to_pylist() == built.column("image_id").to_pylist()
    assert joined.column("score").null_count == 0


def test_top1_and_exclusion(tmp_path, sample_build, kodak_bank):
    """Excluded references are never neighbours, and the others keep the scale of the whole bank: scores are
    normalised before the exclusion (excluding the reference that holds the bank's lowest score moves nothing)."""
    refs, scores = bank_table(kodak_bank)
    first = run_label(
        on_cpu(LabelConfig(build=str(sample_build), bank=str(kodak_bank), encoder="effnet-lite0")),
        tmp_path / "a",
        QUIET,
    )
    for row in pq.read_table(tmp_path / "a" / "labels").to_pylist():
        (name,), _ = nearest(tmp_path / "a", row["pristine_id"], refs, 1)
        assert row["neighbours"] == [name] and row["weights"] == [1.0]
        assert row["score"] == pytest.approx(scores[refs.index(name), row["dist_type"] - 1, row["level"] - 1])
    top = {r["neighbours"][0] for r in pq.read_table(tmp_path / "a" / "labels").to_pylist()}
    lowest = refs[int(np.nanargmin(np.nanmin(scores, axis=(1, 2))))]
    excluded = tuple(sorted(top | {lowest}))
    second = run_label(
        on_cpu(
            LabelConfig(build=str(sample_build), bank=str(kodak_bank), encoder="effnet-lite0", exclude_refs=excluded)
        ),
        tmp_path / "b",
        QUIET,
    )
    kept = [r for r in refs if r not in excluded]
    rows = pq.read_table(tmp_path / "b" / "labels").to_pylist()
    for row in rows:
        (name,), _ = nearest(tmp_path / "b", row["pristine_id"], kept, 1)
        assert row["neighbours"] == [name]
        assert row["score"] == pytest.approx(scores[refs.index(name), row["dist_type"] - 1, row["level"] - 1])
    assert not {r["neighbours"][0] for r in rows} & top
    assert second["inputs"]["bank"]["excluded"] == list(excluded)
    assert second["inputs"]["bank"]["references"] == len(refs) - len(excluded)
    assert first["rule"] == {"rule": "top1", "k": 1, "temperature": None}


def test_labels_are_deterministic_and_resume(tmp_path, sample_build, kodak_bank):
    config = LabelConfig(build=str(sample_build), bank=str(kodak_bank), encoder="effnet-lite0", rule="topk")
    run_label(on_cpu(config), tmp_path / "x", QUIET)
    run_label(replace(config, device="cpu", loader_workers=2, batch_size=3), tmp_path / "y", RunContext(progress=False))
    digest = {p.name: sha256_file(p) for p in sorted((tmp_path / "x").glob("*/*.parquet"))}
    assert digest == {p.name: sha256_file(p) for p in sorted((tmp_path / "y").glob("*/*.parquet"))}
    (tmp_path / "x" / "labels" / "part-00001.parquet").unlink()
    kept = (tmp_path / "x" / "saqt-iqa" / "part-00000.parquet").stat().st_mtime_ns
    run_label(on_cpu(config), tmp_path / "x", QUIET)
    assert {p.name: sha256_file(p) for p in sorted((tmp_path / "x").glob("*/*.parquet"))} == digest
    assert (tmp_path / "x" / "saqt-iqa" / "part-00000.parquet").stat().st_mtime_ns == kept
    with pytest.raises(StageConflict, match="another config \\(k\\)"):
        run_label(on_cpu(LabelConfig(**{**config.__dict__, "neighbours": 5})), tmp_path / "x", QUIET)


def test_recipe_only_build_joins_recipes(tmp_path, kodak_bank):
    build = tmp_path / "r"
    run_build(
        BuildConfig(size=SIZE, types=(5,), levels=(2,), recipe_only=True),
        build,
        RunContext(LocalExecutor(1), progress=False),
    )
    run_label(on_cpu(LabelConfig(build=str(build), bank=str(kodak_bank), rule="mean")), tmp_path / "l", QUIET)
    rows = pq.read_table(tmp_path / "l" / "saqt-iqa").to_pylist()
    assert len(rows) == 5 and all("image" not in r and r["seed"] and r["neighbours"] == [] for r in rows)
    means = np.nanmean(bank_table(kodak_bank)[1], axis=0)  # the mean rule: every reference, whole-bank scale
    assert rows[0]["score"] == pytest.approx(means[4, 1]) and rows[0]["encoder"] == "none"


def test_pristine_images_in_the_bank_are_flagged(tmp_path, sample_build):
    bank = tmp_path / "selfbank"
    run_synth_bank(
        SynthConfig(source="sample", size=SIZE, metric="psnr"), bank, RunContext(LocalExecutor(1), progress=False)
    )
    manifest = run_label(
        on_cpu(LabelConfig(build=str(sample_build), bank=str(bank), encoder="effnet-lite0")), tmp_path / "l", QUIET
    )
    assert manifest["self_matches"] == 5


def test_cli_forms_of_the_issue(tmp_path, sample_build):
    refs = needs_shared(KODAK)
    bank = tmp_path / "bank"
    result = runner.invoke(
        app,
        [
            "bank",
            "synth",
            "--source",
            "folder",
            "--root",
            str(refs),
            "--out",
            str(bank),
            "--metric",
            "psnr",
            "--size",
            "96x64",
            "--limit",
            "6",
        ],
    )
    assert result.exit_code == 0 and "proxy" in result.output, result.output
    result = runner.invoke(
        app,
        [
            "label",
            "--build",
            str(sample_build),
            "--bank",
            str(bank),
            "--bank-type",
            "synth",
            "--encoder",
            "effnet-lite0",
            "--rule",
            "topk",
            "--neighbours",
            "3",
            "--out",
            str(tmp_path / "l"),
            "--loader-workers",
            "0",
        ],
    )
    assert result.exit_code == 0 and "labelled 45 images" in result.output, result.output
    report = tmp_path / "f.json"
    result = runner.invoke(
        app,
        [
            "fidelity",
            "--bank",
            str(bank),
            "--encoder",
            "effnet-lite0",
            "--rule",
            "topk",
            "--neighbours",
            "3",
            "--json",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split("SROCC")[0].strip() for line in lines[1:5]] == [
        "topk (effnet-lite0, k=3)",
        "mean baseline (content-agnostic)",
        "random other reference",
        "oracle: best other reference (ceiling)",
    ]
    data = json.loads(report.read_text())
    assert set(data["predictors"]) == {"topk", "mean", "random", "oracle"} and data["references"] == 6


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rule", "nearest"], "--rule must be one of"),
        (["--encoder", "resnet"], "unknown encoder"),
        (["--normalise", "minmax"], "minmax:LO:HI"),
        (["--index", "lsh"], "--index must be one of"),
    ],
)
def test_label_refuses_bad_arguments(tmp_path, sample_build, kodak_bank, args, message):
    result = runner.invoke(
        app,
        [
            "label",
            "--build",
            str(sample_build),
            "--bank",
            str(kodak_bank),
            "--out",
            str(tmp_path / "l"),
            "--encoder",
            "effnet-lite0",
            *args,
        ],
    )
    assert result.exit_code == 2 and message in result.output, result.output


def test_synth_bank_can_save_a_rated_dataset_for_glint(tmp_path):
    from glint.data import DatasetError, load_table, split_table

    bank = tmp_path / "bank"
    run_synth_bank(
        SynthConfig(source="sample-bank", size=(96, 64), metric="psnr", limit=2, save_distorted=True),
        bank,
        RunContext(LocalExecutor(1), progress=False),
    )
    table = load_table("csv", bank, bank / "dataset.csv")
    assert len(table.samples) == 250 and table.kind == "synthetic" and len({s.group for s in table.samples}) == 2
    assert all(Path(s.path).is_file() for s in table.samples)
    with pytest.raises(DatasetError, match="2 references are too few"):
        split_table(table)

"""Banks (KADID-10k layout and label table, generic CSV), FAISS matching, transfer rules, leave-one-out fidelity."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from conftest import SHARED, needs_shared
from PIL import Image
from scipy.stats import spearmanr

from saqt.build.sources import sample_paths
from saqt.label.faiss_index import build_index, search
from saqt.label.fidelity import leave_one_out
from saqt.label.reference_bank import BankError, load_bank, normalise_scores
from saqt.label.transfer import Rule, cell_means, neighbour_weights, transfer

KADID_TABLE = SHARED / "data" / "labels" / "KADID10k.csv"


@pytest.fixture(scope="module")
def kadid_table_bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("kadid")
    shutil.copy(needs_shared(KADID_TABLE), root / "KADID10k.csv")
    return load_bank(root)


def test_kadid_label_table_parses_completely(kadid_table_bank):
    bank = kadid_table_bank
    assert bank.kind == "kadid10k" and len(bank.ref_ids) == 81 and not np.isnan(bank.scores).any()
    with open(KADID_TABLE, newline="") as f:
        rows = list(csv.DictReader(f))
    first = rows[0]
    assert first["dist_name"] == "I01_01_01.png" and bank.scores[0, 0, 0] == float(first["dmos"])
    last = rows[-1]
    ref, t, lv = last["dist_name"].removesuffix(".png").split("_")
    assert bank.scores[bank.ref_ids.index(ref), int(t) - 1, int(lv) - 1] == float(last["dmos"])
    assert not bank.has_images and not bank.proxy


def test_kadid_release_layout_with_images(tmp_path):
    """The real release: dmos.csv (dist_img, ref_img, dmos, var) and images/I01.png, I01_01_01.png, ..."""
    (tmp_path / "images").mkdir()
    rows = []
    for r, path in enumerate(sample_paths()[:3], start=1):
        Image.open(path).convert("RGB").save(tmp_path / "images" / f"I{r:02d}.png")
        for t in range(1, 26):
            for lv in range(1, 6):
                rows.append(
                    [f"I{r:02d}_{t:02d}_{lv:02d}.png", f"I{r:02d}.png", f"{5 - 0.7 * lv + 0.01 * r:.3f}", "0.5"]
                )
    with open(tmp_path / "dmos.csv", "w", newline="") as f:
        csv.writer(f).writerows([["dist_img", "ref_img", "dmos", "var"], *rows])
    bank = load_bank(tmp_path, "kadid10k")
    assert bank.ref_ids == ("I01", "I02", "I03") and bank.has_images
    assert bank.images[1] == tmp_path / "images" / "I02.png"
    assert bank.scores[2, 24, 4] == pytest.approx(5 - 3.5 + 0.03)


def write_scores(root, rows):
    with open(root / "scores.csv", "w", newline="") as f:
        csv.writer(f).writerows([["ref", "type", "level", "score"], *rows])


def test_generic_csv_bank_allows_gaps_and_rejects_bad_rows(tmp_path):
    write_scores(tmp_path, [["a.png", 1, 1, 0.9], ["a.png", 1, 2, 0.8], ["b.png", 7, 5, 0.4]])
    bank = load_bank(tmp_path)
    assert bank.kind == "csv" and bank.ref_ids == ("a.png", "b.png") and np.isfinite(bank.scores).sum() == 3
    for rows, message in [
        ([["a.png", 26, 1, 1.0]], "outside the KADID-10k grid"),
        ([["../x.png", 1, 1, 1.0]], "escapes"),
        ([["a.png", 1, 1, 1.0], ["a.png", 1, 1, 2.0]], "two scores"),
        ([["a.png", "x", 1, 1.0]], "integers"),
    ]:
        write_scores(tmp_path, rows)
        with pytest.raises(BankError, match=message):
            load_bank(tmp_path)


def test_missing_and_unknown_banks_are_refused(tmp_path):
    with pytest.raises(BankError, match="is not a bank"):
        load_bank(tmp_path)
    with pytest.raises(BankError, match="does not exist"):
        load_bank(tmp_path / "absent")
    with pytest.raises(BankError, match="unknown bank type"):
        load_bank(tmp_path, "tid2013")


def test_normalisation():
    scores = np.array([[[1.0, 5.0], [3.0, np.nan]]])
    n = normalise_scores(scores, "minmax:0:9")
    assert np.nanmin(n) == 0 and np.nanmax(n) == 9 and n[0, 1, 0] == 4.5 and np.isnan(n[0, 1, 1])
    z = normalise_scores(scores, "zscore")
    assert np.nanmean(z) == pytest.approx(0) and np.nanstd(z) == pytest.approx(1)
    np.testing.assert_array_equal(normalise_scores(scores, "none"), scores)
    with pytest.raises(BankError, match="minmax:LO:HI"):
        normalise_scores(scores, "minmax")


def test_exclusion_removes_references(kadid_table_bank):
    bank = kadid_table_bank.without({"I05", "I77"})
    assert len(bank.ref_ids) == 79 and "I05" not in bank.ref_ids and bank.excluded == ("I05", "I77")
    np.testing.assert_array_equal(bank.scores[4], kadid_table_bank.scores[5])
    with pytest.raises(BankError, match="does not have: I99"):
        kadid_table_bank.without({"I99"})


def unit_vectors(n, d, seed):
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.slow
def test_exact_faiss_search_equals_brute_force():
    refs, queries = unit_vectors(500, 64, 1), unit_vectors(40, 64, 2)
    sims, ids = search(build_index(refs), queries, 5)
    brute = queries @ refs.T
    expected = np.argsort(-brute, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(brute, expected, axis=1), atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_the_nearest_reference(kind):
    refs = unit_vectors(2000, 32, 3)
    queries = refs[:100] + 0.05 * unit_vectors(100, 32, 4)
    _, ids = search(build_index(refs, kind=kind, nlist=16), queries, 1)
    assert (ids[:, 0] == np.arange(100)).mean() >= 0.95


def test_top1_copies_the_nearest_reference_like_the_authors():
    """Three references; the pristine is closest to reference 1, so it gets reference 1's 125 scores."""
    scores = np.random.default_rng(5).uniform(0, 9, (3, 25, 5))
    refs = np.eye(3, 8, dtype=np.float32)
    pristine = np.array([[0.2, 0.9, 0.1, 0, 0, 0, 0, 0]], np.float32)
    pristine /= np.linalg.norm(pristine)
    rule = Rule("top1")
    sims, ids = search(build_index(refs), pristine, rule.neighbours)
    assert ids.tolist() == [[1]]
    np.testing.assert_array_equal(transfer(ids, neighbour_weights(sims, rule), scores)[0], scores[1])


def test_topk_weights_and_their_limits():
    sims = np.array([[0.9, 0.8, 0.5], [0.3, 0.3, 0.3]], np.float32)
    w = neighbour_weights(sims, Rule("topk", neighbours=3, temperature=0.1))
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert w[0, 0] > w[0, 1] > w[0, 2] and np.allclose(w[1], 1 / 3)
    assert np.allclose(neighbour_weights(sims, Rule("topk", neighbours=3, temperature=1e6))[0], 1 / 3, atol=1e-5)
    scores = np.random.default_rng(6).uniform(0, 9, (4, 25, 5))
    ids = np.array([[2, 0, 1]])
    one = neighbour_weights(sims[:1, :1], Rule("topk", neighbours=1))
    np.testing.assert_array_equal(
        transfer(ids[:, :1], one, scores), transfer(ids[:, :1], neighbour_weights(sims[:1, :1], Rule("top1")), scores)
    )
    expected = np.tensordot(w[0], scores[[2, 0, 1]], axes=1)
    np.testing.assert_allclose(transfer(ids, w[:1], scores)[0], expected)


def test_transfer_skips_neighbours_without_a_score_and_mean_rule():
    scores = np.full((2, 25, 5), np.nan)
    scores[0, 0, 0], scores[1, 0, 0], scores[1, 3, 2] = 2.0, 6.0, 7.0
    out = transfer(np.array([[0, 1]]), np.array([[0.75, 0.25]]), scores)[0]
    assert out[0, 0] == pytest.approx(3.0) and out[3, 2] == 7.0 and np.isnan(out[5, 1])
    assert cell_means(scores)[0, 0] == 4.0


@pytest.mark.slow
def test_leave_one_out_on_constructed_bank_matches_hand_computation():
    """Reference pairs (0,1), (2,3), (4,5) are mutual nearest neighbours: top1 predicts each by its partner."""
    rng = np.random.default_rng(7)
    scores = rng.uniform(0, 9, (6, 25, 5))
    base = unit_vectors(3, 16, 8)
    emb = np.repeat(base, 2, axis=0) + 0.01 * unit_vectors(6, 16, 9)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    report = leave_one_out(scores, emb, Rule("top1"))
    partner = scores[[1, 0, 3, 2, 5, 4]]
    assert report.rows["top1"]["srocc"] == pytest.approx(spearmanr(scores.ravel(), partner.ravel())[0])
    mean = (scores.sum(axis=0) - scores) / 5
    assert report.rows["mean"]["srocc"] == pytest.approx(spearmanr(scores.ravel(), mean.ravel())[0])


@pytest.mark.slow
def test_fidelity_baselines_on_kadid_match_the_data_readme(kadid_table_bank):
    """shared/data/README.md: mean 0.938, one random other reference 0.883, best other reference 0.953."""
    report = leave_one_out(normalise_scores(kadid_table_bank.scores, "minmax:0:9"), None, Rule("mean"))
    assert report.rows["mean"]["srocc"] == pytest.approx(0.938, abs=0.001)
    assert report.rows["random"]["srocc"] == pytest.approx(0.883, abs=0.01)
    assert report.rows["oracle"]["srocc"] == pytest.approx(0.953, abs=0.001)

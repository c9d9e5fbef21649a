"""Banks that cannot score a build, or hold scores their kind forbids, are refused before labelling."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import invoke_label, one_line_failure

from saqt.build.sources import sample_paths


def _csv_bank(folder: Path, scores) -> Path:
    """A generic CSV bank of two references (copies of sample photos 0 and 1) with ``scores(ref, t, lv)``."""
    folder.mkdir()
    rows = ["ref,type,level,score"]
    for i in (0, 1):
        shutil.copy(sample_paths()[i], folder / f"ref{i}.png")
        rows += [
            f"ref{i}.png,{t},{lv},{s}"
            for t in range(1, 26)
            for lv in range(1, 6)
            if (s := scores(i, t, lv)) is not None
        ]
    (folder / "scores.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "scores, rule, message",
    [
        (lambda i, t, lv: 3.0, "top1", "needs scores that differ"),
        (lambda i, t, lv: None if t == 9 else float(lv + i), "top1", "no reference of the bank"),
        (lambda i, t, lv: "nan" if (t, lv) == (1, 1) else float(lv), "top1", "is not a finite number"),
        (lambda i, t, lv: "inf" if (t, lv) == (1, 3) else float(lv), "top1", "is not a finite number"),
        (lambda i, t, lv: None if (i, t, lv) == (1, 1, 1) else float(lv + t), "top1", "would get no score"),
    ],
)
def test_banks_that_cannot_score_the_build_are_refused(stages, tmp_path, scores, rule, message):
    bank = _csv_bank(tmp_path / "bank", scores)
    result = invoke_label(stages / "build", bank, tmp_path / "labels", "--rule", rule, "--device", "cpu")
    one_line_failure(result, message)
    assert not list((tmp_path / "labels").glob("labels/*")) and not (tmp_path / "labels" / "label.json").exists()


def test_negative_scores_are_refused_where_the_bank_kind_forbids_them(tmp_path):
    from saqt.label.reference_bank import BankError, load_bank

    bank = tmp_path / "kadid"
    bank.mkdir()
    (bank / "dmos.csv").write_text(
        "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.5,0.1\nI01_01_02.png,I01.png,-2,0.1\n"
    )
    with pytest.raises(BankError, match="outside the kadid10k range"):
        load_bank(bank)

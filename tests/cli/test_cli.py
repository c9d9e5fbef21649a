"""The ``saqt`` and ``glint`` command lines, run in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.saqt_cli import app as saqt_app
from saqt.build.distortions import distort
from saqt.core.images import decode_image
from saqt.core.seeding import derive_seed

runner = CliRunner()


def test_distortions_list_shows_all_types():
    result = runner.invoke(saqt_app, ["distortions", "list"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 27 and lines[2].split()[:2] == ["1", "gaussian_blur"]
    as_json = json.loads(runner.invoke(saqt_app, ["distortions", "list", "--json"]).output)
    assert [e["id"] for e in as_json] == list(range(1, 26)) and as_json[9]["values"] == [43, 36, 24, 7, 4]


def test_render_writes_pngs_identical_to_the_api_and_a_contact_sheet(tmp_path, photo):
    image = tmp_path / "in.png"
    Image.fromarray(photo).save(image)
    out = tmp_path / "out"
    result = runner.invoke(
        saqt_app,
        [
            "distortions",
            "render",
            str(image),
            "--out",
            str(out),
            "--types",
            "2,13-14",
            "--levels",
            "1,5",
            "--seed",
            "9",
        ],
    )
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in out.glob("in_[0-9]*.png"))
    assert pngs == [f"in_{t:02d}_{lv:02d}.png" for t in (2, 13, 14) for lv in (1, 5)]
    for t, lv in [(2, 5), (13, 1)]:
        np.testing.assert_array_equal(
            decode_image(out / f"in_{t:02d}_{lv:02d}.png"), distort(photo, t, lv, seed=derive_seed(9, t, lv))
        )
    sheet = Image.open(out / "in_contact.png")
    assert sheet.width > 3 * 192 and sheet.height > 3 * 144


def test_render_skips_unreadable_images_and_exits_nonzero(tmp_path, photo):
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    Image.fromarray(photo).save(good)
    bad.write_bytes(b"not an image")
    result = runner.invoke(
        saqt_app,
        ["distortions", "render", str(bad), str(good), "--out", str(tmp_path / "o"), "--types", "1", "--levels", "1"],
    )
    assert result.exit_code == 1
    assert "skipped" in result.output and "bad.jpg" in result.output
    assert (tmp_path / "o" / "good_01_01.png").exists()


@pytest.mark.parametrize(
    "args, message", [(["--types", "0-3"], "--types"), (["--levels", "2,9"], "--levels"), ([], "IMAGE")]
)
def test_render_refuses_bad_arguments_before_work(tmp_path, args, message):
    result = runner.invoke(saqt_app, ["distortions", "render", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "o").exists()

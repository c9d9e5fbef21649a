"""``saqt report``: the matches (pristine images next to their references, similarity, inherited labels), the
screen statistics, bank usage with thumbnails, legends of built levels only; for labels made with ``--matches``
from a bank with reference images, and from a score table alone; escaping and size bounds."""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import replace

import matplotlib.axes
import matplotlib.figure
import pytest
from conftest import REPORT_SECTIONS, self_contained, write_kadid_table
from PIL import Image
from typer.testing import CliRunner

from pipelines.executors import LocalExecutor
from pipelines.saqt_cli import app
from saqt.build.build_stage import BuildConfig, run_build
from saqt.build.sources import sample_paths
from saqt.core.context import RunContext
from saqt.inspect.report import render_report
from saqt.label.label_stage import LabelConfig, run_label

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

PAYLOAD = "<img src=x onerror=alert(1)>"
REFS = [f"I{i:02d}" for i in range(1, 13)]


def _photo(path, size, **save):
    Image.open(sample_paths()[0]).convert("RGB").resize(size).save(path, **save)


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """A build of four source images (two refused by the screen), labelled twice with given matches: from a KADID-10k
    bank holding the images of I01 and I02 only, and from the same scores as a table alone."""
    root = tmp_path_factory.mktemp("report")
    photos = root / "photos"
    photos.mkdir()
    _photo(photos / f"{PAYLOAD}.png", (200, 150))
    _photo(photos / "q95.jpg", (200, 150), quality=95)
    _photo(photos / "q50.jpg", (200, 150), quality=50)
    _photo(photos / "small.png", (60, 40))
    run_build(
        BuildConfig(
            source="folder",
            root=str(photos),
            size=(96, 64),
            types=(1, 2),
            levels=(2, 4),
            min_side=16,
            images_per_shard=1,
        ),
        root / "build",
        RunContext(LocalExecutor(1), progress=False),
    )
    bank, table = root / "kadid", root / "table"
    (bank / "images").mkdir(parents=True)
    table.mkdir()
    write_kadid_table(bank, REFS)
    write_kadid_table(table, REFS)
    for ref in ("I01", "I02"):
        _photo(bank / "images" / f"{ref}.png", (120, 90))
    matches = root / "matches.csv"
    matches.write_text(f"kadis,kadid-10k,sim_value\n{PAYLOAD}.png,I01.png,0.91\nq95.jpg,I03.png,0.42\n")
    for name, source in (("labels", bank), ("labels-table", table / "dmos.csv")):
        config = LabelConfig(build=str(root / "build"), bank=str(source), matches=str(matches))
        run_label(replace(config, device="cpu"), root / name, RunContext(progress=False, command="saqt label (test)"))
    return root


@pytest.fixture(scope="module")
def legends(stages):
    """The report with the bank's images, the labels of every figure legend drawn for it, and every list of y tick
    labels set."""
    drawn, ticks, original, set_ticks = [], [], matplotlib.figure.Figure.legend, matplotlib.axes.Axes.set_yticks

    def recording(self, *args, **kwargs):
        legend = original(self, *args, **kwargs)
        drawn.append([t.get_text() for t in legend.get_texts()])
        return legend

    def recording_ticks(self, positions, labels=None, **kwargs):
        ticks.append(list(labels) if labels is not None else None)
        return set_ticks(self, positions, labels, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.figure.Figure, "legend", recording)
        mp.setattr(matplotlib.axes.Axes, "set_yticks", recording_ticks)
        page = render_report(stages / "labels", images=1)
    return page, drawn, ticks


def _section(page: str, key: str) -> str:
    return re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)[1]


def test_sections_and_no_payload_survives(legends):
    page = legends[0]
    assert re.findall(r'<section id="([a-z]+)"', page) == REPORT_SECTIONS
    assert PAYLOAD not in page and "onerror=alert(1)&gt;<wbr>.png" in page
    assert self_contained(page)  # everything inline: no file next to the report


def test_each_pristine_image_is_shown_next_to_its_reference_closest_first(legends):
    matches = _section(legends[0], "matches")
    assert "2 of 2 pristine images" in matches
    closest, farthest = matches.index("similarity 0.910"), matches.index("similarity 0.420")
    assert closest < farthest and matches.index("I01") < closest and "I03" in matches[closest:]
    assert matches.count('alt="reference I01"') == 1 and 'alt="reference I03"' not in matches
    assert "the bank lacks this reference&#x27;s file" in matches  # I03 has scores but no image in the bank
    assert matches.count('class="ref"') == 3  # two pristine images and I01


def test_inherited_labels_are_the_references_normalised_scores(legends):
    matches = _section(legends[0], "matches")
    # write_kadid_table scores I01 (index 0) type t level lv as 1 + (t + lv) % 5 on 1..5; minmax:0:9 maps s to (s-1)*9/4
    for t, lv, name in [(1, 2, "gaussian_blur"), (2, 4, "lens_blur")]:
        expected = (1 + (t + lv) % 5 - 1) * 9 / 4
        assert f'title="type {t} {name}, level {lv}: {expected:.2f}"' in matches
    assert "<th>L2</th>" in matches and "<th>L4</th>" in matches and "<th>L1</th>" not in matches


def test_legends_name_only_the_levels_built(legends):
    assert ["level 2", "level 4"] in legends[1]
    assert not any(f"level {lv}" in label for labels in legends[1] for label in labels for lv in (1, 3, 5))


def test_screen_says_what_was_kept_and_refused_and_why(legends):
    screen = _section(legends[0], "screen")
    assert "q50.jpg: low JPEG quality (estimated 50; --min-jpeg-quality 90)" in screen
    assert "small.png: needs upscaling (60x40 by 1.6x to cover 96x64; --max-upscale 1)" in screen
    assert "Of the 2 images kept: enlarged 0; reduced or kept at size 2. JPEGs 1 (estimated quality 95 to 95" in screen
    assert "4 candidates screened, 2 refused" in screen


def test_bank_usage_shows_the_references_with_thumbnails(legends):
    bank = _section(legends[0], "bank")
    assert "2 of 12 references are the nearest for at least one of 2 pristine images" in bank
    assert bank.count('alt="reference I01"') == 1 and "no reference image" in bank  # I03: a box, not a thumbnail


def test_thumbnails_are_small(legends):
    for uri in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', legends[0]):
        assert Image.open(io.BytesIO(base64.b64decode(uri))).width <= 416


def test_a_bank_given_by_its_score_table_says_so_instead_of_thumbnails(stages):
    page = render_report(stages / "labels-table", images=1)
    matches = _section(page, "matches")
    assert "the bank was given by its score table only: it has no reference images to show" in matches
    assert 'alt="reference' not in page and matches.count("no image") == 2


def test_pairs_bounds_the_images_shown_from_the_closest_match(stages, tmp_path):
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(stages / "labels"), "--pairs", "1", "--out", str(out)])
    assert result.exit_code == 0 and "self-contained: images inline" in result.output
    matches = _section(out.read_text(), "matches")
    assert "1 of 2 pristine images" in matches and "similarity 0.910" in matches and "0.420" not in matches


def test_a_report_refuses_to_replace_a_file_without_overwrite_and_a_foreign_file_even_with_it(stages, tmp_path):
    out, runner = tmp_path / "r.html", CliRunner()
    report = ["report", str(stages / "labels"), "--images", "1", "--pairs", "1", "--out", str(out)]
    assert runner.invoke(app, report).exit_code == 0
    first = out.read_bytes()
    again = runner.invoke(app, report)
    assert again.exit_code == 2 and again.output.strip().count("\n") == 0, again.output
    assert f"{out} exists: use --overwrite" in again.output and out.read_bytes() == first
    out.write_bytes(first.replace(b"</main>", b"<p>earlier</p></main>"))
    assert runner.invoke(app, [*report, "--overwrite"]).exit_code == 0 and out.read_bytes() == first
    out.write_text("my notes")  # not a report: --overwrite replaces only a report saqt wrote
    foreign = runner.invoke(app, [*report, "--overwrite"])
    assert foreign.exit_code == 2 and "saqt did not write" in foreign.output and out.read_text() == "my notes"


def test_a_report_never_writes_through_a_link(stages, tmp_path):
    target, link = tmp_path / "elsewhere.html", tmp_path / "r.html"
    target.write_text("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>SAQT-IQA report: x")
    link.symlink_to(target)
    for extra in ([], ["--overwrite"]):
        result = CliRunner().invoke(app, ["report", str(stages / "labels"), "--out", str(link), *extra])
        assert result.exit_code == 2 and "a symbolic link that saqt did not write" in result.output, result.output
    assert link.is_symlink() and target.read_text().endswith("report: x")


def test_title_names_the_folder_and_its_parent_and_the_grid_names_source_files(legends):
    page = legends[0]
    root = re.search(r"<h1>SAQT-IQA report: ([^<]+)</h1>", page)[1]
    assert root.endswith("/labels") and "(label)" not in page[: page.index("<nav>")]
    grid = _section(page, "grid")
    assert re.search(r'<code title="pristine id [0-9a-f]+">(q95<wbr>\.jpg|.*onerror=alert\(1\)&gt;<wbr>\.png)', grid)


def test_a_bank_near_the_images_gets_no_note(legends):
    assert "Note:" not in _section(legends[0], "summary")  # similarities 0.91 and 0.42: median 0.665


def test_screen_counts_name_duplicates_only_when_there_are_some(legends):
    from saqt.inspect.report import screen_counts

    assert "duplicate" not in _section(legends[0], "screen")
    assert screen_counts({"screened": 9, "refused": 3, "duplicates": 1}) == (
        "9 candidates screened, 3 refused (1 of them a duplicate of an image kept)."
    )
    assert screen_counts({"screened": 9, "refused": 3, "duplicates": 2}).endswith(
        "(2 of them duplicates of an image kept)."
    )


def test_bank_usage_names_each_reference_beside_its_bar_most_used_first(legends):
    # I01 and I03 are the nearest for one image each (ties: by name); the other ten, unused, follow in bank order
    assert ["I01", "I03", *[r for r in REFS if r not in ("I01", "I03")]] in legends[2]


def test_a_bank_far_from_the_images_is_named_by_label_and_report(stages, tmp_path):
    far = tmp_path / "far.csv"  # the matches' similarities: median 0.265, below bank_fit.LOW_SIMILARITY
    far.write_text(f"kadis,kadid-10k,sim_value\n{PAYLOAD}.png,I01.png,0.31\nq95.jpg,I03.png,0.22\n")
    out, runner = tmp_path / "labels", CliRunner()
    args = ["label", "--build", str(stages / "build"), "--bank", str(stages / "kadid"), "--matches", str(far)]
    result = runner.invoke(app, [*args, "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sentence = "the median similarity to the nearest reference is 0.27 (below 0.5)"
    assert [line for line in result.output.splitlines() if sentence in line][0].startswith("warning: the bank (12 ")
    summary = _section(render_report(out, images=1, pairs=1), "summary")
    assert "Note:</b> the bank (12 references) looks too small or too far" in summary and sentence in summary


def test_a_rule_no_better_than_the_mean_is_named_in_the_fidelity_section(stages, tmp_path):
    figures = {"bank": "b", "encoder": "e", "references": 4, "rule": "topk"}
    notes = []
    for topk in (0.806, 0.9):
        predictors = {"topk": {"srocc": topk, "plcc": 0.7}, "mean": {"srocc": 0.838, "plcc": 0.75}}
        (tmp_path / "f.json").write_text(json.dumps({**figures, "predictors": predictors}))
        notes.append(_section(render_report(stages / "labels", 1, tmp_path / "f.json", 1), "fidelity"))
    assert "<b>Note:</b> the rule <code>topk</code> (SROCC 0.806) predicts held-out references" in notes[0]
    assert "content-agnostic <code>mean</code> (0.838)" in notes[0] and "Note:" not in notes[1]

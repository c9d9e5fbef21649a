"""The ``saqt`` command line's names: --version, help panels, the renamed --neighbours (old --k kept hidden),
--exclude-refs by the names users see, and error messages that name this CLI's options."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from conftest import write_kadid_table
from helpers import panels
from typer.testing import CliRunner

from pipelines.saqt_cli import app
from saqt.label.reference_bank import BankError, load_bank

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"})

BUILD_PANELS = {
    "Source": ["--source", "--root", "--list", "--split"],
    "Selection": ["--limit", "--per-class", "--selection", "--seed"],
    "Screen": ["--screen", "--max-upscale", "--min-jpeg-quality", "--min-side", "--allow-grey"],
    "Plan": ["--size", "--types", "--levels", "--per-image"],
    "Output": ["--out", "--recipe-only", "--images-per-shard", "--overwrite"],
    "Execution": ["--workers", "--executor", "--ray-address"],
}
LABEL_PANELS = {
    "Inputs": ["--build", "--bank", "--bank-type", "--exclude-refs"],
    "Matching": ["--preset", "--matches", "--encoder", "--index"],
    "Transfer": ["--rule", "--neighbours", "--temperature", "--normalise"],
    "Output": ["--out", "--overwrite"],
    "Execution": ["--device", "--batch-size", "--loader-workers", "--workers", "--executor", "--ray-address"],
}


def test_version_prints_the_projects_version():
    result = runner.invoke(app, ["--version"])
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert result.exit_code == 0 and result.output.strip() == f"saqt {version}"


@pytest.mark.parametrize(("command", "expected"), [("build", BUILD_PANELS), ("label", LABEL_PANELS)])
def test_options_are_grouped_in_help_panels(command, expected):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    shown = panels(result.output)
    for title, options in expected.items():
        assert shown.get(title) == options, (title, shown)
    assert shown["Options"] == ["--help"]  # nothing left in the catch-all box


def test_neighbour_count_is_named_neighbours_with_a_short_k():
    for command in ("label", "fidelity"):
        text = runner.invoke(app, [command, "--help"]).output
        assert re.search(r"--neighbours\s+-k\s", text), text
        assert not re.search(r"--k\b", text)  # the old name works but is not advertised


@pytest.mark.parametrize("spelling", ["--neighbours", "-k", "--k"])
def test_old_and_new_names_reach_the_rule(tmp_path, spelling):
    # 0 is refused by the rule, so the error proves the value given under each name reached it (the default is 3)
    args = ["label", "--build", str(tmp_path), "--bank", str(tmp_path), "--out", str(tmp_path / "l"), spelling, "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "saqt label: --neighbours must be at least 1" in result.stderr
    assert ("--k is deprecated; use --neighbours" in result.stderr) == (spelling == "--k")


def test_an_old_name_is_read_only_by_the_commands_that_have_its_new_one(tmp_path):
    result = runner.invoke(app, ["build", "--root", str(tmp_path), "--k", "2"])  # build has no --neighbours
    assert result.exit_code == 2 and "No such option: --k" in result.output and "deprecated" not in result.output
    said = runner.invoke(app, ["fidelity", "--bank", str(tmp_path / "none"), "--k=0"])  # the --old=value form too
    assert "saqt fidelity: --k is deprecated; use --neighbours" in said.stderr, said.output


def test_references_resolve_from_the_names_users_see(tmp_path):
    bank = load_bank(write_kadid_table(tmp_path, [f"I{i:02d}" for i in range(1, 13)]))
    assert bank.resolve(["I01", "I02.png", "i03", "I04.PNG"]) == {"I01", "I02", "I03", "I04"}
    assert bank.without({"I05.png"}).excluded == ("I05",)
    with pytest.raises(BankError) as err:
        bank.resolve(["I01", "I99.png", "kodim01"])
    message = str(err.value)
    assert "does not have: I99.png, kodim01;" in message and "I01" not in message.split(";")[0]
    assert message.endswith("its 12 references are I01, I02, I03, I04, I05, I06, ..., I11, I12")


def test_ambiguous_names_are_refused(tmp_path):
    (tmp_path / "scores.csv").write_text(
        "ref,type,level,score\n"
        + "".join(
            f"{r},{t},{lv},{t + lv}\n" for r in ("a/x.png", "b/x.png") for t in range(1, 26) for lv in range(1, 6)
        )
    )
    bank = load_bank(tmp_path, "csv")
    assert bank.resolve(["a/x.png"]) == {"a/x.png"}  # an exact id wins
    with pytest.raises(BankError, match=r"x\.png could be any of a/x\.png, b/x\.png"):
        bank.resolve(["x.png"])


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "b"
    result = runner.invoke(
        app,
        [
            "build",
            "--out",
            str(out),
            "--size",
            "96x64",
            "--types",
            "1",
            "--levels",
            "1,2",
            "--limit",
            "2",
            "--max-upscale",
            "1.3",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_exclude_refs_by_file_name_in_a_label_run(tmp_path, tiny_build):
    table = write_kadid_table(tmp_path, [f"I{i:02d}" for i in range(1, 5)])
    exclusions = tmp_path / "test_refs.txt"
    exclusions.write_text("I01.png  # a test reference\ni02\n")
    args = [
        "label",
        "--build",
        str(tiny_build),
        "--bank",
        str(table),
        "--rule",
        "mean",
        "--exclude-refs",
        str(exclusions),
        "--out",
        str(tmp_path / "labels"),
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    bank = json.loads((tmp_path / "labels" / "label.json").read_text())["inputs"]["bank"]
    assert bank["excluded"] == ["I01", "I02"] and bank["references"] == 2
    exclusions.write_text("I07\n")
    result = runner.invoke(app, [*args[:-3], str(tmp_path / "labels2"), "--device", "cpu"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "saqt label: --exclude-refs names references the bank" in result.stderr
    assert "does not have: I07; its 4 references are I01, I02, I03, I04" in result.stderr


@pytest.mark.slow
def test_ray_connection_error_names_the_ray_address_option(monkeypatch):
    # Ray's own wording, raised by ray.init where no cluster answers. Stood in for: a real unreachable address makes
    # Ray wait about a minute, and `auto` on a shared machine may find someone else's cluster.
    ray = pytest.importorskip("ray")
    from pipelines.ray_executor import RayExecutor
    from saqt.core.errors import ConfigError

    def refuse(**kwargs):
        raise ConnectionError(
            "Could not find any running Ray instance. Please specify the one to connect to by "
            "setting `--address` flag or `RAY_ADDRESS` environment variable."
        )

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(ConfigError) as err:
        RayExecutor(address="auto")
    assert str(err.value) == (
        "--ray-address auto: Could not find any running Ray instance. Please specify the one to "
        "connect to by setting --ray-address or `RAY_ADDRESS` environment variable."
    )

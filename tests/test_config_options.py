"""Commands whose options come from their stage's config (``saqt.options.option`` fields, turned into Typer options
by ``pipelines.cli_common.config_options``): every option field is offered, with its help and panel, and a new field
is a new option."""

from __future__ import annotations

import importlib
import inspect
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import typer
from test_cli_consistency import panels
from typer.testing import CliRunner

from pipelines.cli_common import Options, config_options
from pipelines.saqt_cli import app as saqt_app
from saqt.configs import SYNTH_METRICS, BuildConfig, FidelityConfig, LabelConfig, PublishConfig, SynthConfig
from saqt.options import option, option_of

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"})
COMMANDS = {
    ("saqt", "build"): BuildConfig,
    ("saqt", "label"): LabelConfig,
    ("saqt", "fidelity"): FidelityConfig,
    ("saqt", "publish"): PublishConfig,
    ("saqt", "bank synth"): SynthConfig,
    ("glint", "pretrain"): "glint.pretrain.PretrainConfig",
    ("glint", "finetune"): "glint.finetune.FinetuneConfig",
    ("glint", "evaluate"): "glint.evaluate.EvaluateConfig",
}


def flat(text: str) -> str:
    """Help text with the boxes and line wrapping taken out."""
    return " ".join(text.replace("│", " ").split())


def flag(f) -> str:
    """The field's option name as ``panels`` reads it (letters and dashes: --fp32 is --fp)."""
    spec = option_of(f)
    name = spec.flags[0] if spec.flags else "--" + f.name.replace("_", "-")
    return re.match(r"--[a-z-]+", name)[0]


@pytest.mark.parametrize(("app", "command"), COMMANDS)
def test_every_option_field_is_an_option_with_its_help_in_its_panel(app, command):
    config = COMMANDS[app, command]
    if app == "glint":  # torch and the model: imported only here
        from pipelines.glint_cli import app as glint_app

        module, name = config.rsplit(".", 1)
        config, cli = getattr(importlib.import_module(module), name), glint_app
    else:
        cli = saqt_app
    result = runner.invoke(cli, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    shown, text = panels(result.output), flat(result.output)
    offered = [f for f in fields(config) if option_of(f)]
    assert len(offered) >= 9
    for f in offered:
        spec = option_of(f)
        assert flag(f) in shown[spec.panel or "Options"], (f.name, shown)
        assert flat(spec.help.replace("`", "")) in text.replace("`", ""), f.name  # glint's help is markdown


def test_a_field_without_option_metadata_is_not_offered():
    [library_only] = [f.name for f in fields(BuildConfig) if not option_of(f)]
    assert library_only == "max_pixels"
    assert "--max-pixels" not in runner.invoke(saqt_app, ["build", "--help"]).output


def _app(config: type, received: list) -> typer.Typer:
    """A throwaway app whose one command takes ``config``'s options and an own --out placed before ``size``."""
    app = typer.Typer()

    @app.command()
    @config_options(config, before={"out": "size"})
    def make(given: Options, out: Path = Path("here"), verbose: bool = False) -> None:
        """Make a thing."""
        received.append((given.make(config, size=int(given["size"].rstrip("px"))), out, verbose))

    @app.command()
    def other() -> None:
        """A second command, so the first is invoked by name."""

    return app


@dataclass(frozen=True)
class Thing:
    name: str = option(help="What to call it.", panel="Naming", cli_type=str)
    size: int = option(3, "How big, e.g. 5px.", "Shape", cli_type=str, cli_default="3px")
    colour: str = option("red", "Its colour.", "Shape", flags=("--colour", "-c"))
    cache: int = 7  # not an option


@dataclass(frozen=True)
class BiggerThing(Thing):
    weight: float = option(1.5, "How heavy, in kg.", "Shape")


def test_fields_become_options_and_their_values_the_config():
    received = []
    app = _app(Thing, received)
    result = runner.invoke(app, ["make", "--help"])
    assert result.exit_code == 0, result.output
    assert panels(result.output) == {
        "Options": ["--out", "--verbose", "--help"],
        "Naming": ["--name"],
        "Shape": ["--size", "--colour"],
    }
    text = flat(result.output)
    assert "--name <str> What to call it. [required]" in text
    assert "--size <str> How big, e.g. 5px. [default: 3px]" in text
    order = inspect.signature(app.registered_commands[0].callback).parameters
    assert list(order) == ["name", "out", "size", "colour", "verbose"]  # --out placed before size, own ones last
    assert "--colour -c <str> Its colour. [default: red]" in text and "--weight" not in text and "--cache" not in text
    result = runner.invoke(app, ["make", "--name", "box", "--size", "9px", "-c", "blue", "--out", "x", "--verbose"])
    assert result.exit_code == 0, result.output
    assert received == [(Thing("box", 9, "blue"), Path("x"), True)]
    assert runner.invoke(app, ["make", "--size", "9px"]).exit_code == 2  # --name is required


def test_a_new_field_is_a_new_option():
    received = []
    app = _app(BiggerThing, received)
    assert "--weight <float> How heavy, in kg. [default: 1.5]" in flat(runner.invoke(app, ["make", "--help"]).output)
    result = runner.invoke(app, ["make", "--name", "box", "--weight", "2.5"])
    assert result.exit_code == 0, result.output
    assert received == [(BiggerThing("box", 3, "red", weight=2.5), Path("here"), False)]


def test_an_option_name_given_twice_is_refused():
    with pytest.raises(TypeError, match="given twice"):

        @config_options(Thing)
        def clash(given: Options, colour: str = "") -> None: ...


def test_the_synth_metrics_offered_are_the_ones_implemented():
    """``--metric`` is checked against the light config's table, whose every entry names the function the bank stage
    scores with."""
    import saqt.bank_synth
    from saqt.registry import resolve

    assert tuple(SYNTH_METRICS) == ("ms_ssim", "psnr")
    assert [resolve(target) for target in SYNTH_METRICS.values()] == [saqt.bank_synth.ms_ssim, saqt.bank_synth.psnr]


def test_every_named_implementation_resolves():
    """Each registry of "module:attribute" targets names a callable that exists (a typo would surface only when a
    user picked that name)."""
    from glint.architecture import LOCAL_BACKBONES
    from saqt.encoders.base import FACTORIES
    from saqt.fetch import PREPARE
    from saqt.registry import resolve

    targets = [f.target for f in FACTORIES.values()] + [*SYNTH_METRICS.values(), *LOCAL_BACKBONES.values()]
    targets += [target for target, _ in PREPARE.values()]
    assert len(targets) == 4 + 2 + 2 + 3
    assert all(callable(resolve(target)) for target in targets)


def test_path_options_are_held_absolute_however_spelled(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    monkeypatch.chdir(tmp_path / "work")
    real = os.path.realpath(tmp_path / "data")
    label = LabelConfig(build="../data/", bank=Path("../link"), matches="authors")
    assert (label.build, label.bank, label.matches) == (real, real, "authors")
    build = BuildConfig(root="./../work/../data", selection="authors")
    assert (build.root, build.list_file, build.selection) == (real, None, "authors")
    assert SynthConfig(root="../link/").root == real and PublishConfig("../data").labels == real

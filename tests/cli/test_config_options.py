"""Commands whose options come from their stage's config (``saqt.core.config_options.option`` fields, turned into Typer options
by ``pipelines.cli_common.config_options``): every option field is offered, with its help and panel, and a new field
is a new option."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
import re
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path

import pytest
import typer
from helpers import panels
from typer.testing import CliRunner

from pipelines.cli_common import Options, config_options
from pipelines.saqt_cli import app as saqt_app
from saqt.build.screen import Screen
from saqt.core.config_options import config_class, include, option, option_of, recorded
from saqt.core.errors import ConfigError
from saqt.label.stage_configs import (
    SYNTH_METRICS,
    BuildConfig,
    FidelityConfig,
    LabelConfig,
    PublishConfig,
    ScreenOptions,
    SynthConfig,
)
from saqt.label.transfer import Rule

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
    import saqt.label.synth_stage
    from saqt.core.registry import resolve

    assert tuple(SYNTH_METRICS) == ("ms_ssim", "psnr")
    assert [resolve(target) for target in SYNTH_METRICS.values()] == [
        saqt.label.synth_stage.ms_ssim,
        saqt.label.synth_stage.psnr,
    ]


def test_every_named_implementation_resolves():
    """Each registry of "module:attribute" targets names a callable that exists (a typo would surface only when a
    user picked that name)."""
    from glint.architecture import LOCAL_BACKBONES
    from saqt.core.registry import resolve
    from saqt.fetch.archives import PREPARE
    from saqt.label.encoders.base import FACTORIES

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


# --- option groups: declared once (saqt.core.config_options.include), held flat ------------------------------------------------

# build.json's and bank.json's "config" as 0.4.0 wrote them for these settings: a resume compares them key by key.
BUILD_0_4_0 = {
    "source": "folder",
    "root": "/photos",
    "list_file": None,
    "split": None,
    "limit": None,
    "per_class": None,
    "selection": None,
    "seed": 0,
    "screen": True,
    "max_upscale": 1.0,
    "min_jpeg_quality": 90,
    "min_side": 3,
    "allow_grey": False,
    "size": [512, 384],
    "types": list(range(1, 26)),
    "levels": [1, 2, 3, 4, 5],
    "per_image": None,
    "recipe_only": False,
    "images_per_shard": 8,
    "max_pixels": 64000000,
}
SYNTH_0_4_0 = {
    "source": "folder",
    "root": "/photos",
    "list_file": None,
    "limit": None,
    "seed": 0,
    "size": [512, 384],
    "metric": "ms_ssim",
    "min_side": 128,
    "min_jpeg_quality": 90,
    "max_upscale": 1.0,
    "allow_grey": False,
    "save_distorted": False,
}


def test_configs_with_groups_record_what_0_4_0_recorded():
    assert BuildConfig(source="folder", root="/photos", min_side=3).as_dict() == BUILD_0_4_0
    assert json.loads(json.dumps(asdict(SynthConfig(root="/photos")))) == SYNTH_0_4_0
    assert list(recorded(LabelConfig(build="/b", bank="/k")))[-4:] == ["rule", "k", "temperature", "normalise"]


def test_a_group_is_one_attribute_made_from_the_flat_fields():
    build = BuildConfig(min_side=200, max_upscale=1.5, allow_grey=True)
    assert build.screen_options == ScreenOptions(max_upscale=1.5, min_jpeg_quality=90, min_side=200, allow_grey=True)
    assert build.pristine_screen == Screen(min_side=200, min_jpeg_quality=90, allow_grey=True, max_upscale=1.5)
    assert BuildConfig(screen=False, min_side=200).pristine_screen == Screen.off()
    assert list(vars(build)) == [f.name for f in fields(BuildConfig)]  # Config(**vars(config)) still makes a copy
    synth = SynthConfig(source="list", list_file="/l.txt", metric="psnr", min_jpeg_quality=0)
    assert synth.source_options.inputs == {"--root": None, "--list": "/l.txt"}
    assert synth.reference_screen == Screen(min_jpeg_quality=0)
    label = LabelConfig(build="/b", bank="/k", rule="topk", neighbours=5, temperature=0.1)
    assert label.transfer_rule == Rule("topk", 5, 0.1) and label.transfer_rule is label.transfer_rule  # built once
    assert replace(label, neighbours=2).transfer_rule == Rule("topk", 2, 0.1)
    assert FidelityConfig(rule="mean").transfer_rule == Rule("mean")
    copy = pickle.loads(pickle.dumps(build))  # configs travel to worker processes
    assert copy == build and copy.pristine_screen == build.pristine_screen


@pytest.mark.parametrize("config", [BuildConfig, partial(SynthConfig, metric="psnr")])
@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"min_side": 0}, "--min-side must be at least 1, got 0"),
        ({"min_jpeg_quality": 101}, "--min-jpeg-quality must be in 0..100"),
        ({"max_upscale": 0.0}, "--max-upscale a positive number"),
    ],
)
def test_screen_settings_are_checked_in_one_place_as_the_config_is_made(config, given, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config(**given)


def test_transfer_settings_are_checked_as_the_config_is_made():
    for config in (partial(LabelConfig, build="/b", bank="/k"), FidelityConfig):
        with pytest.raises(ConfigError, match="--neighbours must be at least 1"):
            config(rule="topk", neighbours=0)
        with pytest.raises(ConfigError, match="--rule must be one of"):
            config(rule="median")


@dataclass(frozen=True)
class _Pair:
    low: int = option(1, "Low.", "Panel")
    high: int = option(9, "High.", "Panel", flags=("--top",))

    def __post_init__(self):
        if self.low > self.high:
            raise ConfigError("--low above --high")


def test_include_puts_a_groups_fields_in_place_with_the_configs_own_defaults_and_helps():
    made = []

    @config_class
    class Toy:
        first: str = option("a", "First.")
        pair: _Pair = include(_Pair, defaults={"high": 5}, helps={"low": "Lowest."})
        last: bool = option(False, "Last.")

        def __post_init__(self):
            made.append(self.low)

    assert [f.name for f in fields(Toy)] == ["first", "low", "high", "last"]
    low, high = (option_of(f) for f in fields(Toy)[1:3])
    assert (low.help, low.panel, high.help, high.flags) == ("Lowest.", "Panel", "High.", ("--top",))
    assert option_of(fields(_Pair)[0]).help == "Low." and _Pair().high == 9  # the group itself is unchanged
    toy = Toy(low=2)
    assert (toy.high, toy.pair, made) == (5, _Pair(2, 5), [2])
    with pytest.raises(ConfigError, match="--low above --high"):
        Toy(low=6)
    with pytest.raises(TypeError, match="_Pair has no option middle"):
        include(_Pair, helps={"middle": "?"})
    with pytest.raises(TypeError, match="Twice: option low is declared twice"):

        @config_class
        class Twice:
            low: int = option(0, "Low again.")
            pair: _Pair = include(_Pair)

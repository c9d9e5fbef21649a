"""Both apps answer --help and --version without importing the heavy libraries (torch and the model, the index, the
image and plotting libraries, Ray): each is imported where it is used, so help is instant. Checked by what a fresh
interpreter has loaded, not by timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from saqt import __version__

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "torch",
    "torchvision",
    "timm",
    "open_clip",
    "faiss",
    "cv2",
    "matplotlib",
    "pyarrow",
    "ray",
    "huggingface_hub",
    "numba",
)

# Run in a fresh interpreter: every command's --help and each app's --version, then the heavy modules loaded.
SCRIPT = """
import json, sys
from typer.main import get_command
from typer.testing import CliRunner
from pipelines.{cli} import app

def paths(command, path=()):
    yield path
    for name, sub in getattr(command, "commands", {{}}).items():
        yield from paths(sub, (*path, name))

runner = CliRunner()
results = {{" ".join(p): runner.invoke(app, [*p, "--help"]).exit_code for p in paths(get_command(app))}}
version = runner.invoke(app, ["--version"])
print(json.dumps({{"helps": results, "version": [version.exit_code, version.output],
                  "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def _startup(cli: str) -> dict:
    code = SCRIPT.format(cli=cli, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_either_app_loads_no_heavy_library():
    code = f"import pipelines.glint_cli, pipelines.saqt_cli, sys; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_glint_help_and_version_work_without_torch():
    found = _startup("glint_cli")
    assert found["heavy"] == []
    assert {"", "pretrain", "finetune", "evaluate", "predict"} <= set(found["helps"])
    assert set(found["helps"].values()) == {0}
    assert found["version"] == [0, f"glint (saqt-iqa) {__version__}\n"]


def test_saqt_help_and_version_work_without_heavy_libraries():
    found = _startup("saqt_cli")
    assert found["heavy"] == []
    assert {"", "build", "label", "publish", "bank synth", "distortions render"} <= set(found["helps"])
    assert set(found["helps"].values()) == {0}
    assert found["version"] == [0, f"saqt {__version__}\n"]

"""docs/tutorial.md runs: its shell and Python blocks, in order, in a fresh folder, on the shared sample data (Kodak24
as "your photos", CLIVE to finetune on), with the toolkit of this checkout; and its commands use options that exist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED, needs_shared
from helpers import check_options_exist, code_blocks, commands

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
BLOCKS = [(lang, code) for lang, code in code_blocks(TUTORIAL) if lang in ("bash", "python")]


def test_the_tutorial_covers_every_step():
    words = [w for line in commands(BLOCKS) for w in line[:2]]
    for step in ("build", "bank", "label", "report", "pretrain", "finetune", "predict", "publish"):
        assert step in words, f"no {step} in the tutorial"
    python = "".join(code for lang, code in BLOCKS if lang == "python")
    assert 'load_dataset("parquet"' in python and ".score(" in python and ".score_scale" in python
    check_options_exist(commands(BLOCKS), "docs/tutorial.md")


@pytest.mark.slow
def test_the_tutorial_runs(tmp_path, monkeypatch):
    """Each block in order: shell blocks in bash (stopping at the first failing command), Python blocks here; about
    5 minutes on 2 CPU cores (the training steps use --smoke)."""
    env = {
        **os.environ,
        "PHOTOS": str(needs_shared(SHARED / "data" / "kodak24")),
        "CLIVE": str(needs_shared(SHARED / "data" / "clive")),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # saqt and glint of this venv
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),  # this checkout
        "NO_ALBUMENTATIONS_UPDATE": "1",
    }
    monkeypatch.chdir(tmp_path)
    for i, (lang, code) in enumerate(BLOCKS):
        if lang == "bash":
            done = subprocess.run(["bash", "-eo", "pipefail", "-c", code], env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"block {i} failed:\n{code}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        else:
            exec(compile(code, f"{TUTORIAL} block {i}", "exec"), {"__name__": "tutorial"})
    assert (tmp_path / "work" / "report.html").is_file() and (tmp_path / "work" / "scores.csv").is_file()

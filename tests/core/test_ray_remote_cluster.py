"""``--ray-address``: a command joins a Ray cluster started beforehand, and leaves it running.

This module starts its own head node with ``ray start`` and stops every Ray process at the end (``ray stop`` has
no per-cluster form), so it runs after the modules that keep a cluster in the test process.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.executors import LocalExecutor
from saqt.build.build_stage import BuildConfig, run_build
from saqt.core.context import RunContext
from saqt.core.stage_contract import read_manifest

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

BIN = Path(sys.executable).parent
ARGS = ["--types", "1,10", "--levels", "1,5", "--size", "128x96", "--images-per-shard", "1", "--limit", "3"]


@pytest.fixture
def head_node():
    pytest.importorskip("ray", reason="Ray is not installed (the [ray] extra)")
    # Ray's token authentication, as on a real cluster: the head and every client share the token
    env = {
        **os.environ,
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    started = subprocess.run(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--num-cpus",
            "2",
            "--port",
            "0",
            "--disable-usage-stats",
            "--include-dashboard=false",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    address = re.search(r"--address='([^']+)'", started.stdout + started.stderr)
    assert started.returncode == 0 and address, started.stdout + started.stderr
    try:
        yield address[1], env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, env=env, timeout=120)


def _checksums(out: Path) -> dict:
    return {u: e["files"] for u, e in read_manifest(out, "build")["done"].items()}


def test_ray_address_joins_a_running_cluster_and_leaves_it_up(head_node, tmp_path):
    address, env = head_node
    for out in ("first", "second"):  # the second run can only connect if the first left the cluster up
        result = subprocess.run(
            [
                str(BIN / "saqt"),
                "build",
                "--out",
                str(tmp_path / out),
                *ARGS,
                "--executor",
                "ray",
                "--ray-address",
                address,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    run_build(
        BuildConfig(types=(1, 10), levels=(1, 5), size=(128, 96), images_per_shard=1, limit=3),
        tmp_path / "local",
        RunContext(LocalExecutor(1), progress=False),
    )
    assert _checksums(tmp_path / "first") == _checksums(tmp_path / "second") == _checksums(tmp_path / "local")

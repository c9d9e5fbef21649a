"""Workers die with their command: local worker processes and Ray tasks stop when the command is killed
(real subprocesses, real signals)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import SLOW, saqt_command, wait_for


def _descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every living descendant of ``pid``."""
    parents, cmdlines = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
            cmdlines[int(stat.parent.name)] = cmdline
    found, frontier = {}, [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found.update({p: cmdlines[p] for p in kids})
        frontier = kids
    return found


def _alive(pids) -> list[int]:
    living = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                living.append(pid)
        except OSError:
            pass
    return living


def _outlive(pids: list[int], seconds: float) -> list[int]:
    """Those of ``pids`` still alive after ``seconds``; they are killed then, so no test leaves them running."""
    deadline = time.time() + seconds
    while _alive(pids) and time.time() < deadline:
        time.sleep(0.2)
    left = _alive(pids)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_local_workers_die_with_the_command(photos, tmp_path, sig):
    log = tmp_path / "log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            saqt_command(["build", "--root", str(photos), "--out", str(tmp_path / "out"), "--workers", "2", *SLOW]),
            stdout=err,
            stderr=err,
        )
    try:
        workers = wait_for(
            lambda: (
                [p for p, cmd in _descendants(proc.pid).items() if "spawn_main" in cmd]
                if (tmp_path / "out" / "build.json").exists()
                else []
            ),
            180,
            "worker processes",
            proc,
            log,
        )
    finally:
        os.kill(proc.pid, sig)
        proc.wait()
    assert not _outlive(workers, 15), "worker processes outlived the command"


@pytest.mark.slow
def test_ray_tasks_stop_with_the_command(photos, tmp_path):
    pytest.importorskip("ray")
    log = tmp_path / "log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            saqt_command(
                [
                    "build",
                    "--root",
                    str(photos),
                    "--out",
                    str(tmp_path / "out"),
                    "--executor",
                    "ray",
                    "--workers",
                    "2",
                    *SLOW,
                ]
            ),
            stdout=err,
            stderr=err,
            start_new_session=True,
        )
    try:
        tasks = wait_for(
            lambda: [p for p, cmd in _descendants(proc.pid).items() if cmd.startswith("ray::_run_unit")],
            240,
            "Ray tasks",
            proc,
            log,
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not _outlive(tasks, 30), "Ray tasks outlived the command"
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's own agents of the dead cluster, which end on their own later

"""Helpers shared by the benchmarks: one measured thread on one core, and what a command costs.

OpenMP, BLAS and numba size their thread pools from the environment when they are first imported, so a process
measured on one core must *start* with ``one_thread_env()``: setting the variables later, or pinning after a pool
has started, leaves threads spinning on the measured core (counted as the process's CPU time).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.workers import THREAD_VARS

ROOT = Path(__file__).resolve().parents[1]
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def checkout_env(**extra: str) -> dict[str, str]:
    """This process's environment with this checkout first on the path (its ``saqt`` and ``glint``, not an installed
    copy's), for a child process."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "NO_ALBUMENTATIONS_UPDATE": "1", **extra}


def one_thread_env(**extra: str) -> dict[str, str]:
    """``checkout_env`` with one thread per library, for a child measured on one core."""
    return checkout_env(**dict.fromkeys(THREAD_VARS, "1"), **extra)


def one_core() -> None:
    """torch, OpenCV and Arrow at one thread, then pin this process to one core. The BLAS/OpenMP pools cannot be
    shrunk once started: a process not started with ``one_thread_env()`` is refused."""
    unset = [var for var in THREAD_VARS if os.environ.get(var) != "1"]
    if unset:
        raise RuntimeError(f"start the measured process with {', '.join(unset)}=1 (benchmarks.common.one_thread_env)")
    import cv2
    import pyarrow
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # refused once inter-op work has run: then its pool exists already
        torch.set_num_interop_threads(1)
    cv2.setNumThreads(1)
    pyarrow.set_cpu_count(1)
    pyarrow.set_io_thread_count(1)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def threads() -> list[str]:
    """The names of this process's threads now."""
    return sorted(Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task"))


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (Linux)."""
    from glint.train import peak_rss_mib as peak

    return peak()


def tree_usage(root: int) -> dict[int, tuple[float, float]]:
    """pid -> (RSS in MiB, CPU seconds so far) of process ``root`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    usage: dict[int, tuple[float, float]] = {}
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(stat[1])
            usage[int(entry)] = (int(stat[21]) * page / 2**20, (int(stat[11]) + int(stat[12])) / tick)
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, pp in parents.items() if pp == pid and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return {p: usage[p] for p in tree if p in usage}


def tree_rss_mib(root: int) -> float:
    """Summed RSS of process ``root`` and all its descendants (MiB)."""
    return sum(rss for rss, _ in tree_usage(root).values())


@dataclass(frozen=True)
class Cost:
    """What one command cost: CPU seconds (user + system) of its whole process tree, wall seconds, and the peak
    summed RSS of the tree (MiB, sampled every 0.1 s).

    ``cpu_s`` is the larger of two lower bounds: ``cpu_reaped_s``, from RUSAGE_CHILDREN (exact for every descendant
    that is waited for, lost for those a parent ignoring SIGCHLD lets the kernel reap, as Ray's may), and
    ``cpu_sampled_s``, the sum over every process seen in the tree of its last sampled CPU time (short of each
    process's last 0.1 s)."""

    cpu_s: float
    cpu_reaped_s: float
    cpu_sampled_s: float
    wall_s: float
    peak_rss_mib: float


def adopt_orphans() -> None:
    """Make this process the reaper of its orphaned descendants (Linux), so that a grandchild whose parent exits
    first is still waited for here and its CPU time counted in RUSAGE_CHILDREN."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap(linger_s: float) -> None:
    """Wait for adopted orphans: those that exit within ``linger_s`` seconds are reaped (and counted)."""
    deadline = time.monotonic() + linger_s
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(argv: list[str], env: dict[str, str], linger_s: float = 10.0) -> Cost:
    """Run one command to its end (SystemExit with its output's tail when it fails) and measure it; call
    ``adopt_orphans()`` once first so that descendants that outlive it are counted too."""
    cpu, start = _cpu_children(), time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, seen, done = 0.0, {}, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            usage = tree_usage(os.getpid())  # this process's descendants: the command's tree and adopted orphans
            usage.pop(os.getpid(), None)
            peak = max(peak, sum(rss for rss, _ in usage.values()))
            seen.update((p, max(c, seen.get(p, 0.0))) for p, (_, c) in usage.items())
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    _reap(linger_s)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{output[-3000:]}")
    reaped, sampled = _cpu_children() - cpu, sum(seen.values())
    return Cost(max(reaped, sampled), reaped, sampled, wall, peak)

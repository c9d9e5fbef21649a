"""Helpers shared by the benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

import cv2


def one_core() -> None:
    """Pin this process to one core, with one thread for OpenCV."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited from a forking parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("peak RSS needs Linux /proc/self/status")

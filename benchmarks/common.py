"""Helpers shared by the benchmarks."""

from __future__ import annotations

import os

import cv2

from glint.train import peak_rss_mib  # noqa: F401  (re-exported for the benchmarks)


def one_core() -> None:
    """Pin this process to one core, with one thread for OpenCV."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)

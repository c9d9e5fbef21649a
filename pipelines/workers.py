"""What every executor's worker shares: one thread per library and per process (the executor is the
parallelism), and worker processes that die with the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def init_worker() -> None:
    """One thread per worker process: the pool is the parallelism."""
    import cv2

    cv2.setNumThreads(1)


def die_with_parent(parent: int) -> None:
    """End this process as soon as process ``parent``, which started it, is gone (killed, crashed, or ended without
    stopping it): the kernel's parent-death signal on Linux, a watchdog thread elsewhere."""
    armed = False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="die-with-parent").start()
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


@contextmanager
def single_threaded_children():
    """One thread per library in processes started inside this block; this process's environment is restored."""
    saved = {var: os.environ.get(var) for var in THREAD_VARS}
    os.environ.update(dict.fromkeys(THREAD_VARS, "1"))
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value

"""Executors that run a stage's work units: in this process, in a pool of worker processes, or as Ray tasks."""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from enum import StrEnum

from saqt.errors import ConfigError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class WorkerDied(RuntimeError):
    """A worker process ended abnormally (killed, out of memory); finished units are kept."""


class UnitsFailed(RuntimeError):
    """Units that failed on every attempt, as (unit, reason); the other units finished and are kept."""

    def __init__(self, failures: list[tuple[str, str]]):
        self.failures = failures
        super().__init__(f"{len(failures)} units failed: " + "; ".join(f"{unit}: {why}" for unit, why in failures))


def _init_worker() -> None:
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


def _init_local_worker(parent: int) -> None:
    die_with_parent(parent)
    _init_worker()


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


@contextmanager
def _single_threaded_children():
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


class LocalExecutor:
    """Runs units here (``workers=1``) or in ``workers`` spawned processes, yielding results as they finish. The
    worker processes die with this one, however it ends."""

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers = workers

    def map_unordered(self, fn: Callable, items: Iterable) -> Iterator:
        items = list(items)
        if self.workers == 1 or len(items) <= 1:
            yield from map(fn, items)
            return
        pool = ProcessPoolExecutor(min(self.workers, len(items)), mp_context=mp.get_context("spawn"),
                                   initializer=_init_local_worker, initargs=(os.getpid(),))  # fmt: skip
        try:
            with _single_threaded_children():
                pending = {pool.submit(fn, item) for item in items}  # workers are spawned by these submits
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        except BrokenProcessPool:
            raise WorkerDied("a worker process died (killed or out of memory); finished shards are kept, "
                             "run the same command again to resume") from None  # fmt: skip
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class ExecutorKind(StrEnum):
    """Where ``--executor`` runs the units."""

    local = "local"
    ray = "ray"


@contextmanager
def open_executor(kind: ExecutorKind, workers: int | None = None, address: str | None = None):
    """The executor for one command; a Ray cluster it started is shut down when the block ends.

    ``workers``: worker processes (local), CPUs of the local Ray cluster, or the most tasks in flight on the
    cluster at ``address`` (default 1; there, the cluster's CPUs). Raises ConfigError for options that cannot work.
    """
    if kind == ExecutorKind.local:
        if address:
            raise ConfigError("--ray-address needs --executor ray")
        yield LocalExecutor(1 if workers is None else workers)
        return
    try:
        importlib.import_module("ray")
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install -e '.[ray]' in the toolkit's checkout") from None
    from pipelines.ray_executor import RayExecutor

    with RayExecutor(workers, address) as executor:
        yield executor

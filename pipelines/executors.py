"""Executors that run a stage's work units: in this process, in a pool of worker processes, or as Ray tasks."""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from enum import StrEnum

from pipelines.workers import die_with_parent, init_worker, single_threaded_children
from saqt.errors import ConfigError
from saqt.executor import WorkerDied


def _init_local_worker(parent: int) -> None:
    die_with_parent(parent)
    init_worker()


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
        pool = ProcessPoolExecutor(
            min(self.workers, len(items)),
            mp_context=mp.get_context("spawn"),
            initializer=_init_local_worker,
            initargs=(os.getpid(),),
        )
        try:
            with single_threaded_children():
                pending = {pool.submit(fn, item) for item in items}  # workers are spawned by these submits
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        except BrokenProcessPool:
            raise WorkerDied(
                "a worker process died (killed or out of memory); finished shards are kept, "
                "run the same command again to resume"
            ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def gpu_embedder(self, spec: str, device: str) -> None:
        """None: a stage run here embeds in this process."""
        return None


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

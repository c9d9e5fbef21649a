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
from itertools import chain, islice

from pipelines.workers import die_with_parent, init_worker, single_threaded_children
from saqt.core.errors import ConfigError
from saqt.core.executor import WorkerDied

IN_FLIGHT = 2  # units submitted per worker at a time: one running, one queued behind it


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
        """``fn`` of each item, in the order they finish. At most ``IN_FLIGHT`` items per worker are submitted at a
        time, so waiting for the next result costs the same at the millionth unit as at the first."""
        queue = iter(items)
        first = list(islice(queue, 2))
        if self.workers == 1 or len(first) <= 1:
            yield from map(fn, chain(first, queue))
            return
        pool = ProcessPoolExecutor(
            self.workers, mp_context=mp.get_context("spawn"), initializer=_init_local_worker, initargs=(os.getpid(),)
        )
        queue, pending = chain(first, queue), set()
        try:
            while True:
                with single_threaded_children():  # workers are spawned by the first submits
                    pending |= {
                        pool.submit(fn, item) for item in islice(queue, IN_FLIGHT * self.workers - len(pending))
                    }
                if not pending:
                    break
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

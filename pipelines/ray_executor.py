"""The Ray executor: a stage's work units as Ray tasks, on a local cluster started for the command or on a running
one (``--ray-address``); and encoders on a cluster's GPUs as Ray actors.

Every node must see the output folder at the same path (a shared file system): tasks write their shards there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

import numpy as np
import ray
from ray.util import ActorPool

from pipelines.workers import THREAD_VARS, init_worker
from saqt.core.errors import ConfigError
from saqt.core.executor import UnitsFailed
from saqt.core.progress import Progress
from saqt.core.shards import Locator
from saqt.label.embed import embed_images
from saqt.label.encoders import Encoder, load_encoder

SINGLE_THREADED = {"env_vars": dict.fromkeys(THREAD_VARS, "1")}  # as LocalExecutor's worker processes
BATCHES_PER_CALL = 8  # embedding batches an actor takes at a time


@ray.remote(num_cpus=1)
def _run_unit(fn: Callable, item):
    init_worker()
    return fn(item)


def _in_our_terms(err: ConnectionError) -> str:
    """Ray's connection error with its own flag (``--address`` of ``ray start``) named as this CLI's option."""
    return re.sub(r"`--address`( flag)?|(?<![\w-])--address\b", "--ray-address", str(err))


class RayExecutor:
    """Runs units as Ray tasks (one CPU each), yielding results as they finish.

    A failed task is retried ``max_retries`` times, whether its worker died or it raised; units that still fail
    do not stop the others, and once the rest are done :class:`UnitsFailed` names them, each described by the
    function's ``describe(item)`` where it has one. ``workers``: CPUs of the local cluster, or the most tasks in
    flight on the cluster at ``address`` (default: its CPUs). Use as a context manager: a cluster it started
    (or connected to) is shut down (or left) at the end. Workers' logs stay in Ray's session folder
    (``/tmp/ray/session_latest/logs``), not on this terminal.
    """

    def __init__(self, workers: int | None = None, address: str | None = None, max_retries: int = 2):
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.max_retries = max_retries
        self.started_here = not ray.is_initialized()
        if self.started_here and address:
            try:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            except ConnectionError as err:
                raise ConfigError(f"--ray-address {address}: {_in_our_terms(err)}") from None
        elif self.started_here:
            # "local": a new cluster of this command's own, never one that happens to run here already
            ray.init(
                address="local",
                num_cpus=workers or 1,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
        self.in_flight = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        if self.started_here:
            ray.shutdown()

    def map_unordered(self, fn: Callable, items: Iterable) -> Iterator:
        describe = getattr(fn, "describe", repr)
        task = _run_unit.options(max_retries=self.max_retries, retry_exceptions=True, runtime_env=SINGLE_THREADED)
        shared_fn = ray.put(fn)  # sent to the object store once, not with every task
        queue = iter(items)
        pending: dict[ray.ObjectRef, object] = {}
        failures = []
        try:
            while True:
                for item in islice(queue, self.in_flight - len(pending)):
                    pending[task.remote(shared_fn, item)] = item
                if not pending:
                    break
                [done], _ = ray.wait(list(pending), num_returns=1)
                item = pending.pop(done)
                try:
                    result = ray.get(done)
                except ray.exceptions.RayError as err:
                    failures.append((describe(item), _reason(err)))
                    continue
                yield result
        finally:
            for ref in pending:
                ray.cancel(ref)
        if failures:
            raise UnitsFailed(failures)

    def gpu_embedder(self, spec: str, device: str) -> RayEmbedder | None:
        """Encoders on the cluster's GPUs, one actor each; None where the cluster has none or ``device`` is cpu.

        Embeddings on CPU stay in the driver: their last bits depend on torch's thread count and the CPU's
        instruction set, which a Ray worker or another node need not share.
        """
        gpus = int(ray.cluster_resources().get("GPU", 0))
        return RayEmbedder(spec, device, gpus) if gpus and device != "cpu" else None


def _reason(err: ray.exceptions.RayError) -> str:
    """The first line of what went wrong: the task's own exception, or Ray's (worker died, out of memory)."""
    cause = err.cause if isinstance(err, ray.exceptions.RayTaskError) else err
    return f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0]}"


@ray.remote(max_restarts=2, max_task_retries=2)
class _EncoderActor:
    """An encoder loaded once, embedding runs of whole batches."""

    def __init__(self, spec: str, device: str):
        self.encoder = load_encoder(spec, device)

    def embed(self, locators: list[Locator], batch_size: int, loader_workers: int | None) -> np.ndarray:
        return embed_images(self.encoder, locators, batch_size, loader_workers)


class RayEmbedder:
    """:func:`~saqt.label.embed.embed_images` on up to ``actors`` Ray actors that load the encoder for one call.

    An actor with ``num_gpus`` holds no CPU (nor any resource once the call ends), so unit tasks are never
    starved; a CPU actor holds one. Each actor call embeds a run of whole batches cut at the same boundaries
    as in one process, so every image is embedded in the same batch as by ``embed_images`` itself.
    """

    def __init__(self, spec: str, device: str, actors: int, num_gpus: float = 1):
        self.spec, self.device, self.count, self.num_gpus = spec, device, actors, num_gpus

    def __call__(
        self,
        encoder: Encoder,
        locators: list[Locator],
        batch_size: int = 64,
        loader_workers: int | None = None,
        progress: bool = False,
        desc: str = "embed",
    ) -> np.ndarray:
        if not locators:
            return np.zeros((0, encoder.dim), np.float32)
        runs = self.runs(locators, batch_size)
        options = {"num_gpus": self.num_gpus, "num_cpus": 0 if self.num_gpus else 1}
        actors = [
            _EncoderActor.options(**options).remote(self.spec, self.device) for _ in range(min(self.count, len(runs)))
        ]
        try:
            results = ActorPool(actors).map(lambda a, run: a.embed.remote(run, batch_size, loader_workers), runs)
            return np.concatenate(list(Progress(results, total=len(runs), desc=desc, unit="run", disable=not progress)))
        finally:
            for actor in actors:
                ray.kill(actor)

    @staticmethod
    def runs(locators: list[Locator], batch_size: int) -> list[list[Locator]]:
        """``locators`` cut into runs of ``BATCHES_PER_CALL`` whole batches, in order."""
        step = batch_size * BATCHES_PER_CALL
        return [locators[i : i + step] for i in range(0, len(locators), step)]

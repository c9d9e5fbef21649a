"""The executor protocol: what a stage asks of whatever runs its work units, and how a run of units fails.

The stages (build, label, bank synth, the screening of a pool) take an :class:`Executor`; the implementations live
in ``pipelines/executors.py`` (this process or worker processes) and ``pipelines/ray_executor.py`` (Ray tasks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol


class Unit(Protocol):
    """A stage's work function: called on one work item in a worker, it returns what the stage records. Executors
    name a failed item by ``describe(item)`` where the function has one, else by ``repr(item)``."""

    def __call__(self, item: Any) -> Any: ...

    def describe(self, item: Any) -> str: ...


class Executor(Protocol):
    """Runs a stage's work units."""

    def map_unordered(self, fn: Unit | Callable, items: Iterable) -> Iterator:
        """``fn`` over ``items``, yielding results as they finish (any order). Raises :class:`WorkerDied` or
        :class:`UnitsFailed` once the units it could finish are yielded."""
        ...

    def gpu_embedder(self, spec: str, device: str) -> Callable | None:
        """A replacement for :func:`saqt.label.embed.embed_images` that embeds with encoder ``spec`` on the executor's
        own GPUs, or None where it has none (the stage then embeds in this process)."""
        ...


class WorkerDied(RuntimeError):
    """A worker process ended abnormally (killed, out of memory); finished units are kept."""


class UnitsFailed(RuntimeError):
    """Units that failed on every attempt, as (unit, reason); the other units finished and are kept."""

    def __init__(self, failures: list[tuple[str, str]]):
        self.failures = failures
        super().__init__(f"{len(failures)} units failed: " + "; ".join(f"{unit}: {why}" for unit, why in failures))

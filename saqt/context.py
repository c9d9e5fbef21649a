"""The run context every stage's entry point takes, ``run_<stage>(config, out, ctx)``: how the stage runs, never what
it makes. The config holds every option that a user sets; the context holds what the caller supplies around them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from saqt.executor import Executor


class InProcess:
    """The default executor: each unit here, one after another; no GPUs of its own."""

    def map_unordered(self, fn: Callable, items: Iterable) -> Iterator:
        return map(fn, items)

    def gpu_embedder(self, spec: str, device: str) -> None:
        return None


@dataclass(frozen=True)
class RunContext:
    """How a stage runs. ``executor``: what runs its work units; ``overwrite``: replace an existing output instead of
    resuming it; ``command``: the command line recorded in the provenance; ``progress``: show progress bars;
    ``warn``: where a one-line warning goes (None: ``warnings.warn``)."""

    executor: Executor = field(default_factory=InProcess)
    overwrite: bool = False
    command: str = ""
    progress: bool = True
    warn: Callable[[str], None] | None = None


DEFAULT_CONTEXT = RunContext()  # here, one unit after another, with progress bars; no overwrite

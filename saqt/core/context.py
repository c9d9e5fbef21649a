"""The run context every stage's entry point takes, ``run_<stage>(config, out, ctx)``: how the stage runs, never what
it makes. The config holds every option that a user sets; the context holds what the caller supplies around them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from saqt.core.errors import SaqtError
from saqt.core.executor import Executor

if TYPE_CHECKING:
    import torch


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


class DeviceError(SaqtError, ValueError):
    """A --device this machine does not have."""


def pick_device(device: str = "auto", index: int = 0) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` means GPU ``index`` (a process's local rank).
    DeviceError for a device that is not written auto, cpu, cuda[:N] or mps, or that this machine lacks."""
    import torch

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise DeviceError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            f"--device {device}: no CUDA GPU is usable here (torch.cuda.is_available() is False); "
            "use --device cpu or auto"
        )
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPUs")
    if device == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("--device mps: Apple's Metal backend is not available here; use --device cpu or auto")
    return torch.device(f"cuda:{index}" if device == "cuda" else device)

"""What a training run shows and writes as it goes: progress bars with totals, a line per epoch, ``metrics.jsonl`` and
``metrics.csv``, and TensorBoard logs when asked. Under DDP only rank 0 shows or writes anything."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import TextIO

import torch

from saqt.core.errors import ConfigError
from saqt.core.progress import Progress
from saqt.core.safe_files import open_own, writing

CPU_GIB_PER_IMAGE = 0.16  # peak RSS of CPU training grows about so per image of the batch (batch 128: near 20 GB)
CPU_BATCH_HINT = 64  # from this batch size up, training on the CPU is told what memory to expect


def cpu_memory_hint(device: torch.device, batch_size: int) -> str | None:
    """A one-line hint when a run trains on the CPU with a batch that needs many GB of memory."""
    if device.type != "cpu" or batch_size < CPU_BATCH_HINT:
        return None
    return (
        f"hint: training on the CPU with batch {batch_size} needs about {batch_size * CPU_GIB_PER_IMAGE:.0f} GB of "
        "memory (batch 128 peaks near 20 GB) and is slow; use a GPU (--device cuda) or a smaller --batch-size"
    )


def writer_class() -> type:
    """TensorBoard's ``SummaryWriter``; a one-line ConfigError when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install tensorboard "
            "(or the toolkit's [tensorboard] extra)"
        ) from None
    return SummaryWriter


def summary_writer(path: Path):
    """A TensorBoard ``SummaryWriter`` writing to ``path``; a one-line ConfigError when tensorboard is missing."""
    return writer_class()(str(path))


def epoch_line(record: dict, epochs: int, train_s: float, eval_s: float) -> str:
    """One readable line for an epoch: loss, learning rate, the metrics of each evaluated split, the times."""
    parts = [
        f"epoch {record['epoch']}/{epochs}",
        f"step {record['step']}",
        f"loss {record['train_loss']:.4f}",
        f"lr {record['lr']:.3g}",
    ]
    for split, m in record.items():
        if isinstance(m, dict):
            parts.append(f"{split} SROCC {m['srocc']:.4f} PLCC {m['plcc']:.4f} RMSE {m['rmse']:.4f}")
    return "  ".join(parts) + f"  ({train_s:.1f} s training, {eval_s:.1f} s evaluation)"


class RunLog:
    """Bars, epoch lines and logs of one process of a run; on ranks other than 0 every method does nothing.
    ``progress``: show bars and epoch lines; ``tensorboard``: write TensorBoard logs to ``out/tensorboard`` (from the
    first step or epoch logged: a missing package is refused at once, nothing is written before the run starts)."""

    def __init__(self, out: Path, rank: int = 0, progress: bool = True, tensorboard: bool = False):
        self.out, self.main, self.progress = Path(out), rank == 0, progress
        self._board = writer_class() if tensorboard and self.main else None
        self._writer = None

    @property
    def writer(self):
        """The TensorBoard writer (None without ``tensorboard``), made at its first use."""
        if self._writer is None and self._board is not None:
            self._writer = self._board(str(self.out / "tensorboard"))
        return self._writer

    def bar(self, total: int | None, desc: str, unit: str):
        """A progress bar with its total (advanced by the caller); a do-nothing bar when not shown."""
        if not (self.main and self.progress):
            return contextlib.nullcontext(_NoBar())
        return Progress(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def say(self, text: str, err: bool = False) -> None:
        """A line for the person watching (rank 0 only), printed so as not to tear a progress bar."""
        if self.main:
            Progress.write(text, file=sys.stderr if err else sys.stdout)

    def restart(self, history: list[dict]) -> None:
        """Rewrite the metrics files from a checkpoint's history (it is the truth: torn or later lines go)."""
        if not self.main:
            return
        for name in ("metrics.jsonl", "metrics.csv"):
            (self.out / name).unlink(missing_ok=True)
        for record in history:
            append_record(self.out, record)

    def step(self, step: int, loss: float) -> None:
        if self.writer:
            self.writer.add_scalar("train/step_loss", loss, step)

    def epoch(self, record: dict, epochs: int, train_s: float, eval_s: float) -> None:
        """The epoch's line, its metrics-file lines and its TensorBoard scalars."""
        if not self.main:
            return
        append_record(self.out, record)
        if self.progress:
            self.say(epoch_line(record, epochs, train_s, eval_s))
        if self.writer:
            step = record["step"]
            scalars = {"train/loss": record["train_loss"], "train/lr": record["lr"]}
            scalars |= {f"{split}/{k}": v for split, m in record.items() if isinstance(m, dict) for k, v in m.items()}
            for tag, value in scalars.items():
                if math.isfinite(value):
                    self.writer.add_scalar(tag, value, step)
            self.writer.add_scalar("time/epoch_training_s", train_s, step)
            self.writer.add_scalar("time/epoch_evaluation_s", eval_s, step)
            self.writer.flush()

    def close(self) -> None:
        if self._writer:
            self._writer.close()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def flatten(record: dict) -> dict:
    """A metrics record with each split's metrics as ``<split>_<metric>``."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _appending(path: Path) -> TextIO:
    """``path``, a file of the run's, opened to append (created if absent, never through a link)."""
    with writing(path):
        return open(open_own(path, os.O_WRONLY | os.O_APPEND, create=True), "a", newline="", encoding="utf-8")


def append_record(out: Path, record: dict) -> None:
    """``record`` appended to the run's metrics.jsonl, and flattened to metrics.csv (a header first if new)."""
    with _appending(out / "metrics.jsonl") as f:
        f.write(json.dumps(record) + "\n")
    flat = flatten(record)
    path = out / "metrics.csv"
    new = not path.exists()
    with _appending(path) as f:
        writer = csv.DictWriter(f, fieldnames=list(flat), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(flat)

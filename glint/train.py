"""Training GlintIQA: L1 loss, Adam, a cosine schedule (one decay, or the release's 30-step cycle), AMP on CUDA
unless fp32 is asked, DDP under torchrun, exact resume.

A run writes ``run.json`` first (protocol, settings, model, provenance such as the split). Each epoch ends with an
evaluation (mean over random test crops), a line in ``metrics.jsonl`` and ``metrics.csv``, and ``last.pt`` (model,
optimizer, scheduler, scaler, RNG state, history) written atomically; the best epoch by the selection split is
saved as ``best.pt``. The epoch is chosen on a validation split carved from the training data;
``select_on="test"`` reproduces the released code's choice on the test split and is recorded as such.

``fit`` in parts: ``start_session`` (process group, device, DDP wrapper, optimiser, schedule, scaler),
``initial_state`` (resume), ``run_epochs`` (``train_epoch`` from ``make_loader``, ``evaluate_all``, ``select``,
``save_checkpoints``); ``glint.runlog.RunLog`` shows progress and writes the logs, on rank 0 only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from glint.checkpoint import CheckpointError, checkpoint_payload, torch_load
from glint.metrics import iqa_metrics
from glint.model import GlintIQA, parameter_counts
from glint.outputs import clear_run, run_start
from glint.protocol import RELEASE_ETA_MIN, RELEASE_T_MAX, SCHEDULES, Protocol
from glint.runlog import RunLog, cpu_memory_hint
from glint.scoring import BATCH_IMAGES, crop_seed, predict_images
from saqt import __version__
from saqt.core.context import pick_device
from saqt.core.errors import ConfigError, SaqtError
from saqt.core.progress import Progress
from saqt.core.safe_files import atomic_write, write_bytes_atomic
from saqt.core.seeding import derive_seed
from saqt.core.stage_contract import LOCK, FolderLock


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and evaluation settings (``glint.protocol`` fills them for a protocol).

    ``schedule``: "cosine" decays the learning rate once over the run; "cycle" is the release's
    CosineAnnealingLR(T_max=30, eta_min=0) stepped after every batch (the rate cycles every 30 steps).
    ``amp``: fp16 autocast on CUDA (never on the CPU); False trains and scores in fp32.
    """

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 1e-5
    seed: int = 0
    test_crops: int = 25
    select_on: str = "val"
    amp: bool = True
    loader_workers: int = 2
    schedule: str = "cosine"
    protocol: str = "honest"

    @classmethod
    def from_protocol(cls, protocol: Protocol, max_steps: int | None = None, loader_workers: int = 2) -> TrainConfig:
        """The settings of a resolved protocol (its torch seed: round x seed under the release's)."""
        s = protocol.settings
        return cls(
            epochs=s["epochs"],
            max_steps=max_steps,
            batch_size=s["batch_size"],
            lr=s["lr"],
            weight_decay=s["weight_decay"],
            seed=protocol.torch_seed,
            test_crops=s["test_crops"],
            select_on=s["select_on"],
            amp=s["amp"],
            loader_workers=loader_workers,
            schedule=s["schedule"],
            protocol=protocol.name,
        )

    def __post_init__(self):
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or not 0 < self.lr < math.inf:
            raise ConfigError(f"--lr must be a finite number above 0, got {self.lr!r}")
        if self.select_on not in ("val", "test"):
            raise ConfigError(f"--select-on must be val or test, got {self.select_on!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")


class DivergedError(SaqtError):
    """Training produced a loss that is not a finite number; the run stops there."""


@dataclass
class EvalSet:
    """Images to score and their ground truth; ``load(item)`` returns uint8 RGB pixels."""

    items: list
    scores: list[float]
    load: Callable[[object], np.ndarray]
    resize: tuple[int, int] | None = None


@dataclass
class Run:
    """What a training run reads and where it writes."""

    out: Path
    train: Dataset
    evals: dict[str, EvalSet]
    steps_per_epoch: int
    provenance: dict = field(default_factory=dict)


def distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, this process's device); under torchrun, starts the process group: NCCL on the local
    rank's GPU, gloo when the device is the CPU (``--device cpu`` on a GPU machine included)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device, int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return (dist.get_rank(), world, dev) if world > 1 else (0, 1, dev)


def score_eval_set(
    model: torch.nn.Module,
    data: EvalSet,
    crops: int,
    seed: int,
    device: torch.device,
    amp: bool = True,
    bar: Progress | None = None,
    batch_size: int = BATCH_IMAGES,
    epoch: int | None = None,
) -> tuple[list[float], float]:
    """The model's scores of ``data`` and the seconds they took; ``bar`` is advanced per image. Image
    i's crops are seeded by (seed, i), the same every epoch; with an ``epoch``, by (seed, epoch, i) and drawn as the
    release's ``RandomCrop`` draws them: new crops every epoch, the same on a rerun."""
    start = time.perf_counter()
    keys = range(len(data.items)) if epoch is None else (f"epoch {epoch} image {i}" for i in range(len(data.items)))
    images = ((data.load(item), crop_seed(seed, key)) for item, key in zip(data.items, keys, strict=True))
    released = epoch is not None
    preds = predict_images(model, images, crops, device, data.resize, batch_size, amp, bar, released)
    return preds, time.perf_counter() - start


def eval_metrics(preds: list[float], data: EvalSet, seconds: float) -> dict:
    """IQA metrics of ``preds`` against ``data``'s scores, and the throughput of scoring."""
    return {**iqa_metrics(preds, data.scores), "images": len(preds), "images_per_s": len(preds) / max(seconds, 1e-9)}


def evaluate(
    model: torch.nn.Module,
    data: EvalSet,
    crops: int,
    seed: int,
    device: torch.device,
    amp: bool = True,
    bar: Progress | None = None,
    epoch: int | None = None,
) -> dict:
    """IQA metrics of the model on ``data`` and the throughput of scoring (``epoch``: see ``score_eval_set``)."""
    preds, seconds = score_eval_set(model, data, crops, seed, device, amp, bar, epoch=epoch)
    return eval_metrics(preds, data, seconds)


def atomic_save(obj: dict, path: Path) -> None:
    """``torch.save`` through ``saqt.core.safe_files.atomic_write``: a failed save (a full disk) is one line and leaves
    no temporary file."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def make_loader(data: Dataset, config: TrainConfig, epoch: int, rank: int, world: int) -> DataLoader:
    """This rank's loader for epoch ``epoch``: a dataset's own ``batch_sampler`` (SAQT-IQA's per-epoch
    permutation) when it has one, else torch's shuffle, split over DDP ranks by a DistributedSampler."""
    batch = max(1, config.batch_size // world)
    if hasattr(data, "batch_sampler"):
        return DataLoader(
            data, batch_sampler=data.batch_sampler(epoch, rank, world, batch), num_workers=config.loader_workers
        )
    generator = torch.Generator().manual_seed(derive_seed(config.seed, epoch, "shuffle") % 2**63)
    kw = {
        "batch_size": batch,
        "num_workers": config.loader_workers,
        "generator": generator,
        "drop_last": False,
        "persistent_workers": False,
    }
    if isinstance(data, IterableDataset):
        return DataLoader(data, **kw)
    if world > 1:
        sampler = DistributedSampler(data, world, rank, shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
        return DataLoader(data, sampler=sampler, **kw)
    return DataLoader(data, shuffle=True, **kw)


def planned_batches(data: Dataset, config: TrainConfig, world: int, count: int):
    """(batch, rank, indices) of the first ``count`` batches a run on ``world`` ranks reads, epoch after epoch, from
    the same samplers ``make_loader`` builds: the data order, without training."""
    batch, step = max(1, config.batch_size // world), 0
    for epoch in range(config.epochs):
        samplers = [iter(data.batch_sampler(epoch, rank, world, batch)) for rank in range(world)]
        for shares in zip(*samplers, strict=True):
            if step >= count:
                return
            for rank, indices in enumerate(shares):
                yield step, rank, indices
            step += 1


def train_step(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp: bool,
) -> torch.Tensor:
    """One optimiser step on the L1 loss, under fp16 autocast with loss scaling when ``amp``; returns the loss."""
    with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        loss = torch.nn.functional.l1_loss(net(x).float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """The learning-rate schedule, stepped after every batch: one cosine decay over the run, or the release's
    cycle (CosineAnnealingLR with T_max=30, eta_min=0, whatever the run's length)."""
    if config.schedule == "cycle":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=RELEASE_T_MAX, eta_min=RELEASE_ETA_MIN)
    total = config.epochs * max(1, steps_per_epoch)
    if config.max_steps:
        total = min(total, config.max_steps)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))


RESUME_ENTRIES = ("state_dict", "optimizer", "scheduler", "scaler", "rng", "epoch", "step", "history", "best")


def resume_checkpoint(path: Path) -> dict:
    """An interrupted run's ``last.pt``, with every entry resuming needs; CheckpointError (one line) otherwise."""
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a glint last.pt: it cannot be resumed; start again with --overwrite")
    missing = [k for k in RESUME_ENTRIES if k not in ckpt]
    missing += [k for k in ("train_config", "model_config") if not isinstance(ckpt.get(k), dict)]
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(missing)}: not a glint last.pt that can be resumed; start again with --overwrite"
        )
    return ckpt


def _resume(path: Path, model, optimizer, scheduler, scaler, config: TrainConfig, dev: torch.device) -> dict:
    """Restore an interrupted run from its ``last.pt``; its training state (epoch, step, history, best)."""
    ckpt = resume_checkpoint(path)
    changed = sorted(k for k, v in asdict(config).items() if ckpt["train_config"].get(k) != v)
    changed += ["the model"] if ckpt["model_config"] != model.config.as_dict() else []
    if changed:
        raise ConfigError(f"--resume needs the settings of the interrupted run; changed: {', '.join(changed)}")
    model.load_state_dict(ckpt["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if dev.type == "cuda" and ckpt["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    return {k: ckpt[k] for k in ("epoch", "step", "history", "best")}


@dataclass
class Session:
    """One process's share of a run: its rank and device, the model (and its DDP wrapper), the optimiser state."""

    model: GlintIQA
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    rank: int
    world: int
    amp: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_session(model: GlintIQA, config: TrainConfig, steps_per_epoch: int, device: str) -> Session:
    """Join the process group (under torchrun), seed torch, move the model to its device, wrap it in DDP when there
    are several ranks, and make its optimiser, schedule and loss scaler."""
    rank, world, dev = distributed(device)
    torch.manual_seed(config.seed)
    model.to(dev)
    net = (
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        if world > 1
        else model
    )
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    use_amp = config.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    return Session(model, net, optimizer, scheduler, scaler, dev, rank, world, use_amp)


def initial_state(session: Session, out: Path, config: TrainConfig, resume: bool) -> dict:
    """The training state to start from: fresh, or an interrupted run's (``out/last.pt``) when resuming."""
    if resume and (out / "last.pt").is_file():
        s = session
        return _resume(out / "last.pt", s.model, s.optimizer, s.scheduler, s.scaler, config, s.device)
    return {"epoch": 0, "step": 0, "history": [], "best": None}


def run_metadata(model: GlintIQA, config: TrainConfig, run: Run) -> dict:
    """What every checkpoint and run.json record about the run."""
    return {
        "model_config": model.config.as_dict(),
        "train_config": asdict(config),
        "provenance": run.provenance,
        "toolkit_version": __version__,
    }


def epoch_steps(loader: DataLoader, run: Run, config: TrainConfig, world: int, step: int) -> tuple[int | None, int]:
    """(the most batches this rank may train on this epoch, or None for all; the total its progress bar shows).
    A stream under DDP stops after its share of ``steps_per_epoch``, so that every rank takes as many steps;
    ``max_steps`` caps the run."""
    limit = run.steps_per_epoch // world if world > 1 and isinstance(run.train, IterableDataset) else None
    if config.max_steps:
        limit = config.max_steps - step if limit is None else min(limit, config.max_steps - step)
    try:
        total = len(loader)
    except TypeError:  # a stream without a length: about steps_per_epoch batches
        total = run.steps_per_epoch
    return limit, total if limit is None else min(total, limit)


def worker_errors_in_one_line(batches):
    """``batches``, where an expected failure (a SaqtError) in a loader worker comes back as the one line it said,
    not as the worker's traceback that the DataLoader wraps it in."""
    try:
        yield from batches
    except SaqtError as err:
        text = str(err)
        prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
        if not text.startswith("Caught ") or not text.rstrip().splitlines()[-1].startswith(prefix):
            raise
        raise type(err)(text.rstrip().splitlines()[-1].removeprefix(prefix)) from None


def train_epoch(s: Session, run: Run, config: TrainConfig, epoch: int, state: dict, log: RunLog) -> tuple[list, int]:
    """One epoch's optimiser steps, each advancing the schedule and ``state["step"]``; the losses and the number of
    images trained on."""
    if hasattr(run.train, "set_epoch"):
        run.train.set_epoch(epoch)
    s.net.train()
    loader = make_loader(run.train, config, epoch, s.rank, s.world)
    limit, total = epoch_steps(loader, run, config, s.world, state["step"])
    losses, images = [], 0
    with log.bar(total, f"epoch {epoch + 1}/{config.epochs}", "batch") as bar:
        for x, y in itertools.islice(worker_errors_in_one_line(loader), limit):
            x, y = x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True)
            loss = train_step(s.net, x, y, s.optimizer, s.scaler, s.amp).detach().item()
            if not math.isfinite(loss):
                raise DivergedError(
                    f"step {state['step'] + 1} (epoch {epoch + 1}): the loss is {loss}; the run stops without a "
                    "checkpoint from it (check the scores, or lower --lr)"
                )
            s.scheduler.step()
            losses.append(loss)
            images += len(x)
            state["step"] += 1
            log.step(state["step"], losses[-1])
            bar.update(1)
    return losses, images


def evaluate_all(s: Session, evals: dict[str, EvalSet], config: TrainConfig, epoch: int, log: RunLog) -> dict:
    """Metrics of the model on each evaluation set, with a progress bar per set; computed on rank 0 only. Under the
    release's protocol the test crops are redrawn each epoch, as its ``RandomCrop`` does; else fixed per image."""
    if not s.main:
        return {}
    out, per_epoch = {}, epoch if config.protocol == "released" else None
    for name, data in evals.items():
        with log.bar(len(data.items), f"evaluate {name}", "img") as bar:
            out[name] = evaluate(s.model, data, config.test_crops, config.seed, s.device, config.amp, bar, per_epoch)
    return out


def select(state: dict, record: dict, select_on: str) -> bool:
    """Whether this epoch is the best so far on the selection split's SROCC (the first epoch always is; a NaN
    score never improves, and any number improves on a NaN; without the split, every epoch is: the last is kept);
    updates ``state["best"]``."""
    if select_on not in record:
        state["best"] = {"epoch": record["epoch"], "score": None}
        return True
    selected = record[select_on]["srocc"]
    best = state["best"]["score"] if state["best"] else None
    if best is None or (not math.isnan(selected) and (math.isnan(best) or selected > best)):
        state["best"] = {"epoch": record["epoch"], "score": selected}
        return True
    return False


def save_checkpoints(s: Session, out: Path, meta: dict, state: dict, best: bool) -> None:
    """``best.pt`` (the model) when this epoch is the best, and ``last.pt`` (everything needed to resume), atomically;
    on rank 0 only."""
    if not s.main:
        return
    if best:
        atomic_save(checkpoint_payload(s.model, epoch=state["epoch"], **meta), out / "best.pt")
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if s.device.type == "cuda" else []}
    atomic_save(
        checkpoint_payload(
            s.model,
            optimizer=s.optimizer.state_dict(),
            scheduler=s.scheduler.state_dict(),
            scaler=s.scaler.state_dict(),
            rng=rng,
            **meta,
            **state,
        ),
        out / "last.pt",
    )


def run_epochs(s: Session, run: Run, config: TrainConfig, state: dict, meta: dict, log: RunLog) -> dict:
    """The epochs from ``state["epoch"]`` on (until ``max_steps``), each trained, evaluated, selected, checkpointed
    and logged; the seconds this process spent training and evaluating, and the training throughput in images per
    second."""
    train_seconds = train_images = eval_total = 0.0
    for epoch in range(state["epoch"], config.epochs):
        if config.max_steps and state["step"] >= config.max_steps:
            break
        start = time.perf_counter()
        losses, images = train_epoch(s, run, config, epoch, state, log)
        seconds = time.perf_counter() - start
        train_seconds, train_images = train_seconds + seconds, train_images + images
        record = {
            "epoch": epoch + 1,
            "step": state["step"],
            "lr": s.scheduler.get_last_lr()[0],
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "first_loss": losses[0] if losses else float("nan"),
        }
        record |= evaluate_all(s, run.evals, config, epoch, log)
        eval_seconds = time.perf_counter() - start - seconds
        eval_total += eval_seconds
        state["epoch"] = epoch + 1
        state["history"].append(record)
        save_checkpoints(s, run.out, meta, state, select(state, record, config.select_on))
        log.epoch(record, config.epochs, seconds, eval_seconds)
        if s.world > 1:
            dist.barrier()
    return {
        "rate": train_images / max(train_seconds, 1e-9),
        "time_s": {"training": round(train_seconds, 1), "evaluation": round(eval_total, 1)},
    }


def fit(
    model: GlintIQA,
    run: Run,
    config: TrainConfig,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    tensorboard: bool = False,
    overwrite: bool = False,
) -> dict:
    """Train ``model`` on ``run.train`` and return the results (also written to ``run.out/results.json``).
    ``run.out`` may hold an earlier run only to ``resume`` it or, with ``overwrite``, to replace it (its files are
    removed first: ``glint.outputs``). ``progress``: bars with totals and a line per epoch; ``tensorboard``: logs in
    ``run.out/tensorboard``."""
    s = start_session(model, config, run.steps_per_epoch, device)
    log = RunLog(run.out, s.rank, progress, tensorboard)  # before anything is written: a missing tensorboard stops here
    run.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        if s.main:  # one run at a time in a run folder: a second is refused in one line, not mixed in
            held.enter_context(FolderLock(run.out / LOCK, str(run.out)))
            claim_run_folder(run.out, resume, overwrite, log)
        hint = cpu_memory_hint(s.device, max(1, config.batch_size // s.world))
        if hint:
            log.say(hint, err=True)
        state = initial_state(s, run.out, config, resume)
        meta = run_metadata(model, config, run)
        if s.main:
            run_json = json.dumps({"protocol": config.protocol, **meta}, indent=2, default=str)
            write_bytes_atomic(run.out / "run.json", run_json.encode())
        log.restart(state["history"])
        try:
            timing = run_epochs(s, run, config, state, meta, log)
        finally:
            log.close()
        results = run_results(model, state, config, s.device, s.world, timing, run.provenance)
        if s.main:
            write_bytes_atomic(run.out / "results.json", json.dumps(results, indent=2, default=str).encode())
    return results


def claim_run_folder(out: Path, resume: bool, overwrite: bool, log: RunLog) -> None:
    """Check how the run may start in ``out`` (``glint.outputs.run_start``) and prepare it: an earlier run's files
    removed with ``overwrite``; a ``resume`` with nothing to continue said so."""
    start = run_start(out, resume, overwrite)
    if start == "overwrite":
        clear_run(out)
    elif resume and start == "fresh":
        log.say(f"--resume: {out} holds no run yet: starting from the beginning", err=True)


def main_process() -> bool:
    """Whether this process is rank 0 of a DDP run, or runs alone: the one that prints the run's summary."""
    return not dist.is_initialized() or dist.get_rank() == 0


def run_results(model, state: dict, config: TrainConfig, dev, world: int, timing: dict, provenance: dict) -> dict:
    """The run's results: the selected epoch and its metrics, the model's size, and what the run took (``timing``,
    from ``run_epochs``: this process's epochs only, a resumed run's earlier ones not included)."""
    best = state["best"] or {"epoch": None, "score": None}
    chosen = next((r for r in state["history"] if r["epoch"] == best["epoch"]), {})
    total, trainable = parameter_counts(model)
    note = (
        "best epoch on the TEST split, as the released code does: optimistic, not a fair estimate"
        if config.select_on == "test"
        else "best epoch on a validation split carved from the training data"
    )
    if chosen and config.select_on not in chosen:
        note = f"the last epoch: no {'test' if config.select_on == 'test' else 'validation'} images to select on"
    return {
        "protocol": config.protocol,
        "selected_epoch": best["epoch"],
        "selected_on": config.select_on,
        "selection_note": note,
        "metrics": {k: v for k, v in chosen.items() if isinstance(v, dict)},
        "parameters": {"total": total, "trainable": trainable},
        "train_images_per_s": timing["rate"] or None,
        "time_s": timing["time_s"],
        "device": str(dev),
        "world_size": world,
        "peak_rss_mib": peak_rss_mib(),
        "train_config": asdict(config),
        "provenance": provenance,
    }


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (Linux), for the results."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    line = next((ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else None

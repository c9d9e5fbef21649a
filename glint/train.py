"""Training GlintIQA: L1 loss, Adam, a cosine schedule (one decay, or the release's 30-step cycle), AMP on CUDA
unless fp32 is asked, DDP under torchrun, exact resume.

A run writes ``run.json`` first (protocol, settings, model, provenance such as the split). Each epoch ends with an
evaluation (mean over random test crops), a line in ``metrics.jsonl`` and ``metrics.csv``, and ``last.pt`` (model,
optimizer, scheduler, scaler, RNG state, history) written atomically; the best epoch by the selection split is
saved as ``best.pt``. The epoch is chosen on a validation split carved from the training data;
``select_on="test"`` reproduces the released code's choice on the test split and is recorded as such.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset
from tqdm import tqdm

from glint.checkpoint import checkpoint_payload, torch_load
from glint.data import crop_views, prepare
from glint.metrics import iqa_metrics
from glint.model import GlintIQA, parameter_counts
from glint.protocol import RELEASE_ETA_MIN, RELEASE_T_MAX, SCHEDULES
from saqt import __version__
from saqt.encoders import pick_device
from saqt.errors import ConfigError
from saqt.seeding import derive_seed


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

    def __post_init__(self):
        if self.select_on not in ("val", "test"):
            raise ConfigError(f"--select-on must be val or test, got {self.select_on!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")


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


@torch.inference_mode()
def predict_images(model: torch.nn.Module, images, crops: int, seed: int, device: torch.device,
                   resize: tuple[int, int] | None = None, progress: bool = False, amp: bool = True) -> list[float]:  # fmt: skip
    """Mean prediction over ``crops`` random 224 crops of each image (an iterable of uint8 RGB arrays); fp16
    autocast on CUDA when ``amp``."""
    model.eval()
    out = []
    half = amp and device.type == "cuda"
    for i, image in enumerate(tqdm(images, desc="score", unit="img", disable=not progress)):
        views = crop_views(prepare(image, resize), crops, derive_seed(seed, "test-crops", i)).to(device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=half):
            out.append(float(model(views).float().mean()))
    return out


def evaluate(model: torch.nn.Module, data: EvalSet, crops: int, seed: int, device: torch.device,
             amp: bool = True) -> dict:  # fmt: skip
    """IQA metrics of the model on ``data`` and the throughput of scoring."""
    start = time.perf_counter()
    preds = predict_images(model, (data.load(item) for item in data.items), crops, seed, device, data.resize, amp=amp)
    seconds = time.perf_counter() - start
    return {**iqa_metrics(preds, data.scores), "images": len(preds), "images_per_s": len(preds) / max(seconds, 1e-9)}


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def make_loader(data: Dataset, config: TrainConfig, epoch: int, rank: int, world: int) -> DataLoader:
    """This rank's loader for epoch ``epoch``: a dataset's own ``batch_sampler`` (SAQT-IQA's per-epoch
    permutation) when it has one, else torch's shuffle, split over DDP ranks by a DistributedSampler."""
    batch = max(1, config.batch_size // world)
    if hasattr(data, "batch_sampler"):
        return DataLoader(data, batch_sampler=data.batch_sampler(epoch, rank, world, batch),
                          num_workers=config.loader_workers)  # fmt: skip
    generator = torch.Generator().manual_seed(derive_seed(config.seed, epoch, "shuffle") % 2**63)
    kw = {"batch_size": batch, "num_workers": config.loader_workers, "generator": generator, "drop_last": False,
          "persistent_workers": False}  # fmt: skip
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


def train_step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, amp: bool) -> torch.Tensor:  # fmt: skip
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


def _resume(path: Path, model, optimizer, scheduler, scaler, config: TrainConfig, dev: torch.device) -> dict:
    """Restore an interrupted run from its ``last.pt``; its training state (epoch, step, history, best)."""
    ckpt = torch_load(path)
    changed = sorted(k for k, v in asdict(config).items() if ckpt["train_config"].get(k) != v)
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


def fit(model: GlintIQA, run: Run, config: TrainConfig, device: str = "auto", resume: bool = False,
        progress: bool = True) -> dict:  # fmt: skip
    """Train ``model`` on ``run.train`` and return the results (also written to ``run.out/results.json``)."""
    rank, world, dev = distributed(device)
    torch.manual_seed(config.seed)
    run.out.mkdir(parents=True, exist_ok=True)
    model.to(dev)
    net = (
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        if world > 1
        else model
    )
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                 weight_decay=config.weight_decay)  # fmt: skip
    scheduler = make_scheduler(optimizer, config, run.steps_per_epoch)
    use_amp = config.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    state = {"epoch": 0, "step": 0, "history": [], "best": None}
    if resume and (run.out / "last.pt").is_file():
        state = _resume(run.out / "last.pt", model, optimizer, scheduler, scaler, config, dev)
    meta = {"model_config": model.config.as_dict(), "train_config": asdict(config), "provenance": run.provenance,
            "toolkit_version": __version__}  # fmt: skip
    if rank == 0:
        (run.out / "run.json").write_text(json.dumps({"protocol": config.protocol, **meta}, indent=2, default=str))
        _restart_logs(run.out, state["history"])  # the checkpoint's history is the truth: drop torn or later lines
    train_seconds = train_images = 0.0
    for epoch in range(state["epoch"], config.epochs):
        if hasattr(run.train, "set_epoch"):
            run.train.set_epoch(epoch)
        net.train()
        losses, start = [], time.perf_counter()
        # a stream under DDP repeats each rank's share: every rank stops after the same number of steps
        per_rank = run.steps_per_epoch // world if world > 1 and isinstance(run.train, IterableDataset) else None
        for batch_index, (x, y) in enumerate(tqdm(make_loader(run.train, config, epoch, rank, world), desc=f"epoch {epoch + 1}/{config.epochs}",
                         unit="batch", disable=not progress or rank > 0, leave=False)):  # fmt: skip
            if per_rank is not None and batch_index >= per_rank:
                break
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = train_step(net, x, y, optimizer, scaler, use_amp)
            scheduler.step()
            losses.append(loss.detach().item())
            train_images += len(x)
            state["step"] += 1
            if config.max_steps and state["step"] >= config.max_steps:
                break
        train_seconds += time.perf_counter() - start
        record = {"epoch": epoch + 1, "step": state["step"], "lr": scheduler.get_last_lr()[0],
                  "train_loss": float(np.mean(losses)) if losses else float("nan"),
                  "first_loss": losses[0] if losses else float("nan")}  # fmt: skip
        if rank == 0:
            for name, data in run.evals.items():
                record[name] = evaluate(model, data, config.test_crops, config.seed, dev, amp=config.amp)
        state["epoch"] = epoch + 1
        state["history"].append(record)
        selected = record.get(config.select_on, {}).get("srocc", float("-inf"))
        if state["best"] is None or (selected == selected and selected > state["best"]["score"]):
            state["best"] = {"epoch": epoch + 1, "score": selected}
            if rank == 0:
                _atomic_save(checkpoint_payload(model, epoch=epoch + 1, **meta), run.out / "best.pt")
        if rank == 0:
            _atomic_save(checkpoint_payload(model, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                                            scaler=scaler.state_dict(), rng={"torch": torch.get_rng_state(),
                                            "cuda": torch.cuda.get_rng_state_all() if dev.type == "cuda" else []},
                                            **meta, **state), run.out / "last.pt")  # fmt: skip
            _log(run.out, record)
        if world > 1:
            dist.barrier()
        if config.max_steps and state["step"] >= config.max_steps:
            break
    results = _results(model, state, config, dev, world, train_images / max(train_seconds, 1e-9), run.provenance)
    if rank == 0:
        (run.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def _results(model, state: dict, config: TrainConfig, dev, world: int, rate: float, provenance: dict) -> dict:
    best = state["best"] or {"epoch": None, "score": None}
    chosen = next((r for r in state["history"] if r["epoch"] == best["epoch"]), {})
    total, trainable = parameter_counts(model)
    note = ("best epoch on the TEST split, as the released code does: optimistic, not a fair estimate"
            if config.select_on == "test" else "best epoch on a validation split carved from the training data")  # fmt: skip
    return {"protocol": config.protocol, "selected_epoch": best["epoch"], "selected_on": config.select_on,
            "selection_note": note, "metrics": {k: v for k, v in chosen.items() if isinstance(v, dict)},
            "parameters": {"total": total, "trainable": trainable}, "train_images_per_s": rate or None,
            "device": str(dev), "world_size": world, "peak_rss_mib": peak_rss_mib(), "train_config": asdict(config),
            "provenance": provenance}  # fmt: skip


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (Linux), for the results."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    line = next((ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else None


def _flatten(record: dict) -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _restart_logs(out: Path, history: list[dict]) -> None:
    for name in ("metrics.jsonl", "metrics.csv"):
        (out / name).unlink(missing_ok=True)
    for record in history:
        _log(out, record)


def _log(out: Path, record: dict) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    flat = _flatten(record)
    path = out / "metrics.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(flat), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(flat)

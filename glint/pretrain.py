"""Pretraining GlintIQA on SAQT-IQA labels: the library side of ``glint pretrain``.

``run_pretrain(config, out, ctx)`` opens the set (``glint.pretrain_data``), resolves the protocol, holds out a
published set's validation split (or else 5% of pristine images; under ``released``, the images matched to the
release's references) to pick the epoch, builds the model and trains
(``glint.train.fit``); with ``plan_only`` it writes the first batches' order to ``out/batches.csv`` instead.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from glint.configs import PretrainConfig
from glint.model import new_model
from glint.outputs import check_outputs_apart, run_start
from glint.pretrain_data import SaqtTraining
from glint.pretrain_index import INDEX_FOLDER
from glint.protocol import resolve
from glint.train import EvalSet, Run, TrainConfig, fit, planned_batches
from saqt.core.context import DEFAULT_CONTEXT, RunContext
from saqt.core.errors import ConfigError
from saqt.core.shards import write_bytes_atomic
from saqt.read.api import open_saqt


def run_pretrain(config: PretrainConfig, out: Path, ctx: RunContext = DEFAULT_CONTEXT) -> dict:
    """Pretrain into ``out`` and return the results (as ``glint.train.fit`` does); with ``plan_only``, write the plan
    and return ``{"plan": path, "batches": N, "ranks": world size}``. ``out`` may hold an earlier run only with
    ``config.resume`` or ``ctx.overwrite`` (``glint.outputs.run_start``)."""
    check_outputs_apart(out, {"--data": config.data})  # a run folder inside its input would change the set
    if not config.plan_only:
        run_start(out, config.resume, ctx.overwrite)  # refused before the set is read; fit checks again, locked
    proto = resolve(config.protocol, config.settings, pretrain=True)
    train_config = TrainConfig.from_protocol(proto, config.max_steps, config.loader_workers)
    files = open_saqt(config.data, config.pristine_cache)
    if files.build is not None:
        check_outputs_apart(out, {"the labels' build": files.build.root})
    train = SaqtTraining(files, train_config.seed, out / INDEX_FOLDER, released=proto.name == "released")
    if not len(train):
        raise ConfigError(f"{config.data} holds no scored training images")
    if config.plan_only:
        return write_plan(train, train_config, config.plan_only, out)
    held = train.held_out()
    items = list(range(min(config.holdout_images, len(held))))  # the first held-out rows, in file order
    model = new_model(config.model, train_config.seed, config.random_init)
    evals = {"val": EvalSet(items, [held.score(k) for k in items], held.pixels)} if items else {}
    provenance = {"pretrain": files.provenance, "protocol": proto.record()}
    batches = (
        (len(train) // train_config.batch_size) if train.drop_last else math.ceil(len(train) / train_config.batch_size)
    )
    run = Run(out, train, evals, max(1, batches), provenance)
    return fit(model, run, train_config, config.device, config.resume, ctx.progress, config.tensorboard, ctx.overwrite)


def write_plan(train: SaqtTraining, config: TrainConfig, count: int, out: Path) -> dict:
    """OUT/batches.csv: the first ``count`` batches of a run on $WORLD_SIZE ranks, as ``planned_batches`` gives
    them."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["batch", "rank", "image_id"])
    for step, rank, indices in planned_batches(train, config, world, count):
        writer.writerows([step, rank, image] for image in train.image_ids(indices))
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / "batches.csv", text.getvalue().encode())  # a killed run leaves no half-written plan
    return {"plan": out / "batches.csv", "batches": count, "ranks": world}

"""Training runs a person can watch: batch totals, a line per epoch, TensorBoard logs, the CPU memory hint, rank 0
alone speaking under DDP (two real gloo processes); the parts of ``fit``; ``run_finetune`` as a library call; the
glint CLI's names (--crops, --version, panels)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, IterableDataset
from typer.testing import CliRunner

from glint.finetune import FinetuneConfig, run_finetune
from glint.runlog import RunLog, cpu_memory_hint, summary_writer
from glint.train import Run, TrainConfig, epoch_steps, main_process, select
from pipelines.glint_cli import app, print_report
from saqt import __version__
from saqt.core.errors import ConfigError

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

runner = CliRunner()


class Numbers(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.tensor([float(i)]), torch.tensor(0.0)


class Stream(IterableDataset):
    def __iter__(self):
        return iter([(torch.tensor([1.0]), torch.tensor(0.0))] * 7)


def test_epoch_steps_give_the_bar_its_total_and_the_epoch_its_limit(tmp_path):
    data = Numbers(11)
    loader = DataLoader(data, batch_size=2)
    assert epoch_steps(loader, Run(tmp_path, data, {}, 6), TrainConfig(), 1, 0) == (None, 6)
    assert epoch_steps(loader, Run(tmp_path, data, {}, 6), TrainConfig(max_steps=3), 1, 0) == (3, 3)
    assert epoch_steps(loader, Run(tmp_path, data, {}, 6), TrainConfig(max_steps=8), 1, 6) == (2, 2)  # 2 steps left
    stream = Stream()
    loader = DataLoader(stream, batch_size=2)
    assert epoch_steps(loader, Run(tmp_path, stream, {}, 4), TrainConfig(), 1, 0) == (None, 4)  # no length: about 4
    assert epoch_steps(loader, Run(tmp_path, stream, {}, 5), TrainConfig(), 2, 0) == (2, 2)  # each rank's share


def test_selection_takes_the_first_epoch_then_only_a_better_one():
    state = {"best": None}
    assert select(state, {"epoch": 1, "val": {"srocc": float("nan")}}, "val")  # the first epoch, even with NaN
    assert select(state, {"epoch": 2, "val": {"srocc": 0.5}}, "val") and state["best"] == {"epoch": 2, "score": 0.5}
    assert not select(state, {"epoch": 3, "val": {"srocc": float("nan")}}, "val")
    assert not select(state, {"epoch": 4, "val": {"srocc": 0.5}}, "val")
    assert select(state, {"epoch": 5, "val": {"srocc": 0.6}, "test": {"srocc": 0.1}}, "val")
    assert not select(state, {"epoch": 6, "val": {"srocc": 0.2}, "test": {"srocc": 0.9}}, "val")
    assert state["best"] == {"epoch": 5, "score": 0.6}


def test_cpu_memory_hint_and_missing_tensorboard(monkeypatch, tmp_path):
    hint = cpu_memory_hint(torch.device("cpu"), 128)
    assert hint.startswith("hint: training on the CPU with batch 128 needs about 20 GB") and "--batch-size" in hint
    assert cpu_memory_hint(torch.device("cpu"), 32) is None and cpu_memory_hint(torch.device("cuda"), 128) is None
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    with pytest.raises(ConfigError, match=r"^--tensorboard needs the tensorboard package: pip install tensorboard"):
        summary_writer(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_a_run_shows_its_epochs_and_writes_tensorboard_logs(tmp_path, tiny_dataset, capsys):  # noqa: F811
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = FinetuneConfig(
        "csv",
        tiny_dataset,
        csv_file=tiny_dataset / "scores.csv",
        random_init=True,
        local_backbone="efficientnet_lite0",
        loader_workers=0,
        epochs=2,
        batch_size=64,
        lr=1e-4,
        test_crops=1,
        device="cpu",
        tensorboard=True,
    )
    results = run_finetune(config, tmp_path / "run")
    shown = capsys.readouterr()
    assert "hint: training on the CPU with batch 64 needs about 10 GB" in shown.err  # 11 images: one batch per epoch
    lines = [ln for ln in shown.out.splitlines() if ln.startswith("epoch ")]
    pattern = (
        r"epoch {e}/2  step {e}  loss \d+\.\d{{4}}  lr \S+  val SROCC nan PLCC nan RMSE nan  "
        r"test SROCC -?\d\.\d{{4}} PLCC -?\d\.\d{{4}} RMSE \d+\.\d{{4}}  "
        r"\(\d+\.\d s training, \d+\.\d s evaluation\)"
    )
    assert len(lines) == 2 and all(re.fullmatch(pattern.format(e=e + 1), ln) for e, ln in enumerate(lines)), lines
    history = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert (
        f"loss {history[1]['train_loss']:.4f}" in lines[1] and results[0]["selected_epoch"] == 1
    )  # val NaN twice: the first stays
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert scalars["test/srocc"] == [(h["step"], pytest.approx(h["test"]["srocc"])) for h in history]
    assert scalars["train/lr"] == [(h["step"], pytest.approx(h["lr"])) for h in history]
    assert [s for s, _ in scalars["train/step_loss"]] == [1, 2] and "val/srocc" not in scalars  # NaN is left out
    provenance = json.loads((tmp_path / "run" / "run.json").read_text())["provenance"]
    assert provenance["score_scale"] == "csv score, 10 to 54 in scores.csv, higher is better"  # the fixture's scores


def _rank(rank: int, out: Path, port: int) -> None:
    """One of two gloo processes: a run log, an epoch, the CLI's summary, each as rank ``rank``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    run = out / f"rank{rank}"
    run.mkdir()
    record = {
        "epoch": 1,
        "step": 3,
        "lr": 1e-5,
        "train_loss": 0.5,
        "first_loss": 0.7,
        "test": {"srocc": 0.5, "plcc": 0.4, "rmse": 2.0},
    }
    results = {
        "parameters": {"total": 2, "trainable": 1},
        "protocol": "honest",
        "train_images_per_s": 1.0,
        "time_s": {"training": 1.0, "evaluation": 2.0},
        "device": "cpu",
        "selected_epoch": 1,
        "selection_note": "note",
        "metrics": {},
    }
    with open(out / f"said{rank}.txt", "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        log = RunLog(run, rank, progress=True, tensorboard=True)
        log.say("a hint", err=True)
        with log.bar(3, "epoch 1/1", "batch") as bar:
            bar.update(3)
        log.epoch(record, 1, 1.0, 2.0)
        log.close()
        print_report(results, run)
        print(f"main_process={main_process()}")
    dist.destroy_process_group()


def test_only_rank_0_prints_and_writes_logs_under_ddp(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_rank, args=(tmp_path, port), nprocs=2)
    said = [(tmp_path / f"said{r}.txt").read_text() for r in (0, 1)]
    assert said[1] == "main_process=False\n" and not any((tmp_path / "rank1").iterdir())
    assert "a hint" in said[0] and "epoch 1/1  step 3  loss 0.5000" in said[0] and "selected epoch 1" in said[0]
    assert said[0].endswith("main_process=True\n")
    assert sorted(p.name for p in (tmp_path / "rank0").iterdir()) == ["metrics.csv", "metrics.jsonl", "tensorboard"]


def test_cli_version_crops_and_help_panels():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"glint (saqt-iqa) {__version__}\n"
    help_text = runner.invoke(app, ["finetune", "--help"], terminal_width=120).output
    assert "--crops" in help_text and "--test-crops" not in help_text
    for panel in ("Data", "Model", "Protocol and training", "Evaluation", "Execution", "Output"):
        assert re.search(rf"╭─ {panel} ─", help_text), panel
    assert "Epochs [honest: 10" in help_text  # the defaults in brackets are not taken for markup
    old = runner.invoke(app, ["finetune", "--test-crops=3", "--help"])  # parsed: an unknown option fails first
    assert old.exit_code == 0 and "WARNING: --test-crops is deprecated; use --crops" in old.stderr
    assert runner.invoke(app, ["finetune", "--no-such-option=3", "--help"]).exit_code == 2
    for bad in (["--batch-size", "0"], ["--epochs", "0"], ["--crops", "0"], ["--loader-workers", "-1"]):
        refused = runner.invoke(app, ["pretrain", "--data", "x", "--out", "o", *bad])  # not a division by zero later
        assert refused.exit_code == 2 and f"Invalid value for '{bad[0]}'" in refused.output, (bad, refused.output)

"""Decisions that only change results on hardware the tests lack (a CUDA GPU, several ranks): precision, autocast,
loss scaling, the process group's backend, the device of each rank, loader workers and pinned memory. Autocast does
nothing on the CPU, so each decision is checked where it is made, with stand-ins recording what is asked; the
expectations are the release's (it scores and finetunes in fp32, pretrains with AMP on CUDA) and the documented
rules."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import glint.evaluate as evaluate
import glint.predict as predict
import glint.scoring as scoring
import glint.train as train
import pipelines.glint_cli as glint_cli
import saqt.label.embed as embed
from glint.protocol import resolve
from glint.scale import UNKNOWN_SCALE
from glint.train import EvalSet, TrainConfig, evaluate_all, start_session, train_step
from saqt.core.context import pick_device

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


class Tiny(torch.nn.Module):
    """A stand-in model: one parameter, a score per view; ``to`` leaves it where it is (there is no GPU here)."""

    score_scale = UNKNOWN_SCALE

    def __init__(self, meta: dict | None = None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        if meta is not None:
            self.checkpoint = SimpleNamespace(meta=meta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(dim=1) + self.w

    def to(self, *args, **kwargs):
        return self


class Autocast:
    """Records each ``torch.autocast`` asked for: (device type, dtype, enabled)."""

    calls: list = []

    def __init__(self, device_type, dtype=None, enabled=True):
        Autocast.calls.append((device_type, dtype, enabled))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def autocast(monkeypatch):
    Autocast.calls = []
    monkeypatch.setattr(torch, "autocast", Autocast)
    return Autocast.calls


@pytest.mark.parametrize(
    ("meta", "amp"),
    [
        (None, False),  # a model without a checkpoint (the random smoke model)
        ({"epoch": 7, "best_srocc": 0.9}, False),  # the release's checkpoints record no precision: it scores in fp32
        ({"train_config": {}}, False),
        ({"train_config": {"amp": False}}, False),
        ({"train_config": {"amp": True}}, True),
    ],
)
def test_scoring_precision_is_the_checkpoints_and_fp32_without_a_record(meta, amp):
    assert scoring.scoring_amp(Tiny(meta)) is amp


@pytest.fixture
def photo_file(tmp_path) -> Path:
    path = tmp_path / "p.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("amp", [True, None])
def test_every_scoring_path_asks_for_the_checkpoints_precision(amp, monkeypatch, tmp_path, photo_file):
    """``glint predict`` (score_files), ``GlintIQA.score`` and ``glint evaluate`` each pass on what the checkpoint
    records; without a record, fp32."""
    meta = {"train_config": {"amp": amp}} if amp is not None else {}
    asked = []

    def predict_images(model, images, crops, device, resize=None, batch_size=4, amp=False, bar=None):
        asked.append(amp)
        return [0.0 for _ in images]

    monkeypatch.setattr(predict, "predict_images", predict_images)
    monkeypatch.setattr(scoring, "predict_images", predict_images)
    predict.score_files(Tiny(meta), [photo_file], crops=1, device="cpu")
    scoring.score(Tiny(meta), np.full((40, 40, 3), 9, np.uint8), crops=1)

    def score_eval_set(model, data, crops, seed, device, amp=True, bar=None, batch_size=4):
        asked.append(amp)
        return [float(i) for i in range(len(data.items))], 1.0

    monkeypatch.setattr(evaluate, "load_model", lambda path, device: Tiny(meta))
    monkeypatch.setattr(evaluate, "score_eval_set", score_eval_set)
    root = tmp_path / "data"
    root.mkdir()
    (root / "scores.csv").write_text("path,score\na.png,1\nb.png,3\nc.png,2\n")
    for name in ("a", "b", "c"):
        (root / f"{name}.png").write_bytes(b"")  # never read: the scoring is replaced
    args = ["evaluate", "--checkpoint", str(photo_file), "--dataset", "csv", "--csv", str(root / "scores.csv")]
    result = CliRunner().invoke(glint_cli.app, [*args, "--root", str(root), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert asked == [bool(amp)] * 3


@pytest.mark.parametrize(("protocol", "amp"), [("released", False), ("honest", True)])
def test_the_per_epoch_evaluation_scores_in_the_protocols_precision(protocol, amp, monkeypatch):
    """The release evaluates each epoch in fp32 (engine/evaluate.py: no autocast); the honest protocol with AMP."""
    asked = []
    monkeypatch.setattr(train, "evaluate", lambda model, data, crops, seed, device, amp, bar, epoch: asked.append(amp))
    config = TrainConfig.from_protocol(resolve(protocol, {}))
    session = SimpleNamespace(main=True, model=Tiny(), device=CUDA)
    log = SimpleNamespace(bar=lambda *args: contextlib.nullcontext())
    evaluate_all(session, {"test": EvalSet([0], [1.0], lambda k: None)}, config, 3, log)
    assert asked == [amp]


@pytest.mark.parametrize(("device", "amp", "half"), [(CUDA, True, True), (CUDA, False, False), (CPU, True, False)])
def test_scoring_autocasts_to_fp16_only_when_asked_and_on_cuda(device, amp, half, monkeypatch, autocast):
    seen, mean_scores = [], scoring.mean_scores
    monkeypatch.setattr(scoring, "mean_scores", lambda model, views, dev, h, bar: seen.append(h) or [0.0])
    image = np.zeros((224, 224, 3), np.uint8)
    scoring.predict_images(Tiny(), [(image, 1)], 1, device, amp=amp)
    assert seen == [half]
    mean_scores(Tiny(), [torch.zeros(1, 3, 4, 4)], CPU, half, None)
    assert autocast == [("cuda", torch.float16, half)]


@pytest.mark.parametrize(("device", "amp", "used"), [(CUDA, True, True), (CUDA, False, False), (CPU, True, False)])
def test_training_uses_amp_and_loss_scaling_only_when_asked_and_on_cuda(device, amp, used, monkeypatch, autocast):
    monkeypatch.setattr(train, "distributed", lambda asked: (0, 1, device))  # as under torchrun on that device
    config = TrainConfig(amp=amp, schedule="cycle")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # GradScaler on a machine without CUDA says it is disabled
        session = start_session(Tiny(), config, 1, "auto")
    assert session.amp is used and session.device == device
    if device.type == "cpu":
        assert not session.scaler.is_enabled()
    train_step(session.net, torch.ones(2, 3), torch.ones(2), session.optimizer, session.scaler, session.amp)
    assert autocast == [("cuda", torch.float16, used)]


@pytest.mark.parametrize(
    ("world", "local_rank", "picked", "backend"),
    [("2", "1", CUDA.type, "nccl"), ("2", "1", "cpu", "gloo"), ("1", "0", CUDA.type, None)],
)
def test_each_rank_takes_its_local_gpu_and_nccl_or_gloo(world, local_rank, picked, backend, monkeypatch):
    calls = {"pick": [], "set_device": [], "init": []}

    def pick(device, index=0):
        calls["pick"].append((device, index))
        return torch.device(picked, index) if picked == "cuda" else torch.device("cpu")

    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setattr(train, "pick_device", pick)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: calls["set_device"].append(dev))
    monkeypatch.setattr(train.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(train.dist, "init_process_group", lambda backend: calls["init"].append(backend))
    monkeypatch.setattr(train.dist, "get_rank", lambda: int(local_rank))
    rank, size, dev = train.distributed("auto")
    index = int(local_rank) if world != "1" else 0
    assert (rank, size) == (int(local_rank), int(world)) and calls["pick"] == [("auto", index)]
    assert calls["set_device"] == ([torch.device("cuda", index)] if picked == "cuda" else [])
    assert calls["init"] == ([backend] if backend else [])


def test_auto_is_cuda_when_there_is_one_and_cuda_means_the_ranks_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    pick = pick_device
    assert (pick("auto"), pick("auto", 1), pick("cuda", 1), pick("cuda:1", 0), pick("cpu", 1)) == (
        torch.device("cuda", 0),
        torch.device("cuda", 1),
        torch.device("cuda", 1),
        torch.device("cuda", 1),
        CPU,
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick("auto", 1) == CPU


@pytest.mark.parametrize(
    ("device", "cores", "workers"), [(CUDA, 16, 8), (CUDA, 4, 3), (CPU, 4, 0), (CPU, 16, 2), (CPU, 5, 0)]
)
def test_embedding_loader_workers_per_device_and_cores(device, cores, workers, monkeypatch):
    """Up to 8 feeding a GPU (cores - 1 where fewer), none on a CPU machine of 4 cores or fewer, else cores // 8."""
    monkeypatch.setattr(embed.os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert embed.auto_loader_workers(device) == workers


@pytest.mark.parametrize(("device", "encoder_autocast"), [(CUDA, True), (CUDA, False), (CPU, True)])
def test_embeddings_pin_memory_and_autocast_only_on_cuda(device, encoder_autocast, monkeypatch, autocast):
    """Pinned host memory and fp16 autocast on CUDA only; autocast also only where the encoder allows it."""
    loaders = []

    class Batch:
        def to(self, dev, non_blocking=False):
            return torch.zeros(1, 3)

    def loader(dataset, **kwargs):
        loaders.append(kwargs)
        return [[Batch()]]

    monkeypatch.setattr(embed, "DataLoader", loader)
    monkeypatch.setattr(embed.os, "sched_getaffinity", lambda pid: set(range(4)))
    model = SimpleNamespace(parameters=lambda: iter([SimpleNamespace(device=device)]))
    encoder = SimpleNamespace(
        model=model, preprocess=None, dim=2, forward=lambda b: torch.ones(1, 2), autocast=encoder_autocast
    )
    out = embed.embed_images(encoder, ["a"])
    cuda = device.type == "cuda"
    assert out.shape == (1, 2) and loaders[0]["pin_memory"] is cuda and loaders[0]["num_workers"] == (3 if cuda else 0)
    assert autocast == [("cuda", torch.float16, cuda and encoder_autocast)]

"""Failures the user can fix are one line at the CLI (a full disk, remote outputs without their library, a
GPU device without a GPU, an unreachable Hub), and a bug is never hidden as one of them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import invoke_label, one_line_failure, runner

from pipelines.saqt_cli import app
from saqt.core import safe_files


def test_a_full_disk_is_one_line(tmp_path, monkeypatch):
    real = safe_files.create_new

    def on_full_disk(path: Path):  # the first shard's temporary file: every write to /dev/full fails with ENOSPC
        return open("/dev/full", "r+b") if path.name.startswith(".part-00000.parquet.") else real(path)  # noqa: SIM115

    monkeypatch.setattr(safe_files, "create_new", on_full_disk)
    out = tmp_path / "out"
    result = runner.invoke(app, ["build", "--out", str(out), "--size", "96x64", "--types", "1", "--levels", "1"])
    one_line_failure(result, "No space left on device")


def test_a_bug_is_not_hidden_as_an_expected_failure(tmp_path, monkeypatch):
    import saqt.build.build_stage

    def bug(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(saqt.build.build_stage, "run_build", bug)  # stands in for a programming error inside the stage
    result = runner.invoke(app, ["build", "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, ValueError) and result.exit_code == 1


@pytest.mark.slow
def test_s3_without_s3fs_and_hf_urls_are_one_line(stages, monkeypatch):
    if __import__("importlib").util.find_spec("s3fs") is None:
        result = runner.invoke(app, ["publish", "--labels", str(stages / "labels"), "--out", "s3://bucket/saqt-iqa"])
        one_line_failure(result, "s3fs")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never reach for the network here
    result = runner.invoke(app, ["publish", "--labels", str(stages / "labels"), "--out", "hf://datasets/me/saqt"])
    one_line_failure(result, "--push-to-hub ORG/NAME")


@pytest.mark.slow
def test_a_gpu_device_without_a_gpu_is_one_line(stages, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: --device cuda is valid here")
    result = invoke_label(stages / "build", stages / "bank", tmp_path / "l", "--device", "cuda")
    one_line_failure(result, "no CUDA GPU")
    assert not (tmp_path / "l").exists()


def test_the_default_clip_encoder_fails_fast_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from saqt.label.encoders import EncoderError, load_encoder

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # a real, refused connection
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))  # nothing cached
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    with pytest.raises(EncoderError, match="cannot download") as err:
        load_encoder("clip:ViT-B-32@laion2b_s34b_b79k", "cpu")
    assert time.perf_counter() - start < 15 and "\n" not in str(err.value)

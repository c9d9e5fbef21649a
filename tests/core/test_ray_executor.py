"""``--executor ray`` on a real local Ray cluster: output identical to the local executor's, retries, failed units
named and resumed, Ray's GPU embedding batches, and the message when Ray is not installed."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pipelines.executors import LocalExecutor
from pipelines.saqt_cli import app
from saqt.build.build_stage import BuildConfig, run_build
from saqt.core.context import RunContext
from saqt.core.shards import sha256_file
from saqt.core.stage_contract import read_manifest
from saqt.label.label_stage import LabelConfig, run_label
from saqt.label.synth_stage import SynthConfig, run_synth_bank

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

runner = CliRunner()
BUILD_ARGS = ["--limit", "3", "--size", "96x64", "--types", "1,10", "--levels", "1,5", "--images-per-shard", "1"]
CONFIG = BuildConfig(limit=3, size=(96, 64), types=(1, 10), levels=(1, 5), images_per_shard=1)


def checksums(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.glob("*/*.parquet")) if p.is_file()}


def manifest_shards(out: Path) -> dict:
    return read_manifest(out, "build")["done"]  # with the units its journal holds


@pytest.fixture(scope="module")
def ray():
    """The ray module; a cluster that a test starts here is shut down after the module."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this test module
    yield ray
    ray.shutdown()


@pytest.fixture
def cluster(ray):
    """A local two-CPU Ray cluster, shared by the tests that ask for it."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    return ray


@pytest.fixture(scope="module")
def local_build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "b"
    run_build(CONFIG, out, RunContext(LocalExecutor(1), progress=False))
    return out


@pytest.fixture(scope="module")
def local_bank(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bank") / "k"
    run_synth_bank(
        SynthConfig(source="sample-bank", limit=2, size=(96, 64), metric="psnr"),
        out,
        RunContext(LocalExecutor(1), progress=False),
    )
    return out


def test_ray_build_is_identical_to_local_and_its_cluster_is_shut_down(tmp_path, ray, local_build):
    if ray.is_initialized():
        ray.shutdown()  # this test starts the cluster through the CLI
    result = runner.invoke(
        app, ["build", "--out", str(tmp_path / "r"), *BUILD_ARGS, "--executor", "ray", "--workers", "2"]
    )
    assert result.exit_code == 0 and "built 3 pristine and 12 distorted images" in result.output, result.output
    assert not ray.is_initialized()
    assert checksums(tmp_path / "r") == checksums(local_build) and len(checksums(local_build)) == 6
    assert manifest_shards(tmp_path / "r") == manifest_shards(local_build)


def test_ray_bank_synth_and_label_are_identical_to_local(tmp_path, cluster, local_build, local_bank):
    result = runner.invoke(
        app,
        [
            "bank",
            "synth",
            "--source",
            "sample-bank",
            "--limit",
            "2",
            "--size",
            "96x64",
            "--metric",
            "psnr",
            "--out",
            str(tmp_path / "k"),
            "--executor",
            "ray",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "k" / "scores.csv").read_bytes() == (local_bank / "scores.csv").read_bytes()
    assert len((local_bank / "scores.csv").read_text().splitlines()) == 1 + 2 * 125
    labels = {}
    for executor in ("local", "ray"):
        labels[executor] = tmp_path / f"labels-{executor}"
        result = runner.invoke(
            app,
            [
                "label",
                "--build",
                str(local_build),
                "--bank",
                str(local_bank),
                "--encoder",
                "effnet-lite0",
                "--rule",
                "topk",
                "--device",
                "cpu",
                "--loader-workers",
                "0",
                "--out",
                str(labels[executor]),
                "--executor",
                executor,
            ],
        )
        assert result.exit_code == 0 and "labelled 12 images in 3 shards" in result.output, result.output
    assert checksums(labels["ray"]) == checksums(labels["local"])  # labels/, saqt-iqa/ and embeddings/
    assert len(checksums(labels["local"])) == 3 + 3 + 2


@dataclass(frozen=True)
class FailsOnce:
    """A unit function whose first attempt at unit 1 dies (``os._exit``) or raises."""

    fn: object
    how: str
    marker: Path

    def __call__(self, unit):
        if unit[0] == 1 and not self.marker.exists():
            self.marker.touch()
            if self.how == "exit":
                os._exit(1)
            raise RuntimeError("first attempt fails")
        return self.fn(unit)


@dataclass
class Flaky:
    """An executor whose unit 1 fails on its first attempt."""

    executor: object
    how: str
    marker: Path

    def map_unordered(self, fn, items):
        return self.executor.map_unordered(FailsOnce(fn, self.how, self.marker), items)


@pytest.mark.parametrize("how", ["exit", "raise"])
def test_a_unit_that_fails_once_is_retried(tmp_path, cluster, local_build, how):
    from pipelines.ray_executor import RayExecutor

    with RayExecutor() as executor:
        manifest = run_build(
            CONFIG, tmp_path / "b", RunContext(Flaky(executor, how, tmp_path / "failed"), progress=False)
        )
    assert (tmp_path / "failed").exists() and manifest["complete"]
    assert checksums(tmp_path / "b") == checksums(local_build)


def test_a_unit_failing_every_attempt_is_named_the_others_kept_and_a_rerun_resumes(tmp_path, cluster, local_build):
    out = tmp_path / "b"
    blocker = out / "distorted" / "part-00001.parquet"  # where unit 1 puts its first shard: a folder in the way
    blocker.mkdir(parents=True)
    args = ["build", "--out", str(out), *BUILD_ARGS, "--executor", "ray"]
    result = runner.invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.startswith("saqt build:")]
    assert result.exit_code == 1, result.output
    assert lines[0].startswith("saqt build: shard part-00001 (") and "failed: OutputError: " in lines[0]
    assert f"{blocker} is a folder that saqt did not write" in lines[0]
    assert lines[1:] == ["saqt build: 1 failed; finished shards are kept; run the same command again to resume"]
    assert sorted(manifest_shards(out)) == ["0", "2"]
    kept = {p: os.stat(out / p).st_mtime_ns for p in checksums(out)}
    assert len(kept) == 4 and not any("00001" in p for p in kept)
    blocker.rmdir()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert checksums(out) == checksums(local_build) and manifest_shards(out) == manifest_shards(local_build)
    assert kept == {p: os.stat(out / p).st_mtime_ns for p in kept}  # the finished units were not run again


def _threads(_: int) -> tuple[str | None, int]:
    import cv2

    return os.environ.get("OMP_NUM_THREADS"), cv2.getNumThreads()


def test_ray_tasks_are_single_threaded(cluster):
    from pipelines.ray_executor import RayExecutor

    with RayExecutor() as executor:
        assert set(executor.map_unordered(_threads, range(4))) == {("1", 1)}


def test_labels_from_embedding_actors_equal_labels_embedded_here(
    tmp_path, cluster, local_build, local_bank, monkeypatch
):
    from pipelines import ray_executor

    class CpuActors(ray_executor.RayExecutor):
        """Embedding actors without GPUs, which the real executor uses only with GPUs."""

        def gpu_embedder(self, spec: str, device: str) -> ray_executor.RayEmbedder:
            return ray_executor.RayEmbedder(spec, device, actors=2, num_gpus=0)

    monkeypatch.setattr(ray_executor, "BATCHES_PER_CALL", 1)
    assert [len(run) for run in ray_executor.RayEmbedder.runs(list(range(10)), 3)] == [3, 3, 3, 1]
    config = LabelConfig(
        build=str(local_build),
        bank=str(local_bank),
        encoder="effnet-lite0",
        rule="topk",
        device="cpu",
        batch_size=2,
        loader_workers=0,
    )
    run = RunContext(progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the actors: on CPU the last bits depend on the thread count
    try:
        run_label(config, tmp_path / "here", run)
    finally:
        torch.set_num_threads(threads)
    with CpuActors() as executor:
        manifest = run_label(config, tmp_path / "actors", replace(run, executor=executor))
    assert manifest["complete"] and checksums(tmp_path / "actors") == checksums(tmp_path / "here")
    assert len(checksums(tmp_path / "here")) == 3 + 3 + 2  # labels/, saqt-iqa/ and embeddings/


@pytest.mark.parametrize(
    "command", [["build"], ["bank", "synth", "--out", "b"], ["label", "--build", "b", "--bank", "k", "--out", "l"]]
)
def test_executor_ray_without_ray_is_one_clear_line(tmp_path, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*command, "--executor", "ray"])
    name = " ".join(command[:2]) if command[0] == "bank" else command[0]
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"saqt {name}: --executor ray needs Ray: pip install -e '.[ray]' in the toolkit's checkout"
    )
    assert not list(tmp_path.iterdir())

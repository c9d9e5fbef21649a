"""Shared fixtures: real images from scikit-image's bundled sample and, when present, ../shared."""

from __future__ import annotations

import re
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from helpers import CELLS, QUIET, SIZE, Handler, Served, on_cpu
from PIL import Image

from pipelines.executors import LocalExecutor
from saqt.build.build_stage import BuildConfig, run_build
from saqt.build.sources import sample_paths
from saqt.core.context import RunContext
from saqt.core.images import decode_image
from saqt.label.label_stage import LabelConfig, run_label
from saqt.label.synth_stage import SynthConfig, run_synth_bank
from saqt.publish.publish_stage import PublishConfig, run_publish

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden"


def needs_shared(path: Path) -> Path:
    """Skip the calling test, with the reason, when a ../shared resource is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent (the ../shared data folder is not beside this checkout)")
    return path


def write_kadid_table(folder: Path, refs: list[str]) -> Path:
    """A KADID-10k score table (``folder/dmos.csv``) scoring every (type, level) of ``refs``, scores 1 to 5."""
    rows = ["dist_img,ref_img,dmos,var"]
    rows += [
        f"{r}_{t:02d}_{lv:02d}.png,{r}.png,{1 + (i + t + lv) % 5},0.1"
        for i, r in enumerate(refs)
        for t in range(1, 26)
        for lv in range(1, 6)
    ]
    path = folder / "dmos.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(autouse=True)
def fresh_network_answers(monkeypatch):
    """Each test probes download servers anew (saqt.core.network): a port closed in one test may listen in the next."""
    from saqt.core import network

    monkeypatch.setattr(network, "answers", {})


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real 512 x 384 colour photo: the centre of scikit-image's astronaut."""
    img = decode_image(sample_paths()[0])
    return np.ascontiguousarray(img[64:448, :512])


# The sections of a labels' or published set's report, in page order (saqt/inspect/report.py)
REPORT_SECTIONS = [
    "summary",
    "matches",
    "screen",
    "grid",
    "histograms",
    "levels",
    "similarity",
    "bank",
    "fidelity",
    "errors",
]


def self_contained(page: str) -> bool:
    """Whether a report links nothing outside itself: every src/href is inline data or an in-page anchor."""
    return not re.search(r'(src|href)="(?!data:|#)', page)


@pytest.fixture(scope="session")
def small_stages(tmp_path_factory) -> Path:
    """Every stage folder, small (about 5 s): ``build`` (5 sample photos x 1 cell, 3 units), ``bank`` (a 2-reference
    PSNR synth bank that saves its distortions, so dataset.csv too), ``labels`` (rule top1, effnet-lite0 embeddings
    cached) and ``published``. Tests copy a folder before changing it."""
    from dataclasses import replace

    from pipelines.executors import LocalExecutor
    from saqt.build.build_stage import BuildConfig, run_build
    from saqt.core.context import RunContext
    from saqt.label.label_stage import LabelConfig, run_label
    from saqt.label.synth_stage import SynthConfig, run_synth_bank
    from saqt.publish.publish_stage import PublishConfig, run_publish

    root = tmp_path_factory.mktemp("small-stages")
    one, quiet = RunContext(LocalExecutor(1), progress=False), RunContext(progress=False)
    run_build(BuildConfig(size=(96, 64), types=(1,), levels=(1,), images_per_shard=2), root / "build", one)
    bank = SynthConfig(source="sample-bank", size=(96, 64), limit=2, metric="psnr", save_distorted=True)
    run_synth_bank(bank, root / "bank", one)
    label = LabelConfig(build=str(root / "build"), bank=str(root / "bank"), rule="top1", encoder="effnet-lite0")
    run_label(replace(label, device="cpu"), root / "labels", quiet)
    run_publish(PublishConfig(str(root / "labels")), str(root / "published"), quiet)
    return root


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.state = Served()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """Fifteen real photos (the five bundled samples and two crops of each) with scores, as a CSV dataset."""
    root = tmp_path_factory.mktemp("tiny")
    rows = []
    for i, path in enumerate(sample_paths()):
        img = Image.open(path).convert("RGB")
        img.save(root / f"{path.stem}.png")
        rows.append(f"{path.stem}.png,{10 + 9 * i}")
        for j, box in enumerate([(0, 0, 300, 260), (40, 30, 290, 280)]):
            img.crop(box).save(root / f"crop{j}_{path.stem}.png")
            rows.append(f"crop{j}_{path.stem}.png,{15 + 9 * i + 3 * j}")
    (root / "scores.csv").write_text("path,score\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> Path:
    """A finished build (5 sample photos x 4 cells, 3 units), a 2-reference PSNR bank, labels, a published set."""
    root = tmp_path_factory.mktemp("stages")
    run_build(
        BuildConfig(size=SIZE, images_per_shard=2, **CELLS),
        root / "build",
        RunContext(LocalExecutor(1), progress=False),
    )
    run_synth_bank(
        SynthConfig(source="sample-bank", size=SIZE, limit=2, metric="psnr"),
        root / "bank",
        RunContext(LocalExecutor(1), progress=False),
    )
    config = LabelConfig(
        build=str(root / "build"), bank=str(root / "bank"), encoder="effnet-lite0", rule="topk", neighbours=2
    )
    run_label(on_cpu(config), root / "labels", QUIET)
    run_publish(PublishConfig(str(root / "labels")), str(root / "published"), RunContext(progress=False))
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Seven distinct real photos: the five bundled samples and two crops, as JPEG and PNG."""
    root = tmp_path_factory.mktemp("photos")
    for i, path in enumerate(sample_paths()):
        img = Image.open(path).convert("RGB")
        img.save(root / f"{path.stem}.{'jpg' if i % 2 else 'png'}", quality=92)
        if i < 2:
            img.crop((0, 0, img.width // 2 + 40, img.height // 2 + 40)).save(root / f"crop_{path.stem}.jpg", quality=92)
    return root

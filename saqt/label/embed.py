"""Batched, L2-normalised image embeddings, cached in Parquet by image id and encoder.

Images are decoded and preprocessed in DataLoader workers; batches are formed in a fixed order, so the
embeddings do not depend on the number of loader workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from saqt.core.images import decode_image
from saqt.core.progress import Progress
from saqt.core.safe_files import atomic_write
from saqt.core.shards import Locator, read_locator
from saqt.label.encoders import Encoder


class _Images(Dataset):
    def __init__(self, locators: list[Locator], preprocess: Callable):
        self.locators = locators
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.locators)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(decode_image(read_locator(self.locators[i])))


def auto_loader_workers(device: torch.device) -> int:
    """Decoding workers that do not starve the model: none on a small CPU machine (the forward pass already uses
    every core), a few where cores are to spare, up to 8 feeding a GPU."""
    cores = len(os.sched_getaffinity(0))
    return min(8, cores - 1) if device.type == "cuda" else (0 if cores <= 4 else cores // 8)


def embed_images(
    encoder: Encoder,
    locators: list[Locator],
    batch_size: int = 64,
    loader_workers: int | None = None,
    progress: bool = False,
    desc: str = "embed",
) -> np.ndarray:
    """(N, dim) float32 L2-normalised embeddings of the images at ``locators``, in order.

    ``loader_workers=None`` picks a number for this machine (:func:`auto_loader_workers`).
    """
    if not locators:
        return np.zeros((0, encoder.dim), np.float32)
    device = next(encoder.model.parameters()).device
    cuda = device.type == "cuda"
    workers = auto_loader_workers(device) if loader_workers is None else loader_workers
    loader = DataLoader(
        _Images(locators, encoder.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=cuda,
        shuffle=False,
        collate_fn=_stack_same_size,
    )
    out = []
    half = cuda and getattr(encoder, "autocast", True)
    with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.float16, enabled=half):
        for groups in Progress(loader, desc=desc, unit="batch", disable=not progress):
            for batch in groups:
                features = encoder.forward(batch.to(device, non_blocking=True)).float()
                out.append(torch.nn.functional.normalize(features, dim=1).cpu().numpy())
    return np.concatenate(out)


def _stack_same_size(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """A batch as runs of consecutive same-shape tensors, each stacked (encoders that keep each image's own
    resolution meet mixed sizes; order is kept)."""
    runs: list[list[torch.Tensor]] = []
    for t in tensors:
        if runs and runs[-1][0].shape == t.shape:
            runs[-1].append(t)
        else:
            runs.append([t])
    return [torch.stack(run) for run in runs]


def embedding_schema(dim: int) -> pa.Schema:
    """id, encoder, and a fixed-size list of float32."""
    return pa.schema(
        [
            ("id", pa.string()),
            ("encoder", pa.string()),
            ("weights", pa.string()),
            ("embedding", pa.list_(pa.float32(), dim)),
        ]
    )


def cached_embeddings(
    encoder: Encoder, items: dict[str, Locator], cache: Path, embed: Callable = embed_images, **kw
) -> dict[str, np.ndarray]:
    """Embeddings of ``items`` (id -> locator), reading those already in ``cache`` and adding the rest to it
    (computed by ``embed``, called as :func:`embed_images`)."""
    known: dict[str, np.ndarray] = {}
    if cache.is_file():
        table = pq.read_table(cache).to_pylist()
        known = {
            r["id"]: np.asarray(r["embedding"], np.float32)
            for r in table
            if r["encoder"] == encoder.id and r["weights"] == encoder.weights
        }
    missing = sorted(set(items) - set(known))
    if missing:
        vectors = embed(encoder, [items[i] for i in missing], **kw)
        known.update(zip(missing, vectors, strict=True))
        ids = sorted(known)
        table = pa.table(
            {
                "id": ids,
                "encoder": [encoder.id] * len(ids),
                "weights": [encoder.weights] * len(ids),
                "embedding": [known[i] for i in ids],
            },
            schema=embedding_schema(encoder.dim),
        )
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache) as f:
            pq.write_table(table, f)
    return {i: known[i] for i in items}

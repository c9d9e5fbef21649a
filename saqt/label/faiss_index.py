"""Nearest labelled references by cosine similarity, with FAISS (on GPU when there is one)."""

from __future__ import annotations

import numpy as np

from saqt.core.errors import ConfigError

INDEX_KINDS = ("flat", "ivf", "hnsw")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ConfigError(
            "FAISS is not installed: pip install -e '.[cpu]' in the toolkit's checkout (or '.[gpu]' on CUDA machines)"
        ) from None
    return faiss


def build_index(vectors: np.ndarray, kind: str = "flat", nlist: int = 1024, hnsw_m: int = 32, gpu: str = "auto"):
    """An inner-product index over L2-normalised ``vectors`` (N, d).

    ``flat`` is exact (the default); ``ivf`` (``nlist`` cells) and ``hnsw`` are approximate, for banks beyond
    a million references. ``gpu="auto"`` moves flat and IVF indexes to the GPU when FAISS sees one.
    """
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, min(nlist, n), faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(32, index.nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ConfigError(f"--index must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    if gpu != "never" and kind != "hnsw" and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(vectors)
    return index


def search(index, queries: np.ndarray, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, reference indices), each (Q, neighbours), most similar first."""
    neighbours = min(neighbours, index.ntotal)
    sims, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), neighbours)
    return sims, ids

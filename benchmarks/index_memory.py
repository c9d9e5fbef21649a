"""Memory of the pretraining index per loader worker: the shared, memory-mapped index against a private copy.

    python benchmarks/index_memory.py [--rows 6250000 125000000] [--workers 4] [--touch 20000] [--json PATH]

For each size, a synthetic index of the paper's shape (125 rows per pristine image, byte ranges recorded: the
columns ``glint.pretrain_index.write_index`` writes for a materialised build) is written to a temporary folder by
another process and read as training reads it: ``--workers`` DataLoader workers (forked, as on Linux) each look up ``--touch`` random
rows (image id, score, byte range) through ``SaqtIndex``, and the epoch order comes from ``shared_order``. Each
worker reports its RSS, PSS and USS (the memory only it holds, from /proc/self/smaps_rollup); the rank process that
built the epoch order reports its RSS and its anonymous memory (its heap: before its workers start, the libraries it
alone maps count as its "private" pages, so its USS says nothing). The baseline is the design this replaces: every
worker holding its own in-memory index of 16 bytes a row plus the 8-byte epoch order, whose size is computed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from glint.pretrain_data import EpochBatches, SaqtIndex, epoch_order
from glint.pretrain_index import shared_order
from saqt.label.row_index import ColumnWriter
from saqt.label.sets import SaqtFiles

CELLS = 125
CHUNK = 5_000_000


def memory_mib() -> dict[str, float]:
    """This process's RSS, PSS (shared pages divided among the processes mapping them), USS (pages no other process
    maps) and anonymous memory (heap and the like, not file-backed), MiB."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) / 1024
    uss = fields["Private_Clean"] + fields["Private_Dirty"]
    return {"rss": fields["Rss"], "pss": fields["Pss"], "uss": uss, "anonymous": fields["Anonymous"]}


def write_synthetic(folder: Path, rows: int) -> None:
    """An index folder of ``rows`` training rows (and none held out) with byte ranges, chunk by chunk."""
    pristine = rows // CELLS
    names = ColumnWriter(folder / "names")
    names.append(name=np.array([f"{p:020x}" for p in range(pristine)], "S20"))
    names.close({"name": "S20"})
    rng = np.random.default_rng(0)
    for part, n in (("train", rows), ("holdout", 0)):
        writer = ColumnWriter(folder / part)
        for start in range(0, n, CHUNK) if n else [0]:
            k = min(CHUNK, n - start)
            row = np.arange(start, start + k)
            writer.append(
                file=row // (CELLS * 8),
                row=row % (CELLS * 8),
                score=rng.random(k) * 9,
                pristine=row // CELLS,
                dist_type=row % CELLS // 5 + 1,
                level=row % 5 + 1,
                offset=(row % (CELLS * 8)) * 360_000,
                length=np.full(k, 360_000),
                sha256=rng.integers(0, 256, (k, 32), dtype=np.uint8).view("V32").ravel(),
            )
        writer.close()


class Lookups(Dataset):
    """Each item: a row's image id, score and byte range from the index (no pixels); the last item: the worker's
    memory after its lookups."""

    def __init__(self, index: SaqtIndex, touch: int):
        self.index, self.touch = index, touch

    def __len__(self) -> int:
        return 1

    def __getitem__(self, _):
        rng, c = random.Random(os.getpid()), self.index.columns
        for _ in range(self.touch):
            k = rng.randrange(len(self.index))
            _ = (self.index.image_id(k), self.index.score(k), int(c["offset"][k]), bytes(c["sha256"][k]))
        return memory_mib()


def measure(rows: int, workers: int, touch: int) -> dict:
    """Per-worker memory with the shared index of ``rows`` rows."""
    with tempfile.TemporaryDirectory(prefix="saqt-index-mem-") as tmp:
        folder = Path(tmp)
        maker = get_context("spawn").Process(target=write_synthetic, args=(folder, rows))
        maker.start()  # in another process: its buffers do not count in this one's memory
        maker.join()
        before = memory_mib()
        files = SaqtFiles([], None, None, {})
        index = SaqtIndex(files, folder, "train")
        order = shared_order(folder, rows, 0, 0, epoch_order)
        batches = EpochBatches(order, 0, 1, 128)
        first = next(iter(batches))  # the rank process slices the shared order as training does
        rank = memory_mib()
        loader = DataLoader(Lookups(index, touch), batch_size=None, num_workers=workers, sampler=[0] * workers)
        per_worker = list(loader)
        index_bytes = sum(f.stat().st_size for f in folder.rglob("*.bin")) + order.nbytes
    return {
        "rows": rows,
        "first_batch": len(first),
        "shared_index_and_order_mib": index_bytes / 2**20,
        "rank_process": rank,
        "rank_process_before": before,
        "workers": per_worker,
        "private_design_per_process_mib": rows * (16 + 8) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[6_250_000, 125_000_000])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--touch", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = [measure(n, args.workers, args.touch) for n in args.rows]
    print(
        "| rows | shared index + order (once per machine) | rank RSS / anonymous (before opening it) | worker RSS / PSS / USS (max of "
        f"{args.workers}) | private index + order, per process (the design replaced) |"
    )
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        worst = {k: max(w[k] for w in r["workers"]) for k in ("rss", "pss", "uss")}
        rank, before = r["rank_process"], r["rank_process_before"]
        print(
            f"| {r['rows']:,} | {r['shared_index_and_order_mib']:,.0f} MiB | {rank['rss']:,.0f} / "
            f"{rank['anonymous']:,.0f} ({before['anonymous']:,.0f}) MiB | {worst['rss']:,.0f} / {worst['pss']:,.0f} / {worst['uss']:,.0f} MiB | "
            f"{r['private_design_per_process_mib']:,.0f} MiB |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Read a build: its shards through the manifest, and distorted images from pixels or from recipes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from saqt.build import MANIFEST
from saqt.distortions import PreparedImage, distort
from saqt.images import decode_image


class BuildReader:
    """A finished (or partly finished) ``saqt build`` output folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{self.root} has no {MANIFEST}: not a saqt build folder")
        self.manifest = json.loads(path.read_text())
        self._pristine: dict[str, PreparedImage] = {}

    def shard_paths(self, table: str) -> list[Path]:
        """Finished shards of ``table`` ('pristine' or 'distorted'), in unit order."""
        units = sorted(self.manifest["shards"], key=int)
        return [self.root / self.manifest["shards"][u]["shards"][table]["path"] for u in units]

    def rows(self, table: str, columns: list[str] | None = None) -> Iterator[dict]:
        """Every row of ``table`` as a dict, shard by shard."""
        for path in self.shard_paths(table):
            yield from pq.read_table(path, columns=columns).to_pylist()

    def pristine(self, pristine_id: str) -> PreparedImage:
        """The canonical pristine image (decoded once, then cached)."""
        if not self._pristine:
            for row in self.rows("pristine", ["pristine_id", "image"]):
                self._pristine[row["pristine_id"]] = row["image"]
        value = self._pristine[pristine_id]
        if isinstance(value, bytes):
            value = self._pristine[pristine_id] = PreparedImage(decode_image(value))
        return value

    def image(self, row: dict) -> np.ndarray:
        """The pixels of a distorted row: decoded from its PNG, or rendered from its recipe."""
        if row.get("image") is not None:
            return decode_image(row["image"])
        return distort(self.pristine(row["pristine_id"]), row["dist_type"], row["level"], seed=row["seed"])

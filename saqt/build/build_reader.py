"""Read a build: its shards through the manifest, and distorted images from pixels or from recipes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from saqt.build.distortions import PreparedImage, distort
from saqt.core.images import decode_image
from saqt.core.shards import read_locator
from saqt.core.stage_contract import StageError, open_stage

PRISTINE_CACHE = 16  # decoded pristine images kept by default, for rendering recipes that arrive grouped by pristine


class BuildReader:
    """A finished (or partly finished) ``saqt build`` output folder, checked against its manifest on opening
    (every file's SHA-256 too, with ``checksums``); the last ``cache`` pristine images read stay decoded."""

    def __init__(self, root: Path, checksums: bool = True, cache: int = PRISTINE_CACHE):
        self.stage = open_stage(Path(root), "build", checksums)
        self.root = self.stage.root
        self.manifest = self.stage.manifest
        self._pristine: OrderedDict[str, PreparedImage] = OrderedDict()
        self._cache = max(1, cache)
        self._locators: dict[str, tuple[str, int, str]] | None = None

    def shard_paths(self, table: str) -> list[Path]:
        """Finished shards of ``table`` ('pristine' or 'distorted'), in unit order."""
        return self.stage.paths(table)

    def rows(self, table: str, columns: list[str] | None = None) -> Iterator[dict]:
        """Every row of ``table`` as a dict, shard by shard."""
        for path in self.shard_paths(table):
            yield from pq.read_table(path, columns=columns).to_pylist()

    def pristine_locators(self) -> dict[str, tuple[str, int, str]]:
        """pristine_id -> (shard, row group, column) of its PNG; the build writes one pristine per row group."""
        if self._locators is None:
            self._locators = {}
            for path in self.shard_paths("pristine"):
                shard = pq.ParquetFile(path)
                for rg in range(shard.num_row_groups):
                    ids = shard.read_row_group(rg, columns=["pristine_id"]).column(0).to_pylist()
                    if len(ids) != 1:
                        raise StageError(f"{path}: row group {rg} holds {len(ids)} pristine images, expected 1")
                    self._locators.setdefault(ids[0], (str(path), rg, "image"))
        return self._locators

    def pristine(self, pristine_id: str) -> PreparedImage:
        """The canonical pristine image, read on demand (the last few are kept decoded)."""
        if pristine_id not in self._pristine:
            self._pristine[pristine_id] = PreparedImage(
                decode_image(read_locator(self.pristine_locators()[pristine_id]))
            )
            while len(self._pristine) > self._cache:
                self._pristine.popitem(last=False)
        self._pristine.move_to_end(pristine_id)
        return self._pristine[pristine_id]

    def image(self, row: dict) -> np.ndarray:
        """The pixels of a distorted row: decoded from its PNG, or rendered from its recipe."""
        if row.get("image") is not None:
            return decode_image(row["image"])
        return distort(self.pristine(row["pristine_id"]), row["dist_type"], row["level"], seed=row["seed"])


def with_build_images(table: pa.Table, shard: pq.ParquetFile, group: int, where: str) -> pa.Table:
    """``table``, row group ``group`` of a saqt-iqa shard (``where``), with column ``image`` appended from the same
    row group of the build's distorted ``shard``, whose rows it mirrors; StageError where they do not line up."""
    built = shard.read_row_group(group, columns=["image_id", "image"]) if group < shard.num_row_groups else None
    if built is None or not built.column("image_id").equals(table.column("image_id")):
        raise StageError(f"{where}: row group {group} does not match its build's distorted shard; rerun `saqt label`")
    return table.append_column("image", built.column("image"))

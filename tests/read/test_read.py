"""The reading API (``saqt.read.api``): every stage folder and a published set open as one kind of object, whose rows,
pixels and card agree with the files read directly."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from saqt.core.errors import DatasetError
from saqt.core.stage_contract import StageError
from saqt.read.api import VerifyError, open_saqt, open_set, verify


def _build_pixels(build: Path) -> dict[str, np.ndarray]:
    """image_id -> pixels, decoded with Pillow from the build's distorted shards (an oracle beside saqt's decoder)."""
    table = pq.read_table(sorted((build / "distorted").glob("*.parquet")), columns=["image_id", "image"])
    return {r["image_id"]: np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB")) for r in table.to_pylist()}


@pytest.mark.parametrize(
    "name, kind", [("build", "build"), ("labels", "label"), ("bank", "bank"), ("published", "published")]
)
def test_each_stage_folder_opens_as_its_kind(small_stages, name, kind):
    assert open_set(small_stages / name).kind == kind


def test_a_folder_no_stage_wrote_is_refused_in_one_line(tmp_path):
    with pytest.raises(StageError, match="holds no build.json"):
        open_set(tmp_path)
    with pytest.raises(VerifyError, match="holds no build.json.*: nothing to verify$"):
        verify(str(tmp_path))


@pytest.mark.parametrize("name", ["build", "labels", "published"])
def test_every_form_has_the_builds_rows_and_their_pixels(small_stages, name):
    """The rows of a build, its labels and their published set are the build's images, and each row's pixels (stored,
    or rendered from the recipe for a label row) equal the build's PNG decoded."""
    expected = _build_pixels(small_stages / "build")
    found = open_set(small_stages / name)
    rows = list(found.rows())
    assert sorted(r["image_id"] for r in rows) == sorted(expected)
    for row in rows:
        assert np.array_equal(found.pixels(row), expected[row["image_id"]])


def test_a_published_sets_card_and_shards_read_locally_or_through_a_url(small_stages):
    folder = small_stages / "published"
    meta = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
    listed = [line.split()[1] for line in (folder / "SHA256SUMS").read_text().splitlines()]
    for found in (open_set(folder), open_set(f"file://{folder}")):
        assert found.kind == "published"
        assert found.card() == meta
        assert [Path(p).relative_to(folder).as_posix() for p in found.shards()] == sorted(
            p for p in listed if p.startswith("data/")
        )
        assert found.verify(sample=2).rows == sum(s["num_examples"] for s in meta["dataset_info"]["splits"])


def test_verify_names_the_first_problem(small_stages, tmp_path):
    folder = shutil.copytree(small_stages / "published", tmp_path / "p")
    shard = sorted((folder / "data").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    with pytest.raises(VerifyError, match=f"data/{shard.name}: SHA-256 mismatch"):
        open_set(folder).verify()


def test_pretraining_reads_a_label_folder_or_a_published_set_and_refuses_a_build(small_stages):
    labels = open_saqt(str(small_stages / "labels"))
    assert labels.paths == open_set(small_stages / "labels").shards()
    assert labels.build is not None and labels.provenance["labels"] == str(small_stages / "labels")
    published = open_saqt(str(small_stages / "published"))
    assert published.paths == open_set(small_stages / "published").shards() and published.build is None
    with pytest.raises(DatasetError, match="is neither a `saqt label` output"):
        open_saqt(str(small_stages / "build"))
    with pytest.raises(DatasetError, match="is a build: pretraining reads a label folder or a published set"):
        open_set(small_stages / "build").files()
    with pytest.raises(DatasetError, match="is a bank: it has no rows to read"):
        open_set(small_stages / "bank").shards()

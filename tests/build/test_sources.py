"""Pristine sources: ImageNet layouts (folders, class tars, the train archive), KADIS, folders, lists, selection."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.executors import LocalExecutor
from saqt.build.pool import choose_pool
from saqt.build.screen import Screen, jpeg_quality
from saqt.build.sources import Quota, SourceError, list_source, read_selection, sample_paths

WNIDS = ("n01440764", "n01443537", "n01484850")


def jpeg_bytes(seed: int, quality: int = 90) -> bytes:
    img = Image.effect_noise((40, 30), 40 + seed).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def add_to_tar(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def imagenet_files() -> dict[str, bytes]:
    return {f"{w}/{w}_{i}.JPEG": jpeg_bytes(10 * k + i) for k, w in enumerate(WNIDS) for i in range(4)}


def test_imagenet_train_folders(tmp_path, imagenet_files):
    for name, data in imagenet_files.items():
        write(tmp_path / "train" / name, data)
    write(tmp_path / "train" / WNIDS[0] / "notes.txt", b"not an image")
    listing = list_source("imagenet", tmp_path)
    assert listing.layout == "train-folders"
    assert [it.key for it in listing.items] == sorted(f"train/{n}" for n in imagenet_files)
    assert {it.label for it in listing.items} == set(WNIDS)
    assert listing.items[0].read_bytes() == imagenet_files[listing.items[0].key.removeprefix("train/")]


def test_imagenet_class_tars_are_read_in_place(tmp_path, imagenet_files):
    for wnid in WNIDS:
        with tarfile.open(write(tmp_path / "train" / f"{wnid}.tar", b""), "w") as tar:
            for name, data in imagenet_files.items():
                if name.startswith(wnid):
                    add_to_tar(tar, name.split("/")[1], data)
    listing = list_source("imagenet", tmp_path)
    assert listing.layout == "train-class-tars" and len(listing.items) == 12
    for item in listing.items:
        wnid, member = item.key.split("/")[1].removesuffix(".tar"), item.key.split("/")[2]
        assert item.label == wnid and item.read_bytes() == imagenet_files[f"{wnid}/{member}"]
    assert not any(p.suffix == ".JPEG" for p in tmp_path.rglob("*"))  # nothing extracted


def test_imagenet_official_train_archive_of_class_tars(tmp_path, imagenet_files):
    inner = {}
    for wnid in WNIDS:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in imagenet_files.items():
                if name.startswith(wnid):
                    add_to_tar(tar, name.split("/")[1], data)
        inner[f"{wnid}.tar"] = buf.getvalue()
    with tarfile.open(tmp_path / "ILSVRC2012_img_train.tar", "w") as outer:
        for name, data in inner.items():
            add_to_tar(outer, name, data)
    listing = list_source("imagenet", tmp_path)
    assert listing.layout == "train-archive" and len(listing.items) == 12
    item = listing.items[5]
    wnid = item.key.split("/")[1].removesuffix(".tar")
    assert item.label == wnid and item.read_bytes() == imagenet_files[f"{wnid}/{item.key.split('/')[2]}"]


def test_imagenet_val_layouts(tmp_path, imagenet_files):
    for i, data in enumerate(list(imagenet_files.values())[:3]):
        write(tmp_path / "val" / f"ILSVRC2012_val_{i:08d}.JPEG", data)
    write(tmp_path / "train" / WNIDS[0] / "x.JPEG", jpeg_bytes(1))
    val = list_source("imagenet", tmp_path, split="val")
    assert val.layout == "val-flat" and len(val.items) == 3 and val.items[0].label is None
    assert list_source("imagenet", tmp_path, split="train").layout == "train-folders"
    with pytest.raises(SourceError, match="--per-class needs class labels"):
        Quota(val.items, per_class=1)


def test_kadis_and_folder_sources(tmp_path):
    write(tmp_path / "ref_imgs" / "a.png", b"x")
    write(tmp_path / "ref_imgs" / "b.bmp", b"x")
    write(tmp_path / "dist_imgs" / "a_01_01.png", b"x")
    assert [it.key for it in list_source("kadis700k", tmp_path).items] == ["ref_imgs/a.png", "ref_imgs/b.bmp"]
    assert len(list_source("folder", tmp_path).items) == 3


def test_empty_root_and_missing_root_are_refused(tmp_path):
    with pytest.raises(SourceError, match="no imagenet images under .* train/\\*/\\*"):
        list_source("imagenet", tmp_path)
    with pytest.raises(SourceError, match="not a directory"):
        list_source("folder", tmp_path / "absent")
    with pytest.raises(SourceError, match="needs --root"):
        list_source("folder")
    with pytest.raises(SourceError, match="unknown source 'flickr'; choose one of: folder, imagenet"):
        list_source("flickr", tmp_path)


def test_symlink_out_of_root_is_refused_with_a_reason(tmp_path):
    outside = write(tmp_path / "outside" / "secret.jpg", jpeg_bytes(1))
    root = tmp_path / "root"
    write(root / "ok.jpg", jpeg_bytes(2))
    os.symlink(outside, root / "link.jpg")
    listing = list_source("folder", root)
    assert [it.key for it in listing.items] == ["ok.jpg"]
    assert listing.errors == [("link.jpg", "symlink points outside the root")]


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".parquet"])
def test_list_files_in_three_formats(tmp_path, suffix):
    root = tmp_path / "root"
    for name in ("a/1.jpg", "b/2.jpg"):
        write(root / name, jpeg_bytes(3))
    entries = ["b/2.jpg", "a/1.jpg", "../escape.jpg", "a/missing.jpg", "a/1.jpg", str(root / "a/../b/2.jpg")]
    list_file = tmp_path / f"list{suffix}"
    if suffix == ".txt":
        list_file.write_text("# pristine pool\n" + "\n".join(entries) + "\n\n")
    elif suffix == ".csv":
        list_file.write_text("path,label\n" + "\n".join(f"{e},cls{i}" for i, e in enumerate(entries)) + "\n")
    else:
        pq.write_table(pa.table({"path": entries}), list_file)
    listing = list_source("list", root, list_file)
    assert [it.key for it in listing.items] == ["a/1.jpg", "b/2.jpg"]
    assert sorted(r for _, r in listing.errors) == [
        "listed twice",
        "listed twice",
        "no such file",
        "path escapes the root",
    ]
    if suffix == ".csv":
        assert [it.label for it in listing.items] == ["cls1", "cls0"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("l.csv", "file_name,score\nx.jpg,3\n", "no path column"),
        ("l.txt", b"\xff\xfe\x00binary\x00junk", "malformed"),
        ("l.json", "[]", "must end in .txt, .csv or .parquet"),
        ("l.parquet", "not parquet at all", "malformed"),
        ("absent.txt", None, "does not exist"),
    ],
)
def test_malformed_list_files_are_refused(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(SourceError, match=message):
        list_source("list", tmp_path, path)


def select(items, limit=None, per_class=None, seed=0):
    """The images a build takes when the screen refuses none (every image here is distinct and decodable)."""
    return choose_pool(
        items, Quota(items, limit, per_class), seed, (32, 24), Screen.off(), 10**6, LocalExecutor(1), progress=False
    ).kept


def test_selection_is_seeded_nested_and_order_free(tmp_path, imagenet_files):
    for name, data in imagenet_files.items():
        write(tmp_path / "train" / name, data)
    items = list_source("imagenet", tmp_path).items
    five = select(items, limit=5, seed=1)
    assert [it.key for it in five] == sorted(it.key for it in five)
    assert five == select(list(reversed(items)), limit=5, seed=1)
    assert set(five) <= set(select(items, limit=8, seed=1))
    assert five != select(items, limit=5, seed=2)
    per_class = select(items, per_class=2, seed=1)
    assert sorted(it.label for it in per_class) == sorted(WNIDS * 2)
    assert len(select(items, per_class=2, limit=3, seed=1)) == 3


def test_sample_source_needs_nothing():
    listing = list_source("sample")
    assert [Path(it.path) for it in listing.items] == sample_paths() and len(listing.items) == 5


@pytest.mark.parametrize("quality", [4, 37, 75, 90, 100])
def test_jpeg_quality_is_read_from_quantisation_tables(quality):
    assert jpeg_quality(jpeg_bytes(1, quality)) == quality
    assert jpeg_quality(b"\x89PNG not really") is None


def test_a_selection_lists_exactly_the_named_images_and_reports_the_missing(tmp_path):
    for name in ("a.png", "b.png", "sub/c.png", "other/c.png"):
        write(tmp_path / "ref_imgs" / name, jpeg_bytes(len(name)))
    (tmp_path / "pick.txt").write_text("# chosen\nb.png\nref_imgs/a.png\nmissing.png\nc.png\nb.png\n")
    (tmp_path / "pick.csv").write_text("kadis,kadid-10k,sim_value\nb.png,I01.png,0.5\nmissing.png,I02.png,0.4\n")
    for name in ("pick.txt", "pick.csv"):
        listing = list_source("folder", tmp_path, selection=read_selection(str(tmp_path / name)))
        assert [it.key for it in listing.items] == (
            ["ref_imgs/a.png", "ref_imgs/b.png"] if name == "pick.txt" else ["ref_imgs/b.png"]
        )
        errors = dict(listing.errors)
        assert errors["missing.png"].startswith("not found under --root (listed in the selection")
    assert dict(list_source("folder", tmp_path, selection=["c.png"]).errors)["c.png"].startswith(
        "ambiguous name (2 files"
    )
    assert len(read_selection("authors")) == 50_000
    with pytest.raises(SourceError, match="neither 'authors' nor"):
        read_selection(str(tmp_path / "nope.txt"))
    with pytest.raises(SourceError, match="no name column"):
        (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
        read_selection(str(tmp_path / "bad.csv"))

"""`saqt fetch` against a real HTTP server on 127.0.0.1: download, resume, checksums, safe unpacking, layouts."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import socket
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import kadid_zip, png_bytes, source, tar_bytes, write_manifest, zip_bytes
from scipy.io import savemat
from typer.testing import CliRunner

from glint.data import DatasetError, load_table
from pipelines.saqt_cli import app as saqt_app
from saqt.build.sources import list_source
from saqt.fetch import archives as fetch
from saqt.fetch.archives import FetchError, FetchOptions, fetch_dataset, fetch_sources, unpack

runner = CliRunner()


def quiet(**kw) -> FetchOptions:
    return FetchOptions(backoff=0.0, say=lambda _: None, **kw)


def test_full_download_unpacks_kadid_where_the_loader_and_bank_read_it(server, tmp_path):
    base, state = server
    state.files["/kadid10k.zip"] = data = kadid_zip()
    src = source(base, "kadid10k", {"kadid10k.zip": data}, "dmos.csv", expect=("images/",))
    root = fetch_dataset(src, tmp_path / "datasets", quiet())
    assert root == tmp_path / "datasets" / "kadid10k" / "kadid10k"
    table = load_table("kadid10k", root)
    assert len(table.samples) == 6 and all(Path(s.path).is_file() for s in table.samples)
    assert {s.group for s in table.samples} == {"I01.png", "I02.png", "I03.png"}
    record = json.loads((tmp_path / "datasets" / "kadid10k" / fetch.RECORD).read_text())
    assert record["root"] == "kadid10k" and record["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["files"][0]["checked_against_manifest"] is True
    assert (tmp_path / "datasets" / ".downloads" / "kadid10k" / "kadid10k.zip").read_bytes() == data
    assert not list((tmp_path / "datasets").glob(".*.partial")) and not list(tmp_path.rglob("*.part"))
    # a rerun finds the record and asks the server nothing
    asked = len(state.requests)
    assert fetch_dataset(src, tmp_path / "datasets", quiet()) == root and len(state.requests) == asked


def test_a_tar_gz_release_lands_where_the_kadis700k_source_lists_it_and_its_archive_can_go(server, tmp_path):
    base, state = server
    state.files["/kadis700k.tar.gz"] = data = tar_bytes(
        {"kadis700k/ref_imgs/a.png": png_bytes(1), "kadis700k/ref_imgs/b.png": png_bytes(2), "kadis700k/code/x.m": b"%"}
    )
    said = []
    src = source(base, "kadis700k", {"kadis700k.tar.gz": data}, "ref_imgs/", expect=("code/", "dist_imgs/"))
    root = fetch_dataset(src, tmp_path, FetchOptions(say=said.append, remove_archives=True))
    assert not (tmp_path / ".downloads" / "kadis700k" / "kadis700k.tar.gz").exists()
    assert [m for m in said if m.startswith("warning")] == [
        f"warning: dist_imgs/ not found beside ref_imgs/ in {root}; the loaders read them there"
    ]
    listing = list_source("kadis700k", root)
    assert listing.layout == "ref-imgs" and [Path(it.path).name for it in listing.items] == ["a.png", "b.png"]


def test_a_cut_connection_is_resumed_with_a_range_request_in_the_same_run(server, tmp_path):
    base, state = server
    state.files["/kadid10k.zip"] = data = kadid_zip()
    state.cuts["/kadid10k.zip"] = [1000, 700]
    root = fetch_dataset(source(base, "kadid10k", {"kadid10k.zip": data}, "dmos.csv"), tmp_path, quiet(retries=2))
    gets = [r for r in state.requests if r["method"] == "GET"]
    assert [r["range"] for r in gets] == [None, "bytes=1000-", "bytes=1700-"]
    assert gets[1]["if_range"] and gets[1]["if_range"] == gets[2]["if_range"]  # the ETag of the first answer
    assert (tmp_path / ".downloads" / "kadid10k" / "kadid10k.zip").read_bytes() == data
    assert (root / "dmos.csv").is_file()


def test_a_download_cut_on_every_retry_keeps_its_part_and_the_next_run_resumes(server, tmp_path):
    base, state = server
    state.files["/kadid10k.zip"] = data = kadid_zip()
    state.cuts["/kadid10k.zip"] = [1234]
    src = source(base, "kadid10k", {"kadid10k.zip": data}, "dmos.csv")
    with pytest.raises(FetchError, match=r"cut off .* run the same command again to resume"):
        fetch_dataset(src, tmp_path, quiet(retries=0))
    part = tmp_path / ".downloads" / "kadid10k" / "kadid10k.zip.part"
    assert part.read_bytes() == data[:1234] and not (tmp_path / "kadid10k").exists()
    fetch_dataset(src, tmp_path, quiet(retries=0))
    assert state.requests[-1]["range"] == "bytes=1234-" and not part.exists()
    assert (tmp_path / ".downloads" / "kadid10k" / "kadid10k.zip").read_bytes() == data


def test_a_file_changed_on_the_server_since_the_cut_is_fetched_whole_not_spliced(server, tmp_path):
    base, state = server
    state.files["/kadid10k.zip"] = kadid_zip()
    state.cuts["/kadid10k.zip"] = [999]
    out = tmp_path / "a.zip"
    with pytest.raises(FetchError):
        fetch.download(f"{base}/kadid10k.zip", out, retries=0)
    state.files["/kadid10k.zip"] = new = zip_bytes({"kadid10k/dmos.csv": b"dist_img,ref_img,dmos,var\n"})
    fetch.download(f"{base}/kadid10k.zip", out, retries=0)
    assert state.requests[-1]["range"] == "bytes=999-" and out.read_bytes() == new  # If-Range failed: a 200


def test_a_checksum_mismatch_is_refused_and_the_file_kept_aside(server, tmp_path):
    base, state = server
    state.files["/kadid10k.zip"] = data = kadid_zip()
    src = source(base, "kadid10k", {"kadid10k.zip": b"other bytes"}, "dmos.csv")
    with pytest.raises(FetchError, match=r"SHA-256 [0-9a-f]{64} differs from the manifest's .* not used") as err:
        fetch_dataset(src, tmp_path, quiet())
    assert "\n" not in str(err.value)
    downloads = tmp_path / ".downloads" / "kadid10k"
    assert (downloads / "kadid10k.zip.rejected").read_bytes() == data and not (downloads / "kadid10k.zip").exists()
    assert not (tmp_path / "kadid10k").exists() and not list(tmp_path.glob(".*.partial"))


@pytest.mark.parametrize(
    "record, problem",
    [
        ('{"root": "kadid', "JSONDecodeError"),
        ('{"dataset": "kadid10k"}', "KeyError"),
        ('["kadid10k"]', "TypeError"),
        ('{"root": "../../elsewhere"}', "its root '../../elsewhere' is not a folder inside"),
    ],
)
def test_every_file_a_fetch_writes_is_refused_or_kept_when_tampered(server, tmp_path, record, problem):
    """A fetch leaves its archive in .downloads, its record and the unpacked release. The archive is checked against
    the manifest's SHA-256 whenever it is used again (a changed one is set aside, the server not asked); a damaged
    record is one line; the unpacked files are kept as they are (a finished dataset is found by its record and not
    checked again: remove its folder to fetch it again)."""
    base, state = server
    state.files["/kadid10k.zip"] = data = kadid_zip()
    src = source(base, "kadid10k", {"kadid10k.zip": data}, "dmos.csv")
    dest = tmp_path / "d"
    root = fetch_dataset(src, dest, quiet())
    written = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    archive, record_file = dest / ".downloads" / "kadid10k" / "kadid10k.zip", dest / "kadid10k" / fetch.RECORD
    assert {p for p in written if not p.startswith("kadid10k/kadid10k/")} == {
        archive.relative_to(dest).as_posix(),
        record_file.relative_to(dest).as_posix(),
    }
    asked = len(state.requests)
    (root / "dmos.csv").write_text("edited")
    assert fetch_dataset(src, dest, quiet()) == root and (root / "dmos.csv").read_text() == "edited"
    record_file.write_text(record)
    with pytest.raises(FetchError, match=re.escape(f"{record_file} is damaged ({problem}")) as err:
        fetch_dataset(src, dest, quiet())
    assert "\n" not in str(err.value)
    shutil.rmtree(dest / "kadid10k")  # the next fetch unpacks the archive it downloaded
    archive.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(FetchError, match=r"kadid10k.zip: SHA-256 [0-9a-f]{64} differs from the manifest's"):
        fetch_dataset(src, dest, quiet())
    assert archive.with_name("kadid10k.zip.rejected").is_file() and not archive.exists()
    assert len(state.requests) == asked and not (dest / "kadid10k").exists()


def test_a_user_file_in_from_that_fails_its_checksum_is_refused_but_not_moved(server, tmp_path):
    base, state = server
    data = kadid_zip()
    src = source(base, "kadid10k", {"kadid10k.zip": data}, "dmos.csv")
    mine = tmp_path / "downloads"
    mine.mkdir()
    (mine / "kadid10k.zip").write_bytes(data[:-1])
    with pytest.raises(FetchError, match="differs from the manifest's"):
        fetch_dataset(src, tmp_path / "d", quiet(from_dir=mine))
    assert (mine / "kadid10k.zip").read_bytes() == data[:-1] and state.requests == []
    (mine / "kadid10k.zip").write_bytes(data)
    assert (fetch_dataset(src, tmp_path / "d", quiet(from_dir=mine)) / "dmos.csv").is_file() and state.requests == []


@pytest.mark.parametrize(
    "archive",
    [
        zip_bytes({"ok/a.txt": b"a", "../evil.txt": b"x"}),
        zip_bytes({"/tmp/evil-absolute.txt": b"x"}),
        tar_bytes({"ok/a.txt": b"a", "ok/../../evil.txt": b"x"}),
    ],
    ids=["zip-dotdot", "zip-absolute", "tar-dotdot"],
)
def test_members_that_climb_out_are_refused_and_nothing_is_written(tmp_path, archive):
    path = tmp_path / "a.bin"
    path.write_bytes(archive)
    into = tmp_path / "sandbox" / "into"
    into.mkdir(parents=True)
    with pytest.raises(FetchError, match="would be written outside"):
        unpack(path, into)
    assert not (tmp_path / "sandbox" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/evil-absolute.txt").exists()


def test_link_members_are_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("ok/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    (tmp_path / "a.tar").write_bytes(buf.getvalue())
    (tmp_path / "into").mkdir()
    with pytest.raises(FetchError, match="link or special file"):
        unpack(tmp_path / "a.tar", tmp_path / "into")
    assert not (tmp_path / "into" / "ok" / "passwd").exists()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_decompression_bomb_is_refused(tmp_path, kind):
    zeros = bytes(32 << 20)  # 32 MiB that deflate to about 32 KiB
    data = zip_bytes({"big.bin": zeros}) if kind == "zip" else tar_bytes({"big.bin": zeros})
    assert len(data) < (1 << 20)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "into").mkdir()
    with pytest.raises(FetchError, match="decompression bomb"):
        unpack(tmp_path / "a", tmp_path / "into")
    assert not (tmp_path / "into" / "big.bin").exists()


def test_a_failed_unpack_leaves_no_dataset_folder(server, tmp_path):
    base, state = server
    state.files["/kadid10k.zip"] = data = zip_bytes({"kadid10k/dmos.csv": b"x", "../../evil": b"x"})
    with pytest.raises(FetchError, match="outside"):
        fetch_dataset(source(base, "kadid10k", {"kadid10k.zip": data}, "dmos.csv"), tmp_path / "d", quiet())
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [".downloads"] and not (tmp_path / "evil").exists()


def test_an_error_page_instead_of_an_archive_is_named(server, tmp_path):
    base, state = server
    state.files["/kadid10k.zip"] = page = b"<!DOCTYPE html><html>please log in</html>"
    with pytest.raises(FetchError, match=r"not a zip or tar archive .*<!DOCTYPE html"):
        fetch_dataset(source(base, "kadid10k", {"kadid10k.zip": page}, "dmos.csv"), tmp_path, quiet())


def test_a_rar_release_is_downloaded_checked_and_the_unpack_command_named(server, tmp_path):
    base, state = server
    state.files["/tid2013.rar"] = data = b"Rar!\x1a\x07\x01\x00" + bytes(100)
    with pytest.raises(FetchError, match=r"7z x .*tid2013\.rar -o.*tid2013.*`saqt fetch tid2013 --dest"):
        fetch_dataset(source(base, "tid2013", {"tid2013.rar": data}, "mos_with_names.txt"), tmp_path, quiet())
    assert (tmp_path / ".downloads" / "tid2013" / "tid2013.rar").read_bytes() == data


def test_a_closed_port_gives_one_line_at_once(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = source(f"http://127.0.0.1:{port}", "kadid10k", {"kadid10k.zip": b""}, "dmos.csv")
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch_dataset(src, tmp_path, quiet(retries=3))
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert message == (
        f"127.0.0.1 is unreachable: connection refused. Offline? Download http://127.0.0.1:{port}/kadid10k.zip by "
        "hand (a browser will do) into a folder and rerun with --from FOLDER"
    )
    assert not tmp_path.joinpath(".downloads").exists()


def test_a_server_that_never_accepts_fails_in_the_probe_time_not_the_download_timeout(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # the backlog is full: later connections go unanswered
            src = source(f"http://127.0.0.1:{port}", "kadid10k", {"kadid10k.zip": b""}, "dmos.csv")
            started = time.monotonic()
            with pytest.raises(FetchError, match=r"^127\.0\.0\.1 is unreachable: no answer in 2 s\. Offline\?"):
                fetch_dataset(src, tmp_path, quiet(timeout=30.0))
            assert time.monotonic() - started < 4


def test_a_server_that_never_answers_times_out_with_one_line(tmp_path):
    with socket.socket() as listener:  # accepts connections into its backlog and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/kadid10k.zip"
        with pytest.raises(FetchError, match=r"^cannot reach 127\.0\.0\.1: timed out\. Offline\?"):
            fetch.download(url, tmp_path / "a.zip", timeout=0.3, retries=0)


def test_clive_from_a_hand_download_gets_its_label_table_from_the_mat_files(tmp_path):
    names = ["t1.bmp", "10.bmp", "11.bmp", "12.bmp"]
    mos, std = np.array([63.9634, 41.5, 72.25, 12.0]), np.array([18.3, 9.5, 11.0, 4.25])
    mats = {}
    for var, value in {
        "AllImages_release": np.array([[n] for n in names], dtype=object),
        "AllMOS_release": mos[None, :],
        "AllStdDev_release": std[None, :],
    }.items():
        buf = io.BytesIO()
        savemat(buf, {var: value})
        mats[f"ChallengeDB_release/Data/{var}.mat"] = buf.getvalue()
    images = {f"ChallengeDB_release/Images/{n}": png_bytes(i) for i, n in enumerate(names[1:])}
    downloads = tmp_path / "browser"
    downloads.mkdir()
    (downloads / "ChallengeDB_release.zip").write_bytes(zip_bytes(mats | images))
    src = fetch_sources()["clive"]
    with pytest.raises(FetchError, match="cannot be downloaded automatically: .*Box.*--from FOLDER"):
        fetch_dataset(src, tmp_path / "d", quiet())
    root = fetch_dataset(src, tmp_path / "d", quiet(from_dir=downloads))
    assert root == tmp_path / "d" / "clive" / "ChallengeDB_release"
    with open(root / "LIVEChallenge.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["img_name"] for r in rows] == names
    assert [float(r["mos"]) for r in rows] == mos.tolist() and [float(r["std"]) for r in rows] == std.tolist()
    table = load_table("clive", root)
    # the seven training images t1-t7 are dropped, as the official release and pyiqa do (1,162 of 1,169)
    assert [s.score for s in table.samples] == mos[1:].tolist()
    assert Path(table.samples[0].path) == root / "Images" / "10.bmp"


def test_tid2013_unpacked_by_hand_is_checked_and_given_its_label_table(tmp_path):
    release = tmp_path / "d" / "tid2013" / "tid2013"
    (release / "reference_images").mkdir(parents=True)
    (release / "distorted_images").mkdir()
    for ref in ("I01.BMP", "i25.bmp"):
        (release / "reference_images" / ref).write_bytes(b"BM")
    lines = [("5.51429", "I01_01_1.bmp"), ("5.56757", "i01_01_2.bmp"), ("3.10000", "i25_24_5.bmp")]
    for _, name in lines:
        (release / "distorted_images" / name).write_bytes(b"BM")
    (release / "mos_with_names.txt").write_text("".join(f"{m} {n}\n" for m, n in lines))
    (release / "mos_std.txt").write_text("0.13013\n0.16008\n0.2\n")
    root = fetch_dataset(fetch_sources()["tid2013"], tmp_path / "d", quiet())
    assert root == release
    with open(root / "TID2013.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["ref_name"], r["dist_name"], float(r["mos"]), r["std"]) for r in rows] == [
        ("I01.BMP", "I01_01_1.bmp", 5.51429, "0.13013"),
        ("I01.BMP", "i01_01_2.bmp", 5.56757, "0.16008"),
        ("i25.bmp", "i25_24_5.bmp", 3.1, "0.2"),
    ]
    table = load_table("tid2013", root)
    assert all(Path(s.path).is_file() for s in table.samples) and table.samples[2].group == "i25.bmp"
    assert json.loads((tmp_path / "d" / "tid2013" / fetch.RECORD).read_text())["unpacked_by_hand"] is True


def test_the_packaged_manifest_names_official_links_and_loaders_that_exist():
    sources = fetch_sources()
    assert {"kadid10k", "kadis700k", "koniq10k", "clive", "csiq", "tid2013", "live", "spaq"} <= set(sources)
    datasets = {p.stem for p in Path(fetch.__file__).parents[2].joinpath("manifests", "datasets").glob("*.yaml")}
    for s in sources.values():
        assert s.access in ("direct", "manual") and s.page.startswith("https://") and s.terms and s.marker
        assert s.access == "manual" or all(a.url and a.url.startswith("https://") for a in s.archives)
        assert s.access == "direct" or s.how
        assert all(a.source for a in s.archives)
        assert all(len(a.sha256) == 64 and int(a.sha256, 16) >= 0 for a in s.archives if a.sha256)
        assert s.prepare in (None, *fetch.PREPARE)
        for use in s.use:  # every suggested command names a loader that exists
            if "--dataset" in use:
                assert use.split("--dataset ")[1].split()[0] in datasets
            if "--source" in use:
                assert use.split("--source ")[1].split()[0] == "kadis700k"


def test_cli_dry_run_reports_the_servers_size_and_writes_nothing(server, tmp_path, monkeypatch):
    base, state = server
    state.files["/kadid10k.zip"] = data = kadid_zip()
    manifest = write_manifest(tmp_path / "fetch.yaml", base, data)
    monkeypatch.setattr(fetch, "fetch_sources", lambda: fetch_sources(manifest))
    result = runner.invoke(saqt_app, ["fetch", "kadid10k", "--dry-run", "--dest", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert f"{len(data):,} bytes (server), SHA-256 checked" in result.output and "terms: test terms" in result.output
    assert not (tmp_path / "d").exists() and [r["method"] for r in state.requests] == ["HEAD"]
    result = runner.invoke(saqt_app, ["fetch", "kadid10k", "--dest", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    root = tmp_path / "d" / "kadid10k" / "kadid10k"
    assert f"KADID-10k is ready: --root {root}" in result.output
    assert f"glint finetune --dataset kadid10k --root {root}" in result.output


def test_cli_offline_is_one_line_and_exit_1(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{s.getsockname()[1]}"
    manifest = write_manifest(tmp_path / "fetch.yaml", base, b"")
    monkeypatch.setattr(fetch, "fetch_sources", lambda: fetch_sources(manifest))
    result = runner.invoke(saqt_app, ["fetch", "kadid10k", "--dest", str(tmp_path / "d")])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("saqt fetch")]
    assert len(errors) == 1 and "127.0.0.1 is unreachable: connection refused" in errors[0]
    assert "--from FOLDER" in errors[0] and "Traceback" not in result.output
    assert not any(line.startswith("downloading") for line in result.output.splitlines())


def test_cli_lists_the_datasets_and_refuses_unknown_names():
    listed = runner.invoke(saqt_app, ["fetch"])
    assert listed.exit_code == 0 and "kadid10k   direct  3,067,408,471 bytes" in listed.output
    assert "clive      manual" in listed.output
    unknown = runner.invoke(saqt_app, ["fetch", "kadid"])
    assert unknown.exit_code == 2 and "unknown dataset kadid; choose from: kadid10k" in unknown.output


def live_release(root: Path, realigned: bool = True) -> Path:
    """A LIVE Release 2 folder with the publisher's .mat files (as MATLAB saves them: 1 x 982 row vectors, names a
    cell array) and pyiqa's LIVEIQA.csv; the 982 entries are jp2k/img1..227, jpeg/img1..233, wn, gblur and
    fastfading/img1..174. Entries 0 and 500 are reference images (orgs 1); the others score j / 8."""
    refs = np.empty((1, 982), dtype=object)
    for j in range(982):
        refs[0, j] = np.array([f"ref{j % 29:02d}.bmp"])
    refs[0, 1] = refs[0, 227] = np.array(["bikes.bmp"])
    dmos, orgs = np.arange(982)[None, :] / 8.0, np.zeros((1, 982))
    orgs[0, [0, 500]] = 1
    dmos[0, [0, 500]] = 0.0
    dmos[0, 1], dmos[0, 227], dmos[0, 981] = 61.5, 23.25, -1.5  # realigned DMOS may fall below 0
    root.mkdir(parents=True)
    savemat(root / "refnames_all.mat", {"refnames_all": refs})
    if realigned:
        savemat(root / "dmos_realigned.mat", {"dmos_new": dmos, "orgs": orgs, "dmos_std": np.ones((1, 982))})
    (root / "LIVEIQA.csv").write_text("ref_name,dist_name,mos\nbikes.bmp,jp2k/img2,40.0\nref01.bmp,jpeg/img2,30.5\n")
    return root


def test_live_gets_the_releases_realigned_labels_for_the_released_protocol_only(tmp_path):
    """The GlintIQA release's LIVE loader (glintiqa/data/datasets.py, 34c8936): dmos_realigned.mat's dmos_new, the
    entries whose orgs is 0, entry j the j-th of jp2k/img1..227, jpeg/img1..233, wn, gblur, fastfading/img1..174,
    its reference refnames_all[j]."""
    release = live_release(tmp_path / "d" / "live" / "databaserelease2")
    root = fetch_dataset(fetch_sources()["live"], tmp_path / "d", quiet())
    assert root == release
    with open(root / "LIVE_realigned.csv", newline="") as f:
        rows = {r["dist_name"]: (r["ref_name"], float(r["dmos"])) for r in csv.DictReader(f)}
    assert len(rows) == 980 and "jp2k/img1.bmp" not in rows and "wn/img41.bmp" not in rows  # entries 0 and 500
    assert rows["jp2k/img2.bmp"] == ("bikes.bmp", 61.5) and rows["jpeg/img1.bmp"] == ("bikes.bmp", 23.25)
    assert rows["jp2k/img227.bmp"] == ("ref23.bmp", 226 / 8) and rows["jpeg/img233.bmp"] == ("ref24.bmp", 459 / 8)
    assert rows["wn/img1.bmp"] == ("ref25.bmp", 460 / 8) and rows["gblur/img1.bmp"] == ("ref25.bmp", 634 / 8)
    assert rows["fastfading/img1.bmp"] == ("ref25.bmp", 808 / 8)
    assert rows["fastfading/img174.bmp"] == ("ref24.bmp", -1.5)
    released = load_table("live", root, protocol="released")
    assert released.label_file == root / "LIVE_realigned.csv" and len(released.samples) == 980
    assert (released.samples[0].score, released.samples[0].group) == (61.5, "bikes.bmp")
    assert Path(released.samples[0].path) == root / "jp2k" / "img2.bmp"
    honest = load_table("live", root)
    assert honest.label_file == root / "LIVEIQA.csv" and [s.score for s in honest.samples] == [40.0, 30.5]


def test_live_without_the_realigned_file_is_fetched_but_refused_under_the_released_protocol(tmp_path):
    release = live_release(tmp_path / "d" / "live", realigned=False)
    assert fetch_dataset(fetch_sources()["live"], tmp_path / "d", quiet()) == release
    assert not (release / "LIVE_realigned.csv").exists() and len(load_table("live", release).samples) == 2
    with pytest.raises(DatasetError, match="reads live's labels from LIVE_realigned.csv, as the release does"):
        load_table("live", release, protocol="released")
    savemat(release / "dmos_realigned.mat", {"dmos_new": np.zeros((1, 981)), "orgs": np.zeros((1, 981))})
    with pytest.raises(FetchError, match="981 scores and 981 flags, refnames_all.mat 982 names; the release's have"):
        fetch.live_realigned_labels(release)

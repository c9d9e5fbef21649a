"""Issue 21: files created in an output folder never follow a link or replace a foreign file (one shared mechanism,
``saqt.core.safe_files``); failed writes leave no temporary file or lock behind; ``saqt fetch`` turns damaged inputs
and odd servers into one line, never a half dataset or a truncated archive kept as finished.

Each test names the case it covers. A full disk is simulated by monkeypatching the write (``torch.save`` or
``os.write`` raising ``OSError(ENOSPC)``). HTTP is real, on 127.0.0.1, and archives are made here.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import zipfile
from contextlib import nullcontext
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import Handler, Served, finetune_args, kadid_zip, source, tar_bytes, write_manifest, zip_bytes
from typer.testing import CliRunner

import glint.train
from glint.predict import write_table
from glint.runlog import append_record
from pipelines.glint_cli import app as glint_app
from pipelines.saqt_cli import app
from saqt.core.context import RunContext
from saqt.core.error_log import ErrorLog
from saqt.core.errors import OutputError
from saqt.core.journal import JournalWriter
from saqt.core.shards import write_json_atomic
from saqt.core.stage_contract import LOCK, FolderLock
from saqt.fetch import archives as fetch
from saqt.fetch.archives import FetchError, FetchOptions, fetch_dataset, fetch_sources
from saqt.label.stage_configs import PublishConfig
from saqt.publish import publish_stage as publish

runner = CliRunner()
PRECIOUS = b"precious\n"


def victim(tmp_path: Path) -> Path:
    """A file outside every output folder, which no command may change."""
    path = tmp_path / "victim.txt"
    path.write_bytes(PRECIOUS)
    return path


def one_line(result, fragment: str, code: int = 2) -> str:
    """The command ended with ``code`` on one line holding ``fragment`` (no traceback); returns that line."""
    assert result.exit_code == code and isinstance(result.exception, SystemExit), (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if fragment in line]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# --- A: links planted in the output folder ---------------------------------------------------------------------------


@pytest.mark.slow
def test_build_never_follows_a_link_planted_as_its_lock_temporary_shard_or_subfolder(tmp_path):
    """The issue's commands: a link at o/x/.saqt.lock is refused (it was overwritten with a pid); a link at the old
    temporary shard name is ignored (it used to become the shard); a subfolder that is a link is refused."""
    target = victim(tmp_path)
    out = tmp_path / "o" / "x"
    out.mkdir(parents=True)
    (out / LOCK).symlink_to(target)
    args = ["build", "--out", str(out), "--max-upscale", "1.3", "--types", "1", "--levels", "1", "--limit", "1"]
    one_line(runner.invoke(app, args), f"{out / LOCK} is a symbolic link that saqt did not write")
    assert target.read_bytes() == PRECIOUS and (out / LOCK).is_symlink()

    (out / LOCK).unlink()
    (out / "distorted").mkdir()
    planted = out / "distorted" / ".part-00000.parquet.tmp"
    planted.symlink_to(target)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    shard = out / "distorted" / "part-00000.parquet"
    assert target.read_bytes() == PRECIOUS and not shard.is_symlink() and shard.stat().st_size > len(PRECIOUS)
    assert planted.is_symlink() and not (out / LOCK).exists()  # left alone: not ours to remove

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = tmp_path / "o" / "y"
    other.mkdir()
    (other / "pristine").symlink_to(elsewhere)
    result = runner.invoke(app, [*args[:2], str(other), *args[3:]])
    assert result.exit_code != 0 and f"{other / 'pristine'} is a symbolic link that saqt did not write" in result.output
    assert list(elsewhere.iterdir()) == [] and "Traceback" not in result.output


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "hard link", "foreign file", "fifo"])
def test_a_lock_is_never_taken_through_a_link_or_over_a_foreign_file(tmp_path, kind):
    """FolderLock (saqt's stages, glint's run folders, publish's lock beside --out) refuses what it did not write."""
    target = victim(tmp_path)
    lock = tmp_path / "out" / LOCK
    lock.parent.mkdir()
    if kind == "symlink":
        lock.symlink_to(target)
    elif kind == "dangling symlink":
        lock.symlink_to(tmp_path / "created-outside")
    elif kind == "hard link":
        os.link(target, lock)
    elif kind == "foreign file":
        lock.write_text("my notes\n")
    else:
        os.mkfifo(lock)
    with pytest.raises(OutputError, match="that saqt did not write") as err:
        FolderLock(lock, "out").__enter__()
    assert "\n" not in str(err.value)
    assert target.read_bytes() == PRECIOUS and not (tmp_path / "created-outside").exists()
    assert os.path.lexists(lock)  # not ours: left as it was
    if kind == "foreign file":
        assert lock.read_text() == "my notes\n"


def test_a_lock_left_by_a_killed_run_is_taken_and_removed(tmp_path):
    lock = tmp_path / LOCK
    lock.write_text("4242\n")  # a killed run's: its pid, no flock held
    with FolderLock(lock, "out"):
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not lock.exists()


@pytest.mark.slow
def test_glint_refuses_a_link_planted_as_its_run_folders_lock(tmp_path, tiny_dataset):  # noqa: F811
    """`glint pretrain/finetune --out R` with R/.saqt.lock a link: the tiny finetune reaches the same lock."""
    target = victim(tmp_path)
    out = tmp_path / "R"
    out.mkdir()
    (out / LOCK).symlink_to(target)
    one_line(runner.invoke(glint_app, finetune_args(tiny_dataset, out, epochs=1)), "is a symbolic link that saqt")
    assert target.read_bytes() == PRECIOUS and [p.name for p in out.iterdir()] == [LOCK]


def _publish_inputs(tmp_path: Path, monkeypatch) -> PublishConfig:
    """Stand-ins for a finished label folder and its build: publish reaches its lock without a real label run."""
    build = SimpleNamespace(root=tmp_path / "build", manifest={"config": {"source": "sample", "recipe_only": False}})
    monkeypatch.setattr(publish, "open_labels", lambda labels: (None, build))
    return PublishConfig(str(tmp_path / "labels"))


def test_publish_refuses_a_link_planted_as_its_lock_beside_out(tmp_path, monkeypatch):
    target = victim(tmp_path)
    (tmp_path / ".pub.saqt.lock").symlink_to(target)
    with pytest.raises(OutputError, match=r"\.pub\.saqt\.lock is a symbolic link that saqt did not write"):
        publish.run_publish(_publish_inputs(tmp_path, monkeypatch), str(tmp_path / "pub"), RunContext(progress=False))
    assert target.read_bytes() == PRECIOUS and not (tmp_path / "pub").exists()


def test_publish_refuses_a_staging_folder_it_did_not_make(tmp_path, monkeypatch):
    """The staging folder beside --out: a link (to someone's folder) or a folder of someone else's is refused, not
    emptied and written into."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "keep.txt").write_bytes(PRECIOUS)
    (tmp_path / ".pub.publishing").symlink_to(theirs)
    with pytest.raises(OutputError, match=r"\.pub\.publishing is a symbolic link that saqt did not write"):
        publish.run_publish(_publish_inputs(tmp_path, monkeypatch), str(tmp_path / "pub"), RunContext(progress=False))
    assert [p.name for p in theirs.iterdir()] == ["keep.txt"] and not (tmp_path / ".pub.saqt.lock").exists()


def test_an_atomic_write_replaces_neither_a_link_nor_writes_through_a_planted_temporary(tmp_path):
    """write_json_atomic (every manifest, fetch's records): a link at the old fixed temporary name is ignored (it
    used to be written through, then renamed into place as the manifest); a link at the final name is refused; a
    stale temporary file of a killed run does not block the write and is left alone."""
    target = victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".build.json.tmp").symlink_to(target)
    (out / ".build.json.0123456789ab.tmp").write_bytes(b"{")  # a killed run's
    write_json_atomic(out / "build.json", {"a": 1})
    assert json.loads((out / "build.json").read_text()) == {"a": 1} and not (out / "build.json").is_symlink()
    assert target.read_bytes() == PRECIOUS and (out / ".build.json.0123456789ab.tmp").read_bytes() == b"{"
    (out / "card.json").symlink_to(target)
    with pytest.raises(OutputError, match="card.json is a symbolic link that saqt did not write"):
        write_json_atomic(out / "card.json", {"a": 1})
    assert target.read_bytes() == PRECIOUS and sorted(p.name for p in out.iterdir()) == [
        ".build.json.0123456789ab.tmp",
        ".build.json.tmp",
        "build.json",
        "card.json",
    ]


def test_glint_predict_never_writes_its_table_through_a_link_at_out(tmp_path):
    target = victim(tmp_path)
    out = tmp_path / "scores.csv"
    out.symlink_to(target)
    with pytest.raises(OutputError, match="scores.csv is a symbolic link"):
        write_table([{"path": "a.png", "score": 1.0}], out, {}, ["path", "score"])
    assert target.read_bytes() == PRECIOUS


def test_appended_files_are_never_written_through_a_link(tmp_path):
    """The journal (a new one replaces what is there), the error log and glint's metrics (appended: refused)."""
    target = victim(tmp_path)
    journal = tmp_path / "build.journal.jsonl"
    journal.symlink_to(target)
    writer = JournalWriter(journal, "anchor")
    writer.append("0", {"files": {}})
    writer.close()
    assert target.read_bytes() == PRECIOUS and not journal.is_symlink()

    log = ErrorLog(tmp_path / "errors.jsonl", [], [])
    log({"done": {}})
    (tmp_path / "errors.jsonl").unlink()
    (tmp_path / "errors.jsonl").symlink_to(target)
    with pytest.raises(OutputError, match="errors.jsonl is a symbolic link"):
        log.append([("key", "reason")])
    with pytest.raises(OutputError, match="errors.jsonl is a symbolic link"):
        log({"done": {"0": {"errors": [["key", "reason"]]}}})

    (tmp_path / "metrics.jsonl").symlink_to(target)
    with pytest.raises(OutputError, match="metrics.jsonl is a symbolic link"):
        append_record(tmp_path, {"epoch": 1})
    assert target.read_bytes() == PRECIOUS


def test_fetch_never_resumes_or_records_a_download_through_a_link(server, tmp_path):  # noqa: F811
    """A link at the .part file (it used to be appended to) or at its validator record (overwritten) is refused."""
    base, state = server
    state.files["/kadid10k.zip"] = data = kadid_zip()
    target = victim(tmp_path)
    downloads = tmp_path / "d" / ".downloads" / "kadid10k"
    downloads.mkdir(parents=True)
    src = source(base, "kadid10k", {"kadid10k.zip": data}, "dmos.csv")
    for planted in ("kadid10k.zip.part", "kadid10k.zip.part.json"):
        (downloads / planted).symlink_to(target)
        with pytest.raises(OutputError, match=f"{planted} is a symbolic link that saqt did not write"):
            fetch_dataset(src, tmp_path / "d", FetchOptions(backoff=0.0, say=lambda _: None))
        assert target.read_bytes() == PRECIOUS and not (tmp_path / "d" / "kadid10k").exists()
        (downloads / planted).unlink()
    (tmp_path / "d" / ".kadid10k.partial").symlink_to(tmp_path)  # the staging folder: never emptied through a link
    with pytest.raises(OutputError, match=r"\.kadid10k\.partial is a symbolic link"):
        fetch_dataset(src, tmp_path / "d", FetchOptions(backoff=0.0, say=lambda _: None))
    assert target.read_bytes() == PRECIOUS


# --- B: cleanups on failure ------------------------------------------------------------------------------------------


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.slow
def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch):
    """Simulated: torch.save writes part of the checkpoint, then the disk is full (OSError ENOSPC)."""

    def save(obj, f):
        with open(f, "wb") if isinstance(f, str | Path) else nullcontext(f) as sink:
            sink.write(b"PK\x03\x04" + bytes(4096))
        _full_disk()

    monkeypatch.setattr(glint.train.torch, "save", save)
    (tmp_path / "best.pt").write_bytes(b"the last good checkpoint")
    with pytest.raises(OutputError, match="cannot write .*best.pt: No space left on device") as err:
        glint.train.atomic_save({"epoch": 3}, tmp_path / "best.pt")
    assert "\n" not in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]
    assert (tmp_path / "best.pt").read_bytes() == b"the last good checkpoint"


def test_publishing_onto_a_full_disk_leaves_no_lock(tmp_path, monkeypatch):
    """Simulated: the lock's pid cannot be written (os.write raises ENOSPC)."""
    config = _publish_inputs(tmp_path, monkeypatch)
    monkeypatch.setattr(os, "write", _full_disk)
    with pytest.raises(OutputError, match=r"cannot write .*\.pub\.saqt\.lock: No space left on device"):
        publish.run_publish(config, str(tmp_path / "pub"), RunContext(progress=False))
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


# --- C: saqt fetch: odd servers, damaged archives, a corrupt record --------------------------------------------------


class FreshPartial(Handler):
    """Answers a GET without Range with 206 and the file's first 11 bytes (Content-Range bytes 0-10/N), as a
    misbehaving server or proxy may; everything else as ``Handler``."""

    def _serve(self, body: bool) -> None:
        state: Served = self.server.state
        data = state.files.get(self.path)
        if self.command != "GET" or self.headers.get("Range") or data is None:
            super()._serve(body)
            return
        state.requests.append({"method": "GET", "path": self.path, "range": None, "if_range": None})
        self.send_response(206)
        self.send_header("Content-Range", f"bytes 0-10/{len(data)}")
        self.send_header("Content-Length", "11")
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()[:16]}"')
        self.end_headers()
        self.wfile.write(data[:11])


@pytest.fixture
def partial_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FreshPartial)
    httpd.daemon_threads = True
    httpd.state = Served()
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.state
    httpd.shutdown()
    httpd.server_close()


def test_a_206_to_a_request_without_range_is_resumed_never_kept_as_the_archive(partial_server, tmp_path):
    base, state = partial_server
    state.files["/a.zip"] = data = bytes(range(100))
    with pytest.raises(FetchError, match=r"cut off \(11 of 100 bytes\)"):
        fetch.download(f"{base}/a.zip", tmp_path / "a.zip", retries=0)
    assert not (tmp_path / "a.zip").exists() and (tmp_path / "a.zip.part").read_bytes() == data[:11]
    fetch.download(f"{base}/a.zip", tmp_path / "a.zip", retries=0)  # the rerun resumes at byte 11
    assert (tmp_path / "a.zip").read_bytes() == data and state.requests[-1]["range"] == "bytes=11-"


def test_a_corrupt_part_record_starts_the_download_again(server, tmp_path):  # noqa: F811
    """Resuming without the record's validator could splice two versions of the file: the part is dropped."""
    base, state = server
    state.files["/a.zip"] = data = kadid_zip()
    (tmp_path / "a.zip.part").write_bytes(b"x" * 500)  # not the file's first bytes: a splice would show
    (tmp_path / "a.zip.part.json").write_text('{"url": "http://')
    fetch.download(f"{base}/a.zip", tmp_path / "a.zip", retries=0)
    assert (tmp_path / "a.zip").read_bytes() == data and state.requests[-1]["range"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def _bad_crc() -> bytes:
    payload = b"dist_img,ref_img,dmos,var\n" * 40
    data = bytearray(zip_bytes({"kadid10k/dmos.csv": payload}, zipfile.ZIP_STORED))
    data[data.index(payload) + 100] ^= 0xFF  # the member's bytes change, its recorded CRC does not
    return bytes(data)


def _truncated_tar_gz() -> bytes:
    whole = tar_bytes({"kadid10k/dmos.csv": b"x", "kadid10k/images/a.bin": os.urandom(200_000)})
    return whole[: len(whole) * 2 // 3]


@pytest.mark.parametrize(
    ("archive", "fragment"),
    [
        (_bad_crc, "kadid10k.zip is damaged or truncated (Bad CRC-32"),
        (lambda: zip_bytes({"k/a": b"a file", "k/a/b": b"and a folder"}), "member k/a is both a file and a folder"),
        (_truncated_tar_gz, "kadid10k.zip is damaged or truncated (Compressed file ended"),
    ],
    ids=["zip-bad-crc", "zip-file-and-folder", "truncated-tar-gz"],
)
def test_fetch_from_a_damaged_archive_is_one_line_and_leaves_no_dataset(tmp_path, monkeypatch, archive, fragment):
    """`saqt fetch --from` (exit 1, as every failed fetch: the next dataset is still tried)."""
    data = archive()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "kadid10k.zip").write_bytes(data)
    manifest = write_manifest(tmp_path / "fetch.yaml", "http://127.0.0.1:9", data)
    monkeypatch.setattr(fetch, "fetch_sources", lambda: fetch_sources(manifest))
    dest = tmp_path / "d"
    result = runner.invoke(app, ["fetch", "kadid10k", "--from", str(mine), "--dest", str(dest)])
    assert one_line(result, fragment, code=1).startswith("saqt fetch kadid10k: ")
    assert not dest.exists() or sorted(p.name for p in dest.iterdir()) == []
    assert (mine / "kadid10k.zip").read_bytes() == data  # the user's file is left as it was


# --- D: the fetch manifest's checksums -------------------------------------------------------------------------------


def test_the_manifest_pins_kadid10ks_cited_checksum_and_says_which_are_not_pinned():
    sources = fetch_sources()
    kadid = sources["kadid10k"].archives[0]
    assert kadid.sha256 == "fe59ace86a2525d5785ff011a2119fa88839e0329f5029f7b23994727efd185c"
    assert "yoheinakajima/glance" in kadid.source and "glance/lab/kadid.py" in kadid.source
    unpinned = [a for s in sources.values() for a in s.archives if not a.sha256]
    assert unpinned and all("no checksum" in a.source.lower() for a in unpinned), [a.file for a in unpinned]

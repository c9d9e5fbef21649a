"""``saqt publish --push-to-hub``: what goes up (exactly the published set), and failures in one line.

The Hugging Face Hub cannot be reached from the tests. Where a test needs the Hub to accept an upload, ``StandInHub``
stands in for huggingface_hub's ``HfApi`` and records the repository and commit it was asked for; the failures run
the real ``HfApi`` against 127.0.0.1: a closed port (no network) and a local HTTP server that refuses the token.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from typer.testing import CliRunner

from pipelines.executors import LocalExecutor
from pipelines.saqt_cli import app
from saqt.build.build_stage import BuildConfig, run_build
from saqt.core.context import RunContext
from saqt.label.label_stage import LabelConfig, run_label
from saqt.label.synth_stage import SynthConfig, run_synth_bank
from saqt.publish.hub import HubError, publish_and_push, push_to_hub
from saqt.publish.publish_stage import PublishConfig, PublishError, run_publish

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

runner = CliRunner()
SIZE = (192, 176)
REPO = "my-lab/saqt-iqa-demo"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Labels of 3 sample photos x 2 cells from a 2-reference PSNR bank."""
    root = tmp_path_factory.mktemp("stages")
    run_build(
        BuildConfig(size=SIZE, types=(1,), levels=(1, 5), limit=3),
        root / "build",
        RunContext(LocalExecutor(1), progress=False),
    )
    run_synth_bank(
        SynthConfig(source="sample-bank", size=SIZE, limit=2, metric="psnr"),
        root / "bank",
        RunContext(LocalExecutor(1), progress=False),
    )
    config = LabelConfig(build=str(root / "build"), bank=str(root / "bank"), encoder="effnet-lite0", rule="top1")
    run_label(replace(config, device="cpu"), root / "labels", RunContext(progress=False))
    return root / "labels"


@pytest.fixture()
def published(labelled, tmp_path) -> Path:
    out = tmp_path / "published"
    run_publish(PublishConfig(str(labelled), validation=0.4), str(out), RunContext(progress=False))
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


REVISION = "5e1ec7ed" * 5  # the stand-in repository's head commit
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
OLD_CARD = b"---\npretty_name: an earlier push\nsaqt:\n  dataset_id: 0ld5e7\n---\n"  # a saqt card: its id
OLD_SHARD = b"PAR1 a shard an earlier push wrote PAR1"


def earlier_push(**more: bytes) -> dict[str, bytes]:
    """A repository an earlier saqt push wrote (card, one shard, their SHA256SUMS), with the owner's .gitattributes
    and notes beside it, and ``more`` files."""
    pushed = {"README.md": OLD_CARD, "data/train-00000-of-00009.parquet": OLD_SHARD}
    sums = "".join(f"{_sha(data)}  {path}\n" for path, data in sorted(pushed.items())).encode()
    return {
        ".gitattributes": GITATTRIBUTES,
        "notes/keep.md": b"the owner's notes",
        **pushed,
        "SHA256SUMS": sums,
        **more,
    }


class StandInHub:
    """Stands in for ``huggingface_hub.HfApi`` (the Hub is out of reach): one dataset repository, ``repo`` (path ->
    bytes, at revision REVISION), that serves its files' metadata (Parquet files stored with LFS and their SHA-256,
    as the Hub stores binary files) and contents, and takes each commit's additions and deletions into ``repo``. It
    records what it is asked to create, download and commit, reading each uploaded file's bytes."""

    instances: list[StandInHub] = []
    repo: dict[str, bytes] = {}

    def __init__(self, endpoint=None, token=None):
        self.endpoint, self.token = endpoint or "https://stand-in.hub", token
        self.created, self.commits, self.downloads = [], [], []
        StandInHub.instances.append(self)

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **_):
        self.created.append({"repo_id": repo_id, "repo_type": repo_type, "private": private, "exist_ok": exist_ok})
        return f"{self.endpoint}/datasets/{repo_id}"

    def repo_info(self, repo_id, *, repo_type=None, files_metadata=False, **_):
        assert files_metadata, "without files' metadata the Hub gives no LFS checksums"
        siblings = [
            huggingface_hub.hf_api.RepoSibling(
                path, len(data), lfs=huggingface_hub.hf_api.BlobLfsInfo(len(data), _sha(data), 134)
            )
            if path.endswith(".parquet")
            else huggingface_hub.hf_api.RepoSibling(path, len(data))
            for path, data in self.repo.items()
        ]
        return SimpleNamespace(id=repo_id, sha=REVISION, siblings=siblings)

    def hf_hub_download(self, repo_id, filename, *, repo_type=None, revision=None, local_dir=None, **_):
        self.downloads.append((filename, revision))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.repo[filename])
        return str(target)

    def create_commit(self, repo_id, operations, *, commit_message, repo_type=None, parent_commit=None, **_):
        added = {
            op.path_in_repo: Path(op.path_or_fileobj).read_bytes()
            for op in operations
            if isinstance(op, huggingface_hub.CommitOperationAdd)
        }
        deleted = [op.path_in_repo for op in operations if isinstance(op, huggingface_hub.CommitOperationDelete)]
        assert all(p in self.repo for p in deleted), "the Hub refuses to delete a file it does not hold"
        self.commits.append(
            {
                "repo_id": repo_id,
                "repo_type": repo_type,
                "added": added,
                "deleted": deleted,
                "message": commit_message,
                "parent": parent_commit,
            }
        )
        StandInHub.repo = {**{p: d for p, d in self.repo.items() if p not in deleted}, **added}


@pytest.fixture()
def stand_in(monkeypatch):
    """The stand-in Hub, reachable: the Hub's address is a local port that accepts connections."""
    StandInHub.instances.clear()
    monkeypatch.setattr(StandInHub, "repo", earlier_push())
    monkeypatch.setattr(huggingface_hub, "HfApi", StandInHub)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        yield StandInHub.instances


def _set_files(folder: Path) -> dict[str, bytes]:
    listed = [line.split("  ", 1)[1] for line in (folder / "SHA256SUMS").read_text().splitlines()]
    return {p: (folder / p).read_bytes() for p in [*listed, "SHA256SUMS"]}


def test_push_uploads_exactly_the_published_set(published, stand_in):
    (published / "notes.txt").write_text("the publisher's own notes")  # beside the set, not part of it
    url = push_to_hub(published, REPO, private=True, token="hf_test")
    [hub] = stand_in
    assert url == f"https://stand-in.hub/datasets/{REPO}" and hub.token == "hf_test"
    assert hub.created == [{"repo_id": REPO, "repo_type": "dataset", "private": True, "exist_ok": True}]
    [commit] = hub.commits
    expected = _set_files(published)
    assert commit["repo_type"] == "dataset" and commit["added"] == expected  # every file, byte for byte, no other
    assert len(expected) == 2 + len(list((published / "data").iterdir())) and "notes.txt" not in commit["added"]
    assert commit["deleted"] == ["data/train-00000-of-00009.parquet"]  # an earlier push's shard, nothing else
    assert commit["parent"] == REVISION and {r for _, r in hub.downloads} == {REVISION}  # the revision inspected
    listed = dict(reversed(line.split("  ", 1)) for line in expected["SHA256SUMS"].decode().splitlines())
    assert listed == {p: hashlib.sha256(data).hexdigest() for p, data in expected.items() if p != "SHA256SUMS"}
    assert StandInHub.repo == {**expected, ".gitattributes": GITATTRIBUTES, "notes/keep.md": b"the owner's notes"}


def test_a_new_push_replaces_the_last_one_and_nothing_else(labelled, tmp_path, stand_in):
    """Two pushes to a fresh repository: the second deletes the first's validation shard, which it no longer has,
    and leaves the owner's files; pushing the same set again deletes nothing."""
    StandInHub.repo = {".gitattributes": GITATTRIBUTES}
    first, second = tmp_path / "first", tmp_path / "second"
    run_publish(PublishConfig(str(labelled), validation=0.4), str(first), RunContext(progress=False))
    run_publish(PublishConfig(str(labelled)), str(second), RunContext(progress=False))
    push_to_hub(first, REPO)
    assert stand_in[0].commits[0]["deleted"] == []
    StandInHub.repo["notes/keep.md"] = b"the owner's notes"
    push_to_hub(second, REPO)
    push_to_hub(second, REPO)
    assert [h.commits[0]["deleted"] for h in stand_in[1:]] == [["data/validation-00000-of-00001.parquet"], []]
    assert StandInHub.repo == {
        **_set_files(second),
        ".gitattributes": GITATTRIBUTES,
        "notes/keep.md": b"the owner's notes",
    }


def _replace_sums(repo: dict[str, bytes], lines: list[str]) -> dict[str, bytes]:
    return {**repo, "SHA256SUMS": "".join(f"{line}\n" for line in lines).encode()}


FOREIGN = {
    "an unlisted data file": (earlier_push(**{"data/mine.csv": b"a,b\n1,2\n"}), ["data/mine.csv"]),
    "an earlier shard changed since": (
        {**earlier_push(), "data/train-00000-of-00009.parquet": b"PAR1 the owner's own shard PAR1"},
        ["data/train-00000-of-00009.parquet"],
    ),
    "an edited card": (  # the card no longer proves the manifest saqt's: it vouches for no file
        {**earlier_push(), "README.md": b"my own card"},
        ["README.md", "data/train-00000-of-00009.parquet", "SHA256SUMS"],
    ),
    "a sha256sum listing of the owner's own files": (
        _replace_sums(
            {**earlier_push(), "README.md": b"# my dataset\n"},
            [
                f"{_sha(b'# my dataset' + bytes([10]))}  README.md",
                f"{_sha(OLD_SHARD)}  data/train-00000-of-00009.parquet",
            ],
        ),
        ["README.md", "data/train-00000-of-00009.parquet", "SHA256SUMS"],
    ),
    "no SHA256SUMS": (
        {p: d for p, d in earlier_push().items() if p != "SHA256SUMS"},
        ["README.md", "data/train-00000-of-00009.parquet"],
    ),
    "a SHA256SUMS leaving the folder": (
        _replace_sums(
            earlier_push(),
            [f"{_sha(OLD_SHARD)}  data/train-00000-of-00009.parquet", f"{_sha(OLD_CARD)}  ../README.md"],
        ),
        ["README.md", "data/train-00000-of-00009.parquet", "SHA256SUMS"],  # a malformed manifest vouches for none
    ),
    "many foreign files": (
        earlier_push(**{f"data/mine-{i}.csv": b"x" for i in range(5)}),
        ["data/mine-0.csv", "data/mine-1.csv", "data/mine-2.csv", "..."],
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_files_no_earlier_push_wrote_are_never_deleted_or_replaced(published, stand_in, case):
    """A card or data/ file that no earlier push wrote (or that changed since) refuses the push in one line naming
    it; nothing is committed."""
    repo, named = FOREIGN[case]
    StandInHub.repo = dict(repo)
    with pytest.raises(HubError) as refused:
        push_to_hub(published, REPO)
    message = str(refused.value)
    assert "\n" not in message and not stand_in[0].commits and StandInHub.repo == repo
    assert message.startswith(f"https://stand-in.hub/datasets/{REPO} holds files no earlier saqt push wrote")
    assert f"({', '.join(named)}): nothing pushed" in message and "push to another repository" in message


def test_a_hostile_manifest_cannot_delete_what_no_push_owns(published, stand_in):
    """An earlier SHA256SUMS that lists, with their true checksums, the owner's files outside data/ and a file the
    repository does not hold: the push deletes only the earlier shard."""
    repo = earlier_push()
    StandInHub.repo = _replace_sums(
        repo,
        [
            f"{_sha(repo[p])}  {p}"
            for p in (".gitattributes", "README.md", "data/train-00000-of-00009.parquet", "notes/keep.md")
        ]
        + [f"{_sha(b'gone')}  data/gone.parquet"],
    )
    push_to_hub(published, REPO)
    [commit] = stand_in[0].commits
    assert commit["deleted"] == ["data/train-00000-of-00009.parquet"]
    assert (
        StandInHub.repo[".gitattributes"] == GITATTRIBUTES and StandInHub.repo["notes/keep.md"] == repo["notes/keep.md"]
    )


def test_a_set_listing_a_file_outside_its_own_is_not_uploaded(published, stand_in):
    """A published folder whose SHA256SUMS also lists a file a push never writes (here the repository's LFS rules)
    is refused before the Hub is contacted, though every checksum holds."""
    (published / ".gitattributes").write_bytes(b"* -filter\n")
    with (published / "SHA256SUMS").open("a") as sums:
        sums.write(f"{_sha(b'* -filter' + bytes([10]))}  .gitattributes\n")
    with pytest.raises(HubError, match=r"lists \.gitattributes, which a push never writes; not uploaded") as refused:
        push_to_hub(published, REPO)
    assert "\n" not in str(refused.value) and not stand_in


def test_push_refuses_a_damaged_set(published, stand_in):
    shard = next((published / "data").iterdir())
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(HubError, match=rf"not an intact published set, not uploaded: data/{shard.name}: SHA-256"):
        push_to_hub(published, REPO)
    assert not stand_in  # the Hub was never contacted
    with pytest.raises(HubError, match="not a Hub repository id"):
        push_to_hub(published, "no slash/../x")


def test_cli_publishes_and_pushes_without_a_local_copy(labelled, stand_in, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    result = runner.invoke(
        app, ["publish", "--labels", str(labelled), "--push-to-hub", REPO, "--staging", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert f"pushed to https://stand-in.hub/datasets/{REPO}" in result.output
    [hub] = stand_in
    assert hub.token == "hf_from_env" and hub.created[0]["private"] is False
    assert "README.md" in hub.commits[0]["added"] and list(tmp_path.iterdir()) == []  # the scratch copy is gone


def test_publish_and_push_reports_the_set_before_the_push(labelled, stand_in, tmp_path):
    """The library's publish-and-push: with no ``out``, the set is written to a scratch folder in ``staging``,
    reported before the Hub is contacted, pushed, and the scratch folder removed; no place at all, or a remote
    ``out`` with a push, is refused before any work."""
    config = PublishConfig(str(labelled), staging=str(tmp_path))
    seen = []
    meta, url = publish_and_push(
        config, None, REPO, RunContext(progress=False), published=lambda m: seen.append((m, list(stand_in)))
    )
    assert seen == [(meta, [])] and meta["saqt"]["dataset_id"]  # reported while no Hub client existed yet
    assert url == f"https://stand-in.hub/datasets/{REPO}" and list(tmp_path.iterdir()) == []
    [hub] = stand_in
    assert "README.md" in hub.commits[0]["added"]
    with pytest.raises(PublishError, match="give --out"):
        publish_and_push(config, None, None)
    with pytest.raises(PublishError, match="uploads a local folder"):
        publish_and_push(config, "s3://bucket/set", REPO)
    assert len(stand_in) == 1 and list(tmp_path.iterdir()) == []


def test_hf_url_as_out_is_one_line(labelled, tmp_path):
    result = runner.invoke(app, ["publish", "--labels", str(labelled), "--out", "hf://datasets/my-lab/x"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "--push-to-hub ORG/NAME" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app, ["publish", "--labels", str(labelled), "--out", str(tmp_path / "p"), "--push-to-hub", "my lab/x"]
    )
    assert result.exit_code == 2 and "not a Hub repository id" in result.output
    assert not (tmp_path / "p").exists()  # refused before anything was published


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_is_one_line(labelled, monkeypatch):
    """The real HfApi, pointed at a port where nothing listens."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    result = runner.invoke(app, ["publish", "--labels", str(labelled), "--push-to-hub", REPO, "--token", "hf_x"])
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"saqt publish: pushing to {endpoint}/datasets/{REPO} failed: 127.0.0.1 is unreachable: connection refused; "
        "nothing pushed (to publish without the Hub, give --out FOLDER and leave out --push-to-hub)\n"
    )  # at once: nothing was published first


def test_hub_offline_mode_refuses_the_push_at_once(labelled, tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 (huggingface_hub reads it at import) is a push refused before anything is published."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "p"
    result = runner.invoke(app, ["publish", "--labels", str(labelled), "--out", str(out), "--push-to-hub", REPO])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "failed: HF_HUB_OFFLINE is set; nothing pushed" in result.output and not out.exists()


class RefusingHub(BaseHTTPRequestHandler):
    """A local server answering every request as the Hub answers a bad token."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.dumps({"error": "Invalid username or password."}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


def test_refused_token_is_one_line(published, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(HubError) as caught:
            push_to_hub(published, REPO, token="hf_wrong", endpoint=endpoint)
    finally:
        server.shutdown()
        server.server_close()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"pushing to {endpoint}/datasets/{REPO} failed: ")
    assert "401" in message and "Invalid username or password." in message and "hf_wrong" not in message

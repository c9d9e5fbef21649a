"""Helpers shared by test modules in several folders (``from helpers import ...``); fixtures live in conftest.py."""

from __future__ import annotations

import hashlib
import io
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipelines.glint_cli import app as glint_app
from pipelines.saqt_cli import app
from pipelines.saqt_cli import app as saqt_app
from saqt.core.context import RunContext
from saqt.core.shards import sha256_file
from saqt.fetch.archives import Archive, DatasetSource
from saqt.label.label_stage import LabelConfig


def panels(help_text: str) -> dict[str, list[str]]:
    """The options listed in each box of Typer's rich help, by box title."""
    found, current = {}, None
    for line in help_text.splitlines():
        if title := re.match(r"\s*╭─ (\w[\w ]*?) ─", line):
            current = found.setdefault(title[1], [])
        elif line.lstrip().startswith("╰"):
            current = None
        elif current is not None and (option := re.match(r"│\s*(?:\*\s+)?(--[a-z-]+)", line)):
            current.append(option[1])
    return found


class Served:
    """What the test server holds, what it was asked, and the connections it is told to cut."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cuts: dict[str, list[int]] = {}  # path -> bytes to send before dropping, one entry per GET
        self.requests: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    """Serves Served.files with ETag, Range and If-Range (RFC 9110), and drops connections when told to."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        state: Served = self.server.state
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        state.requests.append({"method": self.command, "path": self.path, "range": rng, "if_range": if_range})
        data = state.files.get(self.path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        start = 0
        if rng and if_range in (None, etag):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", etag)
        self.end_headers()
        if not body:
            return
        payload = data[start:]
        cuts = state.cuts.get(self.path)
        if cuts:
            payload = payload[: cuts.pop(0)]
            self.close_connection = True
        self.wfile.write(payload)
        self.wfile.flush()


def png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def kadid_zip() -> bytes:
    """A KADID-10k-shaped release: kadid10k/dmos.csv (dist_img, ref_img, dmos, var) and kadid10k/images/."""
    rows = ["dist_img,ref_img,dmos,var"]
    members = {}
    for ref in ("I01", "I02", "I03"):
        members[f"kadid10k/images/{ref}.png"] = png_bytes(int(ref[1:]))
        for level in (1, 2):
            name = f"{ref}_01_0{level}.png"
            members[f"kadid10k/images/{name}"] = png_bytes(100 * int(ref[1:]) + level)
            rows.append(f"{name},{ref}.png,{4.5 - level},0.5")
    members["kadid10k/dmos.csv"] = ("\n".join(rows) + "\n").encode()
    return zip_bytes(members)


def source(base: str, name: str, files: dict[str, bytes], marker: str, **kw) -> DatasetSource:
    archives = tuple(
        Archive(file=f, url=f"{base}/{f}", sha256=hashlib.sha256(data).hexdigest(), source="test")
        for f, data in files.items()
    )
    return DatasetSource(
        name=name,
        title=name.upper(),
        page=f"{base}/page",
        access="direct",
        terms="test terms",
        marker=marker,
        archives=archives,
        **kw,
    )


def write_manifest(path: Path, base: str, data: bytes) -> Path:
    entry = {
        "title": "KADID-10k",
        "page": f"{base}/page",
        "access": "direct",
        "terms": "test terms",
        "marker": "dmos.csv",
        "archives": [{"url": f"{base}/kadid10k.zip", "sha256": hashlib.sha256(data).hexdigest(), "source": "test"}],
        "use": ["glint finetune --dataset kadid10k --root {root}"],
    }
    path.write_text(yaml.safe_dump({"kadid10k": entry}))
    return path


def finetune_args(
    dataset: Path, out: Path, epochs: int = 2, batch_size: int = 2, crops: int = 1, lr: str | None = "1e-4"
) -> list[str]:
    """A tiny `glint finetune` on the CSV dataset: EfficientNet-Lite0, random weights, CPU, no loader workers."""
    return [
        "finetune",
        "--dataset",
        "csv",
        "--csv",
        str(dataset / "scores.csv"),
        "--root",
        str(dataset),
        "--local-backbone",
        "efficientnet_lite0",
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch_size),
        *(["--lr", lr] if lr else []),
        "--crops",
        str(crops),
        "--loader-workers",
        "0",
        "--device",
        "cpu",
        "--random-init",
        "--out",
        str(out),
    ]


runner = CliRunner()


SIZE = (96, 64)


CELLS = {"types": (1, 9), "levels": (1, 3)}


QUIET = RunContext(progress=False)


def on_cpu(config: LabelConfig) -> LabelConfig:
    return replace(config, device="cpu", loader_workers=0)


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def invoke_label(build: Path, bank: Path, out: Path, *extra: str):
    """``saqt label`` of ``build`` against ``bank`` into ``out`` with the small encoder, ``extra`` options after."""
    return runner.invoke(
        app,
        ["label", "--build", str(build), "--bank", str(bank), "--out", str(out), "--encoder", "effnet-lite0", *extra],
    )


def one_line_failure(result, fragment: str, code: int = 2) -> None:
    """The command ended with ``code`` on a one-line message holding ``fragment``, never an uncaught exception."""
    assert result.exit_code == code and isinstance(result.exception, SystemExit), (
        result.exit_code,
        result.output,
        result.exception,
    )
    lines = [line for line in result.output.splitlines() if fragment in line]
    assert lines and "Traceback" not in result.output, result.output


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


SLOW = ["--source", "folder", "--size", "192x128", "--images-per-shard", "1", "--types", "1-25", "--levels", "1-5"]


def saqt_command(args: list[str]) -> list[str]:
    return [sys.executable, "-c", "from pipelines.saqt_cli import app; app()", *args]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(
                f"the command ended (rc {proc.returncode}) before {what}: {log.read_text()[-2000:] if log else ''}"
            )
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


APPS = {"saqt": typer.main.get_command(saqt_app), "glint": typer.main.get_command(glint_app)}


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of each fenced block of a Markdown file, in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```", path.read_text(), re.S | re.M)


def commands(blocks: list[tuple[str, str]]) -> list[list[str]]:
    """Each saqt/glint command line of the shell blocks, as words (continuations joined, comments dropped)."""
    lines = []
    for lang, code in blocks:
        if lang == "bash":
            for line in code.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                start = next((i for i, w in enumerate(words) if w in APPS or w == "$(which"), None)
                if start is not None:
                    words = words[start:]
                    lines.append(["glint", *words[2:]] if words[0] == "$(which" else words)
    return lines


def check_options_exist(lines: list[list[str]], where: str) -> None:
    """Every option of every command line is one its saqt/glint command has."""
    for words in lines:
        command, path = APPS[words[0]], [words[0]]
        for word in words[1:]:
            if word in getattr(command, "commands", {}):
                command = command.commands[word]
                path.append(word)
        names = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        unknown = [w.split("=")[0] for w in words if w.startswith("-") and w.split("=")[0] not in names]
        assert not unknown, f"{' '.join(path)}: {unknown} in {where} line {' '.join(words)!r}"

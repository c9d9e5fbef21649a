"""Getting the datasets: the publishers' archives by URL, resumable, verified, unpacked safely where the loaders look.

``manifests/fetch.yaml`` gives each dataset's page, terms, archives (URL, size and SHA-256 where known, and where
each was read) and the file that marks the loaders' root once unpacked. Downloads go to ``DEST/.downloads/NAME/``
through a ``.part`` file that a rerun (or an automatic retry after a cut connection) resumes with an HTTP Range
request; an archive whose SHA-256 differs from the manifest's is renamed ``*.rejected`` and never used. Archives
are unpacked into a staging folder, every member checked to stay inside it and sizes bounded, which is renamed
to ``DEST/NAME`` when complete, with ``saqt-fetch.json`` recording what was fetched.
"""

from __future__ import annotations

import csv
import errno
import gzip
import http.client
import json
import lzma
import os
import shutil
import ssl
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import numpy as np
import yaml

from saqt import __version__
from saqt.core.errors import SaqtError
from saqt.core.network import unreachable
from saqt.core.progress import Progress
from saqt.core.registry import resolve
from saqt.core.safe_files import atomic_write, fresh_folder, in_the_way, make_folders, open_own, own_file, replace
from saqt.core.scores import ScoreError, score_value
from saqt.core.shards import sha256_file, write_json_atomic
from saqt.core.yaml_manifests import manifest_text

RECORD = "saqt-fetch.json"
STAGING_SENTINEL = ".saqt-fetch-staging"
USER_AGENT = f"saqt-iqa/{__version__} (saqt fetch)"
CHUNK = 1 << 20
BOMB_RATIO = 250  # uncompressed : compressed bytes beyond which an archive (or zip member) is refused...
BOMB_FLOOR = 16 << 20  # ...once it expands past 16 MiB; photographs and label tables compress far less


class FetchError(SaqtError):
    """A dataset that could not be fetched: one line saying why and what to do."""


@dataclass(frozen=True)
class Archive:
    """One file of a dataset's release, and where its URL, size and checksum were read."""

    file: str
    url: str | None = None
    bytes: int | None = None
    about: str | None = None
    sha256: str | None = None
    kind: str = "archive"  # or "file": copied as is
    source: str = ""

    def size_text(self) -> str:
        if self.bytes is not None:
            return f"{self.bytes:,} bytes"
        return f"about {self.about}" if self.about else "size not recorded"


@dataclass(frozen=True)
class DatasetSource:
    """A dataset as ``manifests/fetch.yaml`` describes it."""

    name: str
    title: str
    page: str
    access: str  # direct | manual
    terms: str
    marker: str
    archives: tuple[Archive, ...] = ()
    expect: tuple[str, ...] = ()
    prepare: str | None = None
    how: str | None = None
    after: str | None = None
    use: tuple[str, ...] = ()


@dataclass
class FetchOptions:
    """How to fetch: where to look for files downloaded by hand, network limits, and where messages go."""

    from_dir: Path | None = None
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 1.0  # seconds times the attempt number between automatic retries
    remove_archives: bool = False
    say: Callable[[str], None] = field(default=print)


def fetch_sources(manifest: Path | None = None) -> dict[str, DatasetSource]:
    """Every dataset of ``manifests/fetch.yaml`` (or of ``manifest``), by name."""
    text = Path(manifest).read_text() if manifest else manifest_text("fetch.yaml")
    return {name: _dataset_source(name, entry) for name, entry in yaml.safe_load(text).items()}


def _dataset_source(name: str, entry: dict) -> DatasetSource:
    archives = []
    for item in entry.get("archives") or []:
        file = item.get("file") or PurePosixPath(urlsplit(item["url"]).path).name
        if not file or PurePosixPath(file).name != file or file.startswith("."):
            raise FetchError(f"fetch manifest: {name}: {file!r} is not a plain file name")
        archives.append(
            Archive(
                file=file, **{k: item[k] for k in ("url", "bytes", "about", "sha256", "kind", "source") if k in item}
            )
        )
    keys = ("title", "page", "access", "terms", "marker", "prepare", "how", "after")
    return DatasetSource(
        name=name,
        archives=tuple(archives),
        expect=tuple(entry.get("expect", ())),
        use=tuple(entry.get("use", ())),
        **{k: entry[k] for k in keys if k in entry},
    )


# ---- downloading -------------------------------------------------------------------------------------------------


class _Cut(Exception):
    """The connection ended before the whole body arrived."""


def download(url: str, path: Path, timeout: float = 30.0, retries: int = 3, backoff: float = 1.0) -> None:
    """Download ``url`` to ``path`` through ``path.part``, resuming with HTTP Range requests.

    A connection cut mid-body is retried up to ``retries`` times, each retry resuming where the last stopped; a
    server that cannot be reached at all fails at once (FetchError, one line). ``path`` appears only when complete.
    """
    part = path.with_name(path.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout)
            break
        except _Cut as cut:
            if attempt == retries:
                kept = part.stat().st_size if part.is_file() else 0
                raise FetchError(
                    f"the download of {url} was cut off ({cut}) {retries + 1} times; {part} keeps the "
                    f"{kept:,} bytes received: run the same command again to resume"
                ) from None
            time.sleep(backoff * (attempt + 1))
    replace(part, path)
    part.with_name(part.name + ".json").unlink(missing_ok=True)


def _transfer(url: str, part: Path, timeout: float) -> None:
    """Fetch the rest of ``url`` into ``part`` (all of it when the server cannot resume)."""
    validator_file = part.with_name(part.name + ".json")
    offset, validator = _partial(part, validator_file)
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:  # the server sends the whole file instead if it changed since the partial download
            headers["If-Range"] = validator
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the range starts at or past the end: the partial file is unusable
            part.unlink()
            raise _Cut("the server refused to resume; starting again") from None
        raise FetchError(f"{url}: the server answered {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise FetchError(_unreachable(url, err)) from None
    with response:
        if response.status == 206:
            start, whole = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Cut("the server sent another range than asked; starting again")
            # the whole file's length, where the server gives it: a range short of it (even to a request that
            # asked for none) is resumed, never kept as the finished file
            total = whole if whole is not None else offset + int(response.headers.get("Content-Length", 0))
        else:  # a full body: no Range support, or the file changed
            offset = 0
            total = int(response.headers["Content-Length"]) if response.headers.get("Content-Length") else None
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        part.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(validator_file, {"url": url, "validator": validator})
        if total is not None:
            _require_space(part.parent, total - offset, f"downloading {url}")
        received = offset
        with (
            os.fdopen(open_own(part, os.O_WRONLY | os.O_APPEND, create=True), "ab") as out,
            Progress(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                disable=None,
                leave=False,
            ) as bar,
        ):
            out.truncate(offset)  # a fresh download drops what an earlier one left
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as err:  # reset, timeout, an incomplete chunk
                raise _Cut(f"{type(err).__name__} after {received:,} bytes") from None
    if total is not None and received < total:
        raise _Cut(f"{received:,} of {total:,} bytes")


def _partial(part: Path, validator_file: Path) -> tuple[int, str | None]:
    """The bytes an earlier download left in ``part`` and the server's validator it recorded. A ``part`` that is a
    link or not our own file is refused; one whose record is unreadable is dropped (resuming it unchecked could
    splice two versions of the file), and the download starts again."""
    try:
        info = os.lstat(part)
    except FileNotFoundError:
        return 0, None
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        raise in_the_way(part)
    if not info.st_size or not os.path.lexists(validator_file):
        return info.st_size, None
    try:
        if not stat.S_ISREG(os.lstat(validator_file).st_mode):
            raise ValueError("not a file")
        record = json.loads(validator_file.read_bytes())
        validator = record.get("validator")
        if validator is None or isinstance(validator, str):
            return info.st_size, validator
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON (or not UTF-8), not an object
        pass
    part.unlink()
    return 0, None


def _content_range(content_range: str | None) -> tuple[int | None, int | None]:
    """The first byte and the whole file's length (None where ``*``) of a ``Content-Range: bytes START-END/TOTAL``
    header; (None, None) if it is malformed."""
    try:
        span, whole = content_range.split()[1].split("/")
        return int(span.split("-")[0]), None if whole == "*" else int(whole)
    except (AttributeError, IndexError, ValueError):
        return None, None


def _unreachable(url: str, err: Exception) -> str:
    reason = getattr(err, "reason", err)
    host = urlsplit(url).hostname
    if isinstance(reason, ssl.SSLCertVerificationError):
        why = f"its TLS certificate failed verification ({reason.verify_message}), and verification is never skipped"
    else:
        why = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return _offline(url, f"cannot reach {host}: {why}")


def _offline(url: str, problem: str) -> str:
    return f"{problem}. Offline? Download {url} by hand (a browser will do) into a folder and rerun with --from FOLDER"


def remote_size(url: str, timeout: float = 10.0) -> int | None:
    """The size the server reports for ``url`` (a HEAD request), or None when it cannot be asked."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            return int(length) if length else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _require_space(folder: Path, needed: int, doing: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise FetchError(f"{doing} needs {needed / 1e9:.1f} GB and {folder} has {free / 1e9:.1f} GB free")


# ---- unpacking -----------------------------------------------------------------------------------------------------


def unpack(archive: Path, into: Path) -> None:
    """Unpack a zip or tar archive (any compression tarfile reads) into the folder ``into``.

    Refused, with nothing of it used: a member whose path is absolute or climbs out of ``into`` (zip-slip), a link
    or device member, a total size beyond the free disk space, and a decompression bomb (more than 250 times the
    compressed size once past 16 MiB). 7z and RAR archives are named with the command that unpacks them.
    """
    kind = archive_format(archive)
    if kind in ("zip", "tar"):
        _unpack_checked(archive, into, _unpack_zip if kind == "zip" else _unpack_tar)
    elif kind in UNREADABLE:
        raise FetchError(
            f"{archive.name} is a {kind} archive and no {kind} reader is a dependency: {unpack_by_hand(archive, into)}"
        )
    else:
        with open(archive, "rb") as f:
            head = f.read(16)
        raise FetchError(f"{archive} is not a zip or tar archive (it starts with {head!r}: an error page?)")


UNREADABLE = {"RAR": b"Rar!\x1a\x07", "7z": b"7z\xbc\xaf\x27\x1c"}
DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


def _unpack_checked(archive: Path, into: Path, unpacker: Callable[[Path, Path], None]) -> None:
    """``unpacker(archive, into)``, its failures told in one line (FetchError): a damaged or truncated archive
    (a bad CRC, a cut stream), one whose members are a file and a folder of the same name, a failed write."""
    try:
        unpacker(archive, into)
    except DAMAGED as err:
        raise FetchError(
            f"{archive} is damaged or truncated ({err or type(err).__name__}); nothing of it is kept: "
            "fetch it again (remove it first if it is a download of ours)"
        ) from None
    except OSError as err:
        where = Path(err.filename or into)
        member = where.relative_to(into).as_posix() if where.is_relative_to(into) else where
        if err.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise FetchError(
                f"{archive.name}: member {member} is both a file and a folder in it (a malformed archive); "
                "nothing of it is kept"
            ) from None
        raise FetchError(f"cannot unpack {archive.name} into {into}: {err.strerror or err} ({member})") from None


def archive_format(path: Path) -> str | None:
    """zip, tar (any compression tarfile reads), RAR, 7z, or None."""
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    with open(path, "rb") as f:
        head = f.read(8)
    return next((kind for kind, magic in UNREADABLE.items() if head.startswith(magic)), None)


def unpack_by_hand(archive: Path, into: Path) -> str:
    """The commands that unpack an archive no dependency reads."""
    return f"unpack it with `7z x {archive} -o{into}` (p7zip) or `unrar x {archive} {into}/`"


def _member_path(into: Path, name: str, archive: Path) -> Path:
    """Where member ``name`` goes: refused if it is absolute or leaves ``into``."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ":" in parts[0] or ".." in parts:
        raise FetchError(f"{archive.name}: member {name!r} would be written outside {into}; the archive is refused")
    target = into.joinpath(*parts)
    if not target.resolve().is_relative_to(into.resolve()):
        raise FetchError(f"{archive.name}: member {name!r} would be written outside {into}; the archive is refused")
    return target


def _check_expansion(archive: Path, expanded: int, compressed: int, what: str) -> None:
    if expanded > BOMB_FLOOR and expanded > BOMB_RATIO * max(compressed, 1):
        raise FetchError(
            f"{archive.name}: {what} expands {compressed:,} bytes to {expanded:,} (over {BOMB_RATIO} "
            "times): a decompression bomb? The archive is refused"
        )


def _unpack_zip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for m in members:
            _member_path(into, m.filename, archive)
            if (m.external_attr >> 16) & 0o170000 == 0o120000:
                raise FetchError(f"{archive.name}: member {m.filename!r} is a symbolic link; the archive is refused")
            _check_expansion(archive, m.file_size, m.compress_size, f"member {m.filename!r}")
        total = sum(m.file_size for m in members)
        _check_expansion(archive, total, archive.stat().st_size, "the archive")
        _require_space(into, total, f"unpacking {archive.name}")
        with Progress(
            total=total, unit="B", unit_scale=True, desc=f"unpack {archive.name}", disable=None, leave=False
        ) as bar:
            for m in members:
                target = _member_path(into, m.filename, archive)
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(target, "wb") as dst:  # zipfile stops at the declared size, checks CRC
                    shutil.copyfileobj(src, dst, CHUNK)
                bar.update(m.file_size)


def _unpack_tar(archive: Path, into: Path) -> None:
    compressed, free = archive.stat().st_size, shutil.disk_usage(into).free
    total = 0
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            _member_path(into, member.name, archive)
            if not (member.isfile() or member.isdir()):
                raise FetchError(
                    f"{archive.name}: member {member.name!r} is a link or special file; the archive is refused"
                )
            total += member.size
            _check_expansion(archive, total, compressed, "the archive")
            if total > free:
                raise FetchError(f"unpacking {archive.name} needs more than the {free / 1e9:.1f} GB free in {into}")
            tf.extract(member, into, filter="data")


# ---- preparing the loaders' layout ---------------------------------------------------------------------------------


def _find_root(folder: Path, marker: str, depth: int = 3) -> Path | None:
    """The shallowest folder at most ``depth`` levels below ``folder`` that holds ``marker``."""
    level = [folder]
    for _ in range(depth + 1):
        for candidate in level:
            if (candidate / marker).is_dir() if marker.endswith("/") else (candidate / marker).is_file():
                return candidate
        level = sorted(d for f in level for d in f.iterdir() if d.is_dir() and not d.name.startswith("."))
    return None


def _write_rows(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_write(path, text=True) as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _mat_vector(path: Path, name: str) -> np.ndarray:
    """Variable ``name`` of the MATLAB v5 file ``path``, flattened; FetchError (one line) if it is not such a file."""
    from scipy.io import loadmat  # reads MATLAB v5 files; no pickled objects

    try:
        variables = loadmat(path)
    except Exception as err:  # scipy raises many types (IndexError, MatReadError, ...) for bytes that are not MAT
        raise FetchError(f"{path} is not a MATLAB file of the release ({type(err).__name__}: {err})") from None
    if name not in variables:
        raise FetchError(f"{path} holds no variable {name}: not the release's file")
    return np.asarray(variables[name]).ravel()


def clive_labels(root: Path) -> Path:
    """LIVEChallenge.csv (img_name, mos, std) from the release's Data/All{Images,MOS,StdDev}_release.mat, in the
    release's order: 1,169 rows, the 7 training images t1..t7 first (pyiqa's table has the same rows); every MOS
    and deviation a finite number (``saqt.core.scores``)."""
    data = root / "Data"
    cells = _mat_vector(data / "AllImages_release.mat", "AllImages_release")
    try:
        names = [str(np.asarray(cell).ravel()[0]) for cell in cells]
    except IndexError:
        raise FetchError(f"{data / 'AllImages_release.mat'}: an image name is empty: not the release's file") from None
    mos, std = (_mat_vector(data / f"{n}.mat", n).tolist() for n in ("AllMOS_release", "AllStdDev_release"))
    if not len(names) == len(mos) == len(std):
        raise FetchError(f"{data}: {len(names)} names, {len(mos)} scores and {len(std)} deviations differ")
    rows = []
    for i, (n, m, s) in enumerate(zip(names, mos, std, strict=True), start=1):
        try:
            m = score_value(m, f"{data / 'AllMOS_release.mat'} entry {i} ({n})")
            s = score_value(s, f"{data / 'AllStdDev_release.mat'} entry {i} ({n})")
        except ScoreError as err:
            raise FetchError(str(err)) from None
        rows.append([n, repr(m), repr(s)])
    out = root / "LIVEChallenge.csv"
    _write_rows(out, ["img_name", "mos", "std"], rows)
    return out


def _text_lines(path: Path) -> list[str]:
    """The lines of a label file of a release, which is ASCII text; FetchError naming the line of the first byte
    that is not UTF-8 (a file re-saved in another encoding is not the release's)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise FetchError(
            f"{path}:{line}: byte 0x{data[err.start]:02x} is not UTF-8 text; the release's file is ASCII: "
            "fetch it again or convert it to UTF-8"
        ) from None


def tid2013_labels(root: Path) -> Path:
    """TID2013.csv (ref_name, dist_name, mos[, std]) from the release's mos_with_names.txt ("MOS name" lines) and
    mos_std.txt (same order), the reference named as its file in reference_images/ (I01.BMP ... i25.bmp)."""
    entries = []
    for i, line in enumerate(_text_lines(root / "mos_with_names.txt"), start=1):
        if line.strip():
            try:
                score, name = line.split()
                entries.append((name, score_value(score, f"{root / 'mos_with_names.txt'}:{i}")))
            except ScoreError as err:
                raise FetchError(str(err)) from None
            except ValueError:
                raise FetchError(f"{root / 'mos_with_names.txt'}:{i}: expected 'MOS file-name', got {line!r}") from None
    std_file = root / "mos_std.txt"
    std = [s.strip() for s in _text_lines(std_file) if s.strip()] if std_file.is_file() else []
    refs_dir = root / "reference_images"
    refs = {p.stem.upper(): p.name for p in refs_dir.iterdir()} if refs_dir.is_dir() else {}
    rows = [[refs.get(name[:3].upper(), f"{name[:3].upper()}.BMP"), name, repr(score)] for name, score in entries]
    header = ["ref_name", "dist_name", "mos"]
    if len(std) == len(rows):
        header.append("std")
        rows = [row + [s] for row, s in zip(rows, std, strict=True)]
    out = root / "TID2013.csv"
    _write_rows(out, header, rows)
    return out


LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))  # the .mat order


def live_realigned_labels(root: Path) -> Path | None:
    """LIVE_realigned.csv (ref_name, dist_name, dmos) from the release's dmos_realigned.mat (``dmos_new``, ``orgs``)
    and refnames_all.mat, whose 982 entries are jp2k/img1 ... img227, jpeg/img1 ... img233, then wn, gblur and
    fastfading (174 each), as the GlintIQA release's LIVE loader reads them: one row per entry that is not a
    reference image (``orgs`` 0), 779 in all. None where the archive has no dmos_realigned.mat."""
    if not (root / "dmos_realigned.mat").is_file():
        return None
    dmos, orgs = (_mat_vector(root / "dmos_realigned.mat", n) for n in ("dmos_new", "orgs"))
    cells = _mat_vector(root / "refnames_all.mat", "refnames_all")
    names = [f"{folder}/img{k}.bmp" for folder, count in LIVE_FOLDERS for k in range(1, count + 1)]
    if not len(dmos) == len(orgs) == len(cells) == len(names):
        raise FetchError(
            f"{root}: dmos_realigned.mat has {len(dmos)} scores and {len(orgs)} flags, refnames_all.mat "
            f"{len(cells)} names; the release's have {len(names)} each"
        )
    rows = []
    for i, (name, cell, score, original) in enumerate(zip(names, cells, dmos, orgs, strict=True), start=1):
        if not original:
            try:
                value = score_value(score, f"{root / 'dmos_realigned.mat'} entry {i} ({name})")
            except ScoreError as err:
                raise FetchError(str(err)) from None
            rows.append([str(np.asarray(cell).ravel()[0]), name, repr(value)])
    out = root / "LIVE_realigned.csv"
    _write_rows(out, ["ref_name", "dist_name", "dmos"], rows)
    return out


PREPARE = {  # a manifest's ``prepare`` -> (its converter, the label file it writes)
    "clive-mat": ("saqt.fetch.archives:clive_labels", "LIVEChallenge.csv"),
    "tid2013-txt": ("saqt.fetch.archives:tid2013_labels", "TID2013.csv"),
    "live-realigned": ("saqt.fetch.archives:live_realigned_labels", "LIVE_realigned.csv"),
}


def _settle(source: DatasetSource, folder: Path, say: Callable[[str], None]) -> Path:
    """Find the loaders' root under ``folder`` and write the converted labels that are not there yet."""
    root = _find_root(folder, source.marker)
    if root is None:
        raise FetchError(f"{source.title}: no {source.marker} found under {folder}: not the layout of the release")
    if source.prepare:
        convert, name = PREPARE[source.prepare]
        if not (root / name).exists() and resolve(convert)(root):  # never overwrite a file the user has
            say(f"wrote {(root / name).relative_to(folder)} from the release's label files")
    return root


def _check_layout(source: DatasetSource, root: Path, say: Callable[[str], None]) -> Path:
    """``root``, after a warning naming what the loaders read that is not beside the marker."""
    if missing := [e for e in source.expect if not (root / e).exists()]:
        say(f"warning: {', '.join(missing)} not found beside {source.marker} in {root}; the loaders read them there")
    return root


# ---- the command ---------------------------------------------------------------------------------------------------


def describe(source: DatasetSource, dest: Path, timeout: float = 10.0) -> list[str]:
    """What ``fetch_dataset`` would do, with sizes (the server's, from a HEAD request, when it answers)."""
    lines = [f"{source.title} ({source.name}): {source.access} download, {source.page}", f"  terms: {source.terms}"]
    if source.access == "manual":
        lines.append(f"  by hand: {source.how}")
    for a in source.archives:
        if a.url:
            size = None if unreachable(a.url) else remote_size(a.url, timeout)
            told = (
                f"{size:,} bytes (server)"
                if size is not None
                else f"{a.size_text()} (recorded; server not asked or silent)"
            )
            check = "SHA-256 checked" if a.sha256 else "no published checksum"
            lines.append(f"  would download {a.url}: {told}, {check} -> {dest / '.downloads' / source.name / a.file}")
        else:
            lines.append(f"  expects {a.file} in --from FOLDER")
    lines.append(
        f"  would unpack into {dest / source.name}/ (the folder holding {source.marker} is the loaders' --root)"
    )
    if source.after:
        lines.append(f"  then by hand: {source.after}")
    return lines


def fetch_dataset(source: DatasetSource, dest: Path, options: FetchOptions | None = None) -> Path:
    """Fetch ``source`` into ``dest/NAME``: download (or take from ``options.from_dir``), verify, unpack, prepare.

    Returns the loaders' root. Rerunning is cheap: a finished dataset is found by its record; a folder unpacked by
    hand (a RAR, a password-protected zip) is checked and prepared in place.
    """
    options = options or FetchOptions()
    say, target = options.say, dest / source.name
    say(f"{source.title}: {source.page}\n  terms: {source.terms}")
    if (target / RECORD).is_file():
        root = _recorded_root(target)
        say(f"{source.title} is already in {target} (remove that folder to fetch it again)")
        return root
    if target.exists():  # unpacked by hand
        root = _settle(source, target, say)
        _write_record(target, source, root, [], by_hand=True)
        return _check_layout(source, root, say)
    if source.access == "manual" and options.from_dir is None:
        raise FetchError(
            f"{source.title} cannot be downloaded automatically: {source.how}; then run "
            f"`saqt fetch {source.name} --from FOLDER` (page: {source.page})"
        )
    if not source.archives:
        raise FetchError(f"{source.title} has no archive to unpack: {source.after}")
    obtained = [_obtain(source, a, dest, options) for a in source.archives]
    for got in obtained:
        path = got.path
        if got.archive.kind == "archive" and archive_format(path) in UNREADABLE:
            raise FetchError(
                f"{path} is downloaded and checked; no dependency reads {archive_format(path)}: "
                f"{unpack_by_hand(path, target)}, then run `saqt fetch {source.name} --dest {dest}` "
                "again to check the layout and prepare the labels"
            )
    staging = fresh_folder(dest / f".{source.name}.partial", STAGING_SENTINEL)  # one an interrupted run left
    try:
        for got in obtained:
            say(f"unpacking {got.path.name}")
            if got.archive.kind == "file":
                shutil.copyfile(got.path, staging / got.archive.file)
            else:
                unpack(got.path, staging)
        root = _settle(source, staging, say)
        relative = root.relative_to(staging)
        (staging / STAGING_SENTINEL).unlink()
    except BaseException:
        shutil.rmtree(staging)
        raise
    staging.rename(target)
    _write_record(target, source, target / relative, obtained)
    if options.remove_archives:
        for got in obtained:
            if got.downloaded:
                got.path.unlink()
    return _check_layout(source, target / relative, say)


def _recorded_root(target: Path) -> Path:
    """The loaders' root that a finished fetch recorded in ``target/saqt-fetch.json``; FetchError if the record is
    damaged or names a folder outside ``target``."""
    path = target / RECORD
    try:
        root = json.loads(path.read_bytes())["root"]
        inside = isinstance(root, str) and (target / root).resolve().is_relative_to(target.resolve())
        problem = None if inside else f"its root {str(root)[:80]!r} is not a folder inside {target}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        problem = f"{type(err).__name__}: {str(err)[:80]}"
    if problem:
        raise FetchError(f"{path} is damaged ({problem}); remove it, and a rerun checks {target} and records it anew")
    return target / root


@dataclass(frozen=True)
class _Obtained:
    archive: Archive
    path: Path
    sha256: str
    downloaded: bool  # by us, into DEST/.downloads (as opposed to a file of the user's in --from)


def _obtain(source: DatasetSource, archive: Archive, dest: Path, options: FetchOptions) -> _Obtained:
    """One archive, verified: from ``--from``, an earlier download, or the network."""
    if options.from_dir is not None and (options.from_dir / archive.file).is_file():
        path = options.from_dir / archive.file
        return _Obtained(archive, path, _verify(path, archive, ours=False), False)
    path = dest / ".downloads" / source.name / archive.file
    make_folders(path.parent, dest, create=False)  # neither .downloads nor its folder a link
    if not own_file(path):
        if archive.url is None:
            raise FetchError(f"{archive.file} is not in {options.from_dir}: {source.how} (page: {source.page})")
        if why := unreachable(archive.url):  # at once, before a client waits for a connection
            raise FetchError(_offline(archive.url, why))
        options.say(f"downloading {archive.url} ({archive.size_text()})")
        download(archive.url, path, options.timeout, options.retries, options.backoff)
    return _Obtained(archive, path, _verify(path, archive, ours=True), True)


def _verify(path: Path, archive: Archive, ours: bool) -> str:
    """The file's SHA-256; a mismatch with the manifest's is refused, and a download of ours is set aside."""
    digest = sha256_file(path)
    if archive.sha256 and digest != archive.sha256.lower():
        where = path
        if ours:
            where = path.with_name(path.name + ".rejected")
            replace(path, where)
        raise FetchError(
            f"{path.name}: SHA-256 {digest} differs from the manifest's {archive.sha256}; the file is "
            f"kept at {where} and not used (manifest source: {archive.source.strip()})"
        )
    return digest


def _write_record(
    target: Path, source: DatasetSource, root: Path, obtained: list[_Obtained], by_hand: bool = False
) -> None:
    files_ = [
        {
            "file": g.archive.file,
            "url": g.archive.url,
            "bytes": g.path.stat().st_size,
            "sha256": g.sha256,
            "checked_against_manifest": bool(g.archive.sha256),
        }
        for g in obtained
    ]
    write_json_atomic(
        target / RECORD,
        {
            "dataset": source.name,
            "page": source.page,
            "root": root.relative_to(target).as_posix(),
            "files": files_,
            "unpacked_by_hand": by_hand,
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "toolkit": f"saqt-iqa {__version__}",
        },
    )


def catalogue_lines(sources: dict[str, DatasetSource]) -> list[str]:
    """One line per dataset: name, access, recorded size, title and page."""
    lines = [f"{'name':<10} {'access':<7} {'size':<22} dataset (page)"]
    for s in sources.values():
        sizes = [a.size_text() for a in s.archives if a.kind == "archive" and (a.bytes or a.about)]
        unknown = any(not (a.bytes or a.about) for a in s.archives if a.kind == "archive")
        size = " + ".join(sizes + ["?"] * unknown) if sizes else ("not recorded" if unknown else "-")
        lines.append(f"{s.name:<10} {s.access:<7} {size:<22} {s.title} ({s.page})")
    return lines


def ready_lines(source: DatasetSource, root: Path) -> list[str]:
    """What to run on a fetched dataset, and what is left to do by hand."""
    lines = [f"{source.title} is ready: --root {root}"] + [f"  {u.format(root=root)}" for u in source.use]
    if source.after:
        lines.append(f"  still to do by hand: {source.after}")
    return lines

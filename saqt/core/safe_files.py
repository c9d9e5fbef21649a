"""Creating files in an output folder: exclusively, never through a link, never over a file of someone else's.

Every lock, temporary and output file the toolkit writes goes through here:

- ``atomic_write(path)`` / ``NewFile(path)``: the file is written under a unique hidden name beside ``path``
  (``.NAME.<random>.tmp``), created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` (so nothing planted there is followed or
  reused, and a killed run's leftover never blocks a rerun), fsynced, and renamed onto ``path``. A rename replaces
  a link itself, never its target; still, ``path`` must be absent or a regular file. A failed write removes the
  temporary file (only its own).
- ``create_new(path)``: a file that must not exist yet.
- ``open_own(path)``: a file of the toolkit's reopened (a lock, a log appended to, a download resumed): never
  through a link, and refused unless it is a regular file with no other hard link.
- ``make_folders(folder, root)`` and ``fresh_folder(path, sentinel)``: folders under an output folder, none of
  them a link.

Anything else in the way is refused in one line (OutputError), as is a failed write (disk full, read-only).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, TextIO

from saqt.core.errors import OutputError


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failed write under ``path`` (disk full, permission denied, ...) into a one-line OutputError."""
    try:
        yield
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def _what(path: Path) -> str:
    """What is at ``path``, in words."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "something"
    kinds = {stat.S_ISLNK: "a symbolic link", stat.S_ISDIR: "a folder", stat.S_ISREG: "a file"}
    return next((word for test, word in kinds.items() if test(mode)), "a special file")


def in_the_way(path: Path, what: str | None = None) -> OutputError:
    """The one-line refusal of something at ``path`` that the toolkit did not put there."""
    return OutputError(
        f"{path} is {what or _what(path)} that saqt did not write; it never writes through a link or over a "
        "foreign file: remove it or choose another --out"
    )


def check_replaceable(path: Path) -> None:
    """OutputError unless ``path`` is absent or a regular file, which a rename onto it may replace."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise in_the_way(path)


def replace(source: Path, target: Path) -> None:
    """Rename ``source`` onto ``target`` (see ``check_replaceable``)."""
    with writing(target):
        check_replaceable(target)
        os.replace(source, target)


def create_new(path: Path) -> BinaryIO:
    """A new file at ``path``, open for reading and writing; OutputError if anything is there already."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise in_the_way(path) from None
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    return os.fdopen(fd, "w+b")


def open_own(path: Path, flags: int = os.O_RDWR, create: bool = False) -> int:
    """A descriptor on the toolkit's own file at ``path`` (created if absent, with ``create``), opened with
    ``flags``; OutputError if it is a link, not a regular file, or hard-linked elsewhere (written, it would change
    another file)."""
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_CREAT if create else 0)  # a FIFO never blocks
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as err:
        if not os.path.lexists(path) or stat.S_ISREG(os.lstat(path).st_mode):
            raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
        raise in_the_way(path) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise in_the_way(path, "a file with another hard link" if stat.S_ISREG(info.st_mode) else None)
    return fd


def own_file(path: Path) -> bool:
    """Whether a regular file is at ``path``: False if nothing is, OutputError if something else is (a link)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        raise in_the_way(path)
    return True


class NewFile:
    """A file written under a unique hidden name beside ``path`` (``file``, open for reading and writing) and
    renamed onto ``path`` by ``commit``; ``discard`` removes it. With ``root``, the folders between ``root`` and
    ``path`` are created, none of them a link."""

    def __init__(self, path: Path, root: Path | None = None):
        self.path = Path(path)
        if root is not None:
            make_folders(self.path.parent, Path(root))
        self.tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        self.file = create_new(self.tmp)

    def commit(self) -> None:
        """Flush, fsync and close the file, and rename it onto ``path``; on failure it is removed."""
        try:
            with writing(self.path):
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
            replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Close and remove the temporary file."""
        with suppress(OSError):  # a full disk fails the close too; the file goes either way
            self.file.close()
        with suppress(FileNotFoundError):
            os.unlink(self.tmp)


@contextmanager
def atomic_write(path: Path, root: Path | None = None, text: bool = False) -> Iterator[BinaryIO | TextIO]:
    """A file (binary, or UTF-8 text without newline translation with ``text``) that becomes ``path`` when the
    block ends, and never exists in part: see ``NewFile``. A failed write is an OutputError."""
    new = NewFile(path, root)
    try:
        with writing(path):
            if text:
                wrapper = io.TextIOWrapper(new.file, encoding="utf-8", newline="")
                yield wrapper
                wrapper.flush()
                wrapper.detach()
            else:
                yield new.file
    except BaseException:
        new.discard()
        raise
    new.commit()


def write_bytes_atomic(path: Path, data: bytes, root: Path | None = None) -> None:
    """Write ``data`` to ``path`` through ``atomic_write``, its folder created first (see ``NewFile`` for ``root``)."""
    if root is None:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, root) as f:
        f.write(data)


def make_folders(folder: Path, root: Path, create: bool = True) -> None:
    """Create ``folder`` and the folders between it and ``root`` (which must exist); OutputError where one of them
    is a link or not a folder, as files written there would land elsewhere. Without ``create``, only check those
    that exist."""
    current = Path(root)
    for part in Path(folder).relative_to(root).parts:
        current = current / part
        if create:
            with writing(current), suppress(FileExistsError):
                os.mkdir(current)
        elif not os.path.lexists(current):
            return
        if not stat.S_ISDIR(os.lstat(current).st_mode):
            raise in_the_way(current)


def fresh_folder(path: Path, sentinel: str) -> Path:
    """An empty folder at ``path`` holding only the file ``sentinel``, replacing one an interrupted run left (a real
    folder holding ``sentinel``); anything else there is refused. The caller keeps other runs away meanwhile."""
    if os.path.lexists(path):
        marked = stat.S_ISDIR(os.lstat(path).st_mode) and os.path.isfile(path / sentinel)
        if not marked:
            raise in_the_way(path)
        with writing(path):
            shutil.rmtree(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path)  # never through a link
    create_new(path / sentinel).close()
    return path

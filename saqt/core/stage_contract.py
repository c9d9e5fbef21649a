"""The stage contract: one manifest shape for every stage's output folder, how to open and check one, and the
writer that owns a run's output folder.

A stage (``build``, ``label``, ``bank`` synth) writes its folder's manifest (build.json, label.json, bank.json)
in one shape::

    format           "saqt-stage/1"
    stage            build | label | bank
    toolkit_version  command
    config           the options that determine the output
    inputs           what the output was made from (a selection's digest, the input stages' digests)
    units            how many units of work the run has
    done             unit -> {"files": {name: {path, sha256, bytes[, rows]}}, ...what else the unit reports}
    files            name -> entry: outputs written once every unit is done (a bank's scores.csv)
    aux              files the stage rewrites freely (its error log, caches): not checksummed
    complete, counts
    journal_anchor   while unfinished: names the journal (build.journal.jsonl, ...) of the units done since

A running stage appends each finished unit to its journal (``saqt.core.journal``) and writes the manifest whole only as
a run starts and ends; every reader goes through ``read_manifest``, which folds the journal in. Every path is
relative to the folder and stays inside it. A published set is a stage folder of another kind: a dataset card and
SHA256SUMS, the Hub's layout, which ``identify`` also recognises and ``read_card``, ``read_sums`` read.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from saqt import __version__
from saqt.core.config_options import local_path
from saqt.core.counts import counts
from saqt.core.errors import ConfigError, OutputError, SaqtError, StageError
from saqt.core.journal import JournalWriter, journal_name, new_anchor, read_journal, remove_journal
from saqt.core.safe_files import in_the_way, open_own
from saqt.core.shards import BANK_MANIFEST, BUILD_MANIFEST, LABEL_MANIFEST, sha256_file, write_json_atomic

FORMAT = "saqt-stage/1"
MANIFESTS = {"build": BUILD_MANIFEST, "label": LABEL_MANIFEST, "bank": BANK_MANIFEST}
COMMANDS = {"build": "saqt build", "label": "saqt label", "bank": "saqt bank synth"}
CARD = "README.md"  # a published set: its dataset card ...
SUMS = "SHA256SUMS"  # ... and the checksums of every other file
FRONT_MATTER = "---\n"  # opens (and, on a line of its own, closes) the card's YAML front matter
LOCK = ".saqt.lock"
ANCHOR = "journal_anchor"  # the manifest's entry naming the anchor of the journal that follows it
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StageConflict(StageError):
    """An output folder holds a stage's output that this run would not reproduce."""


def identify(folder: Path) -> str:
    """Which stage wrote ``folder``: build, label, bank or published; StageError if none did."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StageError(f"{folder} is not a folder")
    found = [kind for kind, name in MANIFESTS.items() if (folder / name).is_file()]
    if len(found) > 1:
        raise StageError(f"{folder} holds the manifests of several stages ({', '.join(found)}): not a stage folder")
    if found:
        return found[0]
    if (folder / CARD).is_file() or (folder / SUMS).is_file():
        return "published"  # or the remains of one: its checks name what is missing
    raise StageError(f"{folder} holds no {', '.join(MANIFESTS.values())} or published dataset ({CARD} + {SUMS})")


def published_file(path: str) -> bool:
    """Whether ``path`` (relative, POSIX) is a file a publish writes, so one it may replace or delete: the card,
    SHA256SUMS, or a file under ``data/``."""
    return path in (CARD, SUMS) or path.startswith("data/")


def read_sums(text: str) -> dict[str, str]:
    """The ``path -> sha256`` lines of a SHA256SUMS file; paths stay inside the folder."""
    sums = {}
    for n, line in enumerate(text.splitlines(), 1):
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](\S.*)", line)
        if not match or not _relative(match[2]):
            raise StageError(f"{SUMS} line {n} is malformed: {line[:80]!r}")
        sums[match[2]] = match[1]
    return sums


class CardError(SaqtError, ValueError):
    """A dataset card that cannot be read."""


def read_card(text: str) -> tuple[dict, str]:
    """The front matter (a dict) and the body of a card; CardError if it has no readable front matter."""
    if not text.startswith(FRONT_MATTER):
        raise CardError("README.md has no YAML front matter")
    head, sep, body = text[len(FRONT_MATTER) :].partition("\n---\n")
    if not sep:
        raise CardError("README.md's YAML front matter is not closed by a '---' line")
    try:
        meta = yaml.safe_load(head)
    except yaml.YAMLError as err:
        where = f" at line {err.problem_mark.line + 2}" if getattr(err, "problem_mark", None) else ""
        raise CardError(
            f"README.md's YAML front matter is malformed{where} ({getattr(err, 'problem', None) or err})"
        ) from None
    if not isinstance(meta, dict):
        raise CardError("README.md's YAML front matter is not a mapping")
    return meta, body


def _relative(path: object) -> bool:
    """Whether ``path`` is a plain relative POSIX path that cannot leave its folder."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or "\x00" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _check_entry(where: str, entry: object) -> None:
    if not isinstance(entry, dict) or not _relative(entry.get("path")):
        path = entry.get("path") if isinstance(entry, dict) else entry
        raise StageError(f"{where}: path {path!r} is not a relative path inside the folder")
    if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
        raise StageError(f"{where}: {entry['path']} has no valid sha256")
    for key in ("bytes", "rows"):
        value = entry.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise StageError(f"{where}: {entry['path']} has an invalid {key} ({value!r})")


def _check_unit(where: str, unit: object, done: object) -> None:
    files = done.get("files") if isinstance(done, dict) else None
    if not isinstance(unit, str) or not unit.isdigit() or not isinstance(files, dict):
        raise StageError(f"{where}: unit {unit!r} is malformed")
    for entry in files.values():
        _check_entry(f"{where}: unit {unit}", entry)


def _validate(path: Path, kind: str, m: object) -> dict:
    """``m`` if it is a stage manifest of ``kind`` in the shape above; else StageError naming the first fault."""
    if not isinstance(m, dict):
        raise StageError(f"{path}: not a stage manifest (a JSON object)")
    if m.get("format") != FORMAT:
        raise StageError(
            f"{path}: written by an older toolkit (format {m.get('format')!r}, this one reads "
            f"{FORMAT!r}); rerun the stage with --overwrite"
        )
    if m.get("stage") != kind:
        raise StageError(f"{path}: a {m.get('stage')!r} manifest, expected {kind!r}")
    kinds = {"config": dict, "inputs": dict, "units": int, "done": dict, "files": dict, "aux": list, "complete": bool}
    for key, cls in kinds.items():
        if not isinstance(m.get(key), cls) or (cls is int and isinstance(m[key], bool)):
            raise StageError(f"{path}: {key!r} is missing or not a JSON {cls.__name__}")
    for unit, done in m["done"].items():
        _check_unit(str(path), unit, done)
    for entry in m["files"].values():
        _check_entry(str(path), entry)
    for aux in m["aux"]:
        if not _relative(aux):
            raise StageError(f"{path}: aux path {aux!r} is not a relative path inside the folder")
    return m


class MalformedManifest(StageError):
    """A manifest file that is not JSON: malformed or truncated."""


def parse_manifest(path: Path) -> object:
    """The JSON of the manifest file ``path`` (a stage's, or a bank.json of another origin): the one place a
    manifest is parsed. MalformedManifest where it is not JSON, StageError where it cannot be read."""
    try:
        return json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MalformedManifest(f"{path} is malformed or truncated ({err})") from None
    except OSError as err:
        raise StageError(f"{path} cannot be read ({err.strerror or err})") from None


def _load(folder: Path, kind: str) -> dict:
    """The validated manifest file of the ``kind`` stage in ``folder``, without its journal."""
    path = Path(folder) / MANIFESTS[kind]
    if not path.is_file():
        raise StageError(f"{folder} has no {MANIFESTS[kind]}: not a `saqt {kind}` output folder")
    try:
        manifest = parse_manifest(path)
    except MalformedManifest as err:
        raise StageError(f"{err}: saqt cannot tell it wrote it; rerun the stage into another --out") from None
    return _validate(path, kind, manifest)


def _fold(folder: Path, kind: str, manifest: dict) -> dict:
    """``manifest`` with the units of its journal (see :mod:`saqt.core.journal`) added, and its counts recomputed."""
    path = Path(folder) / journal_name(MANIFESTS[kind])
    entries = read_journal(path, manifest.get(ANCHOR))
    for n, unit, done in entries:
        _check_unit(f"{path} line {n}", unit, done)
        manifest["done"][unit] = done
    if entries:
        try:
            manifest["counts"] = counts(manifest)
        except (KeyError, TypeError, ValueError) as err:
            raise StageError(f"{path}: a unit lacks {err} or holds it in another form") from None
    return manifest


def read_manifest(folder: Path, kind: str) -> dict:
    """The validated manifest of the ``kind`` stage in ``folder``, with the units its journal records since it was
    last written; StageError if absent or malformed."""
    return _fold(folder, kind, _load(folder, kind))


@dataclass
class Stage:
    """A stage folder and its validated manifest."""

    kind: str
    root: Path
    manifest: dict
    _folders: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)  # folder -> inside

    @property
    def name(self) -> str:
        """The manifest's file name."""
        return MANIFESTS[self.kind]

    def units(self) -> list[str]:
        """The finished units, in order."""
        return sorted(self.manifest["done"], key=int)

    def path(self, unit: str, name: str) -> Path:
        """Where unit ``unit`` keeps its file ``name``."""
        return self.root / self.manifest["done"][unit]["files"][name]["path"]

    def paths(self, name: str) -> list[Path]:
        """File ``name`` of every finished unit, in unit order."""
        return [self.path(u, name) for u in self.units()]

    def _listed(self) -> list[tuple[str, dict]]:
        """(unit, entry) of every listed file: the units' files in unit order, then the stage's own (unit "")."""
        done, own = self.manifest["done"], self.manifest["files"]
        units = [(u, e) for u in self.units() for _, e in sorted(done[u]["files"].items())]
        return units + [("", e) for _, e in sorted(own.items())]

    def entries(self) -> list[dict]:
        """Every file entry the manifest lists, in order."""
        return [e for _, e in self._listed()]

    def problem(self, entry: dict, checksum: bool = True) -> str | None:
        """What is wrong with one listed file (missing, outside the folder, another size or SHA-256), or None."""
        rel = entry["path"]
        path = os.path.join(self.root, rel)  # strings: this runs once per file at every start
        try:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):  # followed only where it is a link
                inside = Path(path).resolve().is_relative_to(self.root.resolve())
                info = os.stat(path) if inside else info
            else:
                inside = self._inside(os.path.dirname(path))
        except OSError:
            return f"{rel} is missing"
        if not inside:
            return f"{rel} leads outside {self.root}"
        if not stat.S_ISREG(info.st_mode):
            return f"{rel} is missing"
        if info.st_size != entry["bytes"]:
            return f"{rel}: size differs from {self.name}'s"
        if checksum and sha256_file(Path(path)) != entry["sha256"]:
            return f"{rel}: SHA-256 differs from {self.name}'s"
        return None

    def _inside(self, folder: str) -> bool:
        """Whether ``folder``, every link followed, lies inside the root (found once per folder)."""
        if folder not in self._folders:
            self._folders[folder] = Path(folder).resolve().is_relative_to(self.root.resolve())
        return self._folders[folder]

    def problems(self, checksum: bool = True) -> dict[str, str]:
        """Each unit (or ``""`` for the stage's own files) with a damaged file -> the first problem found."""
        if not checksum:  # a stat per file: threads would cost more than they save
            found = [(unit, self.problem(entry, False)) for unit, entry in self._listed()]
        else:
            with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # hashing releases the GIL
                found = list(pool.map(lambda item: (item[0], self.problem(item[1])), self._listed()))
        damaged: dict[str, str] = {}
        for unit, problem in found:
            if problem:
                damaged.setdefault(unit, problem)
        return damaged

    def verify(self, checksum: bool = True) -> None:
        """Raise StageError at the first listed file that is missing or changed since the stage wrote it."""
        damaged = self.problems(checksum)
        if damaged:
            first = damaged[min(damaged, key=lambda u: int(u) if u else 1 << 62)]
            raise StageError(
                f"{self.root}: {first}; the {self.kind} output changed since it was written "
                f"(rerun its `{COMMANDS[self.kind]}` command to repair it)"
            )

    def digest(self) -> str:
        """Names the content: the stage, its config and inputs, and every listed file's checksum."""
        m = self.manifest
        core = {
            "stage": self.kind,
            "config": m["config"],
            "inputs": m["inputs"],
            "files": sorted((e["path"], e["sha256"]) for e in self.entries()),
        }
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def open_stage(folder: Path, expect: str | None = None, checksums: bool = True) -> Stage:
    """The stage in ``folder`` (of kind ``expect`` when given), checked against its manifest.

    Always: the manifest is well formed, every path stays inside the folder, every listed file is present with
    its size; with ``checksums``, every file also has its SHA-256. StageError (one line) otherwise.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise StageError(f"{folder} is not a folder")
    kind = expect or identify(folder)
    if kind not in MANIFESTS:
        raise StageError(f"{folder} is a {kind} set, not the output of a build, label or bank stage")
    stage = Stage(kind, folder, read_manifest(folder, kind))
    stage.verify(checksums)
    return stage


def new_manifest(stage: str, config: dict, inputs: dict, units: int, command: str, **details) -> dict:
    """A fresh manifest of this shape, with nothing done yet; ``details`` are the stage's own entries."""
    return {
        "format": FORMAT,
        "stage": stage,
        "toolkit_version": __version__,
        "command": command,
        "config": config,
        "inputs": inputs,
        "units": units,
        "done": {},
        "files": {},
        "aux": [],
        "complete": False,
        "counts": {},
        **details,
    }


def file_entry(root: Path, path: Path) -> dict:
    """The manifest entry of a finished file under ``root``."""
    return {"path": path.relative_to(root).as_posix(), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def check_apart(out: Path, inputs: dict[str, str | Path | None]) -> None:
    """ConfigError if ``out`` is, is inside, or contains one of ``inputs`` (option -> path)."""
    target = Path(out).resolve()
    for option, path in inputs.items():
        if path is None:
            continue
        source = Path(path).resolve()
        how = (
            "is"
            if target == source
            else "is inside"
            if source in target.parents
            else "contains"
            if target in source.parents
            else None
        )
        if how:
            raise ConfigError(f"--out {out} {how} {option} {path}: write the output apart from the inputs")


class FolderLock:
    """An exclusive lock on an output folder, held by this process while it writes there.

    The lock file records the holder's pid; the lock itself is an ``flock``, which the kernel drops when the
    holder dies, so a lock left by a killed run never blocks the next one. It is opened through
    ``saqt.core.safe_files.open_own``: a link, or a file that holds anything but a pid, is refused, never written.
    """

    def __init__(self, path: Path, what: str):
        self.path, self.what, self._fd = Path(path), what, None

    def __enter__(self) -> FolderLock:
        while True:
            fd = open_own(self.path, create=True)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip()
                os.close(fd)
                raise StageError(
                    f"{self.what} is being written by another saqt run"
                    f"{f' (pid {holder})' if holder else ''}; wait for it to finish or stop it"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else the holder removed the file as we opened it: take a fresh one
                break
            os.close(fd)
        self._fd = fd
        self._claim()
        return self

    def _claim(self) -> None:
        """Write this process's pid into the lock file, which must hold nothing or a pid (a lock of ours)."""
        fd = self._fd
        if not re.fullmatch(rb"\d*\n?", os.pread(fd, 64, 0)):
            os.close(fd)
            self._fd = None
            raise in_the_way(self.path)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # at offset 0: nothing has moved it
        except OSError as err:  # a full disk: the lock goes, and nothing is left behind
            self.__exit__()
            raise OutputError(f"cannot write {self.path}: {err.strerror or err}") from None

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def written_by_saqt(path: Path, kind: str) -> bool:
    """Whether ``path`` is a ``kind`` stage's manifest this toolkit wrote, of this or an earlier format: a JSON object
    (a regular file, not a link) with ``stage`` ``kind`` and a ``saqt-stage/N`` format, or, before formats were
    recorded, a ``toolkit_version``. Its contents need not be valid beyond that: ``--overwrite`` may replace it."""
    try:
        if path.is_symlink() or not path.is_file():
            return False
        m = parse_manifest(path)
    except (OSError, StageError):
        return False
    if not isinstance(m, dict) or m.get("stage") != kind:
        return False
    if "format" not in m:
        return isinstance(m.get("toolkit_version"), str)
    return isinstance(m["format"], str) and re.fullmatch(r"saqt-stage/\d+", m["format"]) is not None


def _occupied(path: Path) -> bool:
    """Whether anything (a file, folder or link, even a dangling one) is at ``path``."""
    return path.exists() or path.is_symlink()


def remove_written(folder: Path, kind: str) -> None:
    """Remove what an earlier run of ``kind`` wrote in ``folder``, as its manifest and journal list it; nothing else.

    Without a readable manifest nothing but the manifest and journal themselves are removed (the new run's files
    replace the old ones of the same name); with a journal that was tampered with, only the manifest's files.
    """
    folder = Path(folder)
    try:
        m = _load(folder, kind)
    except StageError:
        m = None
    if m is not None:
        with suppress(StageError):
            m = _fold(folder, kind, m)
        remove_listed(folder, [e["path"] for e in Stage(kind, folder, m).entries()] + m["aux"])
    remove_journal(folder / journal_name(MANIFESTS[kind]))
    (folder / MANIFESTS[kind]).unlink(missing_ok=True)


def remove_listed(folder: Path, paths: Iterable[str]) -> None:
    """Remove these files of ``folder`` (paths relative to it; none that leads outside it), and the folders they
    leave empty."""
    for rel in paths:
        path = folder / rel
        if path.resolve().is_relative_to(folder.resolve()):
            path.unlink(missing_ok=True)
            _prune_empty(path.parent, folder)


def _prune_empty(folder: Path, root: Path) -> None:
    while folder != root and folder.is_relative_to(root) and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _agree(old: Any, fresh: Any) -> bool:
    """Whether an earlier run's recorded setting is this run's: equal, or a path an earlier version recorded as
    spelled (relative: taken from the working folder) that names this run's file or folder."""
    return old == fresh or (isinstance(old, str) and local_path(old) == fresh)


class StageWriter:
    """One run's hold on its output folder: the lock, resume or ``--overwrite``, and the manifest's updates.

    On entry ``out`` is checked to lie apart from the inputs, created and locked; an earlier run's output is
    removed (``overwrite``, only the files its manifest and journal list) or resumed: it must agree with ``fresh``
    on config and inputs (else StageConflict), and its units whose files still match their checksums are kept.
    The stage's own files (``files``) of an earlier run stay listed until the stage writes them again.
    The manifest is written whole only at compactions (``save``: the stage calls it as its run starts, else the
    first ``record`` does; ``finish`` does at the end); in between each finished unit is one line of the journal.
    ``on_save(manifest)`` runs at each compaction, after the counts are computed (the stage's logs).
    """

    def __init__(
        self,
        out: Path,
        fresh: dict,
        overwrite: bool = False,
        inputs: dict | None = None,
        on_save: Callable[[dict], None] | None = None,
    ):
        self.out, self.manifest, self.overwrite = Path(out), fresh, overwrite
        self.kind = fresh["stage"]
        self.inputs, self.on_save = inputs or {}, on_save
        self._lock = FolderLock(self.out / LOCK, str(self.out))
        self._journal: JournalWriter | None = None

    def __enter__(self) -> StageWriter:
        check_apart(self.out, self.inputs)
        others = [k for k, name in MANIFESTS.items() if k != self.kind and (self.out / name).is_file()]
        if others:
            raise StageConflict(f"{self.out} holds a {others[0]} stage's output; choose another --out")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create --out {self.out} ({err.strerror or err})") from None
        self._lock.__enter__()
        try:
            self._start()
        except BaseException:
            self._lock.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._close_journal()
        self._lock.__exit__()

    def _start(self) -> None:
        """Resume or (``overwrite``) remove an earlier run's output; refuse a manifest, or without one an aux file,
        in the way that this toolkit did not write (:func:`written_by_saqt`): only a stage's own files are replaced."""
        path = self.out / MANIFESTS[self.kind]
        if _occupied(path):
            if not written_by_saqt(path, self.kind):
                raise StageConflict(
                    f"{path} is not a {self.kind} manifest saqt wrote; saqt replaces only its own files, even with "
                    "--overwrite: move it away or choose another --out"
                )
            if self.overwrite:
                remove_written(self.out, self.kind)
            else:
                self._resume(read_manifest(self.out, self.kind))
            return
        foreign = [a for a in self.manifest["aux"] if _occupied(self.out / a)]
        if foreign:
            raise StageConflict(
                f"{self.out / foreign[0]} is in the way: no {MANIFESTS[self.kind]} of this folder says saqt wrote it, "
                "and saqt replaces only its own files, even with --overwrite; move it away or choose another --out"
            )

    def _resume(self, old: dict) -> None:
        fresh = self.manifest
        for part in ("config", "inputs"):
            was, now = old[part], fresh[part]
            changed = sorted(k for k in {*was, *now} if k not in was or k not in now or not _agree(was[k], now[k]))
            if changed:
                made = "another config" if part == "config" else "other inputs"
                raise StageConflict(
                    f"{self.out} holds {self.kind} output made with {made} ({', '.join(changed)}); "
                    "use --overwrite to replace it or choose another --out"
                )
        damaged = Stage(self.kind, self.out, old).problems()
        fresh["done"] = {u: v for u, v in old["done"].items() if u not in damaged}
        fresh["files"] = old["files"]  # still listed, so that the stage may replace them (and --overwrite remove them)

    def pending(self, units: Iterable[str]) -> list[str]:
        """Those of ``units`` not done yet."""
        return [u for u in units if u not in self.manifest["done"]]

    def record(self, unit: str, done: dict) -> None:
        """Mark ``unit`` done (``done`` holds its ``files`` entries and whatever else it reports): one line appended
        to the journal, or, where this run has not written the manifest yet, a compaction."""
        self.manifest["done"][unit] = done
        if self._journal is None:
            self.save()
        else:
            self._journal.append(unit, done)

    def finish(self, complete: bool = True) -> dict:
        """Save the manifest as complete if every unit is done (and ``complete``); return it."""
        self.manifest["complete"] = complete and len(self.manifest["done"]) == self.manifest["units"]
        self.save()
        return self.manifest

    def save(self) -> None:
        """Compact: write the whole manifest (its counts computed, then ``on_save`` run) under a fresh journal anchor
        (none once complete), then remove the journal its units came from; later records go to a new journal."""
        self._close_journal()
        self.manifest["counts"] = counts(self.manifest)
        if self.on_save:
            self.on_save(self.manifest)
        self.manifest.pop(ANCHOR, None)
        if not self.manifest["complete"]:
            self.manifest[ANCHOR] = new_anchor()
        write_json_atomic(self.out / MANIFESTS[self.kind], self.manifest)
        journal = self.out / journal_name(MANIFESTS[self.kind])
        remove_journal(journal)  # a kill before this leaves a journal of another anchor: stale, and ignored
        if ANCHOR in self.manifest:
            self._journal = JournalWriter(journal, self.manifest[ANCHOR])

    def _close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

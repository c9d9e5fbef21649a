"""Pristine image sources (ImageNet, KADIS-700k, a folder, a list file, the bundled sample) and selection.

Each source is described by ``manifests/sources/<name>.yaml``. Listing returns items that know how to
read their own bytes (a file, or a member inside a tar read in place), so workers never extract archives.
"""

from __future__ import annotations

import csv
import os
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from saqt.core.errors import SaqtError
from saqt.core.images import not_regular, open_regular
from saqt.core.seeding import derive_seed
from saqt.core.yaml_manifests import manifest_names, named_manifest


class SourceError(SaqtError, ValueError):
    """A source that cannot be listed as asked (a bad argument); the message is one line."""


@dataclass(frozen=True)
class SourceItem:
    """One pristine image: a unique key relative to the root, where its bytes are, and its class label."""

    key: str
    path: str
    offset: int = -1  # start of the member inside an archive; -1 means the whole file
    size: int = -1
    label: str | None = None

    def read_bytes(self) -> bytes:
        """The encoded image bytes; OSError (NotRegularFile for a FIFO, socket or device) if unreadable."""
        with open_regular(self.path) as f:
            if self.offset < 0:
                return f.read()
            f.seek(self.offset)
            return f.read(self.size)


@dataclass
class Listing:
    """What a source holds: readable items in key order, entries refused with reasons, the layout used."""

    items: list[SourceItem]
    errors: list[tuple[str, str]]
    layout: str


def source_spec(name: str) -> dict:
    """The manifest of source ``name``."""
    return named_manifest("sources", name, SourceError, "source")


def source_names() -> list[str]:
    """Names of the available sources."""
    return manifest_names("sources")


def sample_root() -> Path:
    """The folder holding scikit-image's bundled photos."""
    return Path(str(files("skimage").joinpath("data")))


def sample_paths(name: str = "sample") -> list[Path]:
    """Paths of the photos of bundled source ``name``, in a fixed order."""
    paths = [sample_root() / file for file in source_spec(name)["files"]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise SourceError(f"scikit-image is missing its bundled sample images: {', '.join(missing)}")
    return paths


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root)


def _tar_members(archive: Path, start: int, handle, key_prefix: str, label: str | None, exts: set[str]):
    handle.seek(start)
    with tarfile.open(fileobj=handle, mode="r:") as tar:
        for member in tar:
            if member.isfile() and Path(member.name).suffix.lower() in exts:
                yield SourceItem(f"{key_prefix}/{member.name}", str(archive), member.offset_data, member.size, label)


def _archive_items(path: Path, key: str, archive: str, label_rule: str, exts: set[str]) -> list[SourceItem]:
    items = []
    with open_regular(path) as f:
        if archive == "tar":
            label = path.stem if label_rule == "archive" else None
            items.extend(_tar_members(path, 0, f, key, label, exts))
        else:  # tar-of-tars: the official ILSVRC2012 train archive holds one tar per class
            with tarfile.open(fileobj=f, mode="r:") as outer:
                inner = [m for m in outer if m.isfile() and m.name.endswith(".tar")]
            for m in inner:
                label = Path(m.name).stem if label_rule == "inner-archive" else None
                items.extend(_tar_members(path, m.offset_data, f, f"{key}/{m.name}", label, exts))
    return items


def _list_layouts(spec: dict, root: Path, split: str | None) -> Listing:
    exts = {e.lower() for e in spec["extensions"]}
    layouts = [lay for lay in spec["layouts"] if split is None or lay.get("split", split) == split]
    for layout in layouts:
        items, errors = [], []
        for path in sorted(root.glob(layout["glob"])):
            key = path.relative_to(root).as_posix()
            if path.is_dir() or (path.suffix.lower() not in exts and "archive" not in layout):
                continue
            if not _inside(path, root):
                errors.append((key, "symlink points outside the root"))
            elif problem := not_regular(path):
                errors.append((key, problem))
            elif "archive" in layout:
                try:
                    items.extend(_archive_items(path, key, layout["archive"], layout["label"], exts))
                except (OSError, tarfile.TarError) as err:
                    errors.append((key, f"unreadable archive ({err})"))
            else:
                items.append(
                    SourceItem(key, str(path), label=path.parent.name if layout["label"] == "parent" else None)
                )
        if items or errors:
            return Listing(items, errors, layout["name"])
    looked = ", ".join(lay["glob"] for lay in layouts)
    raise SourceError(f"no {spec['name']} images under {root} (looked for {looked})")


def _read_list_entries(list_file: Path, spec: dict) -> list[tuple[str, str | None]]:
    """(path, label) pairs from a .txt, .csv or .parquet list; SourceError if the file is malformed."""
    if not list_file.is_file():
        raise SourceError(f"list file {list_file} does not exist")
    try:
        if list_file.suffix.lower() == ".txt":
            lines = list_file.read_text(encoding="utf-8").splitlines()
            return [(s, None) for s in (line.strip() for line in lines) if s and not s.startswith("#")]
        if list_file.suffix.lower() == ".parquet":
            rows, columns = _parquet_rows(list_file)
        elif list_file.suffix.lower() == ".csv":
            with open(list_file, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                rows, columns = list(reader), reader.fieldnames or []
        else:
            raise SourceError(f"list file {list_file} must end in .txt, .csv or .parquet")
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        raise _malformed(list_file, err) from None
    path_col = next((c for c in spec["path_columns"] if c in columns), None)
    if path_col is None:
        raise SourceError(f"list file {list_file} has no path column (one of {spec['path_columns']}; found {columns})")
    label_col = next((c for c in spec["label_columns"] if c in columns), None)
    entries = []
    for i, row in enumerate(rows, start=1):
        if row[path_col] is not None and not isinstance(row[path_col], str):
            raise SourceError(
                f"list file {list_file}: row {i}'s path is a {type(row[path_col]).__name__} "
                f"({row[path_col]!r}), not text"
            )
        if not isinstance(row[path_col], str) or not row[path_col].strip():
            raise SourceError(f"list file {list_file}: row {i} has no path")
        entries.append(
            (row[path_col].strip(), str(row[label_col]) if label_col and row[label_col] is not None else None)
        )
    return entries


def _parquet_rows(list_file: Path) -> tuple[list[dict], list[str]]:
    """A Parquet list's rows and column names."""
    import pyarrow as pa  # here, not at the top: the command line's options need none of it
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(list_file).to_pylist()
        return rows, list(rows[0]) if rows else pq.read_schema(list_file).names
    except pa.ArrowException as err:
        raise _malformed(list_file, err) from None


def _malformed(list_file: Path, err: Exception) -> SourceError:
    return SourceError(f"list file {list_file} is malformed ({type(err).__name__}: {err})")


def _list_file(spec: dict, root: Path, list_file: Path) -> Listing:
    items, errors, seen = [], [], set()
    for entry, label in _read_list_entries(list_file, spec):
        if "\x00" in entry:
            errors.append((entry.replace("\x00", "\\0"), "path contains a NUL byte"))
            continue
        path = Path(os.path.normpath(root / entry))  # an absolute entry replaces root; ".." is folded
        if not path.is_relative_to(root) or not _inside(path, root):
            errors.append((entry, "path escapes the root"))
            continue
        key = path.relative_to(root).as_posix()
        if key in seen:
            errors.append((entry, "listed twice"))
        elif problem := not_regular(path):
            errors.append((key, problem))
        else:
            seen.add(key)
            items.append(SourceItem(key, str(path), label=label))
    return Listing(sorted(items, key=lambda it: it.key), errors, "list")


SELECTION_COLUMNS = ("kadis", "source_image", "image", "filename", "path")


def read_selection(spec: str) -> list[str]:
    """Image names of a selection: ``authors`` (the 50,000 KADIS-700k images of the authors' SAQT-IQA), a .txt
    file (one name a line) or a .csv file (column kadis, source_image, image, filename or path)."""
    if spec == "authors":
        from saqt.build.authors import selection

        return selection()
    path = Path(spec)
    if not path.is_file():
        raise SourceError(f"--selection {spec}: neither 'authors' nor an existing .txt or .csv file")
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                column = next((c for c in SELECTION_COLUMNS if c in (reader.fieldnames or [])), None)
                if column is None:
                    raise SourceError(f"--selection {spec} has no name column (one of {', '.join(SELECTION_COLUMNS)})")
                names = [row[column].strip() for row in reader]
        else:
            names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (UnicodeDecodeError, csv.Error) as err:
        raise SourceError(f"--selection {spec} is malformed ({err})") from None
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise SourceError(f"--selection {spec} names no images")
    return names


def _select_names(listing: Listing, names: list[str], root: Path) -> Listing:
    """The listed images named in ``names`` (by key or by file name); each name not found is an error."""
    wanted = dict.fromkeys(names)
    by_name: dict[str, list[SourceItem]] = defaultdict(list)
    for item in listing.items:
        by_name[item.key].append(item)
        if Path(item.key).name != item.key:
            by_name[Path(item.key).name].append(item)
    items, errors, seen = [], list(listing.errors), set()
    for name in wanted:
        found = by_name.get(name, [])
        if not found:
            errors.append((name, f"not found under --root (listed in the selection; root {root})"))
        elif len(found) > 1:
            errors.append((name, f"ambiguous name ({len(found)} files of that name match the selection)"))
        elif found[0].key not in seen:
            seen.add(found[0].key)
            items.append(found[0])
    return Listing(sorted(items, key=lambda it: it.key), errors, f"{listing.layout}+selection")


def list_source(
    name: str,
    root: Path | None = None,
    list_file: Path | None = None,
    split: str | None = None,
    selection: list[str] | None = None,
) -> Listing:
    """List the images of source ``name`` under ``root`` (only those named in ``selection`` when given);
    SourceError for a bad source, root or list file."""
    spec = source_spec(name)
    if spec["kind"] == "sample":
        listing = Listing([SourceItem(p.name, str(p)) for p in sample_paths(name)], [], "sample")
        return _select_names(listing, selection, Path("the sample")) if selection else listing
    if root is None:
        raise SourceError(f"source {name!r} needs --root")
    root = Path(root).resolve()
    if not root.is_dir():
        raise SourceError(f"--root {root} is not a directory")
    if spec["kind"] == "list":
        if list_file is None:
            raise SourceError("source 'list' needs --list FILE")
        listing = _list_file(spec, root, Path(list_file))
    else:
        try:
            listing = _list_layouts(spec, root, split)
        except SourceError:
            if not selection:
                raise
            listing = Listing([], [], "none")  # every selected image is then reported missing
    return _select_names(listing, selection, root) if selection else listing


def rank(seed: int, item: SourceItem) -> int:
    """An image's place in the seeded selection order; it depends only on (seed, key)."""
    return derive_seed(seed, "select", item.key)


class Quota:
    """How many images a selection still takes: at most ``limit`` in all and ``per_class`` of each class."""

    def __init__(self, items: list[SourceItem], limit: int | None = None, per_class: int | None = None):
        if per_class is not None and any(it.label is None for it in items):
            raise SourceError("--per-class needs class labels, and this source has none for some images")
        self.limit, self.per_class = limit, per_class
        self.taken: Counter = Counter()
        self.classes = {it.label for it in items}

    def open_for(self, item: SourceItem) -> bool:
        """Whether ``item``'s class still takes images (the total limit aside)."""
        return self.per_class is None or self.taken[item.label] < self.per_class

    def take(self, item: SourceItem) -> None:
        """Count ``item`` as selected."""
        self.taken[item.label] += 1

    @property
    def full(self) -> bool:
        """Whether no further image can be taken."""
        total = sum(self.taken.values())
        if self.limit is not None and total >= self.limit:
            return True
        return self.per_class is not None and all(self.taken[c] >= self.per_class for c in self.classes)

    def wanted(self) -> int | None:
        """How many more images would fill the quota (None: no bound)."""
        per_class = (
            None if self.per_class is None else sum(max(0, self.per_class - self.taken[c]) for c in self.classes)
        )
        left = None if self.limit is None else self.limit - sum(self.taken.values())
        return min(v for v in (per_class, left) if v is not None) if per_class is not None or left is not None else None

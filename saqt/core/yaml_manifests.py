"""The YAML manifests shipped in the ``manifests`` package: sources, banks, datasets, the distortion catalogue and
the fetchable datasets. Only files listed there are read: a name never leaves its folder."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import yaml

from saqt.core.errors import SaqtError


def manifest_text(path: str) -> str:
    """The text of ``manifests/<path>``."""
    return files("manifests").joinpath(path).read_text()


def manifest_names(folder: str) -> list[str]:
    """Names of the manifests in ``manifests/<folder>/``, sorted, without ``.yaml``."""
    return sorted(
        p.name.removesuffix(".yaml") for p in files("manifests").joinpath(folder).iterdir() if p.name.endswith(".yaml")
    )


@cache
def read_catalogue(path: str) -> dict:
    """The parsed ``manifests/<path>`` (one object per path: callers must not change it)."""
    return yaml.safe_load(manifest_text(path))


def named_manifest(folder: str, name: str, error: type[SaqtError], what: str) -> dict:
    """The manifest ``name`` of ``manifests/<folder>/``; ``error`` naming the choices when there is none."""
    names = manifest_names(folder)
    if name not in names:
        raise error(f"unknown {what} {name!r}; choose one of: {', '.join(names)}")
    return read_catalogue(f"{folder}/{name}.yaml")

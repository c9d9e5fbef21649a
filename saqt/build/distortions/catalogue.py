"""The distortion catalogue: the 25 types and their level parameters, read from the manifest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral

from saqt.core.yaml_manifests import manifest_text, read_catalogue

MANIFEST = "distortions/kadid10k.yaml"
FIDELITY = ("exact", "replay", "distribution", "approximation")


@dataclass(frozen=True)
class DistortionSpec:
    """One distortion type: its KADID-10k id, name, group, level parameter and the 5 level values."""

    id: int
    name: str
    group: str
    parameter: str
    values: tuple[float, ...]
    random: str | None
    fidelity: str
    notes: str = ""

    def value(self, level: int) -> float:
        """The parameter value of ``level`` (1..5)."""
        return self.values[check_level(level) - 1]


def _check_int(value: int, name: str, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or not 1 <= value <= hi:
        raise ValueError(f"{name} must be an integer in 1..{hi}, got {value!r}")
    return int(value)


def check_type(dist_type: int) -> int:
    """Return ``dist_type`` as an int if it is a valid type id (1..25), else raise ValueError."""
    return _check_int(dist_type, "dist_type", 25)


def check_level(level: int) -> int:
    """Return ``level`` as an int if it is a valid level (1..5), else raise ValueError."""
    return _check_int(level, "level", 5)


@lru_cache(maxsize=1)
def catalogue() -> tuple[DistortionSpec, ...]:
    """The 25 distortion types in id order."""
    data = read_catalogue(MANIFEST)
    specs = []
    for entry in data["types"]:
        spec = DistortionSpec(**{**entry, "values": tuple(float(v) for v in entry["values"])})
        if len(spec.values) != 5 or spec.fidelity not in FIDELITY:
            raise ValueError(f"{MANIFEST}: type {spec.id} needs 5 values and fidelity in {FIDELITY}")
        specs.append(spec)
    if [s.id for s in specs] != list(range(1, 26)):
        raise ValueError(f"{MANIFEST}: types must be 1..25 in order")
    return tuple(specs)


@lru_cache(maxsize=1)
def catalogue_identity() -> dict:
    """Which catalogue, its version and the SHA-256 of its manifest, as recorded in build provenance."""
    data, text = read_catalogue(MANIFEST), manifest_text(MANIFEST)
    return {"name": data["catalogue"], "version": data["version"], "sha256": hashlib.sha256(text.encode()).hexdigest()}


def spec(dist_type: int) -> DistortionSpec:
    """The catalogue entry of ``dist_type``."""
    return catalogue()[check_type(dist_type) - 1]

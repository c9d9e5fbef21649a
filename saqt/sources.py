"""Pristine image sources. For now: the bundled sample of public-domain colour photos."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# Colour photographs that ship with scikit-image (public domain / CC0; see skimage/data/README.txt).
SAMPLE_IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


def sample_paths() -> list[Path]:
    """Paths of the bundled sample photos, in a fixed order."""
    data = files("skimage").joinpath("data")
    paths = [Path(str(data.joinpath(name))) for name in SAMPLE_IMAGES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"scikit-image is missing its bundled sample images: {', '.join(missing)}")
    return paths

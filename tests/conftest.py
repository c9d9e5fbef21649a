"""Shared fixtures: real images from scikit-image's bundled sample and, when present, ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saqt.images import decode_image
from saqt.sources import sample_paths

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden"


def needs_shared(path: Path) -> Path:
    """Skip the calling test, with the reason, when a ../shared resource is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent (the ../shared data folder is not beside this checkout)")
    return path


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real 512 x 384 colour photo: the centre of scikit-image's astronaut."""
    img = decode_image(sample_paths()[0])
    return np.ascontiguousarray(img[64:448, :512])

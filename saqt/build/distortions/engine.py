"""``distort``: one pristine image, one type and level, one seed, one distorted image."""

from __future__ import annotations

import numpy as np

from saqt.build.distortions.catalogue import check_level, spec
from saqt.build.distortions.prepared import PreparedImage, quantised_output
from saqt.build.distortions.registry import RENDERERS


def _prepared(image: np.ndarray | PreparedImage) -> PreparedImage:
    return image if isinstance(image, PreparedImage) else PreparedImage(image)


def random_params(dist_type: int, level: int, shape: tuple[int, int], seed: int = 0) -> dict:
    """The parameters ``distort`` draws for this cell (angle, direction, patches, blocks); ``{}`` for the others."""
    renderer = RENDERERS[spec(dist_type).id]
    check_level(level)
    if renderer.draw is None:
        return {}
    return renderer.draw(np.random.default_rng(seed), shape, spec(dist_type).value(level))


def distort(
    image: np.ndarray | PreparedImage,
    dist_type: int,
    level: int,
    seed: int = 0,
    params: dict | None = None,
) -> np.ndarray:
    """Distort a uint8 H x W x 3 RGB image with KADID-10k type ``dist_type`` (1..25) at ``level`` (1..5).

    Random draws come only from ``numpy.random.default_rng(seed)``. ``params`` replays recorded
    draws instead (types 3, 5, 20, 23; see :func:`random_params`). Returns uint8 H x W x 3.
    """
    entry = spec(dist_type)
    value = entry.value(level)
    src = _prepared(image)
    renderer = RENDERERS[entry.id]
    if params is not None and renderer.draw is None:
        raise ValueError(f"type {entry.id} ({entry.name}) has no replayable parameters")
    if src.constant:
        return src.u8.copy()
    if renderer.draw is not None:
        drawn = params if params is not None else renderer.draw(np.random.default_rng(seed), src.shape, value)
        result = renderer.apply(src, value, drawn)
    elif renderer.noise:
        result = renderer.apply(src, value, np.random.default_rng(seed))
    else:
        result = renderer.apply(src, value)
    return quantised_output(result)

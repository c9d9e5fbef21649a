"""The table from KADID-10k type id to the function that renders it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

RENDERERS: dict[int, Renderer] = {}


@dataclass(frozen=True)
class Renderer:
    """How a type renders.

    ``apply(src, value)`` for deterministic types; ``apply(src, value, params)`` with
    ``draw(rng, (h, w), value) -> params`` for types whose random draws are a few replayable
    parameters; ``apply(src, value, rng)`` for types that draw per-pixel noise.
    """

    apply: Callable
    draw: Callable | None = None
    noise: bool = False


def renderer(type_id: int, *, draw: Callable | None = None, noise: bool = False) -> Callable:
    """Register the decorated function as the renderer of ``type_id``."""

    def register(fn: Callable) -> Callable:
        if type_id in RENDERERS:
            raise RuntimeError(f"distortion type {type_id} registered twice")
        RENDERERS[type_id] = Renderer(fn, draw, noise)
        return fn

    return register

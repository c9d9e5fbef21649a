"""One pristine source image: read, screened, and canonicalised to the working size.

The screen's header checks (size, upscaling, JPEG quality, and colour where the mode alone proves greyscale)
are made on the opened file before its pixels are decoded: most refused candidates are never decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saqt.build.screen import Screen, is_grey, lossy_encoding, quality_of
from saqt.build.sources import SourceItem
from saqt.core.images import (
    GREY_MODES,
    ImageDecodeError,
    canonicalise,
    content_id,
    open_image,
    oriented_size,
    rgb_pixels,
)


@dataclass(frozen=True)
class Pristine:
    """A canonical pristine image, its content id and what the original was."""

    pristine_id: str
    image: np.ndarray
    orig_width: int
    orig_height: int
    jpeg_quality: int | None


def _decode_screened(
    data: bytes, size: tuple[int, int], screen: Screen, max_pixels: int
) -> tuple[np.ndarray, int | None, str | None]:
    """(RGB pixels, JPEG quality, other lossy encoding) of a candidate that passes what its header decides;
    ImageDecodeError otherwise."""
    with open_image(data, max_pixels) as img:
        quality, lossy = quality_of(img), lossy_encoding(img, data)
        header = oriented_size(img, data)
        if header and (
            reason := screen.reason_to_reject(*header, quality, size, lambda: img.mode in GREY_MODES, lossy)
        ):
            raise ImageDecodeError(reason)
        return rgb_pixels(img), quality, lossy


def prepare_pristine(item: SourceItem, size: tuple[int, int], screen: Screen, max_pixels: int) -> Pristine:
    """Read, screen and canonicalise ``item`` (see the module docstring); ImageDecodeError (message without the
    key) to skip it."""
    try:
        data = item.read_bytes()
    except OSError as err:
        raise ImageDecodeError(f"cannot read ({err.strerror or err})") from None
    try:
        image, quality, lossy = _decode_screened(data, size, screen, max_pixels)
    except ImageDecodeError as err:
        raise ImageDecodeError(str(err).removeprefix("<bytes>: ")) from None
    height, width = image.shape[:2]
    reason = screen.reason_to_reject(width, height, quality, size, lambda: is_grey(image), lossy)
    if reason:
        raise ImageDecodeError(reason)
    canon = canonicalise(image, size)
    return Pristine(content_id(canon), canon, width, height, quality)

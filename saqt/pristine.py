"""One pristine source image: read, screened, and canonicalised to the working size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saqt.images import ImageDecodeError, canonicalise, content_id, decode_image
from saqt.screen import Screen, jpeg_quality
from saqt.sources import SourceItem


@dataclass(frozen=True)
class Pristine:
    """A canonical pristine image, its content id and what the original was."""

    pristine_id: str
    image: np.ndarray
    orig_width: int
    orig_height: int
    jpeg_quality: int | None


def prepare_pristine(item: SourceItem, size: tuple[int, int], screen: Screen, max_pixels: int) -> Pristine:
    """Read, decode, screen and canonicalise ``item``; ImageDecodeError (message without the key) to skip it."""
    try:
        data = item.read_bytes()
    except OSError as err:
        raise ImageDecodeError(f"cannot read ({err.strerror or err})") from None
    try:
        image = decode_image(data, max_pixels)
    except ImageDecodeError as err:
        raise ImageDecodeError(str(err).removeprefix("<bytes>: ")) from None
    reason = screen.reason_to_reject(data, image, size)
    if reason:
        raise ImageDecodeError(reason)
    canon = canonicalise(image, size)
    return Pristine(content_id(canon), canon, image.shape[1], image.shape[0], jpeg_quality(data))

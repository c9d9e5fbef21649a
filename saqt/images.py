"""Decode image files into uint8 RGB arrays, refusing what cannot be decoded safely."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000  # decompression-bomb guard: 8000 x 8000


class ImageDecodeError(ValueError):
    """An input that cannot be turned into an RGB image; the message is one line naming the reason."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: high bit depths scaled, transparency composited onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(np.floor(a / scale * 255.0 + 0.5), 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a file path or encoded bytes to uint8 H x W x 3 RGB, EXIF orientation applied.

    Greyscale, palette, CMYK and 16-bit inputs are converted; alpha is composited onto white.
    Raises ImageDecodeError for unreadable, truncated, non-image or over-large (> max_pixels) input.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageDecodeError(f"{name}: {w}x{h} exceeds the {max_pixels}-pixel limit")
                img.load()
                return np.asarray(_to_rgb(ImageOps.exif_transpose(img)))
    except ImageDecodeError:
        raise
    except (FileNotFoundError, IsADirectoryError):
        raise ImageDecodeError(f"{name}: no such file") from None
    except PermissionError:
        raise ImageDecodeError(f"{name}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(
            f"{name}: exceeds Pillow's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS} pixels)"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"{name}: cannot decode ({err})") from None


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 RGB array."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()

"""Decode image files into uint8 RGB arrays, refusing what cannot be decoded safely."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

import deflate
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from saqt.core.errors import SaqtError

DEFAULT_MAX_PIXELS = 64_000_000  # decompression-bomb guard: 8000 x 8000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_METADATA = (b"eXIf", b"tEXt", b"zTXt", b"iTXt")
HEADER_FORMATS = ("JPEG", "PNG", "WEBP")  # formats whose mode, size and orientation are final once opened
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")  # modes that to_rgb makes equal in R, G, B
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that ImageOps.exif_transpose turns by 90 degrees


class ImageDecodeError(SaqtError, ValueError):
    """An input that cannot be turned into an RGB image; the message is one line naming the reason."""


def to_rgb(img: Image.Image) -> Image.Image:
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


class NotRegularFile(OSError):
    """A path that is not a regular file (a FIFO, socket or device): never opened for reading, as reading it could
    block or never end."""


def not_regular(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a file (missing, a folder, a FIFO, socket or device), or None for a regular
    file (or a link to one). Only ``stat``: nothing is opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return "no such file" if isinstance(err, FileNotFoundError) else f"cannot read ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "a device")
    return f"{kind}, not a regular file: never read"


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file; NotRegularFile otherwise. The file is opened
    without blocking and checked before any read, so a FIFO or device swapped in after a listing is refused too."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno != errno.ENXIO:  # ENXIO: a socket, or a device with nothing behind it
            raise
        raise NotRegularFile(not_regular(path) or "not a regular file: never read") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(not_regular(path) or "not a regular file: never read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def open_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Image.Image]:
    """Open a file path (a regular file only: see ``open_regular``) or encoded bytes lazily (Pillow reads the
    header only), refusing over-large input.

    Errors from opening, and from decoding inside the ``with`` block, become ImageDecodeError naming the source
    ("<bytes>" for bytes): unreadable, truncated, non-image or over-large (> max_pixels) input.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings(), ExitStack() as files:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            f = io.BytesIO(source) if isinstance(source, bytes) else files.enter_context(open_regular(source))
            with Image.open(f) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageDecodeError(f"{name}: {w}x{h} exceeds the {max_pixels}-pixel limit")
                yield img
    except ImageDecodeError:
        raise
    except NotRegularFile as err:
        raise ImageDecodeError(f"{name}: {err}") from None
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


def rgb_pixels(img: Image.Image) -> np.ndarray:
    """Decode an opened image to uint8 H x W x 3 RGB, EXIF orientation applied (inside ``open_image``)."""
    img.load()
    return np.asarray(to_rgb(ImageOps.exif_transpose(img)))


def decode_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a file path or encoded bytes to uint8 H x W x 3 RGB, EXIF orientation applied.

    Greyscale, palette, CMYK and 16-bit inputs are converted; alpha is composited onto white.
    Raises ImageDecodeError for unreadable, truncated, non-image or over-large (> max_pixels) input.
    """
    with open_image(source, max_pixels) as img:
        return rgb_pixels(img)


def decode_as_released(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode as the official GlintIQA release reads its images, ``Image.open(path).convert("RGB")``: no EXIF
    orientation (pixels as stored), Pillow's own conversion (alpha dropped, not composited). Refuses what
    ``decode_image`` refuses."""
    with open_image(source, max_pixels) as img:
        img.load()
        return np.asarray(img.convert("RGB"))


def _png_metadata_after_idat(data: bytes) -> bool:
    """Whether a PNG may hold EXIF or text (where Pillow also looks for EXIF and XMP orientation) after its
    first IDAT chunk, which Pillow only reads when decoding; True too for a chunk list that cannot be walked."""
    pos, seen_idat = len(_PNG_SIGNATURE), False
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IEND":
            return False
        seen_idat = seen_idat or kind == b"IDAT"
        if seen_idat and kind in _PNG_METADATA:
            return True
        pos += length + 12
    return True


def oriented_size(img: Image.Image, data: bytes) -> tuple[int, int] | None:
    """(width, height) of the opened image ``img`` (encoded as ``data``) once decoded and EXIF-oriented, known
    without decoding; None where only decoding can tell (a format not checked, PNG metadata after the pixels)."""
    if img.format not in HEADER_FORMATS or (img.format == "PNG" and _png_metadata_after_idat(data)):
        return None
    # Pillow's PNG getexif decodes the image to find an eXIf chunk after IDAT; there is none, so read what
    # opening found, as the base method does. JPEG and WebP metadata are all read when opening.
    orientation = Image.Image.getexif(img).get(ExifTags.Base.Orientation, 1)
    w, h = img.size
    return (h, w) if orientation in _SWAPPING_ORIENTATIONS else (w, h)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: np.ndarray) -> bytes:
    """Lossless 8-bit RGB PNG of a uint8 H x W x 3 array.

    Every row uses PNG's Up filter and the stream is deflated by libdeflate at level 1: for photos this
    is as small as libpng's best fast setting at about 60% of its time (the build's main cost after
    the distortions themselves).
    """
    h, w = image.shape[:2]
    raw = np.ascontiguousarray(image, dtype=np.uint8).reshape(h, w * 3)
    rows = np.empty((h, w * 3 + 1), np.uint8)
    rows[:, 0] = 2  # filter type Up: each byte minus the byte above it (the row above the first is zero)
    rows[0, 1:] = raw[0]
    np.subtract(raw[1:], raw[:-1], out=rows[1:, 1:])
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = deflate.zlib_compress(rows.tobytes(), 1)
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def canonicalise(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (Lanczos) so the image covers ``size`` = (width, height), then crop the centre to exactly that."""
    width, height = size
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    if (nw, nh) != (w, h):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.LANCZOS))
    top, left = (nh - height) // 2, (nw - width) // 2
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def content_id(image: np.ndarray) -> str:
    """A stable id from the pixels: the same image gets the same id on every machine."""
    digest = hashlib.sha256(np.asarray(image.shape, dtype=np.int64).tobytes() + image.tobytes())
    return digest.hexdigest()[:20]

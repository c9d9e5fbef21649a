"""Decoding real and malformed image files into RGB arrays."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from saqt.core.images import ImageDecodeError, decode_image, encode_png


def save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_grey_palette_and_cmyk_become_rgb(tmp_path, photo):
    rgb = Image.fromarray(photo)
    grey = decode_image(save(rgb.convert("L"), tmp_path / "g.png"))
    assert grey.shape == photo.shape and np.array_equal(grey[..., 0], grey[..., 2])
    assert decode_image(save(rgb.convert("P"), tmp_path / "p.png")).shape == photo.shape
    cmyk = decode_image(save(rgb.convert("CMYK"), tmp_path / "c.jpg", quality=95))
    assert cmyk.shape == photo.shape and np.abs(cmyk.astype(int) - photo).mean() < 8


def test_alpha_is_composited_onto_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red-ish, bottom half transparent
    out = decode_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    assert out[0, 0].tolist() == [200, 0, 0] and out[7, 7].tolist() == [255, 255, 255]


def test_sixteen_bit_grey_is_scaled_to_eight_bits(tmp_path):
    a = np.array([[0, 257 * 128, 65535]], dtype=np.uint16).repeat(4, axis=0)
    out = decode_image(save(Image.fromarray(a), tmp_path / "d.png"))
    assert out[0, :, 0].tolist() == [0, 128, 255]
    bgr = np.zeros((4, 3, 3), np.uint16)
    bgr[..., 2] = [0, 32896, 65535]  # 16-bit RGB PNG written by OpenCV (BGR order)
    cv2.imwrite(str(tmp_path / "rgb16.png"), bgr)
    assert decode_image(tmp_path / "rgb16.png")[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path, photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = save(Image.fromarray(photo), tmp_path / "o.jpg", exif=exif.tobytes())
    assert decode_image(path).shape == (photo.shape[1], photo.shape[0], 3)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def truncated_jpeg(photo) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: png_header_only(20000, 20000), "exceeds .*decompression-bomb limit"),
        (lambda p: png_header_only(9000, 9000), "9000x9000 exceeds the 64000000-pixel limit"),
        (truncated_jpeg, "cannot decode"),
        (lambda p: b"", "not a recognised image format"),
        (lambda p: b"hello, I am text\n", "not a recognised image format"),
    ],
)
def test_bad_files_raise_one_line_reasons(tmp_path, photo, make, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(make(photo))
    with pytest.raises(ImageDecodeError, match=reason) as err:
        decode_image(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_file_and_bytes_input(tmp_path, photo):
    with pytest.raises(ImageDecodeError, match="no such file"):
        decode_image(tmp_path / "absent.png")
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    np.testing.assert_array_equal(decode_image(buf.getvalue()), photo)


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (384, 512, 3)])
def test_png_encoding_is_lossless_for_standard_decoders(shape, photo):
    image = photo[: shape[0], : shape[1]].copy()
    image[0, 0] = [255, 0, 255]
    data = encode_png(image)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), image)
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1], image)
    assert encode_png(image) == data  # deterministic bytes

"""Image decoding, Sans-I/O: frame bytes in, an RGB picture out."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from .errors import ErrorCode, InputError

_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


def decode_image(
    data: bytes,
    fmt: str,
    max_pixels: int,
    min_side: int | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
    pixel_format: str | None = None,
) -> np.ndarray:
    """Decode an image to RGB uint8 pixels (height, width, 3), checking its size before decoding.

    ``fmt`` is jpeg, png, webp or raw; raw pixels come with ``width``, ``height`` and ``pixel_format``.

    With ``min_side``, a JPEG much larger than that is decoded at a reduced scale (libjpeg scales by
    1/2, 1/4 or 1/8 while decoding), never below twice ``min_side`` on its shorter side.
    """
    if fmt == "raw":
        if width is None or height is None or pixel_format not in ("rgb24", "bgr24"):
            raise InputError(ErrorCode.BAD_FIELD, "raw pixels need width, height and pixel_format (rgb24, bgr24)")
        return _decode_raw(data, width, height, pixel_format, max_pixels)
    if fmt not in _PIL_FORMATS:
        raise InputError(ErrorCode.BAD_FIELD, f"unknown image format {fmt!r}")
    try:
        with warnings.catch_warnings():
            # Pillow warns, then errors, on bombs; our own pixel limit below is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
            pixels = image.size[0] * image.size[1]
            if pixels > max_pixels:
                raise InputError(
                    ErrorCode.TOO_LARGE,
                    f"image is {image.size[0]}x{image.size[1]} = {pixels} pixels; the limit is {max_pixels}",
                )
            if min_side and fmt == "jpeg":
                image.draft("RGB", (2 * min_side, 2 * min_side))
            return np.asarray(image.convert("RGB"))
    except InputError:
        raise
    except Image.UnidentifiedImageError:  # its message names the in-memory file object: not for clients
        raise InputError(ErrorCode.BAD_IMAGE, f"cannot decode {fmt} image: not a {fmt} image") from None
    except Exception as exc:  # untrusted bytes: any failure inside the decoder means "cannot decode"
        raise InputError(ErrorCode.BAD_IMAGE, f"cannot decode {fmt} image: {exc}") from exc


def _decode_raw(data: bytes, width: int, height: int, pixel_format: str, max_pixels: int) -> np.ndarray:
    pixels = width * height
    if pixels > max_pixels:
        raise InputError(ErrorCode.TOO_LARGE, f"raw image has {pixels} pixels; the limit is {max_pixels}")
    expected = pixels * 3
    if len(data) != expected:
        raise InputError(
            ErrorCode.BAD_IMAGE, f"raw {pixel_format} {width}x{height} needs {expected} bytes, got {len(data)}"
        )
    array = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    if pixel_format == "bgr24":
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)


def sniff_image_format(data: bytes) -> str | None:
    """The protocol's name for an encoded image's format, from its first bytes."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None

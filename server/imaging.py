"""Image decoding, Sans-I/O: frame bytes in, an RGB picture out."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from .protocol import ErrorCode, Frame, ProtocolError

_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


def decode_frame(frame: Frame, max_pixels: int, min_side: int | None = None) -> np.ndarray:
    """Decode a frame to RGB uint8 pixels (height, width, 3), checking its size before decoding.

    With ``min_side``, a JPEG much larger than that is decoded at a reduced scale (libjpeg scales by
    1/2, 1/4 or 1/8 while decoding), never below twice ``min_side`` on its shorter side.
    """
    if frame.format == "raw":
        return _decode_raw(frame, max_pixels)
    try:
        with warnings.catch_warnings():
            # Pillow warns, then errors, on bombs; our own pixel limit below is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(frame.data), formats=[_PIL_FORMATS[frame.format]])
            width, height = image.size
            if width * height > max_pixels:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE,
                    f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                    frame.seq,
                )
            if min_side and frame.format == "jpeg":
                image.draft("RGB", (2 * min_side, 2 * min_side))
            return np.asarray(image.convert("RGB"))
    except ProtocolError:
        raise
    except Exception as exc:  # untrusted bytes: any failure inside the decoder means "cannot decode"
        raise ProtocolError(ErrorCode.BAD_IMAGE, f"cannot decode {frame.format} image: {exc}", frame.seq) from exc


def _decode_raw(frame: Frame, max_pixels: int) -> np.ndarray:
    assert frame.width is not None and frame.height is not None
    pixels = frame.width * frame.height
    if pixels > max_pixels:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"raw image has {pixels} pixels; the limit is {max_pixels}", frame.seq)
    expected = pixels * 3
    if len(frame.data) != expected:
        raise ProtocolError(
            ErrorCode.BAD_IMAGE,
            f"raw {frame.pixel_format} {frame.width}x{frame.height} needs {expected} bytes, got {len(frame.data)}",
            frame.seq,
        )
    array = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, 3)
    if frame.pixel_format == "bgr24":
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

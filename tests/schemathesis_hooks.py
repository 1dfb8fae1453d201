"""Schemathesis hooks for tests/test_openapi.py: what a valid body of each media type looks like.

The schema can only say "binary" for an upload; the server decodes it, so random bytes are rightly refused
(400). These strategies give schemathesis real files of each type the schema lists, so its positive tests
send what a client would. Its negative tests are untouched: they still break every parameter, the JSON
body and the multipart form (a raw body has no negative form: schemathesis always takes it from here).
"""

from __future__ import annotations

import io
from typing import Any

import msgpack
import numpy as np
import schemathesis
import soundfile
from hypothesis import strategies as st
from PIL import Image


def _image(fmt: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (180, 90, 40)).save(buffer, fmt)
    return buffer.getvalue()


def _sound(fmt: str, subtype: str | None, seconds: float) -> bytes:
    rate = 16000
    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


for media, fmt in (("image/jpeg", "JPEG"), ("image/png", "PNG"), ("image/webp", "WEBP")):
    schemathesis.openapi.media_type(media, st.sampled_from([_image(fmt, (64, 48)), _image(fmt, (1, 1))]))
schemathesis.openapi.media_type("audio/wav", st.just(_sound("WAV", "PCM_16", 1.0)))
schemathesis.openapi.media_type("audio/flac", st.just(_sound("FLAC", None, 1.0)))
schemathesis.openapi.media_type("audio/ogg", st.just(_sound("OGG", "VORBIS", 1.0)))
# Without `sample_rate` an untyped body is whatever file it is; with it, raw PCM (map_case below).
schemathesis.openapi.media_type("application/octet-stream", st.just(_sound("WAV", "PCM_16", 1.0)))


@schemathesis.deserializer("application/msgpack")
def msgpack_body(context: Any, response: Any) -> Any:
    """The API answers msgpack to ``Accept: application/msgpack``; read it, so its schema is checked too."""
    return msgpack.unpackb(response.content)


_SAMPLE_BYTES = {"int16": 2, "float32": 4}


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """Raw PCM comes in whole frames of the request's own ``channels`` and ``dtype`` (1 to 32 channels, 2 or 4
    bytes a sample), which no single body can be for every choice: give a raw PCM case whole frames of silence.
    Only the body changes (raw bodies always come from the strategies above, in negative cases too), so every
    violation a case carries is sent as generated."""
    query = case.query or {}
    channels, dtype = query.get("channels", 1), query.get("dtype", "int16")
    if (
        case.media_type != "application/octet-stream"
        or query.get("sample_rate") is None
        or not isinstance(channels, int)
        or dtype not in _SAMPLE_BYTES
    ):
        return case
    case.body = bytes(1600 * max(1, min(channels, 32)) * _SAMPLE_BYTES[dtype])
    return case

"""Protocol v1, Sans-I/O: bytes in, typed messages out, and back.

Every WebSocket message is one binary msgpack map with a string ``type``. Nothing
here touches a socket, a model or a clock; docs/protocol.md is the contract.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgpack
import numpy as np

from .errors import ErrorCode, InputError

PROTOCOL_VERSION = 1

ImageFormat = Literal["jpeg", "png", "webp", "raw"]
PixelFormat = Literal["rgb24", "bgr24"]
SampleType = Literal["int16", "float32"]
Modality = Literal["image", "audio"]

IMAGE_FORMATS: tuple[str, ...] = ("jpeg", "png", "webp", "raw")
PIXEL_FORMATS: tuple[str, ...] = ("rgb24", "bgr24")
SAMPLE_TYPES: tuple[str, ...] = ("int16", "float32")
MODALITIES: tuple[str, ...] = ("image", "audio")
MAX_STREAM_NAME = 64
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class Frame:
    stream: str
    seq: int
    ts: float
    format: ImageFormat
    data: bytes
    width: int | None = None
    height: int | None = None
    pixel_format: PixelFormat | None = None


@dataclass(frozen=True)
class AudioChunk:
    stream: str
    seq: int
    ts: float
    sample_rate: int
    channels: int
    dtype: SampleType
    data: bytes


@dataclass(frozen=True)
class End:
    """The client will send no more input on this stream: audio classifies the hop it has begun."""

    modality: Modality
    stream: str
    seq: int | None


@dataclass(frozen=True)
class Config:
    top_k: int | None
    min_score: float | None
    embeddings: bool | None = None  # None: keep the connection's current choice


@dataclass(frozen=True)
class Ping:
    ts: float | None


@dataclass(frozen=True)
class Watch:
    """Receive other connections' results, events and thumbnails: of every stream, or of those named."""

    streams: frozenset[str] | None  # None: every stream
    token: str | None


@dataclass(frozen=True)
class Unwatch:
    pass


ClientMessage = Frame | AudioChunk | End | Config | Ping | Watch | Unwatch
MAX_WATCHED_NAMES = 64


def input_of(message: ClientMessage) -> tuple[Modality | None, str | None, int | None]:
    """The modality, stream and seq a message is about, for an error that answers it."""
    if isinstance(message, Frame):
        return "image", message.stream, message.seq
    if isinstance(message, AudioChunk):
        return "audio", message.stream, message.seq
    if isinstance(message, End):
        return message.modality, message.stream, message.seq
    return None, None, None


# --- decoding ---------------------------------------------------------------


def decode_client_message(data: bytes) -> ClientMessage:
    """Parse one binary WebSocket message from a client, or raise InputError."""
    try:
        obj = msgpack.unpackb(data, raw=False)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
        raise InputError(ErrorCode.BAD_MSGPACK, f"message is not valid msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise InputError(ErrorCode.BAD_MESSAGE, "message must be a msgpack map")
    seq = obj.get("seq") if _is_int(obj.get("seq")) else None
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise InputError(ErrorCode.BAD_MESSAGE, "message needs a string 'type'", seq)
    parser = _PARSERS.get(kind)
    if parser is None:
        known = ", ".join(sorted(_PARSERS))
        raise InputError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r} (known: {known})", seq)
    return parser(_Fields(obj, seq, _INPUT_MODALITY.get(kind)))


class _Fields:
    """Typed access to a message's fields; every failure names the field, and the input's stream when known."""

    def __init__(self, obj: dict[Any, Any], seq: int | None, modality: Modality | None) -> None:
        self.obj = obj
        self.seq = seq
        self.modality = modality
        stream = obj.get("stream", _DEFAULT_STREAM.get(modality or ""))
        self.stream_name = stream if isinstance(stream, str) and 0 < len(stream) <= MAX_STREAM_NAME else None

    def fail(self, message: str) -> InputError:
        return InputError(ErrorCode.BAD_FIELD, message, self.seq, modality=self.modality, stream=self.stream_name)

    def integer(self, key: str, *, default: int | None = None, low: int | None = None, high: int | None = None) -> int:
        value = self.obj.get(key, default)
        if not _is_int(value):
            raise self.fail(f"'{key}' must be an integer")
        assert isinstance(value, int)
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(f"'{key}' must be between {low} and {high}, got {value}")
        return value

    def optional_int(self, key: str) -> int | None:
        return None if self.obj.get(key) is None else self.integer(key)

    def number(self, key: str) -> float:
        value: Any = self.obj.get(key)
        if not _is_number(value) or not math.isfinite(value):
            raise self.fail(f"'{key}' must be a finite number")
        return float(value)

    def optional_float(self, key: str) -> float | None:
        return None if self.obj.get(key) is None else self.number(key)

    def optional_bool(self, key: str) -> bool | None:
        value = self.obj.get(key)
        if value is not None and not isinstance(value, bool):
            raise self.fail(f"'{key}' must be true or false, got {value!r}")
        return value

    def text(self, key: str, *, default: str | None = None) -> str:
        value = self.obj.get(key, default)
        if not isinstance(value, str):
            raise self.fail(f"'{key}' must be a string")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> Any:  # one of ``choices``, typed by the caller
        value = self.obj.get(key)
        if value not in choices:
            raise self.fail(f"'{key}' must be one of {', '.join(choices)}, got {value!r}")
        return value

    def binary(self, key: str) -> bytes:
        value = self.obj.get(key)
        if not isinstance(value, bytes):
            raise self.fail(f"'{key}' must be binary (msgpack bin)")
        if not value:
            raise self.fail(f"'{key}' is empty")
        return value

    def stream(self, default: str) -> str:
        name = self.text("stream", default=default)
        if not 0 < len(name) <= MAX_STREAM_NAME:
            raise self.fail(f"'stream' must be 1 to {MAX_STREAM_NAME} characters")
        return name


def _parse_frame(f: _Fields) -> Frame:
    stream = f.stream("camera")
    seq = f.integer("seq")
    ts = f.number("ts")
    fmt = f.choice("format", IMAGE_FORMATS)
    data = f.binary("data")
    if fmt != "raw":
        return Frame(stream, seq, ts, fmt, data)
    return Frame(
        stream,
        seq,
        ts,
        "raw",
        data,
        width=f.integer("width", low=1, high=1 << 16),
        height=f.integer("height", low=1, high=1 << 16),
        pixel_format=f.choice("pixel_format", PIXEL_FORMATS),
    )


def _parse_audio(f: _Fields) -> AudioChunk:
    return AudioChunk(
        stream=f.stream("mic"),
        seq=f.integer("seq"),
        ts=f.number("ts"),
        sample_rate=f.integer("sample_rate", low=1000, high=384_000),
        channels=f.integer("channels", low=1, high=32),
        dtype=f.choice("dtype", SAMPLE_TYPES),
        data=f.binary("data"),
    )


def _parse_end(f: _Fields) -> End:
    modality = f.choice("modality", MODALITIES)
    return End(modality=modality, stream=f.stream(_DEFAULT_STREAM[modality]), seq=f.optional_int("seq"))


def _parse_config(f: _Fields) -> Config:
    top_k = f.optional_int("top_k")  # its range is the server's limit: the session checks it
    min_score = f.optional_float("min_score")
    if min_score is not None and not 0.0 <= min_score <= 1.0:
        raise f.fail("'min_score' must be between 0 and 1")
    return Config(top_k=top_k, min_score=min_score, embeddings=f.optional_bool("embeddings"))


def _parse_ping(f: _Fields) -> Ping:
    return Ping(ts=f.optional_float("ts"))


def _parse_watch(f: _Fields) -> Watch:
    streams = f.obj.get("streams", "*")
    token = None if f.obj.get("token") is None else f.text("token")
    if streams == "*":
        return Watch(streams=None, token=token)
    if (
        not isinstance(streams, list)
        or not 0 < len(streams) <= MAX_WATCHED_NAMES
        or not all(isinstance(name, str) and 0 < len(name) <= MAX_STREAM_NAME for name in streams)
    ):
        raise f.fail(f"'streams' must be \"*\" or a list of 1 to {MAX_WATCHED_NAMES} stream names")
    return Watch(streams=frozenset(streams), token=token)


_INPUT_MODALITY: dict[str, Modality] = {"frame": "image", "audio": "audio"}
_DEFAULT_STREAM = {"image": "camera", "audio": "mic"}
_PARSERS: dict[str, Callable[[_Fields], ClientMessage]] = {
    "frame": _parse_frame,
    "audio": _parse_audio,
    "end": _parse_end,
    "config": _parse_config,
    "ping": _parse_ping,
    "watch": _parse_watch,
    "unwatch": lambda f: Unwatch(),
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- encoding ---------------------------------------------------------------


def encode(message: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def welcome(server: str, modalities: dict[str, dict[str, Any]], limits: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "welcome",
        "protocol": PROTOCOL_VERSION,
        "server": server,
        "modalities": modalities,
        "limits": limits,
    }


def error(
    code: str, message: str, seq: int | None = None, *, modality: Modality | None = None, stream: str | None = None
) -> dict[str, Any]:
    """An ``error``; ``seq``, ``modality`` and ``stream`` when known, so a client frees the right slot."""
    msg: dict[str, Any] = {"type": "error", "code": code, "message": message}
    for key, value in (("seq", seq), ("modality", modality), ("stream", stream)):
        if value is not None:
            msg[key] = value
    return msg


def pong(ts: float | None, server_ts: float) -> dict[str, Any]:
    return {"type": "pong", "ts": ts, "server_ts": server_ts}


def ended(modality: Modality, stream: str) -> dict[str, Any]:
    """Every input of a stream the client ended has been answered."""
    return {"type": "ended", "modality": modality, "stream": stream}


def labels_changed(modality: Modality, version: int, count: int) -> dict[str, Any]:
    return {"type": "labels", "modality": modality, "version": version, "count": count}


def labels_error(modality: Modality, message: str) -> dict[str, Any]:
    return {"type": "labels_error", "modality": modality, "message": message}


def result(
    *,
    modality: Modality,
    stream: str,
    seq: int,
    ts: float,
    labels_version: int,
    top: list[dict[str, Any]],
    timings: dict[str, float],
    dropped: int,
    window_s: float | None = None,
    silent: bool = False,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "result",
        "modality": modality,
        "stream": stream,
        "seq": seq,
        "ts": ts,
        "labels_version": labels_version,
        "top": top,
        "timings": timings,
        "dropped": dropped,
    }
    if window_s is not None:
        msg["window_s"] = window_s
    if silent:
        msg["silent"] = True
    return msg


def embedding_fields(embedding: np.ndarray) -> dict[str, Any]:
    """A result's ``embedding`` (the unit vector as little-endian float32 bytes) and ``embedding_dim``."""
    vector = np.asarray(embedding, dtype="<f4").reshape(-1)
    return {"embedding": vector.tobytes(), "embedding_dim": int(vector.shape[0])}


def thumbnail(
    modality: Modality, stream: str, seq: int, ts: float, width: int, height: int, data: bytes
) -> dict[str, Any]:
    """A small JPEG of an image stream, for watchers."""
    return {
        "type": "thumbnail", "modality": modality, "stream": stream, "seq": seq, "ts": ts,
        "format": "jpeg", "width": width, "height": height, "data": data,
    }  # fmt: skip

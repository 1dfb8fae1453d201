import math
import struct

import msgpack
import numpy as np
import pytest

from server import protocol
from server.errors import ErrorCode, InputError
from server.protocol import AudioChunk, Config, Frame, Ping, decode_client_message


def packed(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def error_of(obj: object, raw: bytes | None = None) -> InputError:
    with pytest.raises(InputError) as info:
        decode_client_message(raw if raw is not None else packed(obj))
    return info.value


def test_frame_with_defaults_and_extra_keys_ignored():
    msg = decode_client_message(
        packed({"type": "frame", "seq": 3, "ts": 1.5, "format": "jpeg", "data": b"xx", "future": [1, 2]})
    )
    assert msg == Frame(stream="camera", seq=3, ts=1.5, format="jpeg", data=b"xx")


def test_raw_frame_needs_geometry():
    base = {"type": "frame", "seq": 1, "ts": 0, "format": "raw", "data": b"abc"}
    assert error_of(base).code == ErrorCode.BAD_FIELD
    msg = decode_client_message(packed({**base, "width": 1, "height": 1, "pixel_format": "bgr24"}))
    assert isinstance(msg, Frame) and (msg.width, msg.height, msg.pixel_format) == (1, 1, "bgr24")


def test_audio_chunk():
    msg = decode_client_message(
        packed(
            {
                "type": "audio",
                "seq": 9,
                "ts": 2,
                "sample_rate": 16000,
                "channels": 2,
                "dtype": "int16",
                "data": b"\0" * 8,
            }
        )
    )
    assert msg == AudioChunk("mic", 9, 2.0, 16000, 2, "int16", b"\0" * 8)


def test_config_and_ping():
    assert decode_client_message(packed({"type": "config", "top_k": 3})) == Config(top_k=3, min_score=None)
    assert decode_client_message(packed({"type": "ping", "ts": 5.0})) == Ping(ts=5.0)
    assert decode_client_message(packed({"type": "ping"})) == Ping(ts=None)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xc1", ErrorCode.BAD_MSGPACK),
        (b"\x93\x01", ErrorCode.BAD_MSGPACK),
        (packed([1, 2, 3]), ErrorCode.BAD_MESSAGE),
        (packed({"seq": 1}), ErrorCode.BAD_MESSAGE),
        (packed({"type": 7}), ErrorCode.BAD_MESSAGE),
        (packed({"type": "video", "seq": 4}), ErrorCode.UNKNOWN_TYPE),
    ],
)
def test_malformed_messages(raw, code):
    assert error_of(None, raw).code == code


FRAME = {"type": "frame", "seq": 1, "ts": 0.0, "format": "jpeg", "data": b"x"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seq": None}, "seq"),
        ({"seq": "1"}, "seq"),
        ({"seq": True}, "seq"),
        ({"ts": math.nan}, "ts"),
        ({"ts": "now"}, "ts"),
        ({"format": "gif"}, "format"),
        ({"data": "text"}, "data"),
        ({"data": b""}, "data"),
        ({"stream": ""}, "stream"),
        ({"stream": "s" * 65}, "stream"),
        ({"stream": 5}, "stream"),
    ],
)
def test_ill_typed_frame_fields_name_the_field(change, field):
    err = error_of({**FRAME, **change})
    assert err.code == ErrorCode.BAD_FIELD
    assert f"'{field}'" in err.message


def test_error_carries_seq_when_known():
    assert error_of({**FRAME, "format": "gif", "seq": 42}).seq == 42
    assert error_of({"type": "nope", "seq": 7}).seq == 7
    assert error_of({**FRAME, "seq": "x"}).seq is None


@pytest.mark.parametrize(
    "change",
    [{"sample_rate": 10}, {"sample_rate": 10**7}, {"channels": 0}, {"dtype": "int8"}, {"data": None}],
)
def test_ill_typed_audio_fields(change):
    base = {"type": "audio", "seq": 1, "ts": 0, "sample_rate": 16000, "channels": 1, "dtype": "int16", "data": b"\0\0"}
    assert error_of({**base, **change}).code == ErrorCode.BAD_FIELD


@pytest.mark.parametrize("change", [{"top_k": 1.5}, {"min_score": 2}, {"min_score": -0.1}])
def test_bad_config(change):
    assert error_of({"type": "config", **change}).code == ErrorCode.BAD_FIELD


def test_config_embeddings_is_an_optional_boolean():
    assert decode_client_message(packed({"type": "config", "embeddings": True})).embeddings is True
    assert decode_client_message(packed({"type": "config", "embeddings": False})).embeddings is False
    assert decode_client_message(packed({"type": "config", "top_k": 2})).embeddings is None  # keep as it is


@pytest.mark.parametrize("value", ["yes", 1, 0, [True]])
def test_config_embeddings_refuses_anything_but_true_or_false(value):
    err = error_of({"type": "config", "embeddings": value})
    assert err.code == ErrorCode.BAD_FIELD
    assert "'embeddings' must be true or false" in err.message and repr(value) in err.message


def test_embedding_fields_are_little_endian_float32_bytes_and_the_dim():
    vector = np.array([0.6, -0.8, 0.0], dtype=np.float64)
    fields = protocol.embedding_fields(vector)
    assert fields["embedding_dim"] == 3 and len(fields["embedding"]) == 12
    assert fields["embedding"][:4] == struct.pack("<f", 0.6)
    decoded = msgpack.unpackb(protocol.encode(fields))
    np.testing.assert_array_equal(np.frombuffer(decoded["embedding"], "<f4"), vector.astype(np.float32))


def test_server_messages_round_trip():
    result = protocol.result(
        modality="audio",
        stream="mic",
        seq=1,
        ts=2.0,
        labels_version=3,
        top=[{"label": "dog", "score": 0.5, "similarity": 0.25}],
        timings={"total_ms": 1.0},
        dropped=2,
        window_s=1.0,
    )
    assert msgpack.unpackb(protocol.encode(result)) == result
    assert protocol.error("bad_field", "x")["type"] == "error"
    assert "seq" not in protocol.error("bad_field", "x")
    assert protocol.welcome("s", {}, {})["protocol"] == 1

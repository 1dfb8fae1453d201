"""Fuzzing: the decoders never fail except with a InputError, and a live server shrugs off
thousands of hostile messages while a well-behaved client streams on.

SENSORIUM_FUZZ_MESSAGES sets the size of the live run (10,000 in CI; more for a longer run).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import struct
import time
from dataclasses import replace

import msgpack
import numpy as np
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from server.audio import WindowBuffer, decode_pcm
from server.errors import InputError
from server.imaging import decode_image
from server.labels import LabelFileError, parse_label_text
from server.protocol import decode_client_message

from .helpers import connect, frame, live_server, pack, receive

FUZZ_MESSAGES = int(os.environ.get("SENSORIUM_FUZZ_MESSAGES", "10000"))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.binary(max_size=64),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["type", "seq", "ts", "stream", "format", "data", "width", "height", "pixel_format", "sample_rate",
     "channels", "dtype", "top_k", "min_score", "extra"]
)  # fmt: skip
types = st.sampled_from(["frame", "audio", "config", "ping", "nope", ""])
messages = st.dictionaries(field_names, values, max_size=10).flatmap(
    lambda fields: types.map(lambda kind: {**fields, "type": kind})
)


def only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(InputError):
        decode_client_message(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes(data):
    only_protocol_errors(data)


@settings(max_examples=600, deadline=None)
@given(messages)
def test_random_maps(message):
    only_protocol_errors(msgpack.packb(message, use_bin_type=True))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["jpeg", "png", "webp", "raw"]), st.binary(max_size=2048),
    st.integers(1, 4000), st.integers(1, 4000), st.sampled_from(["rgb24", "bgr24"]),
)  # fmt: skip
def test_image_decoder(fmt, data, width, height, pixel_format):
    geometry = {"width": width, "height": height, "pixel_format": pixel_format} if fmt == "raw" else {}
    try:
        image = decode_image(data, fmt, 1_000_000, 224, **geometry)
    except InputError:
        return
    assert image.ndim == 3 and image.shape[2] == 3


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=4096), st.sampled_from(["int16", "float32"]), st.integers(1, 8),
    st.integers(1000, 384_000),
)  # fmt: skip
def test_audio_decoder_and_buffer(data, dtype, channels, rate):
    try:
        samples = decode_pcm(data, rate, channels, dtype, 10.0)
    except InputError:
        return
    assert samples.dtype == np.float32 and np.isfinite(samples).all() and np.abs(samples).max(initial=0) <= 1
    WindowBuffer(48_000, 2.0, 1.0).push(samples, rate, 0, 0.0)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_label_parser(text):
    try:
        parsed = parse_label_text(text, ("a photo of a {}.",))
    except LabelFileError:
        return
    assert parsed.labels and all(label.name and label.prompts for label in parsed.labels)


# --- a live run ------------------------------------------------------------------------------------


def hostile_messages(count: int, rng: np.random.Generator) -> list[bytes | str]:
    """Random bytes, wrong types, huge declared sizes, truncated and bomb images, NaN audio, absurd rates."""
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), np.uint8)).save(jpeg, "JPEG")
    good_jpeg = jpeg.getvalue()
    png = io.BytesIO()
    Image.new("L", (1, 1)).save(png, "PNG")
    # a PNG header claiming 100000 x 100000 pixels: a decompression bomb, caught from the header alone
    bomb = png.getvalue()[:16] + struct.pack(">II", 100_000, 100_000) + png.getvalue()[24:]
    makers = [
        lambda i: rng.bytes(int(rng.integers(1, 300))),
        lambda i: pack({"type": "frame", "seq": i, "ts": 0, "format": "jpeg",
                        "data": good_jpeg[: int(rng.integers(1, 400))]}),
        lambda i: pack({"type": "frame", "seq": i, "ts": 0, "format": "png", "data": bomb}),
        lambda i: pack({"type": "frame", "seq": i, "ts": 0, "format": "raw", "data": b"\0" * 12, "width": 65536,
                        "height": 65536, "pixel_format": "rgb24"}),
        lambda i: pack({"type": "frame", "seq": "one", "ts": [], "format": 5, "data": 7}),
        lambda i: pack({"type": "audio", "seq": i, "ts": 0, "sample_rate": 10**9, "channels": 1, "dtype": "int16",
                        "data": b"\0\0"}),
        lambda i: pack({"type": "audio", "seq": i, "ts": 0, "sample_rate": 8000, "channels": 1, "dtype": "float32",
                        "data": np.full(64, np.nan, "<f4").tobytes()}),
        lambda i: pack({"type": "audio", "seq": i, "ts": 0, "sample_rate": 8000, "channels": 2**31, "dtype": "int16",
                        "data": b"\0" * 10}),
        lambda i: pack({"type": "config", "top_k": 2**62, "min_score": float("inf")}),
        lambda i: pack({"type": int(rng.integers(0, 10)), "seq": i}),
        lambda i: pack([i, "frame", b"x"]),
        lambda i: "a text frame",
        lambda i: b"\xdd\xff\xff\xff\xff",  # msgpack array header declaring 4 billion items
        lambda i: b"\xc6\x7f\xff\xff\xff",  # bin32 header declaring 2 GB
    ]  # fmt: skip
    return [makers[i % len(makers)](i) for i in range(count)]


def test_live_fuzz_while_a_good_client_streams(settings):
    rng = np.random.default_rng(1234)
    hostile = hostile_messages(FUZZ_MESSAGES, rng)
    with live_server(replace(settings, max_errors=10**9, no_audio=True)) as server:

        async def attacker(share: list[bytes | str]) -> tuple[int, int]:
            answered = closed = 0
            ws = await connect(server)
            for message in share:
                try:
                    await ws.send(message)
                    reply = await receive(ws)
                    assert reply["type"] == "error", reply
                    answered += 1
                except websockets.ConnectionClosed:
                    closed += 1
                    ws = await connect(server)
            await ws.close()
            return answered, closed

        async def good_client(stop: asyncio.Event) -> list[float]:
            ws = await connect(server)
            gaps, last, seq = [], time.monotonic(), 0
            while not stop.is_set():
                await ws.send(frame(seq))
                reply = await receive(ws)
                assert reply["type"] == "result" and reply["seq"] == seq
                now = time.monotonic()
                gaps.append(now - last)
                last, seq = now, seq + 1
            await ws.close()
            return gaps

        async def scenario():
            stop = asyncio.Event()
            good = asyncio.create_task(good_client(stop))
            shares = [hostile[i::4] for i in range(4)]
            outcomes = await asyncio.gather(*(attacker(share) for share in shares))
            stop.set()
            return outcomes, await good

        outcomes, gaps = asyncio.run(scenario())
        answered = sum(a for a, _ in outcomes)
        closed = sum(c for _, c in outcomes)
        assert answered + closed == FUZZ_MESSAGES  # every hostile message got an error or a close
        assert len(gaps) > 10 and max(gaps) < 10  # the good client's results kept coming
        print(f"\nfuzz: {FUZZ_MESSAGES} hostile messages, {answered} errors, {closed} closes; "
              f"good client: {len(gaps)} results, longest gap {max(gaps) * 1000:.0f} ms")  # fmt: skip

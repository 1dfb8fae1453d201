"""What the tests share besides fixtures: live servers, message helpers, test signals."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import uvicorn
import websockets
from PIL import Image

from server.app import create_app
from server.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` until it is true; a test waits for a state, never for an assumed model speed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


async def async_wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Loopback:
    """The addresses of a server on this machine at its settings' port."""

    settings: Settings

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}/ws"


class LiveServer(Loopback):
    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.settings = replace(settings, port=port or free_port())
        self.app = create_app(self.settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.settings.port,
            log_level="warning",
            ws_max_size=self.settings.max_message_bytes,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 60) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.http}/health", timeout=2).json()["status"] == "ok":
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError("server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextmanager
def live_server(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- talking to it -----------------------------------------------------------


def pack(message: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(message, use_bin_type=True)
    return data


async def receive(ws: Any, timeout: float = 10) -> dict[str, Any]:
    message: dict[str, Any] = msgpack.unpackb(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def receive_until(ws: Any, predicate: Any, timeout: float = 10) -> dict[str, Any]:
    """The first message that satisfies ``predicate``, skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no matching message")
        message = await receive(ws, remaining)
        if predicate(message):
            return message


async def connect(server: LiveServer) -> Any:
    ws = await websockets.connect(server.ws, max_size=None)
    welcome = await receive(ws)
    assert welcome["type"] == "welcome"
    return ws


def jpeg(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (320, 240), fmt: str = "JPEG") -> bytes:
    image = Image.new("RGB", size, color)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def frame(seq: int, data: bytes | None = None, **extra: Any) -> bytes:
    return pack({"type": "frame", "seq": seq, "ts": time.time(), "format": "jpeg", "data": data or jpeg(), **extra})


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    samples: np.ndarray = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return samples


def int16_pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def audio(seq: int, samples: np.ndarray, rate: int = 16000, **extra: Any) -> bytes:
    message = {
        "type": "audio",
        "seq": seq,
        "ts": time.time(),
        "sample_rate": rate,
        "channels": 1,
        "dtype": "int16",
        "data": int16_pcm(samples),
        **extra,
    }
    return pack(message)


def openvino_installed() -> bool:
    from server import openvino_backend

    try:
        openvino_backend.import_openvino()  # not importorskip: importing OpenVINO plainly starts its telemetry
    except ImportError:
        return False
    return True


NO_OPENVINO = "OpenVINO is not installed (pip install -e '.[dev,openvino]')"

# Event settings under which every rise of a label over its baseline is an event at once.
EAGER_EVENTS = {
    "event_start": 1.0,
    "event_end": 0.5,
    "event_min_seconds": 0.0,
    "event_hold_seconds": 0.0,
    "event_smooth_seconds": 0.0,
}

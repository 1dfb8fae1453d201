"""A typed Python client for the Sensorium server: connect, stream, receive results, reconnect.

    async with SensoriumClient("ws://127.0.0.1:8000/ws", top_k=3) as client:
        await client.wait_for_slot("image", "camera", limit=2)
        await client.send_frame(jpeg_bytes, seq=0)
        async for event in client.events():
            if isinstance(event, Result):
                print(event.line())

The client keeps one WebSocket open. When the server goes away it reconnects with backoff and carries
on; inputs that were in flight are counted as lost in ``client.ledger``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import msgpack
import websockets

from .ledger import Ledger, Result

log = logging.getLogger("sensorium.client")

DEFAULT_URL = "ws://127.0.0.1:8000/ws"
Event = Result | dict[str, Any]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every client script takes."""
    parser.add_argument("--url", default=DEFAULT_URL, help="server WebSocket URL (default %(default)s)")
    parser.add_argument("--top-k", type=int, default=None, help="labels per result (server default 5)")
    parser.add_argument("--min-score", type=float, default=None, help="hide labels scoring under this")
    parser.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    parser.add_argument(
        "--connect-timeout", type=float, default=10.0, help="give up if the first connection takes longer (seconds)"
    )


class ServerUnreachable(ConnectionError):
    """The first connection could not be made."""


def client_from_args(args: argparse.Namespace, on_status: Callable[[str], None]) -> SensoriumClient:
    return SensoriumClient(
        args.url,
        top_k=args.top_k,
        min_score=args.min_score,
        connect_timeout=args.connect_timeout,
        on_status=on_status,
    )


def run_until_done(
    program: str,
    work: Coroutine[Any, Any, object],
    client: SensoriumClient,
    noun: str,
    source_errors: tuple[type[Exception], ...],
) -> int:
    """Run a client script's coroutine; print the summary at the end, also on Ctrl-C, and clear
    one-line messages instead of tracebacks for the failures a user can fix."""
    try:
        asyncio.run(work)
    except source_errors as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 2
    except ServerUnreachable as exc:
        print(f"{program}: {exc}. Is `sensorium serve` running?", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(client.ledger.summary(noun))
        return 130
    print(client.ledger.summary(noun))
    return 0


class SensoriumClient:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        top_k: int | None = None,
        min_score: float | None = None,
        connect_timeout: float = 10.0,
        max_backoff: float = 5.0,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.top_k = top_k
        self.min_score = min_score
        self.connect_timeout = connect_timeout
        self.max_backoff = max_backoff
        self.on_status = on_status or (lambda message: log.info("%s", message))
        self.ledger = Ledger()
        self.welcome: dict[str, Any] = {}
        self._ws: Any = None
        self._connected = asyncio.Event()
        self._changed = asyncio.Condition()
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._closing = False

    # --- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> SensoriumClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect; raise ServerUnreachable if no connection is made within ``connect_timeout``."""
        self._first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name="sensorium-client")
        await self._first

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(websockets.WebSocketException, OSError):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._events.put_nowait(None)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # --- sending ------------------------------------------------------------------

    async def send_frame(
        self,
        data: bytes,
        seq: int,
        *,
        stream: str = "camera",
        fmt: str = "jpeg",
        ts: float | None = None,
        **raw_geometry: Any,
    ) -> bool:
        """Send one image; False if the connection is down (the frame was not sent)."""
        message = {"type": "frame", "stream": stream, "seq": seq, "ts": ts or time.time(), "format": fmt, "data": data}
        return await self._send_input("image", stream, seq, {**message, **raw_geometry}, tracked=True)

    async def send_audio(
        self,
        pcm: bytes,
        seq: int,
        sample_rate: int,
        *,
        channels: int = 1,
        dtype: str = "int16",
        stream: str = "mic",
        ts: float | None = None,
    ) -> bool:
        """Send one chunk of interleaved little-endian PCM; False if the connection is down."""
        message = {
            "type": "audio",
            "stream": stream,
            "seq": seq,
            "ts": ts or time.time(),
            "sample_rate": sample_rate,
            "channels": channels,
            "dtype": dtype,
            "data": pcm,
        }
        # Audio results come per window, not per chunk, so chunks are not tracked one by one.
        return await self._send_input("audio", stream, seq, message, tracked=False)

    async def wait_for_slot(self, modality: str, stream: str, limit: int, timeout: float | None = None) -> bool:
        """Wait until fewer than ``limit`` inputs of this stream are in flight and the link is up."""

        def free() -> bool:
            return self.connected and self.ledger.in_flight(modality, stream) < limit

        return await self.wait_until(free, timeout)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``predicate()`` holds (checked whenever a message arrives or the link changes)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                return False
        return True

    async def _send_input(self, modality: str, stream: str, seq: int, message: dict[str, Any], tracked: bool) -> bool:
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(msgpack.packb(message, use_bin_type=True))
        except (websockets.ConnectionClosed, OSError):
            return False
        self.ledger.on_sent(modality, stream, seq, time.perf_counter(), tracked=tracked)
        return True

    # --- receiving ----------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Results (as Result) and every other server message (as a dict), until the client closes."""
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    async def _run(self) -> None:
        assert self._first is not None
        started = time.monotonic()
        attempt = 0
        down_since: float | None = None
        while not self._closing:
            try:
                ws = await websockets.connect(self.url, max_size=None, open_timeout=5)
                self.welcome = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 60))
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                if not self._first.done() and time.monotonic() - started > self.connect_timeout:
                    self._first.set_exception(ServerUnreachable(f"cannot reach the server at {self.url}: {exc}"))
                    return
                delay = min(self.max_backoff, 0.25 * 2**attempt)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            attempt = 0
            if down_since is not None:
                self.ledger.reconnects += 1
                self.ledger.gap_s += time.monotonic() - down_since
                self.on_status(f"reconnected to {self.url} after {time.monotonic() - down_since:.1f} s")
            await self._attach(ws)
            if not self._first.done():
                self._first.set_result(None)
            await self._read(ws)
            await self._detach()
            if self._closing:
                return
            down_since = time.monotonic()
            self.on_status(f"connection to {self.url} lost; reconnecting")

    async def _attach(self, ws: Any) -> None:
        options = {k: v for k, v in (("top_k", self.top_k), ("min_score", self.min_score)) if v is not None}
        if options:
            await ws.send(msgpack.packb({"type": "config", **options}))
        self._ws = ws
        self._connected.set()
        await self._notify()

    async def _detach(self) -> None:
        self._ws = None
        self._connected.clear()
        self.ledger.on_disconnect()
        await self._notify()

    async def _read(self, ws: Any) -> None:
        try:
            async for raw in ws:
                message = msgpack.unpackb(raw)
                kind = message.get("type")
                if kind == "result":
                    self._events.put_nowait(self.ledger.on_result(message, time.perf_counter()))
                else:
                    if kind == "error":
                        self.ledger.on_error(message)
                    self._events.put_nowait(message)
                await self._notify()
        except (websockets.ConnectionClosed, OSError):
            pass

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

"""A typed Python client for the Sensorium server: connect, stream, receive results and events, reconnect.

    async with SensoriumClient("ws://127.0.0.1:8000/ws", top_k=3) as client:
        await client.wait_for_slot("image", "camera", limit=2)
        await client.send_frame(jpeg_bytes, seq=0)
        async for message in client.events():
            if isinstance(message, (Result, Event)):
                print(message.line())

With ``embeddings=True`` each of this connection's results carries its input's unit embedding as a float32
array in ``Result.embedding``.

The client keeps one WebSocket open. When the server goes away it reconnects with backoff and carries
on; inputs that were in flight are counted as lost in ``client.ledger``. A refusal that retrying cannot
fix (close code 4401: no valid token; 4403: origin not allowed) stops it with ``ServerRefused``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import websockets

from .errors import ServerRefused, ServerUnreachable, describe, refusal
from .ledger import Ledger
from .messages import Event, Result, Streams, Thumbnail

log = logging.getLogger("sensorium.client")

DEFAULT_URL = "ws://127.0.0.1:8000/ws"
Message = Result | Event | Thumbnail | Streams | dict[str, Any]  # what ``events()`` yields
WELCOME_TIMEOUT_S = 60.0  # a server that is still loading its models answers with ``welcome`` later
LOADING_NOTICE_S = 1.0  # say so when the welcome takes longer than this

# Error codes that answer an input, never an ``end``.
INPUT_ONLY_ERRORS = frozenset({"bad_image", "bad_audio", "too_large", "inference_failed"})


class SensoriumClient:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        top_k: int | None = None,
        min_score: float | None = None,
        embeddings: bool = False,
        connect_timeout: float = 10.0,
        max_backoff: float = 5.0,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.top_k = top_k
        self.min_score = min_score
        self.embeddings = embeddings  # ask for each result's input embedding (Result.embedding)
        self.connect_timeout = connect_timeout
        self.max_backoff = max_backoff
        self.on_status = on_status or (lambda message: log.info("%s", message))
        self.ledger = Ledger()
        self.welcome: dict[str, Any] = {}
        self.failure: ServerRefused | None = None  # set when the server refused us for good
        self._ws: Any = None
        self._connected = asyncio.Event()
        self._changed = asyncio.Condition()
        self._events: asyncio.Queue[Message | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._closing = False
        self._connections = 0  # connections made so far; a stream's end is answered on the same one
        self._ending: dict[tuple[str, str], tuple[int, int | None]] = {}  # streams sent ``end``: connection, seq
        self._end_refused: set[tuple[str, str]] = set()  # ... and answered with an error instead of ``ended``
        self._last_seq: dict[tuple[str, str], int] = {}  # the seq of the last input sent on each stream
        self._watch: dict[str, Any] | None = None  # the ``watch`` message in force, sent again on each reconnect

    # --- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> SensoriumClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect; raise ServerUnreachable if no connection is made within ``connect_timeout``, or
        ServerRefused if the server turns this client away (no valid token, origin not allowed)."""
        self.on_status(f"connecting to {self.url} (giving up after {self.connect_timeout:g} s)…")
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

    @property
    def client_id(self) -> int | None:
        """The server's id of this connection (from ``welcome``; a reconnect gets a new one)."""
        value = self.welcome.get("client")
        return value if isinstance(value, int) else None

    # --- watching -----------------------------------------------------------------

    async def watch(self, streams: str | list[str] = "*", *, token: str | None = None) -> bool:
        """Receive copies of other connections' results and events (``watched`` set), ``Streams`` lists and
        ``Thumbnail``s; again after each reconnect. False if the connection is down now (it is sent once up)."""
        self._watch = {"type": "watch", "streams": streams} | ({"token": token} if token is not None else {})
        return await self._send_control(self._watch)

    async def unwatch(self) -> bool:
        self._watch = None
        return await self._send_control({"type": "unwatch"})

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

    async def end_stream(self, modality: str, stream: str, *, seq: int | None = None) -> bool:
        """Tell the server no more input comes on this stream; False if the connection is down.

        The server then classifies what it holds of the stream (for audio, the partial hop since the last
        window, reported with ``seq``: by default the seq of the last input sent on the stream) and, once
        every input of the stream is answered, sends ``ended``: see ``wait_ended``.
        """
        ws = self._checked_ws()
        if ws is None:
            return False
        key = (modality, stream)
        seq = self._last_seq.get(key) if seq is None else seq
        message: dict[str, Any] = {"type": "end", "modality": modality, "stream": stream}
        if seq is not None:
            message["seq"] = seq
        self.ledger.on_end_sent(modality, stream)
        self._end_refused.discard(key)
        self._ending[key] = (self._connections, seq)
        try:
            await ws.send(msgpack.packb(message, use_bin_type=True))
        except (websockets.ConnectionClosed, OSError):
            self._ending.pop(key, None)
            return False
        return True

    async def wait_ended(self, modality: str, stream: str, timeout: float | None) -> bool:
        """Wait for the server's ``ended`` for a stream passed to ``end_stream``; True once it came.

        False after ``timeout``, or at once when the server answered the ``end`` with an error (a server
        that predates ``end`` says ``unknown_type``) or the connection it went on broke.
        """
        key = (modality, stream)
        if key not in self._ending:
            return self.ledger.has_ended(modality, stream)
        connection = self._ending[key][0]

        def answered() -> bool:
            return (
                self.ledger.has_ended(modality, stream)
                or key in self._end_refused
                or self._connections != connection
                or not self.connected
            )

        try:
            await self.wait_until(answered, timeout)
        finally:
            self._ending.pop(key, None)
        return self.ledger.has_ended(modality, stream)

    async def wait_for_slot(self, modality: str, stream: str, limit: int, timeout: float | None = None) -> bool:
        """Wait until fewer than ``limit`` inputs of this stream are in flight and the link is up."""

        def free() -> bool:
            return self.connected and self.ledger.in_flight(modality, stream) < limit

        return await self.wait_until(free, timeout)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``predicate()`` holds (checked whenever a message arrives or the link changes).

        Raises ServerRefused once the server has refused this client for good.
        """
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.failure is not None or predicate()), timeout)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                return False
        if self.failure is not None:
            raise self.failure
        return True

    async def _send_control(self, message: dict[str, Any]) -> bool:
        ws = self._checked_ws()
        if ws is None:
            return False
        try:
            await ws.send(msgpack.packb(message, use_bin_type=True))
        except (websockets.ConnectionClosed, OSError):
            return False
        return True

    def _checked_ws(self) -> Any:
        if self.failure is not None:
            raise self.failure
        return self._ws

    async def _send_input(self, modality: str, stream: str, seq: int, message: dict[str, Any], tracked: bool) -> bool:
        if not await self._send_control(message):
            return False
        self.ledger.on_sent(modality, stream, seq, time.perf_counter(), tracked=tracked)
        self._last_seq[modality, stream] = seq
        return True

    # --- receiving ----------------------------------------------------------------

    async def events(self) -> AsyncIterator[Message]:
        """Every server message until the client closes: ``result`` as Result, ``event`` as Event, a watcher's
        ``thumbnail`` and ``streams`` as Thumbnail and Streams, any other (errors, ``labels``, ...) as a dict."""
        while True:
            message = await self._events.get()
            if message is None:
                return
            yield message

    async def _run(self) -> None:
        assert self._first is not None
        first = self._first
        deadline = time.monotonic() + self.connect_timeout
        attempt = 0
        down_since: float | None = None
        while not self._closing:
            ws = None
            remaining = deadline - time.monotonic()
            try:
                open_timeout = 5.0 if first.done() else max(0.1, min(5.0, remaining))
                ws = await websockets.connect(self.url, max_size=None, open_timeout=open_timeout)
                self.welcome = await self._welcome(ws)
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
                refused = refusal(self.url, ws)
                if refused is not None:
                    await self._fail(refused)
                    return
                if ws is not None:
                    with contextlib.suppress(websockets.WebSocketException, OSError):
                        await ws.close()
                delay = min(self.max_backoff, 0.25 * 2**attempt)
                attempt += 1
                if not first.done():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        reason = describe(exc)
                        first.set_exception(ServerUnreachable(f"cannot reach the server at {self.url}: {reason}"))
                        return
                    delay = min(delay, remaining)
                self.on_status(f"no connection ({describe(exc)}); retrying in {round(delay, 2):g} s")
                await asyncio.sleep(delay)
                continue
            attempt = 0
            if down_since is not None:
                self.ledger.reconnects += 1
                self.ledger.gap_s += time.monotonic() - down_since
                self.on_status(f"reconnected to {self.url} after {time.monotonic() - down_since:.1f} s")
            await self._attach(ws)
            if not first.done():
                first.set_result(None)
            await self._read(ws)
            await self._detach()
            refused = refusal(self.url, ws)
            if refused is not None:
                await self._fail(refused)
                return
            if self._closing:
                return
            down_since = time.monotonic()
            self.on_status(f"connection to {self.url} lost; reconnecting")

    async def _welcome(self, ws: Any) -> dict[str, Any]:
        try:
            raw = await asyncio.wait_for(ws.recv(), LOADING_NOTICE_S)  # recv() is cancellation-safe
        except asyncio.TimeoutError:
            self.on_status(f"connected to {self.url}; waiting for the server to finish loading its models")
            raw = await asyncio.wait_for(ws.recv(), WELCOME_TIMEOUT_S)
        welcome: dict[str, Any] = msgpack.unpackb(raw)
        return welcome

    async def _fail(self, exc: ServerRefused) -> None:
        """Stop for good: the server will not take this client however often it connects."""
        self.failure = exc
        assert self._first is not None
        if not self._first.done():
            self._first.set_exception(exc)
        else:
            self.on_status(str(exc))
        self._events.put_nowait(None)
        await self._notify()

    async def _attach(self, ws: Any) -> None:
        asked = (("top_k", self.top_k), ("min_score", self.min_score), ("embeddings", self.embeddings or None))
        options = {k: v for k, v in asked if v is not None}
        if options:
            await ws.send(msgpack.packb({"type": "config", **options}))
        if self._watch is not None:
            await ws.send(msgpack.packb(self._watch, use_bin_type=True))
        self._ws = ws
        self._connections += 1
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
                self._events.put_nowait(self._take(msgpack.unpackb(raw)))
                await self._notify()
        except (websockets.ConnectionClosed, OSError):
            pass

    def _take(self, message: dict[str, Any]) -> Message:
        """Book a message and type it. Watched copies answer no input of this connection and stay off the books."""
        kind = message.get("type")
        watched = bool(message.get("watched"))
        if kind == "result":
            if watched:
                return Result.from_message(message, None)
            return self.ledger.on_result(message, time.perf_counter())
        if kind == "event":
            return Event.from_message(message) if watched else self.ledger.on_event(message)
        if kind == "thumbnail":
            return Thumbnail.from_message(message)
        if kind == "streams":
            return Streams.from_message(message)
        if kind == "error":
            self.ledger.on_error(message)
            self._note_end_refused(message)
        elif kind == "ended":
            self.ledger.on_ended(message)
        return message

    def _note_end_refused(self, error: dict[str, Any]) -> None:
        """Whether an error answers a pending ``end``: it names the stream and the end's seq (the last input's,
        so codes only an input draws are not about the end), or it is ``unknown_type`` (a server that predates
        ``end``; this client sends no other type a server may not know)."""
        if error.get("code") in INPUT_ONLY_ERRORS:
            return
        for key, (_, seq) in self._ending.items():
            if error.get("seq") != seq:
                continue
            if error.get("code") == "unknown_type" or (error.get("modality"), error.get("stream")) == key:
                self._end_refused.add(key)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

"""One WebSocket client: receive -> decode -> queue for its model -> result -> send.

The hot path reads top to bottom: ``Session.run`` receives, ``_handle`` decodes and queues,
the model worker encodes and scores, ``deliver`` builds the result, ``_send_loop`` sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from . import protocol
from .audio import WindowBuffer, decode_pcm
from .errors import CloseCode, ErrorCode, InputError
from .imaging import decode_image
from .protocol import DEFAULT_TOP_K, AudioChunk, Config, Frame, Modality, Ping
from .security import SUBPROTOCOL, origin_allowed, presented_token, token_accepted
from .worker import ItemOutcome, Job, ModelWorker, StreamKey

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("sensorium.session")

OUTBOX_CAPACITY = 256
ERROR_WINDOW_S = 10.0

_session_ids = itertools.count(1)


class Outbox:
    """A bounded queue of messages for one client; when full, the oldest message gives way."""

    def __init__(self, capacity: int) -> None:
        self._messages: deque[dict[str, Any]] = deque()
        self._capacity = capacity
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()  # set while the sender waits with nothing to send

    def put(self, message: dict[str, Any]) -> dict[str, Any] | None:
        evicted = self._messages.popleft() if len(self._messages) >= self._capacity else None
        self._messages.append(message)
        self._ready.set()
        return evicted

    async def get(self) -> dict[str, Any]:
        while not self._messages:
            self._empty.set()
            self._ready.clear()
            await self._ready.wait()
        self._empty.clear()
        return self._messages.popleft()

    async def drained(self, timeout: float) -> bool:
        """Wait until every message has been handed to the socket."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True


def error_for(exc: InputError, message: protocol.ClientMessage | None) -> dict[str, Any]:
    """The ``error`` answering a message: with its seq, modality and stream where they are known."""
    modality, stream, seq = protocol.input_of(message) if message is not None else (None, None, None)
    return protocol.error(
        exc.code,
        exc.message,
        exc.seq if exc.seq is not None else seq,
        modality=modality or exc.modality,  # type: ignore[arg-type]
        stream=stream or exc.stream,
    )


class Session:
    def __init__(self, websocket: WebSocket, runtime: Runtime) -> None:
        self.id = next(_session_ids)
        self.websocket = websocket
        self.runtime = runtime
        settings = runtime.settings
        self.top_k = DEFAULT_TOP_K
        self.min_score = 0.0
        self.outbox = Outbox(OUTBOX_CAPACITY)
        self.dropped: Counter[tuple[Modality, str]] = Counter()
        self.audio_buffers: dict[str, WindowBuffer] = {}
        self.streams: set[StreamKey] = set()
        self.closed = False
        self._recent_errors: deque[float] = deque()
        self._max_pixels = settings.max_image_pixels
        self._max_chunk_s = settings.max_audio_chunk_seconds

    async def run(self) -> None:
        refusal = self._refusal()
        offered = self.websocket.scope.get("subprotocols", [])
        await self.websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        if refusal is not None:
            # Accept-then-close, so the client sees a close code and reason instead of a bare HTTP 403.
            await self.websocket.close(*refusal)
            return
        self.runtime.sessions.add(self)
        sender = asyncio.create_task(self._send_loop(), name=f"send-{self.id}")
        try:
            if not await self.runtime.wait_ready():
                await self.websocket.close(code=1011, reason="models failed to load")
                return
            self.send(self.runtime.welcome())
            await self._receive_loop()
        finally:
            self.closed = True
            self.runtime.sessions.discard(self)
            for worker in self.runtime.workers.values():
                worker.queue.discard(self.streams)
            sender.cancel()

    def _refusal(self) -> tuple[int, str] | None:
        settings = self.runtime.settings
        headers = self.websocket.headers
        if not origin_allowed(headers.get("origin"), headers.get("host"), settings.allow_origin):
            return CloseCode.FORBIDDEN_ORIGIN, f"origin {headers.get('origin')} is not allowed"
        token = presented_token(
            headers.get("authorization"), self.websocket.query_params.get("token"),
            self.websocket.scope.get("subprotocols", []),
        )  # fmt: skip
        if not token_accepted(settings.token, token):
            return CloseCode.UNAUTHORIZED, "a valid token is required"
        if self.runtime.draining:
            return CloseCode.GOING_AWAY, "the server is shutting down"
        if len(self.runtime.sessions) >= settings.max_connections:
            return CloseCode.TOO_MANY_CONNECTIONS, f"the server is full ({settings.max_connections} connections)"
        return None

    async def _receive_loop(self) -> None:
        settings = self.runtime.settings
        while True:
            try:
                message = await asyncio.wait_for(self.websocket.receive(), settings.idle_timeout)
            except TimeoutError:
                await self.close(CloseCode.IDLE, f"no message for {settings.idle_timeout:g} s")
                return
            if message["type"] == "websocket.disconnect":
                return
            received = time.perf_counter()
            data = message.get("bytes")
            parsed: protocol.ClientMessage | None = None
            try:
                if data is None:
                    raise InputError(ErrorCode.BAD_MESSAGE, "send binary msgpack messages, not text")
                parsed = protocol.decode_client_message(data)
                await self._handle(parsed, received)
            except InputError as exc:
                self.send(error_for(exc, parsed))
                if self._misbehaving(received):
                    await self.close(CloseCode.POLICY, f"more than {settings.max_errors} bad messages in 10 s")
                    return
            except Exception:  # a bug met by one message must not end the connection or go unseen
                log.exception("client %d: unexpected failure handling a message", self.id)
                self.send(protocol.error(ErrorCode.INTERNAL, "the server failed on this message; see its log"))

    def _misbehaving(self, now: float) -> bool:
        self._recent_errors.append(now)
        while self._recent_errors and self._recent_errors[0] < now - ERROR_WINDOW_S:
            self._recent_errors.popleft()
        return len(self._recent_errors) > self.runtime.settings.max_errors

    async def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close."""
        await self.outbox.drained(timeout=5)
        self.closed = True
        with contextlib.suppress(RuntimeError, OSError):
            await self.websocket.close(code=code, reason=reason)

    async def _handle(self, message: protocol.ClientMessage, received: float) -> None:
        if isinstance(message, Frame):
            worker = self._worker("image", message.stream, message.seq)
            # Decoding a large JPEG takes milliseconds: off the loop, so pings and other clients go on.
            image = await asyncio.to_thread(
                decode_image,
                message.data,
                message.format,
                self._max_pixels,
                self.runtime.image_side,
                width=message.width,
                height=message.height,
                pixel_format=message.pixel_format,
            )
            decoded = time.perf_counter()
            self._submit(worker, "image", message.stream, message.seq, message.ts, image, received, decoded)
        elif isinstance(message, AudioChunk):
            worker = self._worker("audio", message.stream, message.seq)
            # A chunk is at most a few hundred kilobytes; decoding and resampling it takes well under a
            # millisecond, less than handing it to a thread would cost.
            samples = decode_pcm(message.data, message.sample_rate, message.channels, message.dtype, self._max_chunk_s)
            window = self._audio_buffer(message.stream).push(samples, message.sample_rate, message.seq, message.ts)
            decoded = time.perf_counter()
            if window is None:
                return
            if window.skipped:
                self._count_dropped("audio", message.stream, window.skipped)
            self._submit(
                worker,
                "audio",
                message.stream,
                window.seq,
                window.ts,
                window.samples,
                received,
                decoded,
                window_s=round(window.seconds, 3),
            )
        elif isinstance(message, Config):
            if message.top_k is not None:
                self.top_k = min(message.top_k, self.runtime.settings.max_top_k)
            if message.min_score is not None:
                self.min_score = message.min_score
        elif isinstance(message, Ping):
            self.send(protocol.pong(message.ts, time.time()))

    def _worker(self, modality: Modality, stream: str, seq: int) -> ModelWorker:
        """The model for an input, once it is known the input can be taken."""
        self.runtime.metrics.inputs.labels(modality).inc()
        worker = self.runtime.workers.get(modality)
        if worker is None:
            raise InputError(ErrorCode.NOT_SERVED, f"this server does not serve {modality}", seq)
        if self.runtime.draining:
            raise InputError(ErrorCode.SHUTTING_DOWN, "the server is shutting down", seq)
        key = StreamKey(self.id, modality, stream)
        if key not in self.streams and len(self.streams) >= self.runtime.settings.max_streams:
            limit = self.runtime.settings.max_streams
            raise InputError(ErrorCode.TOO_MANY_STREAMS, f"at most {limit} streams per connection", seq)
        self.streams.add(key)
        return worker

    def _audio_buffer(self, stream: str) -> WindowBuffer:
        buffer = self.audio_buffers.get(stream)
        if buffer is None:
            settings = self.runtime.settings
            rate = self.runtime.audio_rate
            buffer = self.audio_buffers[stream] = WindowBuffer(rate, settings.audio_window, settings.audio_hop)
        return buffer

    def _submit(
        self,
        worker: ModelWorker,
        modality: Modality,
        stream: str,
        seq: int,
        ts: float,
        payload: Any,
        received: float,
        decoded: float,
        window_s: float | None = None,
    ) -> None:
        key = StreamKey(self.id, modality, stream)
        worker.submit(
            Job(
                stream=key,
                payload=payload,
                seq=seq,
                ts=ts,
                received=received,
                decode_ms=round((decoded - received) * 1000, 3),
                top_k=self.top_k,
                min_score=self.min_score,
                sink=self,
                window_s=window_s,
            )
        )

    # --- called by the model worker, on the event loop ---------------------

    def count_dropped(self, job: Job, count: int) -> None:
        self._count_dropped(job.stream.modality, job.stream.name, count)

    def _count_dropped(self, modality: Modality, stream: str, count: int) -> None:
        self.dropped[modality, stream] += count
        self.runtime.metrics.dropped.labels(modality).inc(count)

    def deliver(self, job: Job, outcome: ItemOutcome) -> None:
        if self.closed:
            return
        if outcome.top is None or outcome.label_set is None:
            self.send(protocol.error(ErrorCode.INFERENCE_FAILED, outcome.error or "inference failed", job.seq))
            return
        _, modality, stream = job.stream
        timings = {
            "decode_ms": job.decode_ms,
            "queue_ms": outcome.queue_ms,
            "preprocess_ms": outcome.preprocess_ms,
            "encode_ms": outcome.encode_ms,
            "similarity_ms": outcome.similarity_ms,
            "total_ms": round((time.perf_counter() - job.received) * 1000, 3),
        }
        self.runtime.metrics.observe_result(modality, timings)
        self.send(
            protocol.result(
                modality=modality,
                stream=stream,
                seq=job.seq,
                ts=job.ts,
                labels_version=outcome.label_set.version,
                top=outcome.top,
                timings=timings,
                dropped=self.dropped.pop((modality, stream), 0),
                window_s=job.window_s,
            )
        )

    # --- sending ------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "error":
            self.runtime.metrics.errors.labels(message["code"]).inc()
        evicted = self.outbox.put(message)
        if evicted is not None and evicted["type"] == "result":
            # A client that does not read loses its oldest results, and learns how many in the next one.
            self._count_dropped(evicted["modality"], evicted["stream"], 1 + evicted["dropped"])

    async def _send_loop(self) -> None:
        try:
            while True:
                message = await self.outbox.get()
                await self.websocket.send_bytes(protocol.encode(message))
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.debug("client %d: send stopped: %s", self.id, exc)

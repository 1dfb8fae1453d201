"""One WebSocket client: receive -> decode -> queue for its model -> scores -> result -> send.

The hot path reads top to bottom: ``Session.run`` receives, ``_handle`` decodes and queues, the model
worker embeds and scores, ``deliver`` hands the scores to the stream's consumers and builds the result,
``_send_loop`` sends it. Every error a message can cause is answered in one place, ``_receive_loop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from . import protocol
from .errors import CloseCode, ErrorCode, InputError
from .intake import Intake, TakenAudio
from .metrics import Metrics
from .protocol import DEFAULT_TOP_K, AudioChunk, Config, End, Frame, Modality, Ping, Unwatch, Watch
from .registry import Registry
from .scoring import Scores
from .security import SUBPROTOCOL, origin_allowed, presented_token, token_accepted
from .settings import Settings
from .streams import Outbox, ResultOptions, ScoreConsumer, StreamState, result_messages
from .timing import ms_between, ms_since
from .watching import Watch as WatchHub
from .worker import ItemOutcome, Job, ModelWorker, StreamKey

log = logging.getLogger("sensorium.session")

OUTBOX_CAPACITY = 256
ERROR_WINDOW_S = 10.0

_session_ids = itertools.count(1)


@dataclass(frozen=True)
class Serving:
    """What a session may use once the models are loaded."""

    workers: Mapping[Modality, ModelWorker]
    image_side: int | None  # the image model's input side, for reduced-scale JPEG decoding
    audio_rate: int  # the rate audio windows are kept at: the audio model's own
    welcome: Callable[[], dict[str, Any]]
    prepare_one: Mapping[Modality, Callable[[Any], Any]] = field(default_factory=dict)  # per input, any thread
    mel_stream: Callable[[int], Any] | None = None  # the audio model's streaming front end (server/melspec.py)
    label_set: Callable[[Modality], Any] = field(default=lambda modality: None)  # the label file's current set


@dataclass(frozen=True)
class SessionContext:
    """A session's view of the server: no more than this."""

    settings: Settings
    metrics: Metrics
    registry: Registry  # admission, release, broadcast
    serving: Callable[[], Awaitable[Serving | None]]  # waits for the models; None when they failed to load
    watch: WatchHub  # live streams, watchers, event outputs
    consumers: Callable[[StreamKey], list[ScoreConsumer]] = field(default=lambda key: [])  # per new stream


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
    def __init__(self, websocket: WebSocket, context: SessionContext) -> None:
        self.id = next(_session_ids)
        self.websocket = websocket
        self.context = context
        self.settings = context.settings
        self.options = ResultOptions(DEFAULT_TOP_K, 0.0)
        self.outbox = Outbox(OUTBOX_CAPACITY)
        self.streams: dict[StreamKey, StreamState] = {}
        self.closed = False
        self.serving: Serving | None = None
        self.intake: Intake | None = None
        self.watch = context.watch
        self._recent_errors: deque[float] = deque()

    async def run(self) -> None:
        offered = self.websocket.scope.get("subprotocols", [])
        await self.websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        refusal = self._refusal() or self.context.registry.admit(self)
        if refusal is not None:
            # Accept-then-close, so the client sees a close code and reason instead of a bare HTTP 403.
            await self.websocket.close(*refusal)
            return
        sender = asyncio.create_task(self._send_loop(), name=f"send-{self.id}")
        try:
            self.serving = await self.context.serving()
            if self.serving is None:
                await self.websocket.close(code=CloseCode.MODELS_FAILED, reason="models failed to load")
                return
            self.intake = Intake(self.settings, self.serving)
            self.send({**self.serving.welcome(), "client": self.id})
            await self._receive_loop()
        finally:
            self.closed = True
            self.context.registry.release(self)
            self.watch.unsubscribe(self)
            if self.serving is not None:
                for worker in self.serving.workers.values():
                    worker.queue.discard(set(self.streams))
            for state in list(self.streams.values()):
                self._stream_gone(state)  # its open events end, for watchers and outputs
            sender.cancel()

    def _refusal(self) -> tuple[int, str] | None:
        headers = self.websocket.headers
        if not origin_allowed(headers.get("origin"), headers.get("host"), self.settings.allow_origin):
            return CloseCode.FORBIDDEN_ORIGIN, f"origin {headers.get('origin')} is not allowed"
        token = presented_token(
            headers.get("authorization"), self.websocket.query_params.get("token"),
            self.websocket.scope.get("subprotocols", []),
        )  # fmt: skip
        if not token_accepted(self.settings.token, token):
            return CloseCode.UNAUTHORIZED, "a valid token is required"
        return None

    async def _receive_loop(self) -> None:
        settings = self.settings
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
            if data is not None and len(data) > settings.max_message_bytes:  # a proxy in front let it through
                await self.close(CloseCode.MESSAGE_TOO_BIG, f"{len(data)} bytes is over max_message_bytes")
                return
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
                internal = InputError(ErrorCode.INTERNAL, "the server failed on this message; see its log")
                self.send(error_for(internal, parsed))

    def _misbehaving(self, now: float) -> bool:
        self._recent_errors.append(now)
        while self._recent_errors and self._recent_errors[0] < now - ERROR_WINDOW_S:
            self._recent_errors.popleft()
        return len(self._recent_errors) > self.settings.max_errors

    async def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close."""
        await self.outbox.drained(timeout=5)
        self.closed = True
        with contextlib.suppress(RuntimeError, OSError):
            await self.websocket.close(code=code, reason=reason)

    async def _handle(self, message: protocol.ClientMessage, received: float) -> None:
        assert self.serving is not None
        assert self.intake is not None
        if isinstance(message, Frame):
            worker, state = self._admit_input("image", message.stream)
            # Decoding a large JPEG and preprocessing it take milliseconds: off the loop (server/intake.py).
            thumbnail = self.watch.thumbnail_due(state.key)
            frame = await asyncio.to_thread(self.intake.frame, message, thumbnail)
            self._submit(
                worker, state, message.seq, message.ts, frame.image, received, None, frame.preprocess_ms,
                frame.decoded, at=received,
            )  # fmt: skip
            if frame.thumbnail is not None:
                self.watch.thumbnail(
                    state.key, protocol.thumbnail("image", message.stream, message.seq, message.ts, *frame.thumbnail)
                )
        elif isinstance(message, AudioChunk):
            worker, state = self._admit_input("audio", message.stream)
            # Decoding, resampling and the mel features of the new audio: off the loop (server/intake.py).
            self._take_window(worker, state, await asyncio.to_thread(self.intake.audio, state, message), received)
        elif isinstance(message, End):
            await self._end_stream(message, received)
        elif isinstance(message, Config):
            self._configure(message)
        elif isinstance(message, Ping):
            self.send(protocol.pong(message.ts, time.time()))
        elif isinstance(message, Watch):
            if message.token is not None and not token_accepted(self.settings.token, message.token):
                self.send(protocol.error(ErrorCode.UNAUTHORIZED, "a valid token is required to watch"))
                await self.close(CloseCode.UNAUTHORIZED, "a valid token is required")
                return
            self.watch.subscribe(self, message.streams)
        elif isinstance(message, Unwatch):
            self.watch.unsubscribe(self)

    def _take_window(self, worker: ModelWorker, state: StreamState, taken: TakenAudio, received: float) -> None:
        """An audio window to the model, or, when it is silent, its result at once without the model."""
        window = taken.window
        if window is None:
            return
        self._count_dropped(state, window.skipped)
        if taken.silent:
            self._send_silent(state, window.seq, window.ts, taken.at, received, window.seconds)
            return
        self._submit(
            worker, state, window.seq, window.ts, taken.payload, received, window.seconds, taken.features_ms,
            at=taken.at,
        )  # fmt: skip

    def _admit_input(self, modality: Modality, stream: str) -> tuple[ModelWorker, StreamState]:
        """The model and stream state for an input, once it is known the input can be taken."""
        assert self.serving is not None
        self.context.metrics.inputs.labels(modality).inc()
        worker = self.serving.workers.get(modality)
        if worker is None:
            raise InputError(ErrorCode.NOT_SERVED, f"this server does not serve {modality}")
        if self.context.registry.draining:
            raise InputError(ErrorCode.SHUTTING_DOWN, "the server is shutting down")
        key = StreamKey(self.id, modality, stream)
        state = self.streams.get(key)
        if state is None:
            if len(self.streams) >= self.settings.max_streams:
                limit = self.settings.max_streams
                raise InputError(ErrorCode.TOO_MANY_STREAMS, f"at most {limit} streams per connection")
            state = self.streams[key] = StreamState(key, consumers=self.context.consumers(key))
            self.watch.stream_started(key, self.serving.label_set(modality))
        return worker, state

    def _submit(
        self,
        worker: ModelWorker,
        state: StreamState,
        seq: int,
        ts: float,
        payload: Any,
        received: float,
        window_s: float | None = None,
        preprocess_ms: float = 0.0,
        decoded: float | None = None,
        *,
        at: float,
    ) -> None:
        """Queue an input for its model; ``decoded`` is when decoding ended, if not now."""
        state.pending += 1
        decode_ms = ms_between(received, decoded or time.perf_counter())
        worker.submit(
            Job(
                stream=state.key,
                payload=payload,
                seq=seq,
                ts=ts,
                received=received,
                decode_ms=decode_ms,
                sink=self,
                window_s=None if window_s is None else round(window_s, 3),
                options=self.options,
                preprocess_ms=preprocess_ms,
                at=at,
            )
        )

    async def _end_stream(self, message: End, received: float) -> None:
        """No more input on this stream: classify an audio stream's begun hop, then say ``ended``."""
        assert self.serving is not None
        state = self.streams.get(StreamKey(self.id, message.modality, message.stream))
        if state is None:
            self.send(protocol.ended(message.modality, message.stream))
            return
        state.ending = True
        worker = self.serving.workers.get(message.modality)
        if state.audio is not None and worker is not None and self.intake is not None:
            # Draining the resampler and the tail's features: off the loop, like every other audio step.
            self._take_window(worker, state, await asyncio.to_thread(self.intake.tail, state, message), received)
        self._finish_if_ended(state)

    def _configure(self, message: Config) -> None:
        top_k = self.options.top_k if message.top_k is None else message.top_k
        if not 1 <= top_k <= self.settings.max_top_k:
            raise InputError(ErrorCode.BAD_FIELD, f"'top_k' must be between 1 and {self.settings.max_top_k}")
        min_score = self.options.min_score if message.min_score is None else message.min_score
        embeddings = self.options.embeddings if message.embeddings is None else message.embeddings
        # A new object: queued inputs keep the options they came with.
        self.options = ResultOptions(top_k, min_score, embeddings)

    # --- called by the model worker, on the event loop ---------------------

    def count_dropped(self, job: Job, count: int) -> None:
        state = self.streams.get(job.stream)
        if state is not None:
            state.pending -= count
            self._count_dropped(state, count)
            self._finish_if_ended(state)

    def _count_dropped(self, state: StreamState, count: int) -> None:
        if count:
            state.dropped += count
            self.context.metrics.dropped.labels(state.key.modality).inc(count)

    def deliver(self, job: Job, outcome: ItemOutcome) -> None:
        state = self.streams.get(job.stream)
        if self.closed or state is None:
            return
        state.pending -= 1
        _, modality, stream = job.stream
        if outcome.scores is None:
            message = outcome.error or "inference failed"
            self.send(protocol.error(ErrorCode.INFERENCE_FAILED, message, job.seq, modality=modality, stream=stream))
        else:
            self._send_result(job, outcome, outcome.scores, state)
        self._finish_if_ended(state)

    def _send_result(self, job: Job, outcome: ItemOutcome, scores: Scores, state: StreamState) -> None:
        timings = {
            "decode_ms": job.decode_ms,
            "queue_ms": outcome.queue_ms,
            "preprocess_ms": round(job.preprocess_ms + outcome.preprocess_ms, 3),
            "encode_ms": outcome.encode_ms,
            "similarity_ms": outcome.similarity_ms,
            "total_ms": ms_since(job.received),
        }
        self.context.metrics.observe_result(state.key.modality, timings)
        dropped, state.dropped = state.dropped, 0
        own, shared = result_messages(state.key, job, outcome, scores, timings, dropped)
        self.send(own)
        self.watch.result(state.key, shared)
        # Consumers see every label's score, not only the top ones sent, so a label leaving the top is seen too.
        for consumer in state.consumers:
            self._send_events(state, consumer.consume(job.seq, job.ts, job.at, scores))

    def _send_silent(self, state: StreamState, seq: int, ts: float, at: float, received: float, seconds: float) -> None:
        """A silent window's result: no model, no labels, but its hop accounted for like any other."""
        self.context.metrics.silent.inc()
        timings = {"total_ms": ms_since(received)}
        self.context.metrics.observe_result(state.key.modality, timings)
        dropped, state.dropped = state.dropped, 0
        label_set = self.serving.label_set(state.key.modality) if self.serving is not None else None
        result = protocol.result(
            modality=state.key.modality, stream=state.key.name, seq=seq, ts=ts,
            labels_version=label_set.version if label_set is not None else 0, top=[], timings=timings,
            dropped=dropped, window_s=round(seconds, 3), silent=True,
        )  # fmt: skip
        self.send(result)
        self.watch.result(state.key, result)
        for consumer in state.consumers:
            self._send_events(state, consumer.silent(seq, ts, at))

    def _send_events(self, state: StreamState, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            if not self.closed:
                self.send(message)
            if message["type"] == "event":
                self.watch.event(state.key, message)

    def _stream_gone(self, state: StreamState) -> None:
        """A stream ended or its connection closed: its open events end, and watchers see it go."""
        for consumer in state.consumers:
            self._send_events(state, consumer.close())
        self.watch.stream_ended(state.key)

    def _finish_if_ended(self, state: StreamState) -> None:
        if state.ending and state.pending <= 0:
            del self.streams[state.key]
            self._stream_gone(state)
            self.send(protocol.ended(state.key.modality, state.key.name))

    # --- sending ------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "error":
            self.context.metrics.errors.labels(message["code"]).inc()
        evicted = self.outbox.put(message)
        if evicted is not None and evicted["type"] == "result":
            # A client that does not read loses its oldest results, and learns how many in the next one.
            state = self.streams.get(StreamKey(self.id, evicted["modality"], evicted["stream"]))
            if state is not None:
                self._count_dropped(state, 1 + evicted["dropped"])

    async def _send_loop(self) -> None:
        try:
            while True:
                message = await self.outbox.get()
                await self.websocket.send_bytes(protocol.encode(message))
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.debug("client %d: send stopped: %s", self.id, exc)

"""Per-stream and per-connection state between a model's outcome and the socket.

A ``ScoreConsumer`` sees every scored input of a stream against the whole label set, before the
result is trimmed to the client's top-k: this is where per-stream logic that must notice a label
falling out of the top (smoothing, events) hangs. ``result_messages`` builds a scored input's ``result``
from the options it came with. The ``Outbox`` is a connection's bounded send queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import protocol
from .audio import WindowBuffer
from .scoring import Scores
from .worker import ItemOutcome, Job, StreamKey


@dataclass(frozen=True)
class ResultOptions:
    """A connection's options for its results, as set by its last ``config``."""

    top_k: int
    min_score: float
    embeddings: bool = False  # each result carries the input's unit embedding


class ScoreConsumer(Protocol):
    """Per-stream logic over whole score vectors (events); each method returns messages to send (often none).

    ``at`` is the stream's own clock in seconds: for audio the audio received so far (a file sent faster than
    real time keeps its durations), for images the server's arrival time."""

    def consume(self, seq: int, ts: float, at: float, scores: Scores) -> list[dict[str, Any]]: ...

    def silent(self, seq: int, ts: float, at: float) -> list[dict[str, Any]]:
        """An input with nothing in it (a silent audio window) that the model did not see."""
        ...

    def close(self) -> list[dict[str, Any]]:
        """The stream ended or its connection closed."""
        ...


def result_messages(
    key: StreamKey, job: Job, outcome: ItemOutcome, scores: Scores, timings: dict[str, float], dropped: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A scored input's ``result`` for the connection that sent it, and the copy its watchers get.

    The embedding goes only to a connection that asked for it (``config {embeddings: true}``); watchers get
    results without one, so one client's choice never makes every watcher's messages larger.
    """
    options: ResultOptions = job.options
    shared = protocol.result(
        modality=key.modality,
        stream=key.name,
        seq=job.seq,
        ts=job.ts,
        labels_version=scores.label_set.version,
        top=scores.top(options.top_k, options.min_score),
        timings=timings,
        dropped=dropped,
        window_s=job.window_s,
    )
    if not options.embeddings or outcome.embedding is None:
        return shared, shared
    return {**shared, **protocol.embedding_fields(outcome.embedding)}, shared


@dataclass
class StreamState:
    key: StreamKey
    dropped: int = 0  # inputs since the last result that got none of their own
    pending: int = 0  # inputs of this stream the model worker holds (waiting or being embedded)
    ending: bool = False  # the client sent ``end``; ``ended`` follows once nothing is pending
    audio: WindowBuffer | None = None
    mel: Any = None  # the audio model's streaming front end for this stream (server/melspec.py), if any
    audio_seconds: float = 0.0  # of audio received: the stream's clock for its events
    consumers: list[ScoreConsumer] = field(default_factory=list)


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

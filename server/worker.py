"""The server's side of inference: which inputs wait, which go together, and what their scores are.

Each stream (a client's camera, a client's microphone) holds at most one waiting input. A newer input
replaces the waiting one, and the replaced one is counted as dropped for that stream, so nothing queues
without bound and every input gets a result or a count. The model itself is behind ``Embedder.embed``
(server/inference.py), which may run in this process or elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from .inference import Embedded, Embedder, InputsLost
from .labelsets import LabelSet, LiveLabels
from .protocol import Modality
from .scoring import Scores, Scoring, score_batch
from .timing import ms_between

log = logging.getLogger("sensorium.worker")


class StreamKey(NamedTuple):
    session: int
    modality: Modality
    name: str


class Sink(Protocol):
    """Where a job's outcome goes: the connection that sent the input, or a one-shot request."""

    def count_dropped(self, job: Job, count: int) -> None: ...

    def deliver(self, job: Job, outcome: ItemOutcome) -> None: ...


@dataclass
class Job:
    """One decoded input waiting for its model."""

    stream: StreamKey
    payload: Any  # a decoded image, or an audio window's samples
    seq: int
    ts: float
    received: float  # perf_counter() when the message arrived
    decode_ms: float
    sink: Sink
    window_s: float | None = None
    labels: LabelSet | None = None  # ad-hoc labels; None scores against the label file's current set
    oneshot: bool = False  # a one-shot request (HTTP), not a stream: never waited for, never makes others wait
    options: Any = None  # the sink's own per-input options (a session's top_k and min_score); never read here
    preprocess_ms: float = 0.0  # preprocessing done before the job was queued (a streaming front end's)
    at: float = 0.0  # the stream's clock, for its events (server/streams.py's ScoreConsumer says which)
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class ItemOutcome:
    embedding: np.ndarray | None  # (dim,), unit length
    scores: Scores | None  # against the whole label set; None when the model failed on this input
    error: str | None
    queue_ms: float
    preprocess_ms: float
    encode_ms: float
    similarity_ms: float


class LatestWinsQueue:
    """At most one waiting job per stream, handed out oldest stream first (round robin)."""

    ACTIVE_S = 2.0  # a stream that sent within this long is expected to send again

    def __init__(self) -> None:
        self._waiting: dict[StreamKey, Job] = {}
        self._ready = asyncio.Event()
        self._last_seen: dict[StreamKey, float] = {}

    def active_streams(self, now: float) -> int:
        for stream in [s for s, seen in self._last_seen.items() if seen < now - self.ACTIVE_S]:
            del self._last_seen[stream]
        return len(self._last_seen)

    def put(self, job: Job) -> None:
        if not job.oneshot:  # one-shot requests come once: nothing should wait for their next input
            self._last_seen[job.stream] = job.enqueued
        replaced = self._waiting.pop(job.stream, None)
        if replaced is not None:
            replaced.sink.count_dropped(replaced, 1)
        # Re-inserting puts the stream at the back: a busy stream never jumps ahead of the others.
        self._waiting[job.stream] = job
        self._ready.set()

    async def take(self, limit: int, wait_s: float = 0.0) -> list[Job]:
        """Up to ``limit`` jobs. While other recently active streams have nothing waiting, wait up to
        ``wait_s`` for their next input, so concurrent clients share model calls; the input of a lone
        stream never waits, and neither does a batch holding a one-shot request."""
        while not self._waiting:
            self._ready.clear()
            await self._ready.wait()
        deadline = time.perf_counter() + wait_s
        while self._worth_waiting(limit) and (remaining := deadline - time.perf_counter()) > 0:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), remaining)
            except TimeoutError:
                break
        streams = list(self._waiting)[:limit]
        return [self._waiting.pop(stream) for stream in streams]

    def _worth_waiting(self, limit: int) -> bool:
        if any(job.oneshot for job in self._waiting.values()):
            return False
        return len(self._waiting) < min(limit, self.active_streams(time.perf_counter()))

    def discard(self, streams: set[StreamKey]) -> None:
        for stream in streams:
            self._waiting.pop(stream, None)
            self._last_seen.pop(stream, None)

    def __len__(self) -> int:
        return len(self._waiting)


class ModelWorker:
    """Feeds one model: takes batches from the queue, embeds them, scores them, hands out the outcomes."""

    def __init__(
        self,
        embedder: Embedder,
        labels: LiveLabels,
        scoring: Scoring,
        max_batch: int,
        batch_wait_ms: float = 0.0,
        observe_batch: Callable[[float], None] | None = None,
        observe_lost: Callable[[float], None] | None = None,
    ) -> None:
        self.embedder = embedder
        self.labels = labels  # read at batch time, so a reload applies from the next batch
        self.scoring = scoring
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_ms / 1000
        self.observe_batch = observe_batch or (lambda size: None)
        self.observe_lost = observe_lost or (lambda count: None)
        self.in_flight = 0  # inputs inside the embedder now, over every batch in flight
        self.queue = LatestWinsQueue()
        # Scoring is numpy work of its own: a thread beside the model's, so the event loop never does it.
        self._scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"score-{labels.modality}")
        self._batches: set[asyncio.Task[None]] = set()

    def submit(self, job: Job) -> None:
        self.queue.put(job)

    def pending(self) -> int:
        """Inputs waiting for the model or inside it."""
        return len(self.queue) + self.in_flight

    async def run(self) -> None:
        # At most ``embedder.concurrency`` batches at once: a local model takes one, a pool of remote ones more.
        slots = asyncio.Semaphore(self.embedder.concurrency)
        while True:
            await slots.acquire()
            jobs = await self.queue.take(self.max_batch, self.batch_wait_s)
            task = asyncio.create_task(self._process(jobs))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _process(self, jobs: list[Job]) -> None:
        label_set = self.labels.current
        assert label_set is not None  # workers start after the first load
        started = time.perf_counter()
        self.observe_batch(len(jobs))
        self.in_flight += len(jobs)
        try:
            outcomes = await self._embed_and_score(jobs, label_set, started)
        except InputsLost as exc:
            self._lost(jobs, started, exc)
            return
        finally:
            self.in_flight -= len(jobs)
        for job, outcome in zip(jobs, outcomes, strict=True):
            job.sink.deliver(job, outcome)

    def _lost(self, jobs: list[Job], started: float, exc: InputsLost) -> None:
        """Every input of a lost batch is accounted for: a stream's counts as dropped (its next result says so),
        a one-shot request gets an error, since nothing later would answer it."""
        log.warning("%s: %d inputs lost: %s", self.labels.modality, len(jobs), exc)
        self.observe_lost(len(jobs))
        for job in jobs:
            if job.oneshot:
                job.sink.deliver(job, _failed(job, started, f"the model's replica was lost ({exc}); try again"))
            else:
                job.sink.count_dropped(job, 1)

    async def _embed_and_score(self, jobs: list[Job], label_set: LabelSet, started: float) -> list[ItemOutcome]:
        try:
            embedded = await self.embedder.embed([job.payload for job in jobs])
        except InputsLost:
            raise  # no input was at fault: retrying them one by one would only wait for the same loss again
        except Exception:
            if len(jobs) == 1:
                log.exception("%s model failed on %s seq %s", self.labels.modality, jobs[0].stream, jobs[0].seq)
                return [_failed(jobs[0], started, "the model failed on this input; see the server log")]
            # One bad input must not fail its batch-mates: run them one by one.
            return [(await self._embed_and_score([job], label_set, started))[0] for job in jobs]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._scorer, self._score, jobs, embedded, label_set, started)

    def _score(self, jobs: list[Job], embedded: Embedded, label_set: LabelSet, started: float) -> list[ItemOutcome]:
        t0 = time.perf_counter()
        scores = score_batch(embedded.embeddings, [job.labels or label_set for job in jobs], self.scoring)
        similarity_ms = ms_between(t0, time.perf_counter())
        return [
            ItemOutcome(
                embedding=embedded.embeddings[i],
                scores=scores[i],
                error=None,
                queue_ms=ms_between(job.enqueued, started),
                preprocess_ms=embedded.preprocess_ms,
                encode_ms=embedded.encode_ms,
                similarity_ms=similarity_ms,
            )
            for i, job in enumerate(jobs)
        ]

    def close(self) -> None:
        for task in self._batches:
            task.cancel()
        self.embedder.close()
        self._scorer.shutdown(wait=False, cancel_futures=True)


class FutureSink:
    """The sink of a one-shot request: the outcome resolves a future."""

    def __init__(self) -> None:
        self.future: asyncio.Future[ItemOutcome] = asyncio.get_running_loop().create_future()

    def count_dropped(self, job: Job, count: int) -> None:
        raise AssertionError("one-shot jobs have streams of their own and are never replaced")

    def deliver(self, job: Job, outcome: ItemOutcome) -> None:
        if not self.future.done():
            self.future.set_result(outcome)


def _failed(job: Job, started: float, message: str) -> ItemOutcome:
    return ItemOutcome(None, None, message, ms_between(job.enqueued, started), 0.0, 0.0, 0.0)

"""Inference: one worker per model, fed by a latest-wins queue that batches across clients.

Each stream (a client's camera, a client's microphone) holds at most one waiting input. A
newer input replaces the waiting one, and the replaced one is counted as dropped for that
stream, so nothing queues without bound and every input gets a result or a count.
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

from .encoders import Encoder
from .labelsets import LabelSet, LabelSource
from .protocol import Modality
from .scoring import similarities, softmax_scores, top_labels

log = logging.getLogger("sensorium.worker")


class StreamKey(NamedTuple):
    session: int
    modality: Modality
    name: str


class Sink(Protocol):
    """Where a job's outcome goes: the connection that sent the input."""

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
    top_k: int
    min_score: float
    sink: Sink
    window_s: float | None = None
    labels: LabelSet | None = None  # ad-hoc labels; None scores against the label file's current set
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class ItemOutcome:
    top: list[dict[str, Any]] | None
    error: str | None
    embedding: np.ndarray | None  # (dim,), unit length
    label_set: LabelSet | None  # what ``top`` was scored against
    queue_ms: float
    preprocess_ms: float
    encode_ms: float
    similarity_ms: float


class FutureSink:
    """The sink of a one-shot request: the outcome resolves a future."""

    def __init__(self) -> None:
        self.future: asyncio.Future[ItemOutcome] = asyncio.get_running_loop().create_future()

    def count_dropped(self, job: Job, count: int) -> None:
        raise AssertionError("one-shot jobs have streams of their own and are never replaced")

    def deliver(self, job: Job, outcome: ItemOutcome) -> None:
        if not self.future.done():
            self.future.set_result(outcome)


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
        stream never waits."""
        while not self._waiting:
            self._ready.clear()
            await self._ready.wait()
        now = time.perf_counter()
        if wait_s > 0 and len(self._waiting) < min(limit, self.active_streams(now)):
            deadline = now + wait_s
            while (
                len(self._waiting) < min(limit, self.active_streams(time.perf_counter()))
                and (remaining := deadline - time.perf_counter()) > 0
            ):
                self._ready.clear()
                try:
                    await asyncio.wait_for(self._ready.wait(), remaining)
                except TimeoutError:
                    break
        streams = list(self._waiting)[:limit]
        return [self._waiting.pop(stream) for stream in streams]

    def discard(self, streams: set[StreamKey]) -> None:
        for stream in streams:
            self._waiting.pop(stream, None)
            self._last_seen.pop(stream, None)

    def __len__(self) -> int:
        return len(self._waiting)


class ModelWorker:
    """Runs one model on its own thread, so the event loop keeps serving while it computes."""

    def __init__(
        self,
        encoder: Encoder,
        labels: LabelSource,
        max_batch: int,
        batch_wait_ms: float = 0.0,
        observe_batch: Callable[[float], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self.labels = labels  # read at batch time, so a reload applies from the next batch
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_ms / 1000
        self.observe_batch = observe_batch or (lambda size: None)
        self.busy = 0  # inputs inside the model now
        self.queue = LatestWinsQueue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{encoder.modality}")

    def submit(self, job: Job) -> None:
        self.queue.put(job)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self.queue.take(self.max_batch, self.batch_wait_s)
            label_set = self.labels.current
            assert label_set is not None  # workers start after the first load
            started = time.perf_counter()
            self.observe_batch(len(jobs))
            self.busy = len(jobs)
            try:
                outcomes = await loop.run_in_executor(self._executor, self._infer, jobs, label_set, started)
            finally:
                self.busy = 0
            for job, outcome in zip(jobs, outcomes, strict=True):
                job.sink.deliver(job, outcome)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _infer(self, jobs: list[Job], label_set: LabelSet, started: float) -> list[ItemOutcome]:
        try:
            return infer_batch(self.encoder, jobs, label_set, started)
        except Exception:
            if len(jobs) == 1:
                log.exception("%s model failed on %s seq %s", self.encoder.modality, jobs[0].stream, jobs[0].seq)
                return [_failed(jobs[0], started, "the model failed on this input; see the server log")]
        # One bad input must not fail its batch-mates: run them one by one.
        return [self._infer([job], label_set, started)[0] for job in jobs]


def infer_batch(encoder: Encoder, jobs: list[Job], label_set: LabelSet, started: float) -> list[ItemOutcome]:
    """preprocess -> encode -> similarity -> top-k for a batch, timing each stage."""
    t0 = time.perf_counter()
    prepared = encoder.prepare([job.payload for job in jobs])
    t1 = time.perf_counter()
    embeddings = encoder.encode(prepared)
    t2 = time.perf_counter()
    used = [job.labels or label_set for job in jobs]
    tops = _rank(embeddings, used, jobs, label_set, encoder.logit_scale)
    t3 = time.perf_counter()
    return [
        ItemOutcome(
            top=top,
            error=None,
            embedding=embeddings[i],
            label_set=used[i],
            queue_ms=_ms(job.enqueued, started),
            preprocess_ms=_ms(t0, t1),
            encode_ms=_ms(t1, t2),
            similarity_ms=_ms(t2, t3),
        )
        for i, (job, top) in enumerate(zip(jobs, tops, strict=True))
    ]


def _rank(
    embeddings: np.ndarray, used: list[LabelSet], jobs: list[Job], shared: LabelSet, logit_scale: float
) -> list[list[dict[str, Any]]]:
    # Inputs scored against the shared label set take one matrix product together; ad-hoc ones their own.
    together = [i for i, labels in enumerate(used) if labels is shared]
    rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if together:
        similarity = similarities(embeddings[together], shared.matrix)
        scores = softmax_scores(similarity, logit_scale)
        rows.update({i: (scores[n], similarity[n]) for n, i in enumerate(together)})
    for i, labels in enumerate(used):
        if i not in rows:
            similarity = similarities(embeddings[i : i + 1], labels.matrix)
            rows[i] = (softmax_scores(similarity, logit_scale)[0], similarity[0])
    return [top_labels(used[i].names, rows[i][0], rows[i][1], job.top_k, job.min_score) for i, job in enumerate(jobs)]


def _failed(job: Job, started: float, message: str) -> ItemOutcome:
    return ItemOutcome(None, message, None, None, _ms(job.enqueued, started), 0.0, 0.0, 0.0)


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000.0, 3)


def warm_up(encoder: Encoder, sample: Any) -> None:
    """One forward pass, so the first client does not pay for lazy initialisation."""
    embedding = encoder.encode(encoder.prepare([sample]))
    if not np.isfinite(embedding).all():
        raise RuntimeError(f"{encoder.modality} model produced non-finite output on warm-up")

"""The running server's shared parts: models, label sources, workers, connected sessions."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .encoders import Encoder, build_encoder, model_specs
from .errors import CloseCode
from .eventlog import EventLog
from .hub import ModelUnavailable
from .inference import Embedder, LocalEmbedder, ModelThread, warm_up
from .labels import LabelFileError
from .labelsets import EmbeddingCache, LabelSet, LabelSource, LiveLabels, configured_source
from .metrics import Metrics
from .outputs import EventOutput, build_outputs
from .protocol import Modality
from .registry import Registry
from .session import Serving, SessionContext
from .settings import Settings
from .stream_events import EventConsumer
from .streams import ScoreConsumer
from .watching import Watch
from .worker import FutureSink, ItemOutcome, Job, ModelWorker, StreamKey

log = logging.getLogger("sensorium")


class StartupError(RuntimeError):
    """Start-up cannot complete; the message is meant for the person who started the server."""


# Where a worker's batches are embedded, given the model loaded here (for labels and preprocessing) and its
# thread: in this process by default; ``sensorium cluster`` gives one that sends them to encoder replicas.
EmbedderFactory = Callable[[Modality, Encoder, ModelThread], Embedder]


def local_embedder(modality: Modality, encoder: Encoder, thread: ModelThread) -> Embedder:
    return LocalEmbedder(encoder, thread)


# Where a modality's labels come from, given its model, the model's thread and whom to tell of a change: the
# label files, read and embedded here, by default; ``sensorium cluster`` follows the cluster's one label hub.
LabelsFactory = Callable[[Modality, Encoder, ModelThread, Callable[[dict[str, Any]], None]], LiveLabels]


class Runtime:
    def __init__(
        self,
        settings: Settings,
        on_fatal: Callable[[str], None] | None = None,
        embedders: EmbedderFactory = local_embedder,
        labels: LabelsFactory | None = None,
    ) -> None:
        self.settings = settings
        self.on_fatal = on_fatal
        self.embedders = embedders
        self.labels = labels or self.label_files
        self.state = "loading"
        self.error: str | None = None
        self.encoders: dict[Modality, Encoder] = {}
        self.label_sources: dict[Modality, LiveLabels] = {}
        self.workers: dict[Modality, ModelWorker] = {}
        self.model_threads: dict[Modality, ModelThread] = {}
        self.serving: Serving | None = None  # what sessions use, once the models are ready
        # Per-stream consumers of full score vectors (server/streams.py): each factory may give one per new stream.
        self.consumer_factories: list[Callable[[StreamKey], ScoreConsumer | None]] = [
            lambda key: EventConsumer(key, settings)
        ]
        self.sessions = Registry(settings.max_connections)
        self.metrics = Metrics()
        # Where events go beyond the connections: MQTT, webhooks (server/outputs.py), the log (server/eventlog.py).
        self.outputs: list[EventOutput] = list(build_outputs(settings, self.metrics))
        self.event_log: EventLog | None = None  # GET /v1/events reads it
        if settings.data_dir:
            folder = Path(settings.data_dir).expanduser()
            self.event_log = EventLog(folder, settings.event_log_days, settings.event_log_max_rows, self.metrics)
            self.outputs.append(self.event_log)
        self.watch = Watch(self.metrics, self.outputs)
        self.metrics.watch_connections(lambda: len(self.sessions))
        self.cache = EmbeddingCache.at(settings.label_cache)
        self.audio_rate = 48_000
        self.image_side: int | None = None  # the image model's input side, for reduced-scale JPEG decoding
        self.started = time.monotonic()
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._request_ids = itertools.count(1)
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Begin loading in the background; the server answers /health meanwhile."""
        self.loop = asyncio.get_running_loop()
        for output in self.outputs:
            output.start()  # returns at once: a broker or receiver that is down does not hold the start
        self._tasks.append(asyncio.create_task(self._load_and_serve(), name="load-models"))

    async def _load_and_serve(self) -> None:
        try:
            await asyncio.to_thread(self._load)
        except (ModelUnavailable, StartupError, LabelFileError, ValueError) as exc:
            self._fail(str(exc))
            return
        except Exception as exc:  # an unexpected failure must still end start-up, loudly
            log.exception("start-up failed")
            self._fail(f"start-up failed: {exc!r}")
            return
        for modality, encoder in self.encoders.items():
            worker = ModelWorker(
                self.embedders(modality, encoder, self.model_threads[modality]), self.label_sources[modality],
                encoder.scoring, self.settings.max_batch, self.settings.batch_wait_ms,
                observe_batch=self.metrics.batch_size.labels(modality).observe,
                observe_lost=self.metrics.inputs_lost.labels(modality).inc,
            )  # fmt: skip
            self.metrics.watch_queue(modality, worker.queue.__len__)
            self.workers[modality] = worker
            self._tasks.append(asyncio.create_task(worker.run(), name=f"worker-{modality}"))
            self._tasks.append(asyncio.create_task(self.label_sources[modality].watch(self._stop)))
        audio = self.encoders.get("audio")
        self.serving = Serving(
            self.workers,
            self.image_side,
            self.audio_rate,
            self.welcome,
            {modality: encoder.prepare_one for modality, encoder in self.encoders.items()},
            audio.mel_stream if audio is not None else None,
            self._label_set,
        )
        self.state = "ok"
        self._ready.set()
        log.info(
            "ready: %s",
            ", ".join(f"{m} {e.name} on {e.device} ({e.backend}, {e.precision})" for m, e in self.encoders.items()),
        )

    def _load(self) -> None:
        started = time.perf_counter()
        for spec in model_specs(self.settings):
            modality = spec.modality
            # Everything that calls into a model runs on its one thread (server/inference.py says why).
            thread = self.model_threads[modality] = ModelThread(modality)
            encoder = self.encoders[modality] = thread.call(build_encoder, spec)
            source = self.labels(modality, encoder, thread, self._announce_labels)
            try:
                label_set = thread.call(source.load_now)
            except LabelFileError as exc:
                raise StartupError(f"{modality} labels {source.path}: {exc}") from exc
            self.label_sources[modality] = source
            log.info(
                "%s labels: %d from %s in %.0f ms", modality, len(label_set.names), source.path, label_set.encode_ms
            )
            if modality == "image":
                self.image_side = encoder.input_side
            if modality == "audio":
                # The audio buffers resample to the rate the model's feature extractor expects.
                self.audio_rate = encoder.sample_rate or self.audio_rate
            if self.embedders is local_embedder:  # remote models (sensorium cluster) are warmed up where they run
                thread.call(warm_up, encoder)
        log.info("models loaded and warmed up in %.1f s", time.perf_counter() - started)

    def label_files(
        self, modality: Modality, encoder: Encoder, thread: ModelThread, announce: Callable[[dict[str, Any]], None]
    ) -> LabelSource:
        """The default label source: the modality's label file or directory, embedded by this model."""
        return configured_source(
            self.settings, modality, encoder, self.cache, announce, metrics=self.metrics, model_thread=thread
        )

    def _label_set(self, modality: Modality) -> LabelSet | None:
        source = self.label_sources.get(modality)
        return source.current if source is not None else None

    def _announce_labels(self, message: dict[str, Any]) -> None:
        """A label file reloaded (or failed to): clients are told, and the outputs learn the new labels."""
        self.sessions.broadcast(message)
        label_set = self._label_set(message["modality"]) if message["type"] == "labels" else None
        if label_set is not None:
            self.watch.relabelled(label_set)

    def _fail(self, message: str) -> None:
        self.state = "failed"
        self.error = message
        self._ready.set()
        if self.on_fatal is not None:
            self.on_fatal(message)  # the command line reports it, once
        else:
            log.error("%s", message)

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self.workers.values():
            worker.close()
        for source in self.label_sources.values():
            source.close()
        # Last, so the events that closing connections ended still go out (each waits at most 2 s).
        await asyncio.gather(*(asyncio.to_thread(output.close, 2.0) for output in self.outputs))

    async def drain(self, timeout: float = 10.0) -> None:
        """Graceful shutdown: take no new connections or inputs, finish what the models hold, send the
        results, then close every connection with 1001 (going away)."""
        self.sessions.draining = True
        log.info("draining: finishing %d queued inputs for %d clients", self.pending(), len(self.sessions))
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.sessions.close_all(CloseCode.GOING_AWAY, "the server is shutting down")

    @property
    def draining(self) -> bool:
        return self.sessions.draining

    def pending(self) -> int:
        """Inputs waiting for a model or inside one."""
        return sum(worker.pending() for worker in self.workers.values())

    async def wait_ready(self) -> bool:
        await self._ready.wait()
        return self.state == "ok"

    def session_context(self) -> SessionContext:
        """What a WebSocket session may see of the server."""
        return SessionContext(self.settings, self.metrics, self.sessions, self._serving, self.watch, self._consumers)

    def _consumers(self, stream: StreamKey) -> list[ScoreConsumer]:
        return [consumer for factory in self.consumer_factories if (consumer := factory(stream)) is not None]

    async def _serving(self) -> Serving | None:
        return self.serving if await self.wait_ready() else None

    # --- one-shot requests (the HTTP API) ------------------------------------------

    async def infer(
        self,
        modality: Modality,
        payload: Any,
        *,
        received: float,
        decode_ms: float,
        labels: LabelSet | None = None,
    ) -> ItemOutcome:
        """Run one decoded input through its model's worker, batched with the streams but never waiting
        for them (scores come against the whole label set; the caller picks its top)."""
        sink = FutureSink()
        self.workers[modality].submit(
            Job(
                stream=StreamKey(0, modality, f"request-{next(self._request_ids)}"),
                payload=payload,
                seq=0,
                ts=0.0,
                received=received,
                decode_ms=decode_ms,
                sink=sink,
                labels=labels,
                oneshot=True,
            )
        )
        return await sink.future

    # --- what clients see -------------------------------------------------------

    def modalities(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for modality, source in self.label_sources.items():
            current = source.current
            encoder = self.encoders[modality]
            out[modality] = {
                "model": encoder.name,
                "backend": encoder.backend,
                "precision": encoder.precision,
                "scoring": encoder.scoring.describe(),
                "labels_version": current.version if current else 0,
                "label_count": len(current.names) if current else 0,
            }
        return out

    def limits(self) -> dict[str, Any]:
        s = self.settings
        return {
            "max_message_bytes": s.max_message_bytes,
            "max_image_pixels": s.max_image_pixels,
            "max_audio_chunk_seconds": s.max_audio_chunk_seconds,
            "max_top_k": s.max_top_k,
            "max_streams": s.max_streams,
            "idle_timeout_seconds": s.idle_timeout,
            "max_errors_per_10s": s.max_errors,
            "audio_window_seconds": s.audio_window,
            "audio_hop_seconds": s.audio_hop,
            "audio_sample_rate": self.audio_rate,
        }

    def welcome(self) -> dict[str, Any]:
        from . import protocol

        return protocol.welcome(f"sensorium/{__version__}", self.modalities(), self.limits())

    def health(self) -> dict[str, Any]:
        labels = {
            modality: {
                "path": str(source.path),
                "version": source.current.version if source.current else 0,
                "count": len(source.current.names) if source.current else 0,
                "error": source.last_error,
            }
            for modality, source in self.label_sources.items()
        }
        return {
            "status": self.state,
            "error": self.error,
            "server": f"sensorium/{__version__}",
            "device": next(iter(self.encoders.values())).device if self.encoders else None,
            "models": {
                modality: {
                    "name": encoder.name,
                    "device": encoder.device,
                    "backend": encoder.backend,
                    "precision": encoder.precision,
                    "scoring": encoder.scoring.describe(),
                }
                for modality, encoder in self.encoders.items()
            },
            "labels": labels,
            "clients": len(self.sessions),
            "uptime_s": round(time.monotonic() - self.started, 1),
        }

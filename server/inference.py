"""Inference that may run elsewhere: ``embed(batch)``, the one call the server makes of a model at run time.

The worker (server/worker.py) decides what goes into a batch and scores what comes back; an ``Embedder``
only turns a batch of decoded inputs into embeddings. ``LocalEmbedder`` runs an encoder in this process;
a later backend can run the same call in another process or on another machine, and declare how many
batches it takes at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from .encoders import Encoder
from .timing import ms_between

T = TypeVar("T")


@dataclass(frozen=True)
class Embedded:
    embeddings: np.ndarray  # (batch, dim) float32, unit rows
    preprocess_ms: float
    encode_ms: float


class InputsLost(Exception):
    """A batch's inputs are gone with the process or machine that held them (a replica died, none answered).

    The worker counts them as dropped rather than retrying: inputs are latest-wins, so by the time a retry could
    run the streams have sent newer ones, and a retry would only make those wait."""


class Embedder(Protocol):
    concurrency: int  # batches it can work on at once; the worker keeps at most this many in flight

    async def embed(self, inputs: list[Any]) -> Embedded:
        """Embed a batch of decoded inputs; raises if any input fails (the worker then retries them alone),
        or ``InputsLost`` if the batch is gone without an answer (the worker counts its inputs as dropped)."""

    def close(self) -> None: ...


class ModelThread:
    """The one thread that calls into a model: it loads it, encodes its labels, warms it up and runs it.

    Why one: torch's CPU kernels run on an OpenMP team owned by the calling thread, so every other thread
    that calls the model brings a team of its own to the same cores, and a forward pass measured 52 ms
    alone but 67 ms once a second thread had used torch. A model on a CPU already uses every core for one
    batch, so two calls at once would only contend; and the event loop never waits for a model.
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the model's thread and wait for it (start-up, which is off the event loop)."""
        return self._executor.submit(fn, *args).result()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class LocalEmbedder:
    """An encoder in this process, run on its model's thread."""

    concurrency = 1

    def __init__(self, encoder: Encoder, thread: ModelThread | None = None) -> None:
        self.encoder = encoder
        self.thread = thread or ModelThread(encoder.modality)

    async def embed(self, inputs: list[Any]) -> Embedded:
        return await self.thread.run(self.embed_now, inputs)

    def embed_now(self, inputs: list[Any]) -> Embedded:
        t0 = time.perf_counter()
        prepared = self.encoder.prepare(inputs)
        t1 = time.perf_counter()
        embeddings = self.encoder.encode(prepared)
        t2 = time.perf_counter()
        return Embedded(embeddings, ms_between(t0, t1), ms_between(t1, t2))

    def close(self) -> None:
        self.thread.close()


def warm_up(encoder: Encoder) -> None:
    """One forward pass on a plain input (a grey frame, a second of silence), so the first client does not pay
    for lazy initialisation."""
    if encoder.modality == "image":
        sample: Any = np.full((240, 320, 3), 127, dtype=np.uint8)
    else:
        sample = np.zeros(encoder.sample_rate or 48_000, dtype=np.float32)
    embedding = encoder.encode(encoder.prepare([sample]))
    if not np.isfinite(embedding).all():
        raise RuntimeError(f"{encoder.modality} model produced non-finite output on warm-up")

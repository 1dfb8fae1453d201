"""Inference that may run elsewhere: ``embed(batch)``, the one call the server makes of a model at run time.

The worker (server/worker.py) decides what goes into a batch and scores what comes back; an ``Embedder``
only turns a batch of decoded inputs into embeddings. ``LocalEmbedder`` runs an encoder in this process;
a later backend can run the same call in another process or on another machine, and declare how many
batches it takes at once.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .encoders import Encoder


@dataclass(frozen=True)
class Embedded:
    embeddings: np.ndarray  # (batch, dim) float32, unit rows
    preprocess_ms: float
    encode_ms: float


class Embedder(Protocol):
    concurrency: int  # batches it can work on at once; the worker keeps at most this many in flight

    async def embed(self, inputs: list[Any]) -> Embedded:
        """Embed a batch of decoded inputs; raises if any input fails (the worker then retries them alone)."""

    def close(self) -> None: ...


class LocalEmbedder:
    """An encoder in this process, called from one thread of its own.

    One thread, because a model on a CPU already uses every core for one batch: two batches at once
    would only contend; and the event loop must never wait for a forward pass.
    """

    concurrency = 1

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{encoder.modality}")

    async def embed(self, inputs: list[Any]) -> Embedded:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.embed_now, inputs)

    def embed_now(self, inputs: list[Any]) -> Embedded:
        t0 = time.perf_counter()
        prepared = self.encoder.prepare(inputs)
        t1 = time.perf_counter()
        embeddings = self.encoder.encode(prepared)
        t2 = time.perf_counter()
        return Embedded(embeddings, _ms(t0, t1), _ms(t1, t2))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def warm_up(encoder: Encoder, sample: Any) -> None:
    """One forward pass, so the first client does not pay for lazy initialisation."""
    embedding = encoder.encode(encoder.prepare([sample]))
    if not np.isfinite(embedding).all():
        raise RuntimeError(f"{encoder.modality} model produced non-finite output on warm-up")


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000.0, 3)

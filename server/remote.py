"""The gateway's side of a model on other machines: ``RayEmbedder`` sends a worker's batch to an encoder deployment.

The gateway keeps everything that needs the connection (latest-wins queues, scoring, events); only the decoded,
preprocessed inputs travel, and only (batch, dim) embeddings come back. A replica that dies while it holds a batch
takes the batch with it: Serve does not retry a request that was already running (its router retries rejected
assignments only), so the inputs are reported as ``InputsLost`` and the worker counts them as dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray.exceptions import RayActorError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError, RequestCancelledError

from .inference import Embedded, InputsLost
from .protocol import Modality

# Errors that say where the batch went, not what was wrong with it: its replica died or became unreachable
# (ActorDiedError, ActorUnavailableError), or none could be reached. A model's own exception arrives as a
# RayTaskError instead, and goes to the worker like a local model's (its inputs retried one by one).
LOST = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError, RequestCancelledError)


@dataclass(frozen=True)
class EncoderCall:
    """One gateway batch sent to an encoder replica, which merges calls from every gateway into its batches."""

    inputs: list[Any]  # decoded, preprocessed inputs
    caller: str  # the gateway replica's id: the encoder counts how many gateways each batch served


@dataclass(frozen=True)
class EncoderReply:
    """What an encoder replica returns for one call: that call's rows of the batch it ran in."""

    embeddings: np.ndarray  # (inputs of this call, dim) float32, unit rows
    preprocess_ms: float
    encode_ms: float
    batch: int  # inputs in the replica's batch, over every call it merged (from any gateway)
    calls: int  # calls merged into that batch
    node: str  # the Ray node the replica ran on


class RayEmbedder:
    """The Embedder protocol over a Serve deployment handle to an encoder (server/cluster_app.py)."""

    def __init__(
        self,
        handle: Any,  # a DeploymentHandle to EncoderDeployment
        modality: Modality,
        caller: str = "",
        concurrency: int = 2,
        timeout_s: float = 30.0,
        observe_batch: Callable[[float], None] | None = None,
    ) -> None:
        # More than one batch in flight keeps the replicas busy while replies travel; each input inside an
        # encoder can no longer be replaced by a newer frame, so the number stays small.
        self.concurrency = concurrency
        self.handle = handle
        self.modality = modality
        self.caller = caller  # this gateway replica's id (EncoderCall.caller)
        self.timeout_s = timeout_s
        self.observe_batch = observe_batch or (lambda size: None)

    async def embed(self, inputs: list[Any]) -> Embedded:
        response = self.handle.embed.remote(EncoderCall(inputs, self.caller))
        try:
            # A call waits forever while no replica exists (Serve's router leaves the timeout to its caller).
            reply: EncoderReply = await asyncio.wait_for(_await(response), self.timeout_s)
        except LOST as exc:
            raise InputsLost(f"{self.modality} encoder replica lost: {type(exc).__name__}") from exc
        except TimeoutError as exc:
            response.cancel()
            raise InputsLost(f"no {self.modality} encoder replica answered within {self.timeout_s:g} s") from exc
        self.observe_batch(reply.batch)
        return Embedded(reply.embeddings, reply.preprocess_ms, reply.encode_ms)

    def close(self) -> None:
        pass  # the handle holds no resources of its own; the deployment outlives this gateway


async def _await(response: Any) -> Any:
    return await response

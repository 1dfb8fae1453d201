"""Sensorium as a Ray Serve application: gateways that hold the connections, encoders that hold the models.

``Gateway`` is the ingress: each replica runs Sensorium's own app (``create_app``: sessions, latest-wins queues,
scoring, labels, events, HTTP API) with ``RayEmbedder``s in place of the in-process models. ``EncoderDeployment``
replicas, one deployment per modality, load the model and run batches merged across every gateway's calls with
``@serve.batch``, wherever Ray places them (GPU nodes). ``build_app`` binds the graph; server/cluster.py runs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import ray
from ray import serve
from ray.serve import Application, Deployment
from starlette.applications import Starlette

from .app import create_app
from .cluster import ClusterOptions, gateway_settings, replica_count
from .encoders import Encoder, build_encoder, model_specs
from .inference import LocalEmbedder, ModelThread, warm_up
from .label_hub import HubLabelFeed, LabelHub
from .protocol import Modality
from .remote import EncoderCall, EncoderReply, RayEmbedder
from .runtime import Runtime
from .settings import Settings

log = logging.getLogger("sensorium.cluster")


def _calls_size(calls: list[EncoderCall]) -> int:
    return sum(len(call.inputs) for call in calls)


class EncoderDeployment:
    """One modality's model, fed batches merged across the calls of every gateway."""

    def __init__(
        self, settings: Settings, modality: Modality, max_batch: int, batch_wait_ms: float, min_batch_s: float = 0.0
    ) -> None:
        # The spec is resolved here, not on the driver: device "auto" means this node's GPU when Ray gave it one.
        spec = next(spec for spec in model_specs(settings) if spec.modality == modality)
        self.modality = modality
        self.min_batch_s = min_batch_s
        self.thread = ModelThread(modality)  # server/inference.py: why one thread calls the model
        self.encoder = self.thread.call(build_encoder, spec)
        self.thread.call(warm_up, self.encoder)
        self.local = LocalEmbedder(self.encoder, self.thread)
        self.node = ray.get_runtime_context().get_node_id()
        self.batch_sizes: Counter[int] = Counter()
        self.gateways_per_batch: Counter[int] = Counter()  # how many gateways' calls each batch merged
        self.texts_encoded = 0
        batcher: Any = self.embed  # @serve.batch's wrapper, which the decorator's type does not show
        batcher.set_max_batch_size(max_batch)
        batcher.set_batch_wait_timeout_s(batch_wait_ms / 1000)
        log.info("%s encoder %s on %s, node %s", modality, self.encoder.name, self.encoder.device, self.node[:8])

    # A call is one gateway batch (a list of inputs); batch_size_fn counts inputs, so merged calls stay within
    # max_batch. Gateway batches are at most max_batch themselves, so no single call is refused as too big.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005, batch_size_fn=_calls_size)
    async def embed(self, calls: list[EncoderCall]) -> list[EncoderReply]:
        started = time.perf_counter()
        flat = [item for call in calls for item in call.inputs]
        self.batch_sizes[len(flat)] += 1
        self.gateways_per_batch[len({call.caller for call in calls})] += 1
        embedded = await self.local.embed(flat)
        if self.min_batch_s:  # tests hold batches this long, so a replica killed mid-stream has one inside
            await asyncio.sleep(self.min_batch_s - (time.perf_counter() - started))
        replies, start = [], 0
        for call in calls:
            rows = embedded.embeddings[start : start + len(call.inputs)]
            replies.append(
                EncoderReply(rows, embedded.preprocess_ms, embedded.encode_ms, len(flat), len(calls), self.node)
            )
            start += len(call.inputs)
        return replies

    async def embed_texts(self, prompts: list[str]) -> np.ndarray:
        """The label hub's prompts through this model's text tower (server/label_hub.py)."""
        self.texts_encoded += len(prompts)
        embeddings: np.ndarray = await self.thread.run(self.encoder.encode_text, prompts)
        return embeddings

    def describe(self) -> dict[str, Any]:
        """What this replica is and has done: for tests, status pages and benchmarks."""
        return {
            "modality": self.modality,
            "model": self.encoder.name,
            "identity": self.encoder.identity,
            "texts_encoded": self.texts_encoded,
            "device": self.encoder.device,
            "node": self.node,
            "actor": ray.get_runtime_context().get_actor_name(),
            "pid": os.getpid(),
            "batch_sizes": dict(self.batch_sizes),
            "gateways_per_batch": dict(self.gateways_per_batch),
        }


class Gateway:
    """Sensorium's app, with the models behind the encoder deployments' handles."""

    def __init__(self, settings: Settings, options: ClusterOptions, encoders: dict[str, Any], hub: Any) -> None:
        self.settings = settings
        self.cluster = options
        self.encoders = encoders
        self.hub = hub
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.runtime: Runtime | None = None

    def __serve_build_asgi_app__(self) -> Starlette:
        # Runs at replica start, after __init__: the handles are live here.
        app: Starlette

        def embedders(modality: Modality, encoder: Encoder, thread: ModelThread) -> RayEmbedder:
            runtime: Runtime = app.state.runtime
            return RayEmbedder(
                self.encoders[modality],
                modality,
                caller=self.replica,
                concurrency=self.cluster.inflight_batches,
                timeout_s=self.cluster.encoder_timeout,
                observe_batch=runtime.metrics.encoder_batch_size.labels(modality).observe,
            )

        def labels(
            modality: Modality, encoder: Encoder, thread: ModelThread, announce: Callable[[dict[str, Any]], None]
        ) -> HubLabelFeed:
            return HubLabelFeed(self.hub, modality, announce, self.replica)

        app = create_app(self.settings, embedders=embedders, labels=labels)
        self.runtime = app.state.runtime
        return app

    def replica_metrics(self) -> tuple[str, str]:
        """This replica's id and its /metrics text: the HTTP /metrics answers from whichever gateway the proxy
        picks, and a tool that needs every gateway's counts calls this through a handle until it has seen each."""
        assert self.runtime is not None
        return self.replica, self.runtime.metrics.render().decode()


def _deployment(cls: type) -> Deployment:
    # serve.deployment is annotated as returning a decorator, even when it is given the class itself.
    made: Deployment = cast(Any, serve.deployment)(cls)
    return made


def build_app(settings: Settings, options: ClusterOptions, *, min_batch_s: float = 0.0) -> Application:
    """The bound application: a Gateway deployment and one EncoderDeployment per modality served.

    ``min_batch_s``, for tests: every encoder batch takes at least this long, so a replica is seldom between
    batches when it is killed."""
    encoders: dict[str, Application] = {}
    for modality, replicas, max_replicas, gpus in (
        ("image", options.image_replicas, options.image_max_replicas, options.image_gpus),
        ("audio", options.audio_replicas, options.audio_max_replicas, options.audio_gpus),
    ):
        if (modality == "image" and not settings.serves_image) or (modality == "audio" and not settings.serves_audio):
            continue
        encoders[modality] = (
            _deployment(EncoderDeployment)
            .options(
                name=f"{modality.capitalize()}Encoder",
                # A dead replica is noticed by its callers at once (their calls fail); the health check restarts it.
                health_check_period_s=2,
                health_check_timeout_s=30,
                **replica_count(replicas, max_replicas, options.target_requests),
                # Below max_batch x concurrent batches, @serve.batch could never fill (Serve warns of it too).
                max_ongoing_requests=max(16, 2 * settings.max_batch),
                ray_actor_options={"num_cpus": options.encoder_cpus, "num_gpus": gpus},
            )
            .bind(settings, modality, settings.max_batch, options.batch_wait_ms, min_batch_s)
        )
    # One replica, on the head node (where `sensorium cluster` runs and the label files are), for every gateway.
    hub = (
        _deployment(LabelHub)
        .options(
            name="LabelHub",
            num_replicas=1,
            health_check_period_s=2,
            max_ongoing_requests=1000,  # every gateway keeps a long poll per modality waiting here
            ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}},
        )
        .bind(settings, encoders)
    )
    # serve.ingress() with no app: each replica builds it in Gateway.__serve_build_asgi_app__.
    gateway = _deployment(serve.ingress()(Gateway)).options(
        name="Gateway",
        num_replicas=options.gateways,
        # Serve waits this long for a stopping replica's WebSockets; clients reconnect after its close anyway.
        graceful_shutdown_timeout_s=5,
        # A WebSocket holds one request for its whole life: Serve's default of 5 would hold the sixth client in its
        # handshake. Above Sensorium's own limits, its clear refusals (close 1013, 503) are what clients see.
        max_ongoing_requests=settings.max_connections + settings.max_requests + 8,
        ray_actor_options={"num_cpus": options.gateway_cpus},
    )
    return gateway.bind(gateway_settings(settings), options, encoders, hub)


def app_builder(args: dict[str, Any]) -> Application:
    """The application for a Serve config file (``serve run``, ``serve deploy``, KubeRay's RayService):
    ``import_path: server.cluster_app:app_builder``, ``args`` spelled as ``sensorium cluster``'s flags
    (``image-model: /models/clip``, ``image-replicas: 2``, ``allow-label-edits: true``; a list repeats its flag).
    Where the proxies listen and ``request_timeout_s`` are the config file's own ``http_options`` there."""
    from .cli import build_parser, settings_from_args
    from .cluster import absolute_paths, options_from_args

    try:
        parsed = build_parser().parse_args(["cluster", *flags_from_args(args)])
    except SystemExit as exc:  # argparse has printed what was wrong to the log
        raise ValueError(f"sensorium's application args {args} are not valid flags of 'sensorium cluster'") from exc
    return build_app(absolute_paths(settings_from_args(parsed)), options_from_args(parsed))


def flags_from_args(args: dict[str, Any]) -> list[str]:
    """A config file's ``args`` as command-line flags: ``true`` a bare flag, ``false``/``null`` none, a list its
    flag once per item."""
    flags: list[str] = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        for item in value if isinstance(value, list) else [value]:
            if item is True:
                flags.append(flag)
            elif item is not False and item is not None:
                flags += [flag, str(item)]
    return flags

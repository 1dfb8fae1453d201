"""``sensorium cluster``: the same server on a Ray cluster (docs/cluster.md), gateways and encoders as deployments.

It takes every ``serve`` flag, plus where the cluster is and how the models spread over it. With no ``--address``
it starts a local Ray instance that lives as long as this command; with one it joins a running cluster and leaves
the cluster running when it ends (the application is deleted).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import threading
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .settings import Settings

log = logging.getLogger("sensorium")

APP_NAME = "sensorium"
PROXY_LOCATIONS = ("HeadOnly", "EveryNode")


@dataclass(frozen=True)
class ClusterOptions:
    """How the application is spread over the cluster (``sensorium cluster``'s own flags)."""

    gateways: int = 1
    image_replicas: int = 1
    audio_replicas: int = 1
    image_max_replicas: int = 0  # above image_replicas: Serve scales the image encoders between the two
    audio_max_replicas: int = 0
    target_requests: float = 2.0  # ongoing calls per encoder replica that autoscaling aims at
    image_gpus: float = 0.0  # GPUs per image encoder replica; fractions pack replicas onto one GPU
    audio_gpus: float = 0.0
    encoder_cpus: float = 1.0
    gateway_cpus: float = 1.0
    inflight_batches: int = 2  # batches each gateway keeps in flight per model
    encoder_timeout: float = 30.0  # a batch without an answer this long is counted as lost
    batch_wait_ms: float = 5.0  # an encoder waits this long for other calls to join a batch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags ``cluster`` adds to ``serve``'s; their defaults are ClusterOptions'."""
    defaults = {f.name: f.default for f in fields(ClusterOptions)}
    group = parser.add_argument_group("cluster")
    group.add_argument(
        "--address",
        default=None,
        help="a running Ray cluster: 'auto' (one started here with 'ray start --head') or host:6379 "
        "(default: start a local Ray instance for as long as this command runs)",
    )
    group.add_argument(
        "--proxy-location",
        choices=PROXY_LOCATIONS,
        default="HeadOnly",
        help="where Serve's HTTP proxies accept connections: this node only, or every node with a replica "
        "(behind a load balancer) (default %(default)s)",
    )
    numbers: list[tuple[str, type, str]] = [
        ("gateways", int, "gateway replicas: each holds its own connections (default %(default)s)"),
        ("image_replicas", int, "image encoder replicas (default %(default)s)"),
        ("audio_replicas", int, "audio encoder replicas (default %(default)s)"),
        (
            "image_max_replicas",
            int,
            "above --image-replicas: Serve adds image encoder replicas up to this many under load, and removes "
            "them when idle (default %(default)s: a fixed count)",
        ),
        ("audio_max_replicas", int, "the same for the audio encoders (default %(default)s: a fixed count)"),
        (
            "target_requests",
            float,
            "autoscaling aims at this many batches waiting or running per encoder replica (default %(default)s)",
        ),
        ("image_gpus", float, "GPUs per image encoder replica; 0.5 puts two on a GPU (default %(default)s)"),
        ("audio_gpus", float, "GPUs per audio encoder replica (default %(default)s)"),
        (
            "encoder_cpus",
            float,
            "CPUs Ray reserves per encoder replica: also the torch threads of a CPU encoder (default %(default)s)",
        ),
        ("gateway_cpus", float, "CPUs Ray reserves per gateway replica (default %(default)s)"),
        ("inflight_batches", int, "batches each gateway keeps in flight per model (default %(default)s)"),
        (
            "encoder_timeout",
            float,
            "seconds a batch may wait for an encoder; then its inputs count as dropped (default %(default)s)",
        ),
        (
            "encoder_batch_wait_ms",
            float,
            "an encoder waits this long for other gateways' calls to join its batch (default %(default)s)",
        ),
    ]
    for name, kind, help in numbers:
        default = defaults["batch_wait_ms" if name == "encoder_batch_wait_ms" else name]
        group.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=help)


def options_from_args(args: argparse.Namespace) -> ClusterOptions:
    values: dict[str, Any] = {f.name: getattr(args, f.name, None) for f in fields(ClusterOptions)}
    values["batch_wait_ms"] = args.encoder_batch_wait_ms
    options = ClusterOptions(**values)
    if min(options.gateways, options.inflight_batches, options.image_replicas, options.audio_replicas) < 1:
        raise ValueError(
            "--gateways, --inflight-batches, --image-replicas and --audio-replicas must be at least 1 "
            "(--no-image or --no-audio leaves a model out)"
        )
    if min(options.image_gpus, options.audio_gpus, options.encoder_cpus, options.gateway_cpus) < 0:
        raise ValueError("--image-gpus, --audio-gpus, --encoder-cpus and --gateway-cpus must not be negative")
    for name, least, most in (
        ("image", options.image_replicas, options.image_max_replicas),
        ("audio", options.audio_replicas, options.audio_max_replicas),
    ):
        if most and most < least:
            raise ValueError(f"--{name}-max-replicas ({most}) is below --{name}-replicas ({least})")
    if options.target_requests <= 0:
        raise ValueError("--target-requests must be positive")
    if options.encoder_timeout <= 0:
        raise ValueError("--encoder-timeout must be positive")
    return options


def replica_count(replicas: int, max_replicas: int, target_requests: float) -> dict[str, Any]:
    """A deployment's replica options: a fixed count, or Serve autoscaling between ``replicas`` and
    ``max_replicas`` on the calls waiting or running per replica."""
    if max_replicas <= replicas:
        return {"num_replicas": replicas}
    return {
        "num_replicas": "auto",
        "autoscaling_config": {
            "min_replicas": replicas,
            "initial_replicas": replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": target_requests,
        },
    }


def gateway_settings(settings: Settings) -> Settings:
    """A gateway's own copy of each model embeds labels and preprocesses inputs: on its CPU, whatever the
    encoders run on (``--device cuda`` and fp16 are the encoders')."""
    if settings.device == "cpu" and settings.precision != "fp16":
        return settings
    return replace(settings, device="cpu", precision="fp32")


def absolute_paths(settings: Settings) -> Settings:
    """The settings with their files as absolute paths: replicas run in Ray's worker processes, whose working
    directory is not this command's."""
    from .preflight import find_label_file

    def folder(value: str) -> str:
        return str(Path(value).expanduser().resolve()) if value else value

    return replace(
        settings,
        image_labels=find_label_file(settings.image_labels, "image.txt").resolve(),
        audio_labels=find_label_file(settings.audio_labels, "audio.txt").resolve(),
        label_cache=folder(settings.label_cache),
        data_dir=folder(settings.data_dir),
    )


def resources_asked(settings: Settings, options: ClusterOptions) -> tuple[float, float]:
    """The CPUs and GPUs the application reserves at its start: gateways, encoder replicas (the label hub none)."""
    encoders = [
        (options.image_replicas, options.image_gpus) if settings.serves_image else (0, 0.0),
        (options.audio_replicas, options.audio_gpus) if settings.serves_audio else (0, 0.0),
    ]
    cpus = options.gateways * options.gateway_cpus + sum(n for n, _ in encoders) * options.encoder_cpus
    return cpus, sum(n * share for n, share in encoders)


def resource_shortfall(cpus: float, gpus: float, available: dict[str, float]) -> str | None:
    """What the cluster lacks for the application's replicas, in words with the flags that change it; None if
    it has room."""
    if gpus > available.get("GPU", 0.0):
        return (
            f"the encoder replicas ask for {gpus:g} GPUs and the cluster has {available.get('GPU', 0.0):g}: lower "
            "--image-gpus/--audio-gpus (0 runs the encoders on CPUs; 0.5 puts two replicas on a GPU) or the replicas"
        )
    if cpus > available.get("CPU", 0.0):
        return (
            f"the replicas reserve {cpus:g} CPUs and the cluster has {available.get('CPU', 0.0):g}: lower "
            "--encoder-cpus/--gateway-cpus (fractions are fine) or the replica counts"
        )
    return None


def run(settings: Settings, args: argparse.Namespace) -> int:
    # Before Ray is imported: it reports usage statistics unless told not to, in the process that starts it.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(settings.log_level.upper())
    from . import preflight

    found = preflight.problems(gateway_settings(settings))
    try:
        preflight.listen(settings.host, settings.port).close()  # Serve's proxy binds it; taken is said now
    except OSError as exc:
        found.insert(0, str(exc))
    if found:
        print("sensorium: cannot start:\n" + "\n".join(f"  - {problem}" for problem in found), file=sys.stderr)
        return 2
    options = options_from_args(args)
    settings = absolute_paths(settings)

    import ray
    from ray import serve

    from .cluster_app import build_app

    cpus, gpus = resources_asked(settings, options)
    if args.address is None:
        # A local instance counts the machine's cores; the replicas' reservations are scheduling tokens, so it
        # counts as many as they ask for rather than leave one pending forever (they share the cores).
        cores = os.cpu_count() or 1
        if cpus > cores:
            log.warning("the replicas reserve %g CPUs and this machine has %d: they share its cores", cpus, cores)
        ray.init(num_cpus=max(cores, math.ceil(cpus)), include_dashboard=False, namespace="serve")
    else:
        ray.init(address=args.address, namespace="serve")
    shortfall = resource_shortfall(cpus, gpus, ray.cluster_resources())
    if shortfall and args.address is None:
        ray.shutdown()
        print(f"sensorium: cannot start: {shortfall}", file=sys.stderr)
        return 2
    if shortfall:  # a cluster may yet grow (an autoscaler, nodes joining): the replicas wait for it
        log.warning("%s; the replicas that do not fit wait until the cluster has room", shortfall)
    try:
        start_serve(settings, args.proxy_location)
        serve.run(build_app(settings, options), name=APP_NAME, route_prefix="/")
        log.info("serving on http://%s:%d (stream to /ws); Ctrl-C stops", settings.host, settings.port)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        serve.delete(APP_NAME)
        if args.address is None:
            serve.shutdown()
    finally:
        ray.shutdown()
    return 0


def start_serve(settings: Settings, proxy_location: str) -> None:
    from ray import serve

    # No request_timeout_s: Serve measures it from the start of a request, so it would cut every WebSocket.
    serve.start(
        proxy_location=proxy_location,
        http_options={"host": settings.host, "port": settings.port, "request_timeout_s": None},
    )

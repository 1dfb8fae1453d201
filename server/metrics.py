"""Prometheus metrics, one registry per app (so several apps in one process keep their own)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGES = ("decode", "queue", "preprocess", "encode", "similarity", "total")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "sensorium_stage_seconds", "Per-stage latency of results", ["modality", "stage"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inputs = Counter("sensorium_inputs", "Frames and audio chunks received", ["modality"], registry=r)
        self.results = Counter("sensorium_results", "Results sent", ["modality"], registry=r)
        self.dropped = Counter("sensorium_dropped", "Inputs that got no result of their own", ["modality"], registry=r)
        self.errors = Counter("sensorium_errors", "Error messages sent, by code", ["code"], registry=r)
        self.connections = Gauge("sensorium_connections", "Open WebSocket connections", registry=r)
        self.reloads = Counter("sensorium_label_reloads", "Label file reloads", ["modality", "outcome"], registry=r)
        self.reload_seconds = Histogram(
            "sensorium_label_reload_seconds", "Time to reload a label file", ["modality"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "sensorium_batch_size", "Inputs per model call", ["modality"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32), registry=r,
        )  # fmt: skip
        self.inputs_lost = Counter(
            "sensorium_inputs_lost", "Inputs gone with an encoder replica (counted as dropped too)", ["modality"],
            registry=r,
        )  # fmt: skip
        self.encoder_batch_size = Histogram(
            "sensorium_encoder_batch_size", "Inputs per encoder replica call, across gateways (sensorium cluster)",
            ["modality"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32), registry=r,
        )  # fmt: skip
        self.events = Counter("sensorium_events", "Events (starts and ends)", ["modality", "state"], registry=r)
        self.silent = Counter("sensorium_silent_windows", "Audio windows not sent to the model: silent", registry=r)
        self.output_sent = Counter(
            "sensorium_output_sent", "Events an output delivered (mqtt, webhook, eventlog)", ["output"], registry=r
        )
        self.output_dropped = Counter(
            "sensorium_output_dropped", "Events an output lost, and why (overflow, failed, ...)", ["output", "reason"],
            registry=r,
        )  # fmt: skip
        self.output_up = Gauge("sensorium_output_up", "1 while an output can deliver", ["output"], registry=r)
        self.watchers = Gauge("sensorium_watchers", "Connections watching other streams", registry=r)
        self.queue_depth = Gauge("sensorium_queue_depth", "Inputs waiting for a model", ["modality"], registry=r)

    def watch_connections(self, count: Callable[[], int]) -> None:
        self.connections.set_function(lambda: float(count()))

    def watch_queue(self, modality: str, depth: Callable[[], int]) -> None:
        self.queue_depth.labels(modality).set_function(lambda: float(depth()))

    def observe_result(self, modality: str, timings: dict[str, float]) -> None:
        self.results.labels(modality).inc()
        for stage in STAGES:
            value = timings.get(f"{stage}_ms")
            if value is not None:
                self.stage_seconds.labels(modality, stage).observe(value / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""The webhook output against real HTTP receivers (http.server in a thread)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from server.metrics import Metrics
from server.webhook import WebhookOutput, check_webhook_url

from .helpers import free_port, wait_until

EVENT: dict[str, Any] = {
    "type": "event", "modality": "audio", "stream": "mic", "client": 3, "label": "siren", "group": "alarms",
    "state": "start", "score": 4.2, "seq": 17, "ts": 1732450000.12, "time": 1732450000.35,
}  # fmt: skip
QUICK = {"attempts": 3, "backoff": 0.01, "backoff_cap": 0.05}  # retries without waiting in tests


class Receiver:
    """Records each request (path, headers, body); answers from ``statuses`` in turn, then 200.

    With a ``gate``, every request waits for it to be set before answering: a receiver that hangs.
    """

    def __init__(self, statuses: tuple[int, ...] = (), gate: threading.Event | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.arrived = 0  # requests that came in, answered or not
        self._statuses = list(statuses)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.arrived += 1
                if gate is not None:
                    gate.wait(30)
                with receiver._lock:
                    receiver.requests.append((self.path, dict(self.headers), body))
                    status = receiver._statuses.pop(0) if receiver._statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/sensorium?source=test"

    def bodies(self) -> list[bytes]:
        with self._lock:
            return [body for _, _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiving(*args: Any, **kwargs: Any) -> Iterator[Receiver]:
    receiver = Receiver(*args, **kwargs)
    try:
        yield receiver
    finally:
        receiver.close()


def sent(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("sensorium_output_sent_total", {"output": "webhook"}) or 0.0


def dropped(metrics: Metrics, reason: str) -> float:
    labels = {"output": "webhook", "reason": reason}
    return metrics.registry.get_sample_value("sensorium_output_dropped_total", labels) or 0.0


def up(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("sensorium_output_up", {"output": "webhook"}) or 0.0


def test_bad_urls_are_refused_without_echoing_them() -> None:
    check_webhook_url("https://example.org/hook?token=abc")
    for bad in ("ftp://example.org/", "example.org/hook", "http:///hook", "http://u:hunter2@example.org/"):
        with pytest.raises(ValueError, match="--webhook") as raised:
            check_webhook_url(bad)
        assert "hunter2" not in str(raised.value)


def test_the_event_arrives_as_signed_json() -> None:
    metrics = Metrics()
    with receiving() as receiver:
        output = WebhookOutput([receiver.url], metrics, secret="s3cret")
        output.start()
        output.publish(EVENT)
        wait_until(lambda: sent(metrics) == 1, 10, "the delivery")
        output.close()
    [(path, headers, body)] = receiver.requests
    assert path == "/hooks/sensorium?source=test"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == EVENT
    # What docs/outputs.md tells a receiver to do:
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Sensorium-Signature"], expected)
    assert len(headers["X-Sensorium-Delivery"]) == 32
    assert up(metrics) == 0  # closed


def test_unsigned_without_a_secret() -> None:
    metrics = Metrics()
    with receiving() as receiver:
        output = WebhookOutput([receiver.url], metrics)
        output.start()
        output.publish(EVENT)
        wait_until(lambda: sent(metrics) == 1, 10, "the delivery")
        output.close()
    [(_, headers, _)] = receiver.requests
    assert "X-Sensorium-Signature" not in headers


def test_server_errors_are_retried_and_the_event_arrives_once() -> None:
    metrics = Metrics()
    with receiving(statuses=(500, 500)) as receiver:
        output = WebhookOutput([receiver.url], metrics, secret="s3cret", **QUICK)
        output.start()
        output.publish(EVENT)
        wait_until(lambda: sent(metrics) == 1, 10, "the delivery after two 500s")
        output.close()
    assert len(receiver.requests) == 3  # two refused, one accepted: nothing more
    assert len(set(receiver.bodies())) == 1  # the same body every time
    assert len({headers["X-Sensorium-Delivery"] for _, headers, _ in receiver.requests}) == 1
    assert dropped(metrics, "failed") == 0


def test_a_receiver_that_is_down_costs_the_event_counted_as_failed() -> None:
    metrics = Metrics()
    output = WebhookOutput([f"http://127.0.0.1:{free_port()}/hook"], metrics, **QUICK)
    output.start()
    assert up(metrics) == 1
    output.publish(EVENT)
    output.publish({**EVENT, "state": "end", "duration_s": 6.0})
    wait_until(lambda: dropped(metrics, "failed") == 2, 10, "both events dropped after their retries")
    assert sent(metrics) == 0 and up(metrics) == 0
    output.close()


def test_a_receiver_that_always_errs_gets_every_try_then_the_event_is_dropped() -> None:
    metrics = Metrics()
    with receiving(statuses=(503,) * 10) as receiver:
        output = WebhookOutput([receiver.url], metrics, **QUICK)
        output.start()
        output.publish(EVENT)
        wait_until(lambda: dropped(metrics, "failed") == 1, 10, "the event dropped")
        output.close()
    assert len(receiver.requests) == QUICK["attempts"]


def test_a_hanging_receiver_never_blocks_publish_nor_another_url() -> None:
    metrics = Metrics()
    gate = threading.Event()
    with receiving(gate=gate) as hanging, receiving() as healthy:
        output = WebhookOutput([hanging.url, healthy.url], metrics, queue_size=4, request_timeout=30)
        output.start()
        try:
            for seq in range(20):
                output.publish({**EVENT, "seq": seq})
            # The healthy URL delivers all it holds while the other one hangs on its first request.
            wait_until(lambda: hanging.arrived == 1, 10, "the hanging receiver's first request")
            wait_until(
                lambda: output.targets[1].depth() == 0 and sent(metrics) == len(healthy.bodies()),
                10, "the healthy receiver to get everything its queue held",
            )  # fmt: skip
            assert [json.loads(b)["seq"] for b in healthy.bodies()][-4:] == [16, 17, 18, 19]
            waiting = output.targets[0].depth()
            assert waiting <= 4  # the bound holds
            # Every event is accounted for: delivered, waiting, in the hanging request, or counted as overflow.
            hanging_overflow = 20 - 1 - waiting
            healthy_overflow = 20 - len(healthy.bodies())
            assert dropped(metrics, "overflow") == hanging_overflow + healthy_overflow
        finally:
            output.close(timeout=0.2)
            gate.set()
    assert dropped(metrics, "shutdown") == waiting  # the hanging URL's queue, given up at close


def test_an_event_that_is_not_json_is_counted_never_raised() -> None:
    metrics = Metrics()
    output = WebhookOutput(["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"], metrics)
    output.publish({**EVENT, "score": float("nan")})
    assert dropped(metrics, "invalid") == 2  # once per URL, like every other count
    output.close(timeout=0)

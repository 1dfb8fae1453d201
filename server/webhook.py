"""Events POSTed as JSON to webhook URLs, signed with HMAC-SHA256 when a secret is set.

Each URL has its own bounded queue and worker thread, so a slow or dead receiver holds back nothing but
itself. A delivery is a 2xx answer; anything else (another status, a refused connection, a timeout) is
tried again after 0.5 s, 1 s, 2 s (doubling, capped), and after the last try the event is dropped and
counted as ``failed``. Redirects are not followed: a webhook's body must not turn into a GET elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import threading
import time
import uuid
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from . import __version__
from .metrics import Metrics

log = logging.getLogger("sensorium.webhook")

SIGNATURE_HEADER = "X-Sensorium-Signature"
DELIVERY_HEADER = "X-Sensorium-Delivery"
DROP_REASONS = ("overflow", "failed", "shutdown", "invalid")


def check_webhook_url(url: str) -> None:
    """Raise ValueError unless ``url`` is an http(s) URL with a host (the message never echoes the URL's query)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"--webhook must be an http:// or https:// URL; the scheme is {parts.scheme or 'missing'!r}")
    try:
        parts.port  # noqa: B018 (it raises for a bad port)
    except ValueError:
        shown = f"{parts.scheme}://{parts.hostname}"
        raise ValueError(f"--webhook {shown}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"--webhook must be an http:// or https:// URL; the host is missing in {parts.scheme}://")
    if parts.username is not None:
        raise ValueError(f"--webhook {parts.scheme}://{parts.hostname}: credentials in the URL are not supported")


def signature(body: bytes, secret: str) -> str:
    """The X-Sensorium-Signature value: ``sha256=`` and the hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _Target:
    """One URL: its queue, its worker, its health."""

    def __init__(self, url: str, owner: WebhookOutput) -> None:
        self.url = url
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname or "", parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.shown = f"{parts.scheme}://{parts.netloc}{parts.path}"  # for logs: no query, it may hold a token
        self._owner = owner
        self._queue: deque[tuple[bytes, str]] = deque()  # (body, delivery id)
        self._changed = threading.Condition()
        self._closing = False
        self._abandon = threading.Event()  # set at close's deadline: stop waiting between tries
        self.healthy = True
        self.thread = threading.Thread(target=self._run, name=f"sensorium-webhook-{self._host}", daemon=True)

    def put(self, body: bytes, delivery: str) -> bool:
        """Queue one event; True when the queue was full and its oldest event was dropped for it."""
        with self._changed:
            overflow = len(self._queue) >= self._owner.queue_size
            if overflow:
                self._queue.popleft()
            self._queue.append((body, delivery))
            self._changed.notify()
        return overflow

    def depth(self) -> int:
        with self._changed:
            return len(self._queue)

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify()

    def abandon(self) -> int:
        """Close's deadline: give up what is queued; how many events that was."""
        self._abandon.set()
        with self._changed:
            left = len(self._queue)
            self._queue.clear()
        return left

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closing:
                    self._changed.wait()
                if not self._queue:
                    return
                body, delivery = self._queue.popleft()
            self._owner.outcome(self, self._deliver(body, delivery))

    def _deliver(self, body: bytes, delivery: str) -> str:
        """``sent``, ``failed`` (every try failed) or ``shutdown`` (given up at close)."""
        owner = self._owner
        for attempt in range(owner.attempts):
            problem = self._post(body, delivery)
            if problem is None:
                return "sent"
            if attempt + 1 == owner.attempts:
                log.log(
                    logging.WARNING if self.healthy else logging.DEBUG,
                    "webhook %s: %s; event dropped after %d tries", self.shown, problem, owner.attempts,
                )  # fmt: skip
                return "failed"
            log.debug("webhook %s: %s; trying again", self.shown, problem)
            if self._abandon.wait(min(owner.backoff * 2**attempt, owner.backoff_cap)):
                return "shutdown"
        return "failed"

    def _post(self, body: bytes, delivery: str) -> str | None:
        """One POST; None when it was answered 2xx, else what went wrong."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"sensorium/{__version__}",
            DELIVERY_HEADER: delivery,
        }
        if self._owner.secret is not None:
            headers[SIGNATURE_HEADER] = signature(body, self._owner.secret)
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = kind(self._host, self._port, timeout=self._owner.request_timeout)
        try:
            connection.request("POST", self._path, body, headers)
            response = connection.getresponse()
            response.read(64 * 1024)  # the answer means nothing to us beyond its status
        except (OSError, http.client.HTTPException) as error:
            return f"{type(error).__name__}: {error}"
        finally:
            connection.close()
        return None if 200 <= response.status < 300 else f"answered {response.status} {response.reason}"


class WebhookOutput:
    name = "webhook"

    def __init__(
        self,
        urls: list[str],
        metrics: Metrics,
        *,
        secret: str | None = None,
        queue_size: int = 1000,
        attempts: int = 4,
        backoff: float = 0.5,
        backoff_cap: float = 8.0,
        request_timeout: float = 5.0,
    ) -> None:
        for url in urls:
            check_webhook_url(url)
        self.secret = secret
        self.queue_size = max(1, queue_size)
        self.attempts = max(1, attempts)
        self.backoff, self.backoff_cap = backoff, backoff_cap
        self.request_timeout = request_timeout
        self._metrics = metrics
        self._lock = threading.Lock()
        self._closed = False
        self.targets = [_Target(url, self) for url in urls]
        metrics.output_sent.labels(self.name)  # present on /metrics at 0 before the first event
        for reason in DROP_REASONS:
            metrics.output_dropped.labels(self.name, reason)

    def start(self) -> None:
        log.info("webhooks: POSTing events to %s", ", ".join(t.shown for t in self.targets))
        self._metrics.output_up.labels(self.name).set(1)
        for target in self.targets:
            target.thread.start()

    def announce(self, modality: str, stream: str, client: int, labels: list[str], groups: list[str]) -> None:
        """Nothing to do: a webhook receives events only."""

    def publish(self, event: dict[str, Any]) -> None:
        try:
            body = json.dumps(event, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as error:
            log.warning("webhooks: an event that is not JSON (%r) was dropped: %s", error, event)
            self._metrics.output_dropped.labels(self.name, "invalid").inc(len(self.targets))
            return
        if self._closed:
            self._metrics.output_dropped.labels(self.name, "shutdown").inc(len(self.targets))
            return
        delivery = uuid.uuid4().hex  # the same for every URL and every try: receivers can drop repeats
        overflow = sum(target.put(body, delivery) for target in self.targets)
        if overflow:
            self._metrics.output_dropped.labels(self.name, "overflow").inc(overflow)

    def queued(self) -> int:
        """Events waiting, over all URLs (not counting one being delivered)."""
        return sum(target.depth() for target in self.targets)

    def close(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + max(0.0, timeout)
        self._closed = True
        for target in self.targets:
            target.close()
        for target in self.targets:
            if target.thread.is_alive():
                target.thread.join(max(0.0, deadline - time.monotonic()))
        # A request under way finishes on its own (its thread is a daemon) and is counted then.
        left_behind = sum(target.abandon() for target in self.targets)
        if left_behind:
            self._metrics.output_dropped.labels(self.name, "shutdown").inc(left_behind)
            log.warning("webhooks: %d deliveries not made at shutdown", left_behind)
        self._metrics.output_up.labels(self.name).set(0)

    def outcome(self, target: _Target, outcome: str) -> None:
        """A target's worker reports one event's fate."""
        if outcome == "sent":
            self._metrics.output_sent.labels(self.name).inc()
        else:
            self._metrics.output_dropped.labels(self.name, outcome).inc()
        if outcome not in ("sent", "failed"):
            return
        with self._lock:
            was_healthy, target.healthy = target.healthy, outcome == "sent"
            all_healthy = all(t.healthy for t in self.targets)
        if outcome == "sent" and not was_healthy:
            log.info("webhook %s: delivering again", target.shown)
        if not self._closed:
            self._metrics.output_up.labels(self.name).set(1 if all_healthy else 0)

"""Event outputs: where events go besides the clients (an MQTT broker, webhooks).

Each output delivers on threads of its own, behind a bounded queue, so a slow or dead broker or
receiver never slows inference; what it delivers and what it loses is counted on /metrics
(``sensorium_output_sent``, ``sensorium_output_dropped{reason}``, ``sensorium_output_up``).
"""

from __future__ import annotations

from typing import Any, Protocol

from .metrics import Metrics
from .settings import Settings


class EventOutput(Protocol):
    name: str  # "mqtt", "webhook": the metrics' ``output`` label

    def start(self) -> None:
        """Return at once and connect in the background; an unreachable peer is logged, never raised."""

    def announce(self, modality: str, stream: str, client: int, labels: list[str], groups: list[str]) -> None:
        """A stream began or its labels changed (MQTT: discovery configs and OFF states)."""

    def publish(self, event: dict[str, Any]) -> None:
        """Queue one event; never blocks, never raises. A full queue drops its oldest, counted as overflow."""

    def close(self, timeout: float = 2.0) -> None:
        """Blocking: deliver what can be delivered within ``timeout``, count the rest, then stop."""


def build_outputs(settings: Settings, metrics: Metrics) -> list[EventOutput]:
    """The outputs that --mqtt and --webhook ask for; a malformed URL raises ValueError naming the flag."""
    # Imported here so that a server without outputs never imports paho.
    outputs: list[EventOutput] = []
    if settings.mqtt:
        from .mqtt import MqttOutput, parse_mqtt_url

        outputs.append(
            MqttOutput(
                parse_mqtt_url(settings.mqtt),
                metrics,
                prefix=settings.mqtt_prefix,
                discovery_prefix=settings.mqtt_discovery_prefix,
            )
        )
    if settings.webhook:
        from .webhook import WebhookOutput, check_webhook_url

        for url in settings.webhook:
            check_webhook_url(url)
        outputs.append(WebhookOutput(list(settings.webhook), metrics, secret=settings.webhook_secret))
    return outputs

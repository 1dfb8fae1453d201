"""The MQTT output against a real mosquitto broker, watched by a real paho subscriber."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from server.metrics import Metrics
from server.mqtt import MqttOutput, parse_mqtt_url, slug
from server.outputs import build_outputs
from server.settings import Settings

from .helpers import REPO, free_port, wait_until

MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)


class Broker:
    """A mosquitto of this test's own, on 127.0.0.1:port, with no persistence."""

    def __init__(self, folder: Path, port: int) -> None:
        self.port = port
        self.config = folder / f"mosquitto-{port}.conf"
        self.config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n")
        self.log = folder / f"mosquitto-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert MOSQUITTO is not None
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        wait_until(self._listening, timeout=10, what=f"mosquitto on port {self.port} (log: {self.log})")

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Any]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; CI installs it)")
    brokers: list[Broker] = []

    def make(port: int | None = None, start: bool = True) -> Broker:
        broker = Broker(tmp_path, port or free_port())
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def broker(broker_factory: Any) -> Broker:
    made: Broker = broker_factory()
    return made


class Subscriber:
    """A paho client that records every message of ``topic`` (a filter) in order."""

    def __init__(self, port: int, topic: str = "#") -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._topic = topic
        self.marker = f"test/marker/{secrets.token_hex(4)}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{secrets.token_hex(4)}")
        self.subscribed = threading.Event()
        self.client.on_connect = lambda client, *_: client.subscribe([(topic, 1), (self.marker, 1)])
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def received(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> bytes | None:
        found = self.received(topic)
        return found[-1].payload if found else None

    def wait_for(self, topic: str, payload: bytes, timeout: float = 10) -> None:
        wait_until(lambda: self.last(topic) == payload, timeout, f"{payload!r} on {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str = "#") -> dict[str, bytes]:
    """What the broker keeps for ``topic``: a fresh subscriber's retained messages, read up to a marker.

    The broker sends a subscription's retained messages before anything published after it, so once our
    own marker message arrives, every retained message has.
    """
    subscriber = Subscriber(port, topic)
    try:
        assert subscriber.subscribed.wait(10), "the subscriber never subscribed"
        subscriber.client.publish(subscriber.marker, b"end", qos=1)
        wait_until(lambda: subscriber.received(subscriber.marker), 10, "the marker")
        with subscriber._lock:
            return {m.topic: m.payload for m in subscriber.messages if m.retain and m.topic != subscriber.marker}
    finally:
        subscriber.close()


def event(label: str | None = "dog", group: str | None = None, state: str = "start", seq: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "event", "modality": "image", "stream": "camera", "client": 3, "label": label, "group": group,
        "state": state, "score": 4.2, "seq": seq, "ts": 1732450000.12, "time": 1732450000.35,
    }  # fmt: skip
    if state == "end":
        out["duration_s"] = 6.0
    return out


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def sent(metrics: Metrics) -> float:
    return counter(metrics, "sensorium_output_sent_total", output="mqtt")


def dropped(metrics: Metrics, reason: str) -> float:
    return counter(metrics, "sensorium_output_dropped_total", output="mqtt", reason=reason)


def up(metrics: Metrics) -> float:
    return counter(metrics, "sensorium_output_up", output="mqtt")


def test_broker_urls_parse_and_bad_ones_say_what_is_wrong() -> None:
    assert parse_mqtt_url("mqtt://broker") == parse_mqtt_url("mqtt://broker:1883/")
    address = parse_mqtt_url("mqtt://ha:p%40ss%3Aword@10.0.0.2:1884")
    assert (address.host, address.port, address.username, address.password) == ("10.0.0.2", 1884, "ha", "p@ss:word")
    assert "p@ss" not in str(address)
    for bad, why in [
        ("http://user:hunter2@broker", "scheme"), ("broker:1883", "scheme"), ("mqtt://", "host"),
        ("mqtt://broker:99999", "port"), ("mqtt://broker/topic", "path"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match="--mqtt") as raised:
            parse_mqtt_url(bad)
        assert why in str(raised.value) and "hunter2" not in str(raised.value)


def test_slugs_are_topic_safe_and_stable() -> None:
    assert slug("Dog barking!") == "dog_barking"
    assert slug("a/b+#c") == "a_b_c"
    assert slug("狗") == slug("狗") != slug("猫")
    for text in ("狗", "+", "x/#", "  "):
        assert re.fullmatch(r"[a-z0-9_]+", slug(text))


def test_build_outputs_follows_the_flags() -> None:
    metrics = Metrics()
    assert build_outputs(Settings(), metrics) == []
    outputs = build_outputs(Settings(mqtt="mqtt://127.0.0.1:1", webhook=("http://127.0.0.1:1/hook",)), metrics)
    assert [o.name for o in outputs] == ["mqtt", "webhook"]
    with pytest.raises(ValueError, match="--mqtt"):
        build_outputs(Settings(mqtt="tcp://127.0.0.1"), metrics)
    with pytest.raises(ValueError, match="--mqtt-prefix"):
        build_outputs(Settings(mqtt="mqtt://127.0.0.1", mqtt_prefix="a/#"), metrics)
    with pytest.raises(ValueError, match="--webhook"):
        build_outputs(Settings(webhook=("ftp://127.0.0.1/",)), metrics)


def test_discovery_states_events_and_availability(broker: Broker) -> None:
    metrics = Metrics()
    output = MqttOutput(parse_mqtt_url(broker.url), metrics)
    watcher = Subscriber(broker.port, "sensorium/#")
    output.start()
    try:
        output.announce("image", "camera", 3, ["dog", "Cat"], ["animals"])
        watcher.wait_for("sensorium/status", b"online")
        watcher.wait_for("sensorium/image/camera/any_animals/state", b"OFF")
        assert up(metrics) == 1

        kept = retained(broker.port)
        assert kept["sensorium/status"] == b"online"
        dog = json.loads(kept["homeassistant/binary_sensor/sensorium_image_camera_dog/config"])
        assert dog["name"] == "camera dog"
        assert dog["unique_id"] == "sensorium_image_camera_dog"
        assert dog["state_topic"] == "sensorium/image/camera/dog/state"
        assert dog["json_attributes_topic"] == "sensorium/image/camera/dog/event"
        assert dog["availability_topic"] == "sensorium/status"
        assert (dog["payload_on"], dog["payload_off"]) == ("ON", "OFF")
        assert dog["device"]["identifiers"] == ["sensorium"] and dog["device"]["name"] == "Sensorium"
        group = json.loads(kept["homeassistant/binary_sensor/sensorium_image_camera_any_animals/config"])
        assert group["name"] == "camera any animals"
        assert group["state_topic"] == "sensorium/image/camera/any_animals/state"
        assert "homeassistant/binary_sensor/sensorium_image_camera_cat/config" in kept
        for entity in ("dog", "cat", "any_animals"):
            assert kept[f"sensorium/image/camera/{entity}/state"] == b"OFF"

        start = event("dog", "animals", "start", seq=17)
        output.publish(start)
        watcher.wait_for("sensorium/image/camera/dog/state", b"ON")
        wait_until(lambda: watcher.received("sensorium/image/camera/dog/event"), 10, "the event")
        assert json.loads(watcher.received("sensorium/image/camera/dog/event")[0].payload) == start
        output.publish(event(None, "animals", "start", seq=17))
        watcher.wait_for("sensorium/image/camera/any_animals/state", b"ON")
        kept = retained(broker.port)
        assert kept["sensorium/image/camera/dog/state"] == b"ON"
        assert kept["sensorium/image/camera/any_animals/state"] == b"ON"
        assert "sensorium/image/camera/dog/event" not in kept  # events are not retained

        output.publish(event("dog", "animals", "end", seq=40))
        watcher.wait_for("sensorium/image/camera/dog/state", b"OFF")
        assert [m.payload for m in watcher.received("sensorium/image/camera/dog/state")] == [b"OFF", b"ON", b"OFF"]
        assert retained(broker.port, "sensorium/image/camera/dog/state") == {"sensorium/image/camera/dog/state": b"OFF"}
        wait_until(lambda: sent(metrics) == 3, 10, "three events counted as sent")

        # The labels changed: the entities that went are removed from Home Assistant (empty retained config).
        output.announce("image", "camera", 3, ["Cat"], [])
        watcher.wait_for("sensorium/image/camera/dog/state", b"")
        kept = retained(broker.port, "homeassistant/#")
        assert list(kept) == ["homeassistant/binary_sensor/sensorium_image_camera_cat/config"]
    finally:
        output.close()
    watcher.wait_for("sensorium/status", b"offline")
    watcher.close()
    assert retained(broker.port, "sensorium/status") == {"sensorium/status": b"offline"}
    assert up(metrics) == 0
    assert dropped(metrics, "overflow") == dropped(metrics, "shutdown") == 0


def test_the_last_will_says_offline_when_the_process_dies(broker: Broker) -> None:
    script = (
        "import sys, threading\n"
        "from server.metrics import Metrics\n"
        "from server.mqtt import MqttOutput, parse_mqtt_url\n"
        "MqttOutput(parse_mqtt_url(sys.argv[1]), Metrics(), prefix='dying').start()\n"
        "threading.Event().wait()\n"
    )
    watcher = Subscriber(broker.port, "dying/status")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", script, broker.url], cwd=REPO, env=env)
    try:
        watcher.wait_for("dying/status", b"online", timeout=30)
        process.kill()  # SIGKILL: no clean close, only the broker's last will can say it
        process.wait(10)
        watcher.wait_for("dying/status", b"offline")
    finally:
        if process.poll() is None:
            process.kill()
        watcher.close()
    assert retained(broker.port, "dying/status") == {"dying/status": b"offline"}


def test_a_broker_down_at_start_gets_the_queued_events_when_it_comes_up(
    broker_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker: Broker = broker_factory(start=False)
    metrics = Metrics()
    output = MqttOutput(parse_mqtt_url(broker.url), metrics, queue_size=5, reconnect_min_delay=1, reconnect_max_delay=1)
    caplog.set_level(logging.WARNING, logger="sensorium.mqtt")
    output.start()  # nothing listens: this must neither raise nor wait
    try:
        wait_until(lambda: any("cannot reach the broker" in r.getMessage() for r in caplog.records), 10, "a warning")
        output.announce("audio", "mic", 1, ["siren"], [])
        for seq in range(8):
            output.publish({**event("siren", None, "start" if seq % 2 == 0 else "end", seq), "modality": "audio"})
        assert dropped(metrics, "overflow") == 3  # the bound is 5: the three oldest gave way
        assert sent(metrics) == 0 and up(metrics) == 0

        broker.start()
        wait_until(lambda: sent(metrics) == 5, 20, "the five queued events delivered after the broker came up")
        assert up(metrics) == 1
        kept = retained(broker.port)
        assert kept["sensorium/status"] == b"online"
        assert kept["sensorium/audio/mic/siren/state"] == b"OFF"  # the last event was an end
        assert "homeassistant/binary_sensor/sensorium_audio_mic_siren/config" in kept
    finally:
        output.close()
    assert dropped(metrics, "overflow") == 3 and sent(metrics) == 5
    assert dropped(metrics, "shutdown") == dropped(metrics, "disconnected") == 0


def test_a_restarted_broker_without_persistence_gets_every_config_and_state_back(broker: Broker) -> None:
    metrics = Metrics()
    output = MqttOutput(parse_mqtt_url(broker.url), metrics, reconnect_min_delay=1, reconnect_max_delay=1)
    output.start()
    try:
        output.announce("image", "camera", 1, ["dog"], ["animals"])
        wait_until(lambda: "sensorium/image/camera/any_animals/state" in retained(broker.port), 10, "the announce")
        broker.stop()
        wait_until(lambda: up(metrics) == 0, 10, "the output to notice")
        output.publish(event("dog", "animals", "start"))  # waits in the queue
        broker.start()  # a new, empty broker on the same port
        wait_until(lambda: sent(metrics) == 1, 20, "the queued event delivered")
        kept = retained(broker.port)
        assert kept["sensorium/status"] == b"online"
        assert kept["sensorium/image/camera/dog/state"] == b"ON"
        assert kept["sensorium/image/camera/any_animals/state"] == b"OFF"
        assert "homeassistant/binary_sensor/sensorium_image_camera_dog/config" in kept
        assert "homeassistant/binary_sensor/sensorium_image_camera_any_animals/config" in kept
    finally:
        output.close()


def test_closing_while_the_broker_is_away_counts_what_is_lost() -> None:
    metrics = Metrics()
    output = MqttOutput(parse_mqtt_url(f"mqtt://127.0.0.1:{free_port()}"), metrics)
    output.start()
    output.publish(event())
    output.publish(event(state="end"))
    output.close(timeout=0.5)
    assert dropped(metrics, "disconnected") == 2 and sent(metrics) == 0
    output.publish(event())  # after close: refused, and counted
    assert dropped(metrics, "shutdown") == 1


def test_malformed_events_are_counted_never_raised() -> None:
    metrics = Metrics()
    output = MqttOutput(parse_mqtt_url("mqtt://127.0.0.1:1"), metrics)
    output.publish({"type": "event"})  # no modality, stream or state
    output.publish(event(None, None))  # neither a label nor a group
    output.publish({**event(), "score": float("nan")})  # not JSON
    output.publish({**event(), "extra": {1, 2}})  # not JSON either
    assert dropped(metrics, "invalid") == 4
    output.close(timeout=0)  # never started: nothing to wait for

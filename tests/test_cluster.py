"""``sensorium cluster`` on a real Ray cluster on this machine: a head and two worker nodes with a fake GPU each.

One cluster for the module (starting it and loading the models take most of its time). Two gateways, each asking
for one CPU, and only the head has CPUs, so Ray can place them nowhere else: a worker node can then be removed
without taking connections with it. Each image encoder replica asks for a whole (fake) GPU and no CPU, so there is
one per worker node.
Every encoder batch takes at least MIN_BATCH_S and each gateway keeps three in flight: with streams faster than
that, a replica killed or a node removed mid-stream always has inputs inside.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from server.cluster import APP_NAME, ClusterOptions, start_serve
from server.settings import Settings

from .helpers import REPO, Loopback, audio, frame, free_port, jpeg, receive, tone, wait_until

GATEWAYS = 2
MIN_BATCH_S = 1.0
ENCODER_TIMEOUT_S = 10.0
STALL_S = ENCODER_TIMEOUT_S + 2


@dataclass
class RunningCluster(Loopback):
    cluster: Any  # ray.cluster_utils.Cluster
    workers: list[Any]  # its worker nodes
    settings: Settings

    def metric(self, name: str, **labels: str) -> dict[str, float]:
        """The samples of one metric family, by their full sample line's name, summed over the gateways (each counts
        its own connections; the HTTP /metrics answers from whichever one the proxy picks)."""
        found: Counter[str] = Counter()
        for text in _replies("Gateway", "replica_metrics", GATEWAYS).values():
            for line in text.splitlines():
                if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                    key, value = line.rsplit(" ", 1)
                    found[key] += float(value)
        return dict(found)


def running_metrics(name: str) -> dict[str, str]:
    """Each gateway's samples of one metric, for a failure's report."""
    texts = _replies("Gateway", "replica_metrics", GATEWAYS)
    return {
        replica: " ".join(line for line in text.splitlines() if line.startswith(name))
        for replica, text in texts.items()
    }


def _replies(deployment: str, method: str, replicas: int) -> dict[str, Any]:
    """One reply from each of a deployment's replicas, by replica: Serve spreads calls over them (and past one
    that is slow to say how busy it is), so this calls until it has heard from ``replicas`` of them. Each reply is
    (replica, value)."""
    from ray import serve

    handle = getattr(serve.get_deployment_handle(deployment, APP_NAME), method)
    found: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        replica, value = handle.remote().result(timeout_s=30)
        found[replica] = value
        if len(found) == replicas:
            return found
        time.sleep(0.05)
    raise AssertionError(f"only {len(found)} of {replicas} {deployment} replicas answered in 60 s")


@pytest.fixture(scope="module")
def ray_cluster(image_model: str, audio_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # Set before Ray starts: the raylets and their workers inherit this environment. PYTHONPATH makes the
    # workers import this checkout's server package, whatever an installed copy says.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # A shared CI box's memory is not this cluster's to police (Ray spells the variable so).
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"  # noqa: SIM112
    # Serve's routers pass over a replica that takes more than 0.1 s to say how busy it is: on 2 busy cores, both
    # gateways' replies are wanted.
    os.environ["RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S"] = "1.0"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from server.cluster_app import build_app

    labels = tmp_path_factory.mktemp("cluster-labels")
    for name in ("image.txt", "audio.txt"):
        (labels / name).write_text((REPO / "labels" / name).read_text())
    options = ClusterOptions(
        image_replicas=2,
        image_gpus=1.0,
        gateways=GATEWAYS,
        encoder_cpus=0.0,
        gateway_cpus=1.0,
        encoder_timeout=ENCODER_TIMEOUT_S,
        inflight_batches=3,  # more than one call on each of the two image replicas, most of the time
        batch_wait_ms=20.0,  # wide enough that the two calls a gateway keeps in flight meet in one batch
    )
    # A removed node is declared dead after about 3 s, not Ray's default of about 30 (as Ray's own tests set it).
    health = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": GATEWAYS, "include_dashboard": False, "_system_config": health},
    )
    try:
        workers = [cluster.add_node(num_cpus=0, num_gpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="serve")
        settings = Settings(
            image_model=image_model,
            audio_model=audio_model,
            image_labels=labels / "image.txt",
            audio_labels=labels / "audio.txt",
            label_cache="",
            allow_label_edits=True,
            backend="torch",
            device="cpu",
            data_dir="",
            port=free_port(),  # chosen after the cluster started: its own processes take ports of their own
        )
        start_serve(settings, "HeadOnly")
        serve.run(build_app(settings, options, min_batch_s=MIN_BATCH_S), name=APP_NAME, route_prefix="/")
        running = RunningCluster(cluster, workers, settings)
        wait_until(lambda: _health(running) == "ok", timeout=120, what="the gateway's models")
        yield running
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def _health(running: RunningCluster) -> str | None:
    try:
        status: str = httpx.get(f"{running.http}/health", timeout=5).json()["status"]
        return status
    except (httpx.TransportError, ValueError):
        return None


async def _connect(running: RunningCluster) -> Any:
    ws = await websockets.connect(running.ws, max_size=None)
    welcome = await receive(ws, 30)
    assert welcome["type"] == "welcome"
    assert set(welcome["modalities"]) == {"image", "audio"}
    return ws


def test_the_ws_protocol_end_to_end_through_the_cluster(ray_cluster: RunningCluster) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        ws = await _connect(ray_cluster)
        await ws.send(frame(1, jpeg((20, 200, 40))))
        image = await receive(ws, 30)
        await ws.send(audio(1, tone(440, 1.0, 16000)))
        sound = await receive(ws, 30)
        await ws.close()
        return image, sound

    async def too_big() -> int | None:
        # Serve's proxy lets WebSocket messages up to 16 MiB through; the gateway holds to --max-message-bytes.
        ws = await _connect(ray_cluster)
        await ws.send(b"\0" * (ray_cluster.settings.max_message_bytes + 1))
        with pytest.raises(websockets.ConnectionClosed):
            await receive(ws, 30)
        return ws.close_code

    image, sound = asyncio.run(scenario())
    assert asyncio.run(too_big()) == 1009
    assert (image["type"], image["modality"], image["seq"], image["dropped"]) == ("result", "image", 1, 0)
    assert image["top"] and all(isinstance(entry["label"], str) for entry in image["top"])
    assert image["timings"]["encode_ms"] > 0
    assert (sound["type"], sound["modality"], sound["seq"]) == ("result", "audio", 1)
    health = httpx.get(f"{ray_cluster.http}/health", timeout=5).json()
    assert health["status"] == "ok" and set(health["models"]) == {"image", "audio"}


async def _stream(
    running: RunningCluster,
    name: str,
    until: asyncio.Event,
    tally: dict[str, int],
    interval: float,
    after: asyncio.Event,
) -> None:
    """Frames every ``interval`` seconds on one connection until ``until``, then one more whenever the accounting
    waits on inputs whose loss only the next result can report (dropped counts ride on results)."""
    ws = await _connect(running)
    picture = jpeg((len(name) * 40 % 255, 90, 160))
    sent = results = dropped = errors = results_after = 0

    async def reader() -> None:
        nonlocal results, dropped, errors, results_after
        while True:
            message = await receive(ws, 60)
            if message["type"] == "result":
                results += 1
                results_after += after.is_set()
                dropped += message["dropped"]
            elif message["type"] == "error":
                errors += 1

    reading = asyncio.create_task(reader())
    while not until.is_set():
        sent += 1
        await ws.send(frame(sent, picture, stream=name))
        await asyncio.sleep(interval)
    # Each input's fate arrives within STALL_S (the encoder timeout and more), except the loss of the stream's last
    # inputs, which only a later result can report: one more frame, only after the accounting stalled that long (a
    # slow pipeline is not a stalled one, and frames sent sooner would keep it from ever catching up).
    deadline = time.monotonic() + 120
    progress, last = time.monotonic(), results + dropped + errors
    while results + dropped + errors < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        if results + dropped + errors != last:
            progress, last = time.monotonic(), results + dropped + errors
        elif time.monotonic() - progress > STALL_S:
            sent += 1
            await ws.send(frame(sent, picture, stream=name))
            progress = time.monotonic()
    reading.cancel()
    await ws.close()
    tally.update(sent=sent, results=results, dropped=dropped, errors=errors, results_after=results_after)


async def _run_streams(
    running: RunningCluster, seconds: float, interval: float = 0.04, during: Any = None
) -> list[dict[str, int]]:
    stop, done = asyncio.Event(), asyncio.Event()  # done: ``during`` has returned
    tallies: list[dict[str, int]] = [{} for _ in range(4)]
    tasks = [asyncio.create_task(_stream(running, f"cam{n}", stop, tallies[n], interval, done)) for n in range(4)]
    if during is not None:
        await asyncio.sleep(seconds / 3)
        await asyncio.to_thread(during)
        done.set()
        await asyncio.sleep(seconds * 2 / 3)
    else:
        await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return tallies


def _encoder_batches(running: RunningCluster) -> dict[int, float]:
    """How many encoder calls ran with each batch size, from the gateway's histogram (bucket counts)."""
    buckets = running.metric("sensorium_encoder_batch_size_bucket", modality="image")
    by_bound = {float(re.search(r'le="([^"]+)"', key)[1]): count for key, count in buckets.items()}  # type: ignore[index]
    return {int(bound): count for bound, count in sorted(by_bound.items()) if bound != float("inf")}


def _inputs_by_gateway() -> dict[str, float]:
    texts = _replies("Gateway", "replica_metrics", GATEWAYS)
    pattern = re.compile(r'^sensorium_inputs_total\{modality="image"\} (\S+)$', re.MULTILINE)
    return {replica: sum(float(n) for n in pattern.findall(text)) for replica, text in texts.items()}


def test_four_streams_are_batched_together_and_every_frame_is_accounted_for(ray_cluster: RunningCluster) -> None:
    before = _inputs_by_gateway()
    tallies = asyncio.run(_run_streams(ray_cluster, 4.0))
    for tally in tallies:
        assert tally["results"] > 0
        assert tally["sent"] == tally["results"] + tally["dropped"] + tally["errors"], tally
    cumulative = _encoder_batches(ray_cluster)
    assert cumulative[1] < max(cumulative.values()), f"no encoder batch above 1 input: {cumulative}"
    # Batches form across gateways: where Serve's proxy gave both gateways streams, some batch held calls of both.
    served = {replica: count - before.get(replica, 0) for replica, count in _inputs_by_gateway().items()}
    mixed: Counter[int] = Counter()
    for replica in _image_encoders().values():
        mixed.update({int(k): v for k, v in replica["gateways_per_batch"].items()})
    # Printed, not asserted: how often streams' calls meet depends on where the proxy put them and on timing (one
    # run: inputs 288 and 97 by gateway, 2 of 13 batches held both gateways' calls). The next test asserts it.
    print(f"inputs by gateway: {served}; image encoder batches by gateways merged: {dict(mixed)}")


def _mixed_batches() -> int:
    return sum(replica["gateways_per_batch"].get(2, 0) for replica in _image_encoders().values())


def test_an_encoder_batch_merges_the_calls_of_different_gateways(ray_cluster: RunningCluster) -> None:
    from ray import serve

    from server.encoders import build_encoder, model_specs
    from server.remote import EncoderCall

    spec = next(spec for spec in model_specs(ray_cluster.settings) if spec.modality == "image")
    prepared = build_encoder(spec).prepare_one(np.full((240, 320, 3), 127, dtype=np.uint8))  # as a gateway sends it
    handle = serve.get_deployment_handle("ImageEncoder", APP_NAME)
    before = _mixed_batches()
    # Twelve calls at once from two callers: while a replica runs one batch (a second at least), the others queue
    # and are merged into its next batches, whichever gateway they came from.
    replies = [
        response.result(timeout_s=60)
        for response in [handle.embed.remote(EncoderCall([prepared], f"gateway-{n % 2}")) for n in range(12)]
    ]
    assert all(reply.embeddings.shape[0] == 1 for reply in replies)
    assert max(reply.calls for reply in replies) > 1, [reply.calls for reply in replies]
    assert _mixed_batches() > before


def _image_encoders() -> dict[str, dict[str, Any]]:
    """What each image encoder replica says of itself, by actor name (20 calls, which Serve spreads over them)."""
    from ray import serve

    handle = serve.get_deployment_handle("ImageEncoder", APP_NAME)
    found: dict[str, dict[str, Any]] = {}
    for _ in range(20):
        described = handle.describe.remote().result(timeout_s=30)
        found[described["actor"]] = described
    return found


def _label_hub() -> dict[str, Any]:
    from ray import serve

    described: dict[str, Any] = serve.get_deployment_handle("LabelHub", APP_NAME).describe.remote().result(timeout_s=30)
    return described


def test_a_label_edit_reaches_every_gateway_and_client_once_and_is_embedded_once(ray_cluster: RunningCluster) -> None:
    hub = _label_hub()
    version = hub["versions"]["image"]
    wait_until(lambda: len(_label_hub()["holding"]) == GATEWAYS, timeout=30, what="every gateway following the hub")
    encoded_before = sum(replica["texts_encoded"] for replica in _image_encoders().values())
    text = (REPO / "labels" / "image.txt").read_text() + "\na purple giraffe on a skateboard\n"

    async def scenario() -> list[list[dict[str, Any]]]:
        clients = [await _connect(ray_cluster) for _ in range(6)]
        async with httpx.AsyncClient() as http:
            edit = await http.put(f"{ray_cluster.http}/v1/labels/image", content=text.encode(), timeout=60)
            assert edit.status_code == 200, edit.text
            bad = await http.put(f"{ray_cluster.http}/v1/labels/image", content=b"# only a comment\n", timeout=60)
        heard: list[list[dict[str, Any]]] = [[] for _ in clients]

        async def listen(n: int) -> None:
            # Until this client's copy of the new version, then 3 s more, for any second copy.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                message = await receive(clients[n], max(0.1, deadline - time.monotonic()))
                heard[n].append(message)
                if message.get("version") == version + 1:
                    deadline = min(deadline, time.monotonic() + 3)

        await asyncio.gather(*(listen(n) for n in range(len(clients))), return_exceptions=True)
        for ws in clients:
            await ws.close()
        assert bad.status_code == 400 and "no labels" in bad.json()["error"]["message"], bad.text
        return heard

    heard = asyncio.run(scenario())
    for messages in heard:
        assert [(m["type"], m["modality"], m["version"]) for m in messages] == [("labels", "image", version + 1)]
    # Every gateway holds the new version (the hub hears it from each one's next poll).
    wait_until(
        lambda: sorted(held["image"] for held in _label_hub()["holding"].values()) == [version + 1] * GATEWAYS,
        timeout=30,
        what="every gateway holding the new labels",
    )
    # The new prompts went through one text tower once: not once per gateway, nor per encoder replica.
    history = httpx.get(f"{ray_cluster.http}/v1/labels", timeout=10).json()["image"]["history"]
    new_prompts = history[-1]["new_prompts"]
    encoded = sum(replica["texts_encoded"] for replica in _image_encoders().values()) - encoded_before
    assert new_prompts > 0 and encoded == new_prompts, (encoded, history[-1])


def test_a_restarted_label_hub_carries_the_versions_on(ray_cluster: RunningCluster) -> None:
    import ray

    hub = _label_hub()
    version = hub["versions"]["image"]

    async def scenario() -> dict[str, Any]:
        ws = await _connect(ray_cluster)
        await asyncio.to_thread(ray.kill, ray.get_actor(hub["actor"], namespace="serve"), no_restart=True)
        # The gateways keep the labels they hold: the stream is served while the hub is away.
        await ws.send(frame(1, jpeg((30, 60, 90))))
        result: dict[str, Any] = {}
        news: dict[str, Any] = {}
        while not (result and news):
            message = await receive(ws, 90)
            if message["type"] == "result":
                result = message
            elif message["type"] == "labels" and message["modality"] == "image":
                news = message
        assert result["top"], result
        await ws.close()
        return news

    news = asyncio.run(scenario())
    assert news["version"] == version + 1, news  # the next version, not the new hub's own first one
    restarted = _label_hub()
    assert restarted["epoch"] != hub["epoch"] and restarted["versions"]["image"] == version + 1, restarted
    assert httpx.get(f"{ray_cluster.http}/health", timeout=10).json()["labels"]["image"]["version"] == version + 1


def _inputs_lost(running: RunningCluster) -> float:
    return sum(running.metric("sensorium_inputs_lost_total", modality="image").values())


def _image_replicas() -> dict[str, str]:
    """The image encoder replicas that answer now, actor name to node id: 20 calls, which Serve spreads over them."""
    from ray import serve

    handle = serve.get_deployment_handle("ImageEncoder", APP_NAME)
    found: dict[str, str] = {}
    for _ in range(20):
        described = handle.describe.remote().result(timeout_s=30)
        found[described["actor"]] = described["node"]
    return found


def _image_replica_states() -> dict[str, int]:
    from ray import serve

    return dict(serve.status().applications[APP_NAME].deployments["ImageEncoder"].replica_states)


def _assert_loss_accounted(tallies: list[dict[str, int]], lost: float) -> None:
    """Every frame has a fate, the lost inputs are among the drops the streams were told of, and the streams went on
    after the failure."""
    if any(tally["sent"] != tally["results"] + tally["dropped"] + tally["errors"] for tally in tallies):
        for name in ("sensorium_inputs_total", "sensorium_results_total", "sensorium_dropped_total", "sensorium_queue"):
            print(name, running_metrics(name))
    for tally in tallies:
        assert tally["sent"] == tally["results"] + tally["dropped"] + tally["errors"], tally
        assert tally["results_after"] > 0, tally  # the streams went on, on the surviving replica
    assert sum(tally["dropped"] for tally in tallies) >= lost, (lost, tallies)


def test_an_encoder_replica_killed_mid_stream_is_restarted_and_costs_only_its_inputs(
    ray_cluster: RunningCluster,
) -> None:
    import ray

    wait_until(lambda: _image_replica_states() == {"RUNNING": 2}, timeout=60, what="two running image encoder replicas")
    before = _image_replicas()
    assert len(before) == 2, before
    victim = sorted(before)[0]
    lost_before = _inputs_lost(ray_cluster)
    tallies = asyncio.run(
        _run_streams(
            ray_cluster, 6.0, 0.01, during=lambda: ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        )
    )
    lost = _inputs_lost(ray_cluster) - lost_before
    print(f"inputs lost with the replica: {lost:g}; tallies {tallies}")
    assert lost > 0, f"no input was inside the killed replica: {tallies}"
    _assert_loss_accounted(tallies, lost)
    # Serve's health check notices the dead replica and starts another in its place (the node still has its GPU).
    wait_until(
        lambda: _image_replica_states() == {"RUNNING": 2}, timeout=90, what="Serve restarting the killed replica"
    )
    after = _image_replicas()
    assert victim not in after and len(after) == 2, (victim, after)
    for tally in asyncio.run(_run_streams(ray_cluster, 3.0)):
        assert tally["results"] > 0 and tally["sent"] == tally["results"] + tally["dropped"] + tally["errors"], tally
    assert _health(ray_cluster) == "ok"


def test_a_worker_node_removed_mid_stream_costs_only_its_inputs(ray_cluster: RunningCluster) -> None:
    wait_until(lambda: _image_replica_states() == {"RUNNING": 2}, timeout=90, what="two running image encoder replicas")
    victim = ray_cluster.workers[0]
    assert victim.node_id in _image_replicas().values()
    lost_before = _inputs_lost(ray_cluster)
    tallies = asyncio.run(
        _run_streams(
            ray_cluster, 6.0, 0.01, during=lambda: ray_cluster.cluster.remove_node(victim, allow_graceful=False)
        )
    )
    lost = _inputs_lost(ray_cluster) - lost_before
    # Not asserted above 0: once in four runs none was lost, though the node held batches. The gateway logged Serve's
    # "Request failed because Replica(...) is temporarily unavailable" and every input was answered, as if Serve had
    # sent them to the survivor (not confirmed in its code). The killed replica's test asserts the loss path.
    print(f"inputs lost with the node: {lost:g}; tallies {tallies}")
    _assert_loss_accounted(tallies, lost)
    assert _health(ray_cluster) == "ok"
    # The removed replica waits for a GPU node; the survivor serves alone.
    assert set(_image_replicas().values()) == {ray_cluster.workers[1].node_id}


def test_gateways_that_die_close_their_connections_and_the_bundled_client_reconnects(
    ray_cluster: RunningCluster,
) -> None:
    import ray

    from clients.client import SensoriumClient

    picture = jpeg((200, 120, 40))

    async def scenario() -> Any:
        client = SensoriumClient(ray_cluster.ws, connect_timeout=30, max_backoff=2.0)
        await client.start()
        draining = asyncio.create_task(_drain(client))
        sent = 0

        async def stream_for(seconds: float) -> None:
            nonlocal sent
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if await client.wait_for_slot("image", "door", 2, timeout=0.5) and await client.send_frame(
                    picture, sent, stream="door"
                ):
                    sent += 1
                else:
                    await asyncio.sleep(0.1)

        await stream_for(3.0)
        assert client.ledger.results > 0
        # Every gateway replica dies, so the one holding this connection does: its WebSockets close with it.
        gateways = [a for a in ray.util.list_named_actors(all_namespaces=True) if "#Gateway#" in a["name"]]
        assert len(gateways) == GATEWAYS, gateways
        for actor in gateways:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
        assert await client.wait_until(lambda: client.ledger.reconnects >= 1, timeout=120), "no reconnect"
        after = client.ledger.results
        await stream_for(4.0)
        assert await client.wait_until(lambda: client.ledger.results > after, timeout=60), "no result after it"
        ledger = client.ledger
        # Every input is accounted for: answered, dropped, refused, or lost with the connection (the client counts it).
        assert await client.wait_until(
            lambda: ledger.sent == ledger.results + ledger.dropped + ledger.errors + ledger.lost, timeout=60
        ), ledger
        await client.close()
        await draining
        return client.ledger

    ledger = asyncio.run(scenario())
    print(
        f"gateways killed: sent {ledger.sent}, results {ledger.results}, dropped {ledger.dropped}, lost {ledger.lost}"
    )
    assert ledger.reconnects >= 1


async def _drain(client: Any) -> None:
    async for _ in client.events():
        pass


def test_gateway_settings_keep_the_gateways_own_models_on_its_cpu() -> None:
    from server.cluster import gateway_settings

    gpu = Settings(device="cuda", precision="fp16")
    assert (gateway_settings(gpu).device, gateway_settings(gpu).precision) == ("cpu", "fp32")
    cpu = replace(gpu, device="cpu", precision="bf16")
    assert gateway_settings(cpu) is cpu


def test_autoscaling_is_asked_for_only_above_the_fixed_count() -> None:
    from server.cluster import replica_count

    assert replica_count(2, 0, 2.0) == {"num_replicas": 2}
    assert replica_count(2, 2, 2.0) == {"num_replicas": 2}
    scaled = replica_count(1, 4, 3.0)
    assert scaled["num_replicas"] == "auto"
    assert scaled["autoscaling_config"] == {
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 3.0,
    }


def test_cluster_flags_are_checked_and_config_file_args_read_as_flags() -> None:
    from server.cli import build_parser
    from server.cluster import options_from_args
    from server.cluster_app import flags_from_args

    flags = flags_from_args(
        {"image-model": "/m/i", "image_replicas": 2, "image-max-replicas": 4, "allow-label-edits": True,
         "no-audio": False, "allow-origin": ["https://a", "https://b"], "label-cache": None}
    )  # fmt: skip
    assert flags == [
        "--image-model", "/m/i", "--image-replicas", "2", "--image-max-replicas", "4", "--allow-label-edits",
        "--allow-origin", "https://a", "--allow-origin", "https://b",
    ]  # fmt: skip
    parsed = build_parser().parse_args(["cluster", *flags])
    options = options_from_args(parsed)
    assert (options.image_replicas, options.image_max_replicas, parsed.allow_origin) == (
        2,
        4,
        ["https://a", "https://b"],
    )
    for bad, says in (
        (["--image-replicas", "3", "--image-max-replicas", "2"], "--image-max-replicas (2) is below"),
        (["--gateways", "0"], "at least 1"),
        (["--target-requests", "0"], "--target-requests must be positive"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            options_from_args(build_parser().parse_args(["cluster", *bad]))


def test_the_shipped_serve_config_and_rayservice_manifest_are_valid() -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from server.cli import build_parser
    from server.cluster import options_from_args
    from server.cluster_app import flags_from_args

    manifests = list(yaml.safe_load_all((REPO / "deploy" / "kuberay" / "rayservice.yaml").read_text()))
    service = next(doc for doc in manifests if doc["kind"] == "RayService")
    configs = [
        yaml.safe_load((REPO / "deploy" / "serve-config.yaml").read_text()),
        yaml.safe_load(service["spec"]["serveConfigV2"]),
    ]
    for config in configs:
        schema = ServeDeploySchema.model_validate(config)
        assert schema.http_options.request_timeout_s is None  # any timeout would cut every WebSocket
        (application,) = config["applications"]
        assert application["import_path"] == "server.cluster_app:app_builder"
        options_from_args(build_parser().parse_args(["cluster", *flags_from_args(application["args"])]))


def test_the_resources_asked_are_checked_against_the_cluster() -> None:
    from server.cluster import resource_shortfall, resources_asked

    defaults = ClusterOptions()
    assert resources_asked(Settings(), defaults) == (3.0, 0.0)  # a gateway and two encoders, one CPU each
    assert resources_asked(Settings(no_audio=True), replace(defaults, image_replicas=2, image_gpus=0.5)) == (3.0, 1.0)
    assert resource_shortfall(3.0, 0.0, {"CPU": 4.0}) is None
    assert "reserve 3 CPUs and the cluster has 2" in (resource_shortfall(3.0, 0.0, {"CPU": 2.0}) or "")
    assert "--image-gpus" in (resource_shortfall(1.0, 1.0, {"CPU": 8.0}) or "")

"""``sensorium cluster`` on a real Ray cluster on this machine: a head and two worker nodes with a fake GPU each.

One cluster for the module (starting it and loading the models take most of its time). The gateway asks for
every CPU of the head, so Ray can place it nowhere else: a worker node can then be removed without taking the
connections with it. Each image encoder replica asks for a whole (fake) GPU, so there is one per worker node.
Every encoder batch takes at least MIN_BATCH_S and each gateway keeps three in flight: with streams faster than
that, a replica killed or a node removed mid-stream always has inputs inside.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
import websockets

from server.cluster import APP_NAME, ClusterOptions, start_serve
from server.settings import Settings

from .helpers import REPO, audio, frame, free_port, jpeg, receive, tone, wait_until

HEAD_CPUS = 2
MIN_BATCH_S = 1.0


@dataclass
class RunningCluster:
    cluster: Any  # ray.cluster_utils.Cluster
    workers: list[Any]  # its worker nodes
    settings: Settings

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}/ws"

    def metric(self, name: str, **labels: str) -> dict[str, float]:
        """The samples of one metric family on the gateway's /metrics, by their full sample line's name."""
        text = httpx.get(f"{self.http}/metrics", timeout=10).text
        found = {}
        for line in text.splitlines():
            if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                key, value = line.rsplit(" ", 1)
                found[key] = float(value)
        return found


@pytest.fixture(scope="module")
def ray_cluster(image_model: str, audio_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # Set before Ray starts: the raylets and their workers inherit this environment. PYTHONPATH makes the
    # workers import this checkout's server package, whatever an installed copy says.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # A shared CI box's memory is not this cluster's to police (Ray spells the variable so).
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"  # noqa: SIM112
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
        encoder_cpus=0.0,
        gateway_cpus=HEAD_CPUS,
        encoder_timeout=20.0,
        inflight_batches=3,  # more than one call on each of the two image replicas, most of the time
        batch_wait_ms=20.0,  # wide enough that the two calls a gateway keeps in flight meet in one batch
    )
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": HEAD_CPUS, "include_dashboard": False})
    try:
        workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="serve")
        settings = Settings(
            image_model=image_model,
            audio_model=audio_model,
            image_labels=labels / "image.txt",
            audio_labels=labels / "audio.txt",
            label_cache="",
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

    image, sound = asyncio.run(scenario())
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
    deadline = time.monotonic() + 60
    while results + dropped + errors < sent and time.monotonic() < deadline:
        before = results + dropped + errors
        await asyncio.sleep(1.0)
        if results + dropped + errors == before:
            sent += 1
            await ws.send(frame(sent, picture, stream=name))
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


def test_four_streams_are_batched_together_and_every_frame_is_accounted_for(ray_cluster: RunningCluster) -> None:
    tallies = asyncio.run(_run_streams(ray_cluster, 4.0))
    for tally in tallies:
        assert tally["results"] > 0
        assert tally["sent"] == tally["results"] + tally["dropped"] + tally["errors"], tally
    cumulative = _encoder_batches(ray_cluster)
    assert cumulative[1] < max(cumulative.values()), f"no encoder batch above 1 input: {cumulative}"


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


def test_gateway_settings_keep_the_gateways_own_models_on_its_cpu() -> None:
    from server.cluster import gateway_settings

    gpu = Settings(device="cuda", precision="fp16")
    assert (gateway_settings(gpu).device, gateway_settings(gpu).precision) == ("cpu", "fp32")
    cpu = replace(gpu, device="cpu", precision="bf16")
    assert gateway_settings(cpu) is cpu

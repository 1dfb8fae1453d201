"""Drive the prototype: 3-node local cluster, Serve app, overhead bench, 4 streams, node removal, replica kills."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import msgpack
import numpy as np
import websockets

T0 = time.perf_counter()
import ray
from ray import serve
from ray.cluster_utils import Cluster

IMPORT_S = time.perf_counter() - T0
PORT = int(os.environ.get("PROTO_PORT", "8123"))
URL = f"ws://127.0.0.1:{PORT}/ws"
REPORT: dict = {"import_s": round(IMPORT_S, 2)}


def log(*a):
    print(f"[{time.perf_counter() - T0:7.2f}s]", *a, flush=True)


def frame(shape=(224, 224, 3), dtype="uint8", seq=0, mode=None):
    arr = np.full(shape, seq % 255, dtype=dtype)
    m = {"seq": seq, "data": arr.tobytes(), "dtype": dtype, "shape": list(shape)}
    if mode:
        m["mode"] = mode
    return msgpack.packb(m)


async def sequential_rtt(n, shape, dtype, mode):
    async with websockets.connect(URL, max_size=None) as ws:
        msgpack.unpackb(await ws.recv())
        out = []
        for i in range(n):
            data = frame(shape, dtype, i, mode)
            t = time.perf_counter()
            await ws.send(data)
            reply = msgpack.unpackb(await ws.recv())
            out.append((time.perf_counter() - t) * 1000)
            assert reply["type"] == "result", reply
        return out


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 2)


def summary(xs):
    return {"p50_ms": pct(xs, 50), "p95_ms": pct(xs, 95), "mean_ms": round(statistics.fmean(xs), 2), "n": len(xs)}


class Stream:
    def __init__(self, name):
        self.name = name
        self.sent = 0
        self.results = 0
        self.dropped = 0
        self.errors = collections.Counter()
        self.batches = collections.Counter()
        self.encoders = collections.Counter()
        self.cross = collections.Counter()  # how many gateways' calls shared each result's batch
        self.unanswered = 0
        self.gateway = None
        self.closed = None


async def stream(s: Stream, duration_s: float, inflight=2, events=None):
    pending: set[int] = set()
    slots = asyncio.Semaphore(inflight)
    try:
        async with websockets.connect(URL, max_size=None) as ws:
            s.gateway = msgpack.unpackb(await ws.recv())["gateway"]["actor"]

            async def reader():
                async for raw in ws:
                    r = msgpack.unpackb(raw)
                    pending.discard(r["seq"])
                    slots.release()
                    if r["type"] == "result":
                        s.results += 1
                        s.batches[r["batch"]] += 1
                        s.encoders[r["encoder"]["node"]] += 1
                        s.cross[r["gateways"]] += 1
                    else:
                        s.dropped += 1
                        s.errors[r["error"]] += 1
                        if events is not None:
                            events.append((round(time.perf_counter() - T0, 2), s.name, r["error"], r["detail"][:160], round(r["after_ms"])))

            rt = asyncio.create_task(reader())
            end = time.perf_counter() + duration_s
            seq = 0
            while time.perf_counter() < end:
                try:
                    await asyncio.wait_for(slots.acquire(), 10)
                except TimeoutError:
                    break
                seq += 1
                pending.add(seq)
                await ws.send(frame(seq=seq))
                s.sent += 1
                await asyncio.sleep(0.03)  # ~30 fps offered per stream
            deadline = time.perf_counter() + 15
            while pending and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
            s.unanswered = len(pending)
            rt.cancel()
    except websockets.ConnectionClosed as exc:
        s.closed = f"{exc.rcvd.code if exc.rcvd else None} {exc.rcvd.reason if exc.rcvd else ''}"
        s.unanswered = len(pending)


def main():
    t = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "resources": {"gateway": 1},
                        **({"_system_config": {"max_direct_call_object_size": 2 * 1024 * 1024}}
                           if os.environ.get("PROTO_INLINE") == "1" else {})},
    )
    REPORT["head_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    w1 = cluster.add_node(num_cpus=1, num_gpus=1)
    w2 = cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    REPORT["two_workers_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    cluster.connect(namespace="serve")
    REPORT["connect_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": PORT})
    import proto_app

    handle = serve.run(proto_app.app, name="proto", route_prefix="/")
    REPORT["serve_start_and_deploy_s"] = round(time.perf_counter() - t, 2)
    REPORT["cluster_total_s"] = round(time.perf_counter() - T0, 2)
    log("cluster up", REPORT)
    node_ids = {n.node_id[:8]: name for n, name in [(cluster.head_node, "head"), (w1, "w1"), (w2, "w2")]}
    REPORT["nodes"] = node_ids

    # --- per-request overhead -------------------------------------------------------
    enc = serve.get_deployment_handle("Encoder", app_name="proto")
    bench = {}
    for label, shape, dtype in [] if os.environ.get("PROTO_BENCH") == "0" else [("1KiB", (1024,), "uint8"), ("60KB", (60000,), "uint8"), ("150KB_u8_224", (224, 224, 3), "uint8"),
                                ("602KB_f32_224", (3, 224, 224), "float32")]:
        arr = np.zeros(shape, dtype=dtype)
        lat = []
        for _ in range(20):
            enc.echo.remote(arr).result()
        for _ in range(200):
            t = time.perf_counter()
            enc.echo.remote(arr).result()
            lat.append((time.perf_counter() - t) * 1000)
        bench[f"driver_handle_echo_{label}"] = summary(lat)
        for mode in ["echo_gateway", "echo_encoder"]:
            asyncio.run(sequential_rtt(20, shape, dtype, mode))
            bench[f"ws_{mode}_{label}"] = summary(asyncio.run(sequential_rtt(200, shape, dtype, mode)))
    if os.environ.get("PROTO_BENCH") != "0":
      bench["ws_embed_batched_150KB(fake model 20ms)"] = summary(asyncio.run(sequential_rtt(100, (224, 224, 3), "uint8", None)))
    REPORT["overhead"] = bench
    log("overhead", json.dumps(bench, indent=1))
    if os.environ.get("PROTO_ONLY_BENCH") == "1":
        json.dump(REPORT, open(os.environ.get("PROTO_REPORT", "/tmp/ray-proto/bench.json"), "w"), indent=1, default=str)
        serve.shutdown(); ray.shutdown(); cluster.shutdown()
        return

    # --- 4 streams, node removal mid-stream -------------------------------------------
    async def four_streams(duration, remove_at=None, node=None, kill_actor_at=None, kill_name=None):
        streams = [Stream(f"s{i}") for i in range(4)]
        events: list = []
        tasks = [asyncio.create_task(stream(s, duration, events=events)) for s in streams]
        if remove_at is not None:
            await asyncio.sleep(remove_at)
            log("removing node", node.node_id[:8])
            t = time.perf_counter()
            await asyncio.to_thread(cluster.remove_node, node)
            REPORT["remove_node_call_s"] = round(time.perf_counter() - t, 2)
            log("removed")
        if kill_actor_at is not None:
            await asyncio.sleep(kill_actor_at)
            log("killing", kill_name)
            ray.kill(ray.get_actor(kill_name, namespace="serve"), no_restart=True)
        await asyncio.gather(*tasks)
        return streams, events

    def tally(streams, events):
        out = []
        for s in streams:
            out.append({"stream": s.name, "gateway": s.gateway, "sent": s.sent, "results": s.results,
                        "dropped": s.dropped, "unanswered": s.unanswered, "closed": s.closed,
                        "identity_holds": s.sent == s.results + s.dropped + s.unanswered and s.unanswered == 0,
                        "errors": dict(s.errors), "batch_hist": dict(sorted(s.batches.items())), "gateways_in_batch": dict(sorted(s.cross.items())),
                        "by_encoder_node": {node_ids.get(k, k): v for k, v in s.encoders.items()}})
        return {"streams": out, "first_drop_events": events[:6], "n_drop_events": len(events)}

    streams, events = asyncio.run(four_streams(4.0))
    REPORT["four_streams_steady"] = tally(streams, events)
    log("steady", json.dumps(REPORT["four_streams_steady"], indent=1))

    streams, events = asyncio.run(four_streams(9.0, remove_at=3.0, node=w2))
    REPORT["four_streams_remove_w2"] = tally(streams, events)
    log("remove node", json.dumps(REPORT["four_streams_remove_w2"], indent=1))
    log("serve status after removal", serve.status().applications["proto"].deployments["Encoder"].replica_states)

    # --- replica restart: add a GPU node back, see the Encoder come back to 2 --------
    t = time.perf_counter()
    cluster.add_node(num_cpus=1, num_gpus=1)
    while True:
        states = serve.status().applications["proto"].deployments["Encoder"].replica_states
        if states.get("RUNNING", 0) == 2:
            break
        if time.perf_counter() - t > 90:
            break
        time.sleep(0.25)
    REPORT["encoder_back_to_2_after_add_node_s"] = round(time.perf_counter() - t, 2)
    log("encoder replicas", states, REPORT["encoder_back_to_2_after_add_node_s"])

    # --- kill one encoder replica actor mid-stream (process death, node stays) ----------
    enc_names = sorted({r["where"]["actor"] for r in [enc.embed.remote({"gw": "driver", "items": [np.zeros(4)]}).result() for _ in range(20)]})
    log("encoder actors", enc_names)
    t_kill = time.perf_counter()
    streams, events = asyncio.run(four_streams(6.0, kill_actor_at=2.0, kill_name=enc_names[0]))
    REPORT["four_streams_kill_encoder"] = tally(streams, events)
    log("kill encoder", json.dumps(REPORT["four_streams_kill_encoder"], indent=1))
    while serve.status().applications["proto"].deployments["Encoder"].replica_states.get("RUNNING", 0) < 2:
        if time.perf_counter() - t_kill > 90:
            break
        time.sleep(0.25)
    REPORT["encoder_restarted_after_kill_s_from_kill"] = round(time.perf_counter() - t_kill - 2.0, 2)

    # --- kill a gateway replica: what does its client see? --------------------------------
    s = Stream("g")

    async def gateway_kill():
        task = asyncio.create_task(stream(s, 6.0))
        await asyncio.sleep(2.0)
        log("killing gateway", s.gateway)
        ray.kill(ray.get_actor(s.gateway, namespace="serve"), no_restart=True)
        await task

    asyncio.run(gateway_kill())
    REPORT["gateway_kill"] = {"sent": s.sent, "results": s.results, "dropped": s.dropped, "unanswered": s.unanswered,
                              "closed": s.closed}
    log("gateway kill", REPORT["gateway_kill"])

    rss = subprocess.run(
        "ps -eo rss,args | grep -E '/tmp/ray-proto|ray::|raylet|gcs_server|ray/dashboard|ray/_private' | grep -v grep"
        " | awk '{s+=$1; n+=1} END {print s/1024, n}'", shell=True, capture_output=True, text=True).stdout.split()
    REPORT["rss_mib_ray_processes"] = rss
    t = time.perf_counter()
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()
    REPORT["shutdown_s"] = round(time.perf_counter() - t, 2)
    REPORT["total_s"] = round(time.perf_counter() - T0, 2)
    with open("/tmp/ray-proto/report.json", "w") as f:
        json.dump(REPORT, f, indent=1, default=str)
    log("done", REPORT["total_s"])


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()

"""Check the documented traps on one node: the ingress's default max_ongoing_requests (5) with WebSockets,
request_timeout_s cutting a WebSocket, and a label hub broadcasting versions to every gateway replica."""

from __future__ import annotations

import asyncio
import json
import os
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import msgpack
import numpy as np
import ray
import websockets
from ray import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

PORT = 8125
T0 = time.perf_counter()
OUT: dict = {}


def log(*a):
    print(f"[{time.perf_counter() - T0:7.2f}s]", *a, flush=True)


# ---------------------------------------------------------------------------------------------
# 1 and 2: a bare WebSocket gateway with Serve's defaults
def hold_app() -> Starlette:
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("welcome")
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    return Starlette(routes=[WebSocketRoute("/ws", ws)])


@serve.deployment(ray_actor_options={"num_cpus": 0})  # max_ongoing_requests left at its default
@serve.ingress(hold_app)
class DefaultGateway:
    pass


async def open_many(url: str, n: int, wait_s: float) -> list[str]:
    async def one(i):
        try:
            ws = await websockets.connect(url)
            msg = await asyncio.wait_for(ws.recv(), wait_s)
            return ws, msg
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"[:120]

    return await asyncio.gather(*(one(i) for i in range(n)))


async def check_default_limit():
    got = await open_many(f"ws://127.0.0.1:{PORT}/d/ws", 7, 6.0)
    OUT["default_max_ongoing_7_websockets"] = [m for _, m in got]
    for ws, _ in got:
        if ws is not None:
            await ws.close()


async def check_timeout():
    ws = await websockets.connect(f"ws://127.0.0.1:{PORT}/d/ws")
    await ws.recv()
    t = time.perf_counter()
    result = None
    try:
        while time.perf_counter() - t < 15:
            await ws.send("x")
            await asyncio.wait_for(ws.recv(), 5)
            await asyncio.sleep(0.5)
        result = "still open after 15 s"
    except websockets.ConnectionClosed as exc:
        result = f"closed after {time.perf_counter() - t:.1f} s: rcvd={exc.rcvd and (exc.rcvd.code, exc.rcvd.reason)}"
    except Exception as exc:
        result = f"{type(exc).__name__} after {time.perf_counter() - t:.1f} s"
    OUT["request_timeout_s_3_websocket"] = result


# ---------------------------------------------------------------------------------------------
# 4: a label hub: one replica holds the current label set and its version; text embeddings computed once
@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class TextEncoder:
    def __init__(self):
        self.calls = 0

    async def embed_texts(self, prompts: list[str]) -> np.ndarray:
        self.calls += 1
        rng = np.random.default_rng(abs(hash(tuple(prompts))) % 2**32)
        m = rng.standard_normal((len(prompts), 512)).astype(np.float32)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    def count(self) -> int:
        return self.calls


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class LabelHub:
    def __init__(self, text_encoder):
        self.text_encoder = text_encoder
        self.version = 0
        self.label_set = None
        self.changed = asyncio.Condition()
        self.acks: dict[str, int] = {}

    async def put(self, names: list[str]) -> int:
        matrix = await self.text_encoder.embed_texts.remote(names)  # once, by one encoder replica
        async with self.changed:
            self.version += 1
            self.label_set = {"version": self.version, "names": names, "matrix": matrix}
            self.changed.notify_all()
        return self.version

    async def next_after(self, known: int, replica: str) -> dict:
        """Long poll: returns as soon as the version is newer than ``known``."""
        self.acks[replica] = known
        async with self.changed:
            await self.changed.wait_for(lambda: self.version > known)
            return self.label_set

    def acknowledged(self) -> dict:
        return dict(self.acks)


def gateway_app(hub) -> Starlette:
    state = {"version": 0, "replica": serve.get_replica_context().replica_id.unique_id}
    clients: set[WebSocket] = set()

    async def follow():
        while True:
            label_set = await hub.next_after.remote(state["version"], state["replica"])
            state["version"] = label_set["version"]
            msg = msgpack.packb({"type": "labels", "version": label_set["version"], "count": len(label_set["names"]),
                                 "replica": state["replica"]})
            for ws in list(clients):
                try:
                    await ws.send_bytes(msg)
                except Exception:
                    clients.discard(ws)

    async def lifespan(app):
        task = asyncio.create_task(follow())
        yield
        task.cancel()

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        clients.add(websocket)
        try:
            while True:
                await websocket.receive_bytes()
        except WebSocketDisconnect:
            clients.discard(websocket)

    async def version(request: Request):
        return JSONResponse(state)

    return Starlette(routes=[WebSocketRoute("/ws", ws), Route("/version", version)], lifespan=lifespan)


@serve.deployment(num_replicas=3, max_ongoing_requests=100, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class LabelGateway:
    def __init__(self, hub):
        self.hub = hub

    def __serve_build_asgi_app__(self):
        return gateway_app(self.hub)


async def check_labels(hub_handle, text_handle):
    url = f"ws://127.0.0.1:{PORT}/g/ws"
    clients = [await websockets.connect(url) for _ in range(6)]
    await asyncio.sleep(0.5)
    seen: dict[int, list] = {i: [] for i in range(len(clients))}

    async def reader(i, ws):
        async for raw in ws:
            seen[i].append(msgpack.unpackb(raw))

    readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(clients)]
    times = []
    for v in range(1, 4):
        t = time.perf_counter()
        await hub_handle.put.remote([f"label {v}-{k}" for k in range(1000)])
        while not all(any(m["version"] == v for m in seen[i]) for i in seen):
            await asyncio.sleep(0.005)
        times.append(round((time.perf_counter() - t) * 1000, 1))
    await asyncio.sleep(0.5)
    for r in readers:
        r.cancel()
    OUT["labels"] = {
        "ms_put_to_all_6_clients": times,
        "messages_per_client": [[m["version"] for m in seen[i]] for i in seen],
        "gateway_replicas_of_clients": sorted({m["replica"] for i in seen for m in seen[i]}),
        "text_encoder_calls": await text_handle.count.remote(),
        "hub_acks_by_replica": await hub_handle.acknowledged.remote(),
    }
    for ws in clients:
        await ws.close()


def main():
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, namespace="serve")
    OUT["ray_init_one_node_s"] = round(time.perf_counter() - t, 2)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT, "request_timeout_s": 3})
    serve.run(DefaultGateway.bind(), name="d", route_prefix="/d")
    asyncio.run(check_default_limit())
    log("default limit", OUT["default_max_ongoing_7_websockets"])
    asyncio.run(check_timeout())
    log("timeout", OUT["request_timeout_s_3_websocket"])
    serve.shutdown()  # http_options are fixed for a Serve instance's life: a fresh one without the timeout
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})

    text = TextEncoder.bind()
    hub = LabelHub.bind(text)
    serve.run(LabelGateway.bind(hub), name="g", route_prefix="/g")
    hub_handle = serve.get_deployment_handle("LabelHub", app_name="g")
    text_handle = serve.get_deployment_handle("TextEncoder", app_name="g")
    asyncio.run(check_labels(hub_handle, text_handle))
    log("labels", json.dumps(OUT["labels"]))
    serve.shutdown()
    ray.shutdown()
    json.dump(OUT, open("/tmp/ray-proto/pitfalls.json", "w"), indent=1)


if __name__ == "__main__":
    main()

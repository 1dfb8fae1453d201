"""Throwaway prototype of the plumbing only: a Starlette WebSocket gateway (Serve ingress) forwarding numpy
payloads to an "encoder" deployment that batches across callers with @serve.batch. Fake math."""

from __future__ import annotations

import asyncio
import os
import time

import msgpack
import numpy as np
import ray
from ray import serve
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

FAKE_MODEL_S = float(os.environ.get("PROTO_FAKE_MODEL_S", "0.02"))


def _where() -> dict:
    ctx = ray.get_runtime_context()
    return {"node": ctx.get_node_id()[:8], "actor": ctx.get_actor_name(), "pid": os.getpid()}


@serve.deployment(
    num_replicas=2,
    max_ongoing_requests=32,  # must be >= max_batch_size * max_concurrent_batches or batches stay small
    ray_actor_options={"num_cpus": 0, "num_gpus": 1},  # one per fake-GPU worker node
    health_check_period_s=1,
    health_check_timeout_s=5,
)
class Encoder:
    def __init__(self) -> None:
        self.where = _where()
        self.batch_sizes: list[int] = []
        self.labels_version = 0

    # Each call carries a *list* of inputs (a gateway's own batch); calls from every gateway are merged here.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005,
                 batch_size_fn=lambda calls: sum(len(c["items"]) for c in calls))
    async def embed(self, calls: list[dict]) -> list[dict]:
        flat = [x for call in calls for x in call["items"]]
        gateways = len({call["gw"] for call in calls})
        self.batch_sizes.append(len(flat))
        await asyncio.sleep(FAKE_MODEL_S)  # "the model", without burning the shared cores
        vectors = np.stack([np.resize(x.astype(np.float32).ravel()[:512], 512) for x in flat])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
        out, i = [], 0
        for call in calls:
            n = len(call["items"])
            out.append({"emb": vectors[i : i + n], "batch": len(flat), "gateways": gateways, "where": self.where})
            i += n
        return out

    async def echo(self, x):  # no batching: the bare cost of a handle call
        return x

    def stats(self) -> dict:
        return {"where": self.where, "batch_sizes": list(self.batch_sizes)}


def build_app(encoder) -> Starlette:
    where = _where()

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_bytes(msgpack.packb({"type": "welcome", "gateway": where}))
        tasks: set[asyncio.Task] = set()

        async def one(msg: dict) -> None:
            seq = msg["seq"]
            arr = np.frombuffer(msg["data"], dtype=msg["dtype"]).reshape(msg["shape"])
            t0 = time.perf_counter()
            try:
                if msg.get("mode") == "echo_gateway":
                    reply = {"type": "result", "seq": seq}
                elif msg.get("mode") == "echo_encoder":
                    await encoder.echo.remote(arr)
                    reply = {"type": "result", "seq": seq}
                else:
                    got = await encoder.embed.remote({"gw": where["actor"], "items": [arr]})
                    reply = {"type": "result", "seq": seq, "batch": got["batch"], "encoder": got["where"], "gateways": got["gateways"],
                             "handle_ms": (time.perf_counter() - t0) * 1000}
            except Exception as exc:  # prototype: report what the caller sees
                reply = {"type": "dropped", "seq": seq, "error": f"{type(exc).__module__}.{type(exc).__name__}",
                         "detail": str(exc)[:300], "after_ms": (time.perf_counter() - t0) * 1000}
            await websocket.send_bytes(msgpack.packb(reply))

        try:
            while True:
                msg = msgpack.unpackb(await websocket.receive_bytes())
                t = asyncio.create_task(one(msg))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        except WebSocketDisconnect:
            pass

    return Starlette(routes=[WebSocketRoute("/ws", ws)])


@serve.deployment(
    num_replicas=2,
    max_ongoing_requests=100,  # a WebSocket holds one for its whole life (default is 5!)
    ray_actor_options={"num_cpus": 0, "resources": {"gateway": 0.01}},  # on the head node
)
@serve.ingress()
class Gateway:
    def __init__(self, encoder) -> None:
        # PROTO_GRPC_HANDLE=1: gateway -> encoder over Serve's interdeployment gRPC instead of Ray actor calls
        self.encoder = encoder.options(_by_reference=False) if os.environ.get("PROTO_GRPC_HANDLE") == "1" else encoder

    def __serve_build_asgi_app__(self):
        return build_app(self.encoder)


app = Gateway.bind(Encoder.bind())

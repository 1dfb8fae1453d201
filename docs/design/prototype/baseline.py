"""The same WebSocket round trips with no Ray: one uvicorn process, the fake encoder in-process."""
import asyncio, os, sys, time, json, multiprocessing
import msgpack, numpy as np, uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

PORT = 8124

async def ws(websocket):
    await websocket.accept()
    await websocket.send_bytes(msgpack.packb({"type": "welcome", "gateway": {"actor": "local"}}))
    while True:
        try:
            msg = msgpack.unpackb(await websocket.receive_bytes())
        except Exception:
            return
        arr = np.frombuffer(msg["data"], dtype=msg["dtype"]).reshape(msg["shape"])
        if msg.get("mode") not in ("echo_gateway", "echo_encoder"):
            await asyncio.sleep(0.02)
        await websocket.send_bytes(msgpack.packb({"type": "result", "seq": msg["seq"]}))

def serve():
    uvicorn.run(Starlette(routes=[WebSocketRoute("/ws", ws)]), host="127.0.0.1", port=PORT, log_level="warning",
                ws_max_size=64 * 1024 * 1024)

if __name__ == "__main__":
    p = multiprocessing.Process(target=serve, daemon=True); p.start(); time.sleep(2)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    os.environ["PROTO_PORT"] = str(PORT)
    import proto_run
    proto_run.URL = f"ws://127.0.0.1:{PORT}/ws"
    out = {}
    for label, shape, dtype in [("1KiB", (1024,), "uint8"), ("150KB_u8_224", (224, 224, 3), "uint8"), ("602KB_f32_224", (3, 224, 224), "float32")]:
        asyncio.run(proto_run.sequential_rtt(20, shape, dtype, "echo_gateway"))
        out[f"plain_ws_echo_{label}"] = proto_run.summary(asyncio.run(proto_run.sequential_rtt(200, shape, dtype, "echo_gateway")))
    out["plain_ws_embed_150KB(fake model 20ms)"] = proto_run.summary(asyncio.run(proto_run.sequential_rtt(100, (224, 224, 3), "uint8", None)))
    print(json.dumps(out, indent=1))
    json.dump(out, open("/tmp/ray-proto/baseline.json", "w"), indent=1)
    p.terminate()

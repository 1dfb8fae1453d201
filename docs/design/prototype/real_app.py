"""Sensorium's own create_app(settings), unchanged, as a Ray Serve ingress on one node: does the lifespan run
(models load inside the replica), does /ws work through the proxy, does /health answer?"""
import asyncio, json, os, time, io
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["HF_HUB_OFFLINE"] = "1"
import msgpack, numpy as np, ray, websockets, urllib.request
from ray import serve
from PIL import Image

PORT = 8126
T0 = time.perf_counter()

def build():
    from server.app import create_app
    from server.settings import Settings
    from pathlib import Path
    s = Settings(image_model="local-dir:/tmp/ray-proto/models/image", audio_model="/tmp/ray-proto/models/audio",
                 image_labels=Path("/work/main/labels/image.txt"), audio_labels=Path("/work/main/labels/audio.txt"),
                 label_cache="/tmp/ray-proto/label-cache", backend="torch", device="cpu")
    return create_app(s)

@serve.deployment(num_replicas=1, max_ongoing_requests=80, ray_actor_options={"num_cpus": 0})
@serve.ingress(build)
class Gateway:
    pass

def jpeg():
    b = io.BytesIO(); Image.new("RGB", (320, 240), (200, 30, 30)).save(b, "JPEG"); return b.getvalue()

async def client(port=PORT, n=30):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
        welcome = msgpack.unpackb(await ws.recv())
        out = {"welcome_type": welcome["type"], "modalities": list(welcome.get("modalities", {}))}
        rtt = []
        data = jpeg()
        for seq in range(1, n + 1):
            t = time.perf_counter()
            await ws.send(msgpack.packb({"type": "frame", "seq": seq, "ts": time.time(), "format": "jpeg", "data": data}, use_bin_type=True))
            while True:
                m = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 30))
                if m["type"] == "result":
                    break
            rtt.append((time.perf_counter() - t) * 1000)
        out["result_keys"] = sorted(m)
        out["top"] = m["top"][:1]
        out["server_total_ms_last"] = m["timings"]["total_ms"]
        out["rtt_p50_ms"] = sorted(rtt[5:])[len(rtt[5:]) // 2]
        return out

def main():
    ray.init(num_cpus=2, include_dashboard=False, namespace="serve",
             runtime_env=None)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    t = time.perf_counter()
    serve.run(Gateway.bind(), name="sensorium", route_prefix="/")
    deploy_s = time.perf_counter() - t
    # the lifespan started the Runtime; models load in the background: wait for /health ok
    t = time.perf_counter()
    while True:
        try:
            body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=5).read())
            if body["status"] == "ok":
                break
        except urllib.error.HTTPError as e:
            body = json.loads(e.read())
        if time.perf_counter() - t > 120:
            break
        time.sleep(0.5)
    print("RESULT deploy_s", round(deploy_s, 1), "health_ok_after_s", round(time.perf_counter() - t, 1), body.get("status"), body.get("models", {}).keys())
    print("RESULT", json.dumps(asyncio.run(client())))
    serve.shutdown(); ray.shutdown()

if __name__ == '__main__':
    main()

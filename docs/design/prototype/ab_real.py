"""A/B on this machine: `sensorium serve` (plain uvicorn) vs the same create_app as a Serve ingress (one node),
same client, alternating runs."""
import asyncio, json, os, subprocess, sys, time, urllib.request
sys.path.insert(0, "/tmp/ray-proto")
import real_app as R  # defines build/Gateway/client; its module-level run is guarded below
import ray
from ray import serve

env = dict(os.environ, HF_HUB_OFFLINE="1")
plain = subprocess.Popen(["/work/main/.venv/bin/python", "-m", "server", "--port", "8127",
    "--image-model", "local-dir:/tmp/ray-proto/models/image", "--audio-model", "/tmp/ray-proto/models/audio",
    "--label-cache", "/tmp/ray-proto/label-cache", "--backend", "torch", "--device", "cpu"], cwd="/work/main", env=env,
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    ray.init(num_cpus=2, include_dashboard=False, namespace="serve")
    serve.start(http_options={"host": "127.0.0.1", "port": R.PORT})
    serve.run(R.Gateway.bind(), name="sensorium", route_prefix="/")
    for port in (8127, R.PORT):
        for _ in range(120):
            try:
                if json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())["status"] == "ok":
                    break
            except Exception:
                pass
            time.sleep(0.5)
    rows = []
    for rnd in range(3):
        for name, port in (("plain", 8127), ("serve_ingress", R.PORT)):
            out = asyncio.run(R.client(port, 60))
            rows.append((name, round(out["rtt_p50_ms"], 2), out["server_total_ms_last"]))
            print("RESULT", rows[-1], flush=True)
    json.dump(rows, open("/tmp/ray-proto/ab_real.json", "w"))
finally:
    plain.terminate(); plain.wait(10)
    serve.shutdown(); ray.shutdown()

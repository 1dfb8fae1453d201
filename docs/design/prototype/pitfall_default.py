import asyncio, os, time, json
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray
from ray import serve
import pitfalls
ray.init(num_cpus=2, include_dashboard=False, namespace="serve")
serve.start(http_options={"host": "127.0.0.1", "port": pitfalls.PORT})
serve.run(pitfalls.DefaultGateway.bind(), name="d", route_prefix="/d")
async def main():
    got = await pitfalls.open_many(f"ws://127.0.0.1:{pitfalls.PORT}/d/ws", 7, 8.0)
    print("RESULT no timeout:", [m for _, m in got])
    # close two of the first five: do the waiting ones get in?
    open_ = [ws for ws, m in got if m == "welcome"]
    for ws in open_[:2]:
        await ws.close()
    t = time.perf_counter()
    late = await pitfalls.open_many(f"ws://127.0.0.1:{pitfalls.PORT}/d/ws", 2, 8.0)
    print("RESULT after closing two:", [m for _, m in late], round(time.perf_counter() - t, 2))
asyncio.run(main())
serve.shutdown(); ray.shutdown()

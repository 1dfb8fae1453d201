"""How long a 3-node local Cluster and Serve take to start on this machine."""
import os, time
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
t0 = time.perf_counter()
import ray
from ray import serve
from ray.cluster_utils import Cluster
t_import = time.perf_counter() - t0

t0 = time.perf_counter()
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
t_head = time.perf_counter() - t0
t1 = time.perf_counter()
workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
cluster.wait_for_nodes()
t_workers = time.perf_counter() - t1
t2 = time.perf_counter()
cluster.connect(namespace="serve")
t_connect = time.perf_counter() - t2
print("resources", ray.cluster_resources())

@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class Echo:
    def __call__(self, x=None):
        return "ok"

t3 = time.perf_counter()
serve.start(http_options={"host": "127.0.0.1", "port": 8123})
h = serve.run(Echo.bind(), name="echo", route_prefix="/echo")
print(h.remote().result())
t_serve = time.perf_counter() - t3
print(f"import {t_import:.1f}s head {t_head:.1f}s workers {t_workers:.1f}s connect {t_connect:.1f}s serve+deploy {t_serve:.1f}s")
import subprocess
rss = subprocess.run("ps -eo rss,args | grep -E 'ray|raylet|gcs_server|python' | grep -v grep | awk '{s+=$1} END {print s/1024}'", shell=True, capture_output=True, text=True).stdout
print("RSS of ray-related processes MiB:", rss.strip())
t4 = time.perf_counter()
serve.shutdown(); ray.shutdown(); cluster.shutdown()
print(f"shutdown {time.perf_counter()-t4:.1f}s")

import os; os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import numpy as np, ray
from ray import serve
@serve.deployment(ray_actor_options={"num_cpus": 0})
class D:
    def __call__(self, x):
        return {"writeable": bool(x.flags.writeable), "nbytes": x.nbytes}
ray.init(num_cpus=1, include_dashboard=False)
h = serve.run(D.bind(), name="ro", route_prefix=None)
for n in (1000, 50_000, 200_000, 2_000_000):
    print("RESULT", h.remote(np.zeros(n, np.uint8)).result())
serve.shutdown(); ray.shutdown()

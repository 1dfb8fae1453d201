"""What the cluster path costs, and what a second encoder replica gives: ``sensorium serve`` against
``sensorium cluster`` (a local Ray instance) on the same machine, the same models and the same clients.

1. per-frame cost: one client, one frame in flight, round trip p50/p95 on each server; the ratio cluster / serve;
2. throughput: four clients, two frames in flight each, results per second on ``serve``, and on ``cluster`` with
   one and then with two image encoder replicas; the ratios.

Timings are printed, never asserted: a shared 2-core box moves every figure; the ratios are measured in one run.
The header says what it ran on. Run: ``python -m benchmarks.cluster_bench [--image-arch ViT-B-32] [--seconds 15]``
(needs ``pip install "sensorium[cluster]"``). Image only: audio takes the same path through the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench import drive_clients, free_port, machine, wait_healthy
from benchmarks.measure import markdown_table

CLI = "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))"


def start(command: str, model: str, extra: list[str], scratch: Path, name: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = [sys.executable, "-c", CLI, command, "--port", str(port), "--no-audio", "--image-model", model]
    argv += ["--label-cache", "", "--backend", "torch", "--device", "cpu", *extra]
    log = open(scratch / f"{name}.log", "w")  # noqa: SIM115 - the process keeps it; closed with the process
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    wait_healthy(port, server)
    return server, port


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()  # the cluster command deletes its application and shuts its Ray instance down on SIGTERM
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def measure(command: str, model: str, extra: list[str], scratch: Path, name: str, seconds: float) -> dict[str, Any]:
    started = time.perf_counter()
    server, port = start(command, model, extra, scratch, name)
    ready_s = time.perf_counter() - started
    try:
        asyncio.run(drive_clients("image", port, 1, 3.0, 1))  # warm-up: first batches, Serve's routing tables
        one = asyncio.run(drive_clients("image", port, 1, seconds, 1))
        four = asyncio.run(drive_clients("image", port, 4, seconds, 2))
    finally:
        stop(server)
    return {"name": name, "ready_s": round(ready_s, 1), "one_client": one, "four_clients": four}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-arch", default="", help="a dev-models image architecture (default: the small one)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement (default %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cluster-bench.json"))
    args = parser.parse_args(argv)
    from server.devmodels import write_dev_models

    with tempfile.TemporaryDirectory(prefix="sensorium-cluster-bench-") as folder:
        scratch = Path(folder)
        arch = [args.image_arch] if args.image_arch else []
        image = write_dev_models(scratch / "models", *arch)["image"]
        model = f"local-dir:{image}"
        # Ray gives a replica as many torch threads as CPUs it reserves (OMP_NUM_THREADS): the encoders share the
        # machine's cores between them, as `serve`'s one model has them all; the gateway reserves none.
        cores = os.cpu_count() or 1
        cluster = ["--gateway-cpus", "0", "--encoder-batch-wait-ms", "2"]
        runs = [measure("serve", model, [], scratch, "serve", args.seconds)]
        for replicas in (1, 2):
            extra = [*cluster, "--image-replicas", str(replicas), "--encoder-cpus", str(max(1, cores // replicas))]
            name = f"cluster, {replicas} replica{'s' if replicas > 1 else ''}"
            runs.append(measure("cluster", model, extra, scratch, name, args.seconds))
    serve, one_replica, two_replicas = runs
    report = {
        "machine": machine(),
        "image_model": args.image_arch or "dev-models default",
        "runs": runs,
        "ratios": {
            "cluster_p50_over_serve_p50": round(one_replica["one_client"]["p50_ms"] / serve["one_client"]["p50_ms"], 2),
            "cluster_throughput_over_serve": round(
                one_replica["four_clients"]["results_per_s"] / serve["four_clients"]["results_per_s"], 2
            ),
            "two_replicas_throughput_over_one": round(
                two_replicas["four_clients"]["results_per_s"] / one_replica["four_clients"]["results_per_s"], 2
            ),
        },
    }
    print(render(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten: {args.out}")
    return 0


def render(report: dict[str, Any]) -> str:
    info = report["machine"]
    flags = " ".join(f for f in ("amx_tile", "avx512_bf16", "avx512f", "avx2") if f in info["cpu_flags"])
    lines = [
        f"# sensorium serve against sensorium cluster ({report['image_model']} image model, torch fp32)",
        f"CPU: {info['cpu']} ({info['cpu_cores']} cores; {flags or 'no AVX2'}), torch {info['torch']}, "
        f"load average at start {info['load_average_at_start']}",
        "",
    ]
    rows = [
        [
            run["name"],
            run["ready_s"],
            run["one_client"]["p50_ms"],
            run["one_client"]["p95_ms"],
            run["four_clients"]["results_per_s"],
            run["four_clients"]["p50_ms"],
            run["four_clients"]["dropped"],
        ]
        for run in report["runs"]
    ]
    header = ["server", "ready s", "1 client p50 ms", "p95 ms", "4 clients results/s", "p50 ms", "dropped"]
    lines += markdown_table(header, rows)
    lines += ["", *(f"- {name}: {value}" for name, value in report["ratios"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

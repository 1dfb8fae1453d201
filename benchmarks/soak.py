"""Soak test (not in CI): clients streaming for minutes against a real server process.

    python benchmarks/soak.py --clients 8 --minutes 10

Six in eight clients send webcam frames (two in flight), the rest microphone audio in real time.
Every 30 s it prints the server's resident memory; at the end, the accounting identity per stream:
frames sent = results + dropped + errors (audio: hops due = results + dropped, give or take the one
hop the resampler still holds). The server runs the small random-weight models by default, so the
machinery (not the model) is what gets exercised: many messages per second for many minutes.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench import free_port, wait_healthy
from benchmarks.measure import camera_frame, jpeg
from clients.client import SensoriumClient
from server.devmodels import write_clap, write_open_clip


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def webcam(url: str, name: str, stop: asyncio.Event, jpeg: bytes) -> dict[str, int]:
    client = SensoriumClient(url, connect_timeout=30)
    await client.start()
    seq = 0
    while not stop.is_set():
        if await client.wait_for_slot("image", name, 2, timeout=1) and await client.send_frame(jpeg, seq, stream=name):
            seq += 1
    await client.wait_until(lambda: client.ledger.in_flight("image", name) == 0, timeout=30)
    await client.close()
    books = client.ledger
    holds = books.sent == books.results + books.dropped + books.errors
    return {"sent": books.sent, "results": books.results, "dropped": books.dropped, "errors": books.errors,
            "lost": books.lost, "identity_holds": holds}  # fmt: skip


async def microphone(url: str, name: str, stop: asyncio.Event, hop_s: float = 1.0) -> dict[str, int]:
    client = SensoriumClient(url, connect_timeout=30)
    await client.start()
    rate, chunk_s = 16_000, 0.2
    pcm = (np.sin(np.arange(int(rate * chunk_s)) * 2 * np.pi * 440 / rate) * 8000).astype("<i2").tobytes()
    seq, started = 0, time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(max(0.0, started + seq * chunk_s - time.monotonic()))  # real time
        if await client.send_audio(pcm, seq, rate, stream=name):
            seq += 1
    due = int(seq * chunk_s / hop_s)
    await client.wait_until(lambda: client.ledger.results + client.ledger.dropped >= due - 1, timeout=30)
    await client.close()
    ledger = client.ledger
    answered = ledger.results + ledger.dropped
    return {"chunks": seq, "hops_due": due, "results": ledger.results, "dropped": ledger.dropped,
            "errors": ledger.errors, "identity_holds": due - 1 <= answered <= due and ledger.errors == 0}  # fmt: skip


async def soak(url: str, clients: int, seconds: float, pid: int) -> tuple[list[dict], list[tuple[float, float]]]:
    stop = asyncio.Event()
    frame = jpeg(camera_frame())
    audio_clients = max(1, clients // 4)
    tasks = [asyncio.create_task(microphone(url, f"mic{i}", stop)) for i in range(audio_clients)]
    tasks += [asyncio.create_task(webcam(url, f"cam{i}", stop, frame)) for i in range(clients - audio_clients)]
    memory = [(0.0, rss_mib(pid))]
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        await asyncio.sleep(min(30.0, seconds - (time.monotonic() - started)))
        memory.append((time.monotonic() - started, rss_mib(pid)))
        print(f"{memory[-1][0]:6.0f} s  server RSS {memory[-1][1]:7.1f} MiB", flush=True)
    stop.set()
    return list(await asyncio.gather(*tasks)), memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--image-arch", default="tiny")
    parser.add_argument("--out", type=Path, default=Path("bench-results/soak.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as scratch:
        image = write_open_clip(Path(scratch) / "image", args.image_arch)
        audio = write_clap(Path(scratch) / "audio")
        port = free_port()
        command = [sys.executable, "-m", "server", "--port", str(port), "--image-model", f"local-dir:{image}",
                   "--audio-model", str(audio), "--label-cache", "", "--log-level", "warning"]  # fmt: skip
        server = subprocess.Popen(command)
        try:
            wait_healthy(port, server)
            results, memory = asyncio.run(
                soak(f"ws://127.0.0.1:{port}/ws", args.clients, args.minutes * 60, server.pid)
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    report = {"clients": args.clients, "minutes": args.minutes, "streams": results, "rss_mib": memory}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(results, indent=1))
    first, last = memory[1][1] if len(memory) > 1 else memory[0][1], memory[-1][1]
    print(f"RSS after 30 s {first:.1f} MiB, at the end {last:.1f} MiB; identity holds on every stream: "
          f"{all(r['identity_holds'] for r in results)}")  # fmt: skip
    return 0 if all(r["identity_holds"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

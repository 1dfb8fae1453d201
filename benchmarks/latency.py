"""Per-stage latency over the real server, and label text-encoding time.

    python benchmarks/latency.py [--arch ViT-B-32] [--frames 40] [--labels 1000]

Writes a random-weight checkpoint of the chosen open_clip architecture (timings do not depend on the
weights), serves it on a free loopback port, sends 640x480 JPEG frames one at a time, and prints the
median and p95 of every stage. Then it times encoding N labels with padding cut to the longest prompt
against open_clip's stock 77-token encode_text, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import msgpack
import numpy as np
import torch
import uvicorn
import websockets
from PIL import Image

from server.app import create_app
from server.clip import ClipEncoder
from server.devmodels import write_open_clip
from server.settings import Settings

STAGES = ("decode_ms", "queue_ms", "preprocess_ms", "encode_ms", "similarity_ms", "total_ms")
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def stream_frames(url: str, frames: int) -> tuple[list[dict], list[float]]:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), np.uint8)).save(buffer, "JPEG", quality=80)
    data = buffer.getvalue()
    results, round_trips = [], []
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        for seq in range(frames + 3):
            sent = time.perf_counter()
            await ws.send(
                msgpack.packb({"type": "frame", "seq": seq, "ts": time.time(), "format": "jpeg", "data": data})
            )
            result = msgpack.unpackb(await ws.recv())
            if seq >= 3:  # the first few warm caches
                results.append(result)
                round_trips.append((time.perf_counter() - sent) * 1000)
    return results, round_trips


def serve_and_measure(model_dir: Path, frames: int) -> None:
    port = free_port()
    settings = Settings(
        image_model=f"local-dir:{model_dir}", no_audio=True, port=port, image_labels=REPO / "labels" / "image.txt"
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    runtime = app.state.runtime
    while runtime.state == "loading":
        time.sleep(0.1)
    if runtime.state != "ok":
        raise SystemExit(runtime.error)
    try:
        results, round_trips = asyncio.run(stream_frames(f"ws://127.0.0.1:{port}/ws", frames))
    finally:
        server.should_exit = True
        thread.join(10)
    labels = len(runtime.label_sources["image"].current.names)
    print(f"\nper-stage latency, {frames} frames of 640x480 JPEG, one in flight, {labels} labels (ms)")
    print(f"{'stage':<16}{'p50':>9}{'p95':>9}")
    for stage in STAGES:
        values = [r["timings"][stage] for r in results]
        print(f"{stage:<16}{percentile(values, 50):>9.2f}{percentile(values, 95):>9.2f}")
    print(f"{'round trip':<16}{percentile(round_trips, 50):>9.2f}{percentile(round_trips, 95):>9.2f}")


def text_encoding(model_dir: Path, count: int) -> None:
    encoder = ClipEncoder.load(f"local-dir:{model_dir}", None, "cpu")
    words = [
        line.split("=")[0].strip()
        for line in (REPO / "labels" / "image.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "@"))
    ]
    prompts = [f"a photo of a {words[i % len(words)]} number {i}." for i in range(count)]
    started = time.perf_counter()
    fast = encoder.encode_text(prompts)
    cut_s = time.perf_counter() - started
    started = time.perf_counter()
    with torch.inference_mode():
        stock = torch.cat(
            [
                encoder.model.encode_text(encoder.tokenizer(prompts[i : i + 256]), normalize=True)
                for i in range(0, count, 256)
            ]
        ).numpy()
    stock_s = time.perf_counter() - started
    print(
        f"\ntext encoding of {count} labels: cut to longest {cut_s:.2f} s, stock 77 tokens {stock_s:.2f} s "
        f"({stock_s / cut_s:.1f}x), max abs diff {np.abs(fast - stock).max():.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--labels", type=int, default=1000)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_open_clip(Path(tmp) / "clip", args.arch)
        serve_and_measure(model_dir, args.frames)
        text_encoding(model_dir, args.labels)


if __name__ == "__main__":
    main()

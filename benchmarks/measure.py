"""What the benchmarks feed the models and how they time them and print the figures, shared by every part."""

from __future__ import annotations

import io
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from server.encoders import Encoder

LABELS = Path(__file__).resolve().parent.parent / "labels"  # the shipped label files, in a checkout


def camera_frame() -> np.ndarray:
    """A 640x480 picture with some structure, decoded from JPEG like a webcam frame."""
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (60, 80, 3), np.uint8)
    picture = Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC)
    return np.asarray(Image.open(io.BytesIO(jpeg(picture))).convert("RGB"))


def jpeg(picture: Any) -> bytes:
    """A picture (an array or a PIL image) as the JPEG a webcam client sends."""
    from PIL import Image

    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(picture)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def sample_input(encoder: Encoder) -> Any:
    """A webcam frame, or five seconds of noise at the rate the audio model's features expect."""
    if encoder.modality == "image":
        return camera_frame()
    if encoder.sample_rate is None:
        raise ValueError(f"audio model {encoder.name} declares no sample rate")
    return np.random.default_rng(0).normal(0, 0.1, encoder.sample_rate * 5).astype(np.float32)


def realistic_labels(count: int, salt: str) -> list[str]:
    """Distinct labels shaped like the shipped ones ("red golden retriever"): two to four words."""
    nouns = [line.split("=")[0].strip() for line in _shipped_labels() if line.strip()]
    adjectives = ["red", "small", "old", "wet", "bright", "dark", "wooden", "striped", "blue", "plastic",
                  "broken", "shiny", "green", "tiny", "big", "white", "black", "metal", "soft", "empty"]  # fmt: skip
    rng = np.random.default_rng(zlib.crc32(salt.encode()))
    labels: list[str] = []
    seen: set[str] = set()
    while len(labels) < count:
        label = f"{adjectives[rng.integers(len(adjectives))]} {nouns[rng.integers(len(nouns))]}"
        if label not in seen:
            seen.add(label)
            labels.append(label)
    return labels


def _shipped_labels() -> list[str]:
    path = LABELS / "image.txt"
    if not path.exists():
        return ["dog", "cat", "car", "person", "tree", "cup", "chair", "phone", "bird", "book"]
    return [line for line in path.read_text().splitlines() if line.strip() and not line.startswith(("#", "@"))]


def timed(fn: Any, min_runs: int = 5, min_seconds: float = 1.5, idle_s: float = 0.0) -> list[float]:
    """Milliseconds of ``fn()`` per call, after one warm-up call, for at least ``min_runs`` calls and
    ``min_seconds`` (at most 200 calls). ``idle_s``: sleep that long, untimed, before each call, as a server
    does between frames: thread pools that go to sleep in such gaps pay to wake up, and a hot loop hides it."""
    fn()  # warm-up
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < min_seconds:
        if idle_s:
            time.sleep(idle_s)
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
        if len(times) >= 200:
            break
    return times


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return out

"""Per-hop cost of CLAP's audio front end: the stock ClapFeatureExtractor against server.melspec.MelStream.

    python -m benchmarks.melspec_bench [--window 5] [--hop 1] [--chunk 0.2] [--hops 30]

The stock path runs the extractor on the whole window at every hop (what ClapEncoder.prepare does for a raw
window); the streaming path pushes the hop's audio in chunks and assembles the window's features. Both use
laion's feature extractor settings (server.devmodels.LAION_FEATURES); every streamed result is checked
against the stock one. Cases:

* aligned: chunks are whole multiples of the 480-sample STFT hop (48 kHz input in 10 ms multiples), so the
  window starts on the stream's frame grid and only the new hop's frames are computed;
* unaligned: 2048-sample chunks (or resampled input): the window's end, hence its start, is off the grid
  at most hops, so ``features`` computes the window's own frames at once;
* unaligned + lag: the same stream, each window ending at the last multiple of 480 samples
  (``features(window, lag=total % 480)``), back on the grid.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from server.devmodels import LAION_FEATURES
from server.melspec import MelStream

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_description() -> str:
    model, flags = "unknown CPU", set[str]()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    import os

    present = [flag for flag in FLAGS if flag in flags] or ["none of " + "/".join(FLAGS)]
    return f"{model}, {os.cpu_count()} CPUs, flags: {' '.join(present)}"


def signal(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    audio = 0.1 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.3 * t) > 0)
    return audio.astype(np.float32)


def run_stream(
    audio: np.ndarray, window: int, hop: int, chunk: int, lag_to_grid: bool, check: Callable[[np.ndarray], np.ndarray]
) -> tuple[list[float], list[float], list[int], float]:
    """Per hop: push time (all the hop's chunks), features time, frames computed by features, max |diff|."""
    stream = MelStream.from_extractor(extractor(), "rand_trunc", window)
    pushes: list[float] = []
    assembles: list[float] = []
    computed: list[int] = []
    worst = 0.0
    pushed_time = 0.0
    since_hop = 0
    for start in range(0, len(audio) - chunk + 1, chunk):
        piece = audio[start : start + chunk]
        t0 = time.perf_counter()
        stream.push(piece)
        pushed_time += time.perf_counter() - t0
        since_hop += len(piece)
        if since_hop < hop:
            continue
        since_hop -= hop
        lag = stream.total % 480 if lag_to_grid else 0
        length = min(window, stream.total - lag)
        t0 = time.perf_counter()
        features = stream.features(length, lag=lag)
        assembles.append(time.perf_counter() - t0)
        pushes.append(pushed_time)
        pushed_time = 0.0
        computed.append(stream.last_computed)
        end = stream.total - lag
        worst = max(worst, float(np.abs(features - check(audio[end - length : end])).max()))
    return pushes, assembles, computed, worst


_EXTRACTOR = None


def extractor() -> object:
    global _EXTRACTOR
    if _EXTRACTOR is None:
        from transformers import ClapFeatureExtractor

        _EXTRACTOR = ClapFeatureExtractor(**LAION_FEATURES)
    return _EXTRACTOR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=float, default=5.0, help="window in seconds (default %(default)s)")
    parser.add_argument("--hop", type=float, default=1.0, help="hop in seconds (default %(default)s)")
    parser.add_argument("--chunk", type=float, default=0.2, help="aligned chunk in seconds (default %(default)s)")
    parser.add_argument("--hops", type=int, default=30, help="hops timed per case (default %(default)s)")
    args = parser.parse_args()
    rate = int(LAION_FEATURES["sampling_rate"])
    window, hop = round(args.window * rate), round(args.hop * rate)
    audio = signal(args.window + args.hops * args.hop + 1, rate)
    fe = extractor()

    def stock(samples: np.ndarray) -> np.ndarray:
        out: np.ndarray = fe(  # type: ignore[operator]
            samples, sampling_rate=rate, truncation="rand_trunc", padding="repeatpad", return_tensors="np"
        )["input_features"][0]
        return out

    stock(audio[:window])  # warm up
    stock_times = []
    for i in range(args.hops):
        end = window + i * hop
        t0 = time.perf_counter()
        stock(audio[end - window : end])
        stock_times.append(time.perf_counter() - t0)

    print(f"CPU: {cpu_description()}")
    print(f"numpy {np.__version__}; window {args.window:g} s, hop {args.hop:g} s, {args.hops} hops per case")
    print("ms per hop, median (min); push: all of the hop's chunks; frames: STFT frames computed by features()")
    header = f"{'path':<42}{'push':>15}{'features':>15}{'total':>15}{'frames':>8}{'max|diff|':>11}"
    print(header)

    def cell(times: list[float]) -> str:
        return f"{statistics.median(times) * 1e3:.2f} ({min(times) * 1e3:.2f})"

    print(f"{'stock ClapFeatureExtractor, whole window':<42}{'':>15}{cell(stock_times):>15}{cell(stock_times):>15}")
    cases = [
        (f"stream, aligned {args.chunk:g} s chunks", round(args.chunk * rate), False),
        ("stream, unaligned 2048-sample chunks", 2048, False),
        ("stream, unaligned 2048 + lag to the grid", 2048, True),
    ]
    for name, chunk, lag in cases:
        pushes, assembles, computed, worst = run_stream(audio, window, hop, chunk, lag, stock)
        steady = len(pushes) - args.hops  # leave out the growth phase: the window is not yet full
        pushes, assembles = pushes[steady:], assembles[steady:]
        totals = [a + b for a, b in zip(pushes, assembles, strict=True)]
        frames = statistics.median(computed[steady:])
        print(f"{name:<42}{cell(pushes):>15}{cell(assembles):>15}{cell(totals):>15}{frames:>8g}{worst:>11.2g}")


if __name__ == "__main__":
    main()

"""What this CPU can do, read at run time: its model, its vector and matrix units, and whether bf16 pays.

Machines of one project differ (an Intel Xeon with AMX one day, an AMD EPYC with AVX2 only the next), so
a speed path is chosen on the machine it runs on, and every figure is printed beside these facts.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Callable
from typing import Any

FLAGS_OF_INTEREST = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx512_vnni", "avx_vnni", "avx2")
BF16_UNITS = ("amx_bf16", "avx512_bf16")
BF16_MIN_SPEEDUP = 1.3  # bf16 must beat fp32 by this much in the probe to be chosen


@functools.cache
def cpu_info() -> dict[str, Any]:
    """The CPU model, the flags that decide speed paths, and the cores this process may use."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "flags": [f for f in FLAGS_OF_INTEREST if f in flags], "cores": cores}


def has_bf16_units() -> bool:
    return any(flag in cpu_info()["flags"] for flag in BF16_UNITS)


@functools.cache
def bf16_speedup(size: int = 512, repeats: int = 20) -> float:
    """fp32 time over bf16 time for a transformer-sized matrix product on this CPU (a probe of ~0.1 s)."""
    import torch

    a32, b32 = torch.randn(size, size * 4), torch.randn(size * 4, size)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def best(a: torch.Tensor, b: torch.Tensor) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - started)
        return min(times)

    best(a16, b16)  # first calls pick kernels
    return best(a32, b32) / best(a16, b16)


def cpu_precision() -> str:
    """``--precision auto`` on a CPU: bf16 where the CPU has bf16 matrix units and the probe finds them faster."""
    return choose_cpu_precision(has_bf16_units(), bf16_speedup)


def choose_cpu_precision(bf16_units: bool, speedup: Callable[[], float]) -> str:
    # Without the units bf16 is emulated (50 times slower than fp32 on an AVX2 EPYC): not even probed.
    return "bf16" if bf16_units and speedup() >= BF16_MIN_SPEEDUP else "fp32"

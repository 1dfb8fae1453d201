"""Latencies in milliseconds, from ``time.perf_counter`` readings (monotonic; never the wall clock)."""

from __future__ import annotations

import time


def ms_between(start: float, end: float) -> float:
    return round((end - start) * 1000.0, 3)


def ms_since(start: float) -> float:
    return ms_between(start, time.perf_counter())

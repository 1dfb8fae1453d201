"""Benchmarks and load tests: ``sensorium bench`` (bench.py) and the soak test (soak.py)."""

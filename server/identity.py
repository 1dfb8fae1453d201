"""Model identity: what label embeddings are cached under, from weights in any form.

A cache key must change when the weights, the precision or the numerics of a backend change, and must
not depend on torch: a converted model (OpenVINO, ONNX) has no ``state_dict``. So a fingerprint is made
from named weights, whatever holds them, and an identity is a plain string built from named parts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

SAMPLES_PER_TENSOR = 64


def fingerprint(weights: Iterable[tuple[str, tuple[int, ...], Any]]) -> str:
    """A short hash of (name, shape, flat values) triples, from a strided sample of each: same name, other
    weights, other fingerprint, at a cost of milliseconds rather than hashing gigabytes."""
    digest = hashlib.sha256()
    for name, shape, flat in weights:
        digest.update(f"{name}{tuple(shape)}".encode())
        digest.update(np.asarray(_sample(flat), dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def _sample(flat: Any) -> Any:
    return flat[:: max(1, len(flat) // SAMPLES_PER_TENSOR)][:SAMPLES_PER_TENSOR]


def fingerprint_arrays(named: Iterable[tuple[str, np.ndarray]]) -> str:
    """``fingerprint`` of named numpy arrays (a converted model's constants, say)."""
    return fingerprint((name, array.shape, array.reshape(-1)) for name, array in named)


def torch_fingerprint(module: Any) -> str:
    """``fingerprint`` of a torch module's ``state_dict``, sampled on the tensor's own device, so a GPU
    model copies 64 numbers per tensor rather than the tensor."""
    return fingerprint(
        (name, tuple(tensor.shape), _sample(tensor.detach().reshape(-1)).float().cpu().numpy())
        for name, tensor in module.state_dict().items()
    )


def model_identity(family: str, name: str, weights: str, precision: str) -> str:
    """The label-cache key of a model: its family, the name clients see, its weights' fingerprint, precision."""
    return f"{family}:{name}:{weights}:{precision}"

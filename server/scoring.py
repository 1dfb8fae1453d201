"""Zero-shot scoring, Sans-I/O: embeddings and a label matrix in, ranked labels out."""

from __future__ import annotations

from typing import Any

import numpy as np


def similarities(embeddings: np.ndarray, label_matrix: np.ndarray) -> np.ndarray:
    """Cosine similarities (batch, labels); both sides are already L2-normalized."""
    out: np.ndarray = embeddings @ label_matrix.T
    return out


def softmax_scores(similarity: np.ndarray, logit_scale: float) -> np.ndarray:
    """Softmax over the whole label set of logit_scale x cosine, row by row."""
    logits = similarity.astype(np.float64) * logit_scale
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    return logits


def top_labels(
    names: tuple[str, ...], scores: np.ndarray, similarity: np.ndarray, top_k: int, min_score: float
) -> list[dict[str, Any]]:
    """The ``top_k`` best labels of one row, by score, without those under ``min_score``."""
    count = len(names)
    k = min(top_k, count)
    # argpartition finds the k best in linear time; only those k get sorted.
    candidates = np.argpartition(scores, count - k)[count - k :] if k < count else np.arange(count)
    ranked = candidates[np.argsort(-scores[candidates], kind="stable")]
    return [
        {"label": names[i], "score": float(scores[i]), "similarity": float(similarity[i])}
        for i in ranked
        if scores[i] >= min_score
    ]


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    out: np.ndarray = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return out

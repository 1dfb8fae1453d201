"""Zero-shot scoring, Sans-I/O: embeddings and a label matrix in, ranked labels out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

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


def sigmoid_scores(similarity: np.ndarray, logit_scale: float, logit_bias: float) -> np.ndarray:
    """Each label on its own: sigmoid(logit_scale x cosine + logit_bias), as SigLIP was trained."""
    logits = similarity.astype(np.float64) * logit_scale + logit_bias
    # 0.5 * (1 + tanh(x / 2)) is the sigmoid without exp's overflow for very negative logits.
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * logits))
    return out


@dataclass(frozen=True)
class Scoring:
    """How a model family turns cosines into scores, with the model's own learned constants.

    ``softmax`` (CLIP, CLAP): a distribution over the label set; adding labels takes score from the others.
    ``sigmoid`` (SigLIP): each label's own probability of matching; labels do not compete.
    """

    kind: Literal["softmax", "sigmoid"]
    scale: float  # the learned temperature, exp(logit_scale)
    bias: float = 0.0  # sigmoid only: the learned logit bias

    def scores(self, similarity: np.ndarray) -> np.ndarray:
        if self.kind == "sigmoid":
            return sigmoid_scores(similarity, self.scale, self.bias)
        return softmax_scores(similarity, self.scale)

    def describe(self) -> dict[str, Any]:
        """What clients are told (welcome, /v1/models): the rule and its constants."""
        described: dict[str, Any] = {"kind": self.kind, "scale": round(self.scale, 6)}
        if self.kind == "sigmoid":
            described["bias"] = round(self.bias, 6)
        return described


def top_labels(
    names: tuple[str, ...],
    scores: np.ndarray,
    similarity: np.ndarray,
    top_k: int,
    min_score: float,
    groups: tuple[str | None, ...] | None = None,
) -> list[dict[str, Any]]:
    """The ``top_k`` best labels of one row, by score, without those under ``min_score``."""
    count = len(names)
    k = min(top_k, count)
    # argpartition finds the k best in linear time; only those k get sorted.
    candidates = np.argpartition(scores, count - k)[count - k :] if k < count else np.arange(count)
    ranked = candidates[np.argsort(-scores[candidates], kind="stable")]
    return [
        {
            "label": names[i],
            "score": float(scores[i]),
            "similarity": float(similarity[i]),
            "group": groups[i] if groups else None,
        }
        for i in ranked
        if scores[i] >= min_score
    ]


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    out: np.ndarray = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


class LabelMatrix(Protocol):
    """What scoring needs of a label set."""

    @property
    def names(self) -> tuple[str, ...]: ...

    @property
    def matrix(self) -> np.ndarray:  # (labels, dim), unit rows
        ...


@dataclass(frozen=True)
class Scores:
    """One input scored against a whole label set: every label's cosine and softmax score, not only the top."""

    label_set: Any  # the LabelMatrix scored against (a LabelSet in the server)
    similarity: np.ndarray  # (labels,) raw cosines
    scores: np.ndarray  # (labels,) the model family's scores (Scoring)

    def top(self, top_k: int, min_score: float) -> list[dict[str, Any]]:
        groups = getattr(self.label_set, "groups", None)  # label files' groups, where the set has them
        return top_labels(self.label_set.names, self.scores, self.similarity, top_k, min_score, groups)


def score_batch(embeddings: np.ndarray, label_sets: list[LabelMatrix], scoring: Scoring) -> list[Scores]:
    """Score each row of ``embeddings`` against its own label set; rows sharing a set take one matrix product."""
    out: dict[int, Scores] = {}
    for label_set in {id(s): s for s in label_sets}.values():
        rows = [i for i, s in enumerate(label_sets) if s is label_set]
        similarity = similarities(embeddings[rows], label_set.matrix)
        scores = scoring.scores(similarity)
        out.update({i: Scores(label_set, similarity[n], scores[n]) for n, i in enumerate(rows)})
    return [out[i] for i in range(len(label_sets))]

"""Label embeddings kept across reloads and restarts: the cache, and prompt ensembling through it."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .labels import ParsedLabels
from .scoring import normalize_rows

log = logging.getLogger("sensorium.labels")


class TextTower(Protocol):
    """What label embedding needs of a model: its text tower, and what its embeddings are cached under.
    An ``Encoder`` is one; so is an encoder replica on another machine (server/label_hub.py)."""

    identity: str

    def encode_text(self, prompts: list[str]) -> np.ndarray: ...


class EmbeddingCache:
    """Prompt embeddings keyed by model identity and prompt text, so a reload encodes only what is new.

    Label-file prompts are *kept*: with a folder, each model's are also written to disk (one .npz per
    model identity, which includes a fingerprint of the weights and the precision), once per label-file
    load, so a restart does not encode its labels again. Prompts of one-shot requests are *transient*:
    held in memory up to ``transient_limit`` (least recently used first out), never written, so clients
    cannot grow the disk or make every request rewrite the file.
    """

    @classmethod
    def at(cls, folder: str) -> EmbeddingCache:
        """The cache ``--label-cache`` names: that folder, or memory only for ''."""
        return cls(Path(folder).expanduser() if folder else None)

    def __init__(self, folder: Path | None = None, transient_limit: int = 10_000, kept_limit: int = 100_000) -> None:
        self.folder = folder
        self.transient_limit = transient_limit
        self.kept_limit = kept_limit  # on disk per model: the current labels' prompts, then the most recent others
        self._kept: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._transient: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._dirty: set[str] = set()
        self._lock = threading.Lock()

    def lookup(self, identity: str, prompts: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for prompt in prompts:
                key = (identity, prompt)
                for store in (self._kept, self._transient):
                    if key in store:
                        store.move_to_end(key)  # recently used: the last to be evicted
                        found[prompt] = store[key]
                        break
        return found

    def store(self, identity: str, prompts: list[str], embeddings: np.ndarray, *, keep: bool) -> None:
        with self._lock:
            store = self._kept if keep else self._transient
            for prompt, row in zip(prompts, embeddings, strict=True):
                store[(identity, prompt)] = row
            if keep:
                self._dirty.add(identity)
            while len(self._transient) > self.transient_limit:
                self._transient.popitem(last=False)

    def load(self, identity: str) -> int:
        """Read what an earlier run kept for this model; returns how many prompts that was."""
        path = self._path(identity)
        if path is None or not path.exists():
            return 0
        try:
            with np.load(path, allow_pickle=False) as saved:
                if str(saved["identity"]) != identity:
                    return 0
                prompts, embeddings = saved["prompts"].tolist(), saved["embeddings"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring the unreadable label cache %s: %s", path, exc)
            return 0
        with self._lock:
            for prompt, row in zip(prompts, embeddings, strict=True):
                self._kept[(identity, prompt)] = row
        return len(prompts)

    def save(self, identity: str, current: set[str]) -> None:
        """Write this model's kept prompts, if any are new: ``current`` first, then the most recently used."""
        path = self._path(identity)
        with self._lock:
            if path is None or identity not in self._dirty:
                return
            self._dirty.discard(identity)
            items = [(p, row) for (i, p), row in self._kept.items() if i == identity]
        in_use = [item for item in items if item[0] in current]
        others = [item for item in items if item[0] not in current]  # least recently used first
        room = max(0, self.kept_limit - len(in_use))
        chosen = in_use + (others[-room:] if room else [])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{threading.get_ident()}.tmp.npz")
            np.savez(
                temporary,
                identity=np.array(identity),
                prompts=np.array([p for p, _ in chosen]),
                embeddings=np.stack([row for _, row in chosen]),
            )
            os.replace(temporary, path)  # readers see the old file or the new one, never half of one
        except OSError as exc:
            log.warning("cannot write the label cache %s: %s", path, exc)

    def _path(self, identity: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / f"{hashlib.sha256(identity.encode()).hexdigest()[:24]}.npz"

    def __len__(self) -> int:
        return len(self._kept) + len(self._transient)


@dataclass(frozen=True)
class EmbeddedLabels:
    """A label set's embedding matrix and what making it cost: how much the text tower had to encode."""

    matrix: np.ndarray  # (labels, dim), unit rows
    new_prompts: int  # prompts run through the text tower
    new_labels: int  # labels with at least one such prompt; the others came wholly from the cache


def embed_label_set(
    encoder: TextTower, parsed: ParsedLabels, cache: EmbeddingCache, *, keep: bool = True, refresh: bool = False
) -> EmbeddedLabels:
    """One row per label: the normalized mean of its prompts' embeddings (prompt ensembling).

    ``keep``: the prompts are a label file's (kept, and written by ``cache.save``), not a request's.
    ``refresh``: encode every prompt, cached or not (a request timing the text tower); the cache is updated."""
    wanted = list(dict.fromkeys(p for label in parsed.labels for p in label.prompts))
    known = {} if refresh else cache.lookup(encoder.identity, wanted)
    new = [p for p in wanted if p not in known]
    if new:
        embeddings = encoder.encode_text(new)
        cache.store(encoder.identity, new, embeddings, keep=keep)
        known.update(zip(new, embeddings, strict=True))
    if keep:
        cache.save(encoder.identity, set(wanted))
    rows = [np.mean([known[p] for p in label.prompts], axis=0) for label in parsed.labels]
    encoded = set(new)
    new_labels = sum(1 for label in parsed.labels if not encoded.isdisjoint(label.prompts))
    return EmbeddedLabels(normalize_rows(np.stack(rows)), len(new), new_labels)

"""Label sets: label files (or a directory of them) turned into embedding matrices, kept current while
the files change."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import watchfiles

from . import protocol
from .events import EventThresholds
from .inference import ModelThread
from .label_cache import EmbeddingCache, TextTower, embed_label_set
from .labels import (
    DEFAULT_TEMPLATES,
    Label,
    LabelFileError,
    ParsedLabels,
    parse_label_bytes,
    parse_label_files,
    parse_label_text,
)
from .metrics import Metrics
from .preflight import find_label_file
from .protocol import Modality
from .settings import Settings
from .timing import ms_since

log = logging.getLogger("sensorium.labels")


@dataclass(frozen=True)
class LabelSet:
    modality: Modality
    version: int
    names: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...]
    matrix: np.ndarray  # (labels, dim), unit rows
    encode_ms: float
    new_prompts: int  # prompts this load had to run through the text tower
    new_labels: int = 0  # labels with at least one such prompt (the others came wholly from the cache)
    # One per label, aligned with ``names`` (left out: no groups and no settings for any label).
    groups: tuple[str | None, ...] = ()
    thresholds: tuple[EventThresholds | None, ...] = ()  # a label's own event settings over its file's
    group_thresholds: Mapping[str, EventThresholds] = field(default_factory=dict)  # only groups with settings

    def __post_init__(self) -> None:
        if not self.groups:
            object.__setattr__(self, "groups", (None,) * len(self.names))
        if not self.thresholds:
            object.__setattr__(self, "thresholds", (None,) * len(self.names))
        if not len(self.groups) == len(self.thresholds) == len(self.names):
            raise ValueError("a label set needs one group and one thresholds entry per label")


@dataclass(frozen=True)
class LabelLimits:
    max_labels: int = 10_000
    max_file_bytes: int = 1024 * 1024


class LiveLabels(Protocol):
    """One modality's current labels, as the server reads and edits them: a ``LabelSource`` here, or a
    ``HubLabelFeed`` following the cluster's one label source (server/label_hub.py)."""

    modality: Modality
    path: Path
    current: LabelSet | None
    last_error: str | None
    history: list[dict[str, float]]

    @property
    def editable(self) -> bool: ...

    def load_now(self) -> LabelSet: ...

    async def watch(self, stop: asyncio.Event) -> None: ...

    async def adhoc(self, names: list[str], *, refresh: bool = False) -> LabelSet: ...

    async def embed_texts(self, texts: list[str]) -> np.ndarray: ...

    def text(self) -> str: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class LabelSource:
    """The live label set of one modality: loads its file, or every ``*.txt`` directly inside its directory,
    watches them, swaps in new sets atomically."""

    def __init__(
        self,
        modality: Modality,
        path: Path,
        encoder: TextTower,
        cache: EmbeddingCache,
        announce: Callable[[dict[str, Any]], None],
        debounce_ms: int,
        limits: LabelLimits | None = None,
        metrics: Metrics | None = None,
        model_thread: ModelThread | None = None,
    ) -> None:
        self.limits = limits or LabelLimits()
        self.metrics = metrics
        self.modality = modality
        self.path = path
        self.encoder = encoder
        self.cache = cache
        self.announce = announce
        self.debounce_ms = debounce_ms
        self.current: LabelSet | None = None
        self.last_error: str | None = None
        self.history: list[dict[str, float]] = []  # one entry per successful load: the dashboard's scaling chart
        # Text is encoded on the model's own thread (server/inference.py says why).
        self._owns_thread = model_thread is None
        self.model_thread = model_thread or ModelThread(f"labels-{modality}")
        self._lock = asyncio.Lock()

    def load_now(self) -> LabelSet:
        """Blocking first load, at start-up: a bad file here is fatal rather than silently empty."""
        self.current = self._build(self._read_and_parse(), version=1)
        return self.current

    async def reload(self) -> None:
        """Re-read the file; on success swap the set and tell clients, on failure keep the old set."""
        async with self._lock:
            version = (self.current.version if self.current else 0) + 1
            started = time.perf_counter()
            try:
                parsed = await asyncio.to_thread(self._read_and_parse)
                label_set = await self.model_thread.run(self._build, parsed, version)
            except LabelFileError as exc:
                self._count_reload("error", started)
                self.last_error = str(exc)
                kept = f"; keeping version {self.current.version}" if self.current else ""
                log.error("%s labels from %s not reloaded: %s%s", self.modality, self.path, exc, kept)
                self.announce(protocol.labels_error(self.modality, f"{self.path}: {exc}{kept}"))
                return
            self.current = label_set
            self.last_error = None
            self._count_reload("ok", started)
            log.info(
                "%s labels v%d: %d labels from %s (%d new prompts encoded in %.0f ms)",
                self.modality,
                label_set.version,
                len(label_set.names),
                self.path,
                label_set.new_prompts,
                label_set.encode_ms,
            )
            self.announce(protocol.labels_changed(self.modality, label_set.version, len(label_set.names)))

    def _count_reload(self, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.reloads.labels(self.modality, outcome).inc()
            self.metrics.reload_seconds.labels(self.modality).observe(time.perf_counter() - started)

    @property
    def editable(self) -> bool:
        """Whether ``write`` can replace the labels: a directory is edited file by file, not through it."""
        return not self.path.is_dir()

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload whenever the labels change: the file (editors that save by rename or truncate count too),
        or any ``*.txt`` directly inside the directory, added, changed or removed."""
        catch_up = False
        while not stop.is_set():
            target = self.path.resolve()
            folder = target.is_dir()
            # The folder the path names is watched as well as the one it resolves to: a Kubernetes ConfigMap
            # volume swaps a symlink (..data) there to a new directory and deletes the old one.
            named = self.path.absolute().parent
            batches = watchfiles.awatch(
                # Not recursive: a label file may sit in a big folder. A directory's parent is watched too, to
                # see the directory deleted and made again: the old watch cannot see into the new one.
                *{named, target.parent, *((target,) if folder else ())},
                watch_filter=None,
                debounce=self.debounce_ms,
                step=50,
                stop_event=stop,
                recursive=False,
                # After a restart, the first batch (an empty one after a second) says the new watch is in
                # place; reloading then reads what was written into the new directory before it was watched.
                yield_on_timeout=catch_up,
                rust_timeout=1000 if catch_up else None,
            )
            catch_up = await self._reload_on_changes(batches, target, folder, catch_up)

    async def _reload_on_changes(
        self,
        batches: AsyncGenerator[set[tuple[watchfiles.Change, str]], None],
        target: Path,
        folder: bool,
        catch_up: bool,
    ) -> bool:
        """Reload for each batch of changes that concerns the labels; True when the watch must start over."""
        async with aclosing(batches):
            async for changes in batches:
                touched = {Path(path).resolve() for _, path in changes}
                moved = self.path.resolve() != target  # a symlink on the way now points elsewhere
                if (
                    moved
                    or catch_up
                    or any(path == target or (folder and _in_directory(path, target)) for path in touched)
                ):
                    catch_up = False
                    await self.reload()
                if moved or (target in touched and (folder or target.is_dir())):
                    return True  # the directory itself came or went, or the path leads somewhere else: watch anew
        return False

    async def adhoc(self, names: list[str], *, refresh: bool = False) -> LabelSet:
        """A label set for one request, encoded through the same cache (version 0: not the file's);
        ``refresh``: every prompt through the text tower, cached or not."""
        parsed = parse_label_text("\n".join(names), DEFAULT_TEMPLATES[self.modality], label_options=False)
        return await self.model_thread.run(self._build, parsed, 0, refresh)

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embeddings of texts as given (no template), through the cache."""
        return await self.model_thread.run(self._embed_texts, texts)

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        parsed = ParsedLabels(labels=tuple(Label(text, (text,)) for text in texts), warnings=())
        return embed_label_set(self.encoder, parsed, self.cache, keep=False).matrix

    def text(self) -> str:
        """The file as it is now ('' when it cannot be read), for an editor; for a directory, its files one
        after the other, each under a ``# ==> name.txt <==`` comment."""
        try:
            if not self.path.is_dir():
                return self.path.read_bytes().decode("utf-8", errors="replace")
            files = [
                (file.name, file.read_bytes().decode("utf-8", errors="replace")) for file in label_files(self.path)
            ]
            return "\n".join(f"# ==> {name} <==\n{content.rstrip()}\n" for name, content in files)
        except OSError:
            return ""

    def write(self, data: bytes) -> None:
        """Replace the file (checked first, then written beside it and renamed over it); the watcher reloads it."""
        if self.path.is_dir():
            raise LabelFileError(
                f"{self.path} is a labels directory, edited file by file: change, add or remove its *.txt files "
                "(the server reloads them)"
            )
        self._parse_within_limits(data)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, self.path)

    def close(self) -> None:
        if self._owns_thread:
            self.model_thread.close()

    def _read_and_parse(self) -> ParsedLabels:
        if self.path.is_dir():
            parsed = self._read_directory()
        else:
            try:
                data = self._read_limited(self.path)
            except FileNotFoundError as exc:
                raise LabelFileError("not found (deleted or renamed?)") from exc
            except OSError as exc:
                raise LabelFileError(f"cannot read: {exc.strerror}") from exc
            parsed = self._parse_within_limits(data)
        for warning in parsed.warnings:
            log.warning("%s: %s", self.path, warning)
        return parsed

    def _read_directory(self) -> ParsedLabels:
        try:
            files = label_files(self.path)
        except OSError as exc:
            raise LabelFileError(f"cannot list the directory: {exc.strerror}") from exc
        contents = []
        for file in files:
            try:
                contents.append((file.name, self._read_limited(file)))
            except FileNotFoundError:
                continue  # removed since the listing: its removal brings another reload
            except OSError as exc:
                raise LabelFileError(f"{file.name}: cannot read: {exc.strerror}") from exc
            except LabelFileError as exc:
                raise LabelFileError(f"{file.name}: {exc}") from None
        return self._within_count(parse_label_files(contents, DEFAULT_TEMPLATES[self.modality]))

    def _read_limited(self, path: Path) -> bytes:
        self._check_size(path.stat().st_size)  # before reading: a huge file is never read in
        return path.read_bytes()

    def _check_size(self, size: int) -> None:
        if size > self.limits.max_file_bytes:
            raise LabelFileError(f"{size} bytes is over the limit of {self.limits.max_file_bytes}")

    def _parse_within_limits(self, data: bytes) -> ParsedLabels:
        self._check_size(len(data))
        return self._within_count(parse_label_bytes(data, DEFAULT_TEMPLATES[self.modality]))

    def _within_count(self, parsed: ParsedLabels) -> ParsedLabels:
        if len(parsed.labels) > self.limits.max_labels:
            raise LabelFileError(f"{len(parsed.labels)} labels is over the limit of {self.limits.max_labels}")
        return parsed

    def _build(self, parsed: ParsedLabels, version: int, refresh: bool = False) -> LabelSet:
        started = time.perf_counter()
        embedded = embed_label_set(self.encoder, parsed, self.cache, keep=version > 0, refresh=refresh)
        encode_ms = ms_since(started)
        new_prompts = embedded.new_prompts
        if version > 0:  # not for ad-hoc sets
            entry = {
                "version": version,
                "count": len(parsed.labels),
                "new_prompts": new_prompts,
                "encode_ms": encode_ms,
            }
            self.history = [*self.history[-199:], entry]
        return LabelSet(
            modality=self.modality,
            version=version,
            names=parsed.names,
            prompts=tuple(label.prompts for label in parsed.labels),
            matrix=embedded.matrix,
            encode_ms=encode_ms,
            new_prompts=new_prompts,
            new_labels=embedded.new_labels,
            groups=tuple(label.group for label in parsed.labels),
            thresholds=tuple(label.thresholds for label in parsed.labels),
            group_thresholds=dict(parsed.group_thresholds),
        )


def configured_source(
    settings: Settings,
    modality: Modality,
    encoder: TextTower,
    cache: EmbeddingCache,
    announce: Callable[[dict[str, Any]], None],
    *,
    metrics: Metrics | None = None,
    model_thread: ModelThread | None = None,
) -> LabelSource:
    """The modality's label file or directory as the settings name it, embedded by ``encoder`` through ``cache``
    (its prompts kept from earlier runs loaded first): ``sensorium serve``'s labels, and the cluster's label hub's."""
    if kept := cache.load(encoder.identity):
        log.info("%s: %d prompt embeddings from the label cache", modality, kept)
    configured = settings.image_labels if modality == "image" else settings.audio_labels
    return LabelSource(
        modality,
        find_label_file(configured, f"{modality}.txt"),
        encoder,
        cache,
        announce,
        settings.reload_debounce_ms,
        limits=LabelLimits(settings.max_labels, settings.max_label_file_bytes),
        metrics=metrics,
        model_thread=model_thread,
    )


def label_files(folder: Path) -> list[Path]:
    """The label files of a labels directory, in the order they count: every ``*.txt`` directly inside,
    by name, leaving out hidden ones (editors' lock and temporary files)."""
    return sorted((p for p in folder.iterdir() if _is_label_file_name(p.name) and p.is_file()), key=lambda p: p.name)


def _in_directory(path: Path, folder: Path) -> bool:
    return path.parent == folder and _is_label_file_name(path.name)


def _is_label_file_name(name: str) -> bool:
    return name.endswith(".txt") and not name.startswith(".")

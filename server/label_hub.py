"""The cluster's one label source (``sensorium cluster``): a ``LabelHub`` deployment and a ``HubLabelFeed`` per
gateway and modality.

The hub, one replica on the head node, does what ``LabelSource`` does in ``sensorium serve`` (it runs one per
modality): it reads and watches the label files, takes ``PUT`` edits, keeps the label cache, and embeds each
version once, its prompts run by one encoder replica's text tower. Gateways follow it by long poll: each hears of
every change once, installs the new label set for its workers and tells its own clients with one ``labels``
message per version. Scoring happens in the gateways, so that is where label sets go; encoder replicas only embed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayError
from ray.serve.exceptions import RayServeException

from . import protocol
from .label_cache import EmbeddingCache
from .labels import LabelFileError
from .labelsets import LabelSet, LabelSource, configured_source
from .protocol import Modality
from .settings import Settings

log = logging.getLogger("sensorium.labels")

LONG_POLL_S = 15.0  # a follower's poll returns unchanged after this long, so a lost hub is noticed
KEPT_ANNOUNCEMENTS = 64  # per modality, for followers that fell behind
TEXT_TIMEOUT_S = 300.0  # embedding a big label file on a CPU replica takes minutes


@dataclass(frozen=True)
class LabelState:
    """One modality's labels as the hub holds them, and what it announced since a follower last asked."""

    epoch: str  # the hub replica's own id: another one (a restarted hub) starts its versions over
    seq: int  # announcements made so far
    current: LabelSet
    last_error: str | None
    history: list[dict[str, float]]
    path: str
    editable: bool
    text: str
    announcements: tuple[dict[str, Any], ...]  # after the follower's seq, oldest first


class RemoteTextTower:
    """An encoder replica's text tower, as label embedding sees a model (label_cache.TextTower)."""

    def __init__(self, handle: Any, identity: str) -> None:
        self.handle = handle  # a DeploymentHandle to an EncoderDeployment (server/cluster_app.py)
        self.identity = identity

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        # Called on the label source's own thread, never on the event loop, so waiting here blocks nothing.
        embeddings: np.ndarray = self.handle.embed_texts.remote(prompts).result(timeout_s=TEXT_TIMEOUT_S)
        return embeddings


class LabelHub:
    """The label files of the cluster, embedded once per version, followed by every gateway."""

    # Serve awaits an async __init__ (ray/serve/_private/replica.py): the encoders are asked for their identity.
    async def __init__(self, settings: Settings, encoders: dict[Modality, Any]) -> None:  # type: ignore[misc]
        self.epoch = uuid.uuid4().hex[:12]
        self.sources: dict[Modality, LabelSource] = {}
        self.seq: dict[Modality, int] = {}
        self.announced: dict[Modality, deque[tuple[int, dict[str, Any]]]] = {}
        self.changed: dict[Modality, asyncio.Event] = {}
        self.holding: dict[str, dict[str, int]] = {}  # gateway replica -> modality -> the version it holds
        self.stop = asyncio.Event()
        cache = EmbeddingCache.at(settings.label_cache)
        for modality, handle in encoders.items():
            identity = (await handle.describe.remote())["identity"]
            tower = RemoteTextTower(handle, identity)
            source = configured_source(settings, modality, tower, cache, partial(self._announce, modality))
            await asyncio.to_thread(source.load_now)
            self.sources[modality] = source
            self.seq[modality] = 0
            self.announced[modality] = deque(maxlen=KEPT_ANNOUNCEMENTS)
            self.changed[modality] = asyncio.Event()
        self.watches = [asyncio.create_task(source.watch(self.stop)) for source in self.sources.values()]

    def _announce(self, modality: Modality, message: dict[str, Any]) -> None:
        """A reload happened (or failed): followers waiting on this modality wake with it."""
        self.seq[modality] += 1
        self.announced[modality].append((self.seq[modality], message))
        self.changed[modality].set()
        self.changed[modality] = asyncio.Event()  # the next poll waits for the next change

    def state(self, modality: Modality, epoch: str = "", seq: int = 0) -> LabelState:
        """The labels now; with a follower's epoch and seq, what was announced since. A follower of another
        epoch (a hub restarted since) is told the current set as news, once."""
        source = self.sources[modality]
        current = source.current
        assert current is not None  # loaded in __init__
        if epoch == self.epoch:
            news = tuple(message for number, message in self.announced[modality] if number > seq)
        elif epoch:  # after _continue_versions: the version is above the follower's
            news = (protocol.labels_changed(modality, current.version, len(current.names)),)
        else:
            news = ()  # a follower's first state, at its start-up: its clients connect after it
        return LabelState(
            self.epoch,
            self.seq[modality],
            current,
            source.last_error,
            list(source.history),
            str(source.path),
            source.editable,
            source.text(),
            news,
        )

    async def follow(self, modality: Modality, epoch: str, seq: int, follower: str, version: int) -> LabelState | None:
        """A follower's long poll: answered at once if it missed something, else at the next change, or with
        None after LONG_POLL_S without one (a label set can be megabytes: it travels only when it changed).
        ``version`` is the one the follower holds now, for ``describe``."""
        self.holding.setdefault(follower, {})[modality] = version
        if epoch and epoch != self.epoch:
            self._continue_versions(modality, version)
        if epoch == self.epoch and seq >= self.seq[modality]:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed[modality].wait(), LONG_POLL_S)
            if seq >= self.seq[modality]:
                return None
        return self.state(modality, epoch, seq)

    def _continue_versions(self, modality: Modality, held: int) -> None:
        """A follower of an earlier hub holds ``held``: this hub's set (reloaded from the files at its start)
        becomes the next version after it, so versions only grow for clients, across a hub's restart too."""
        source = self.sources[modality]
        if source.current is not None and source.current.version <= held:
            source.current = replace(source.current, version=held + 1)

    async def write(self, modality: Modality, data: bytes) -> str | None:
        """Replace the label file; what is wrong with ``data`` when it is refused (a refusal is an answer here,
        not a failed request for Serve to log with a traceback)."""
        try:
            await asyncio.to_thread(self.sources[modality].write, data)
        except LabelFileError as exc:
            return str(exc)
        return None

    async def adhoc(self, modality: Modality, names: list[str], refresh: bool) -> LabelSet:
        return await self.sources[modality].adhoc(names, refresh=refresh)

    async def embed_texts(self, modality: Modality, texts: list[str]) -> np.ndarray:
        return await self.sources[modality].embed_texts(texts)

    def describe(self) -> dict[str, Any]:
        """The versions, and which each follower holds: for tests and status pages."""
        return {
            "actor": ray.get_runtime_context().get_actor_name(),
            "epoch": self.epoch,
            "versions": {m: s.current.version for m, s in self.sources.items() if s.current is not None},
            "holding": self.holding,
        }


class HubLabelFeed:
    """A gateway's view of one modality's labels (labelsets.LiveLabels), kept current by following the hub."""

    def __init__(self, hub: Any, modality: Modality, announce: Callable[[dict[str, Any]], None], follower: str):
        self.hub = hub  # a DeploymentHandle to LabelHub
        self.modality = modality
        self.announce = announce
        self.follower = follower
        self.path = Path()
        self.current: LabelSet | None = None
        self.last_error: str | None = None
        self.history: list[dict[str, float]] = []
        self._editable = False
        self._text = ""
        self._epoch = ""
        self._seq = 0

    def load_now(self) -> LabelSet:
        """The hub's current set, at start-up (on the model thread: blocking is fine there)."""
        self._apply(self.hub.state.remote(self.modality).result(timeout_s=TEXT_TIMEOUT_S))
        assert self.current is not None
        return self.current

    async def watch(self, stop: asyncio.Event) -> None:
        """Follow the hub until stopped; each announcement goes to this gateway's clients once."""
        while not stop.is_set():
            version = self.current.version if self.current else 0
            call = self.hub.follow.remote(self.modality, self._epoch, self._seq, self.follower, version)
            try:
                state: LabelState | None = await call
            except (RayError, RayServeException) as exc:
                # The hub is restarting (or its node is gone): keep the labels held, ask again shortly.
                log.warning("%s labels: the label hub did not answer (%s); asking again", self.modality, exc)
                await asyncio.sleep(1.0)
                continue
            if state is None:
                continue  # nothing changed
            self._apply(state)
            for message in state.announcements:
                self.announce(message)

    def _apply(self, state: LabelState) -> None:
        self._epoch, self._seq = state.epoch, state.seq
        self.current = state.current
        self.last_error = state.last_error
        self.history = state.history
        self.path = Path(state.path)
        self._editable = state.editable
        self._text = state.text

    @property
    def editable(self) -> bool:
        return self._editable

    def text(self) -> str:
        return self._text

    def write(self, data: bytes) -> None:
        """Replace the hub's label file (checked first there; a bad one raises LabelFileError here)."""
        refused = self.hub.write.remote(self.modality, data).result(timeout_s=TEXT_TIMEOUT_S)
        if refused is not None:
            raise LabelFileError(refused)

    async def adhoc(self, names: list[str], *, refresh: bool = False) -> LabelSet:
        label_set: LabelSet = await self.hub.adhoc.remote(self.modality, names, refresh)
        return label_set

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        embeddings: np.ndarray = await self.hub.embed_texts.remote(self.modality, texts)
        return embeddings

    def close(self) -> None:
        pass  # the hub outlives this gateway

"""The server's messages as typed objects, Sans-I/O: msgpack maps in, frozen dataclasses and printable lines out.

``result`` becomes Result, ``event`` Event, ``thumbnail`` Thumbnail and ``streams`` Streams; other messages
stay plain dicts. A watcher's copies of other connections' results and events (``watched: true``) parse into
the same classes with ``watched`` set and ``client`` naming the connection whose stream it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Label:
    label: str
    score: float
    similarity: float
    group: str | None = None  # the label file's group of the label, if it has one


@dataclass(frozen=True)
class Result:
    """One ``result`` message, with the round trip measured on this side (None for watched copies)."""

    modality: str
    stream: str
    seq: int
    ts: float
    labels_version: int
    top: tuple[Label, ...]
    timings: dict[str, float]
    dropped: int
    window_s: float | None
    round_trip_ms: float | None
    silent: bool = False  # an audio window quieter than the server's --silence-dbfs: no model ran, ``top`` is empty
    client: int | None = None  # the connection whose stream it is, on watched copies
    watched: bool = False  # a watcher's copy of another connection's result
    # The input's unit embedding (float32), when the client asked for embeddings; None otherwise, for silent
    # audio (no model ran) and on watched copies.
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_message(cls, message: dict[str, Any], round_trip_ms: float | None) -> Result:
        return cls(
            modality=message["modality"],
            stream=message["stream"],
            seq=message["seq"],
            ts=message["ts"],
            labels_version=message["labels_version"],
            top=tuple(Label(t["label"], t["score"], t["similarity"], t.get("group")) for t in message["top"]),
            timings=dict(message.get("timings") or {}),
            dropped=message.get("dropped", 0),
            window_s=message.get("window_s"),
            round_trip_ms=round_trip_ms,
            silent=bool(message.get("silent", False)),
            client=message.get("client"),
            watched=bool(message.get("watched", False)),
            embedding=embedding_of(message),
        )

    def line(self) -> str:
        if self.silent:
            labels = "(silent)"
        else:
            labels = "  ".join(f"{t.label} {t.score:.2f}" for t in self.top) or "(nothing above min score)"
        timing = f"{self.round_trip_ms:.0f} ms" if self.round_trip_ms is not None else "-"
        vector = f"  [{self.embedding.shape[0]}-d embedding]" if self.embedding is not None else ""
        return f"[{self.modality} {self.stream} #{self.seq}{_of_client(self)}] {labels}  ({timing}){vector}"


def embedding_of(message: dict[str, Any]) -> np.ndarray | None:
    """A result's ``embedding`` (little-endian float32 bytes) as a float32 array of ``embedding_dim`` values."""
    data = message.get("embedding")
    if data is None:
        return None
    if not isinstance(data, bytes) or len(data) % 4:
        raise ValueError(f"a result's 'embedding' must be float32 bytes, got {type(data).__name__} of {len(data)}")
    vector = np.frombuffer(data, dtype="<f4").astype(np.float32)  # a copy: writable, in native byte order
    dim = message.get("embedding_dim")
    if dim is not None and vector.shape[0] != dim:
        raise ValueError(f"a result's 'embedding' holds {vector.shape[0]} floats; its 'embedding_dim' says {dim}")
    return vector


@dataclass(frozen=True)
class Event:
    """One ``event`` message: a label (or, with ``label`` None, a group) started or ended on a stream."""

    modality: str
    stream: str
    client: int | None  # the server's id of the connection whose stream it is
    label: str | None  # None for a group's own event ("any animal")
    group: str | None
    state: str  # "start" | "end"
    score: float  # the smoothed calibrated score: standard deviations above the stream's baseline for the label
    seq: int  # the input that decided the event
    ts: float  # that input's timestamp, the client's clock
    time: float  # when the server decided it, the server's wall clock
    duration_s: float | None  # on "end": how long the event lasted
    watched: bool = False  # a watcher's copy of another connection's event

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Event:
        return cls(
            modality=message["modality"],
            stream=message["stream"],
            client=message.get("client"),
            label=message.get("label"),
            group=message.get("group"),
            state=message["state"],
            score=message["score"],
            seq=message["seq"],
            ts=message["ts"],
            time=message["time"],
            duration_s=message.get("duration_s"),
            watched=bool(message.get("watched", False)),
        )

    @property
    def name(self) -> str:
        """What started or ended: the label, or "any <group>" for a group's own event."""
        return self.label if self.label is not None else f"any {self.group}"

    def line(self) -> str:
        """``14:02:11  audio mic  dog barking  start  z=4.3``, or ``...  end after 6.0 s``, local time."""
        clock = time.strftime("%H:%M:%S", time.localtime(self.time))
        if self.state == "start":
            change = f"start  z={self.score:.1f}"
        elif self.duration_s is not None:
            change = f"end after {self.duration_s:.1f} s"
        else:
            change = self.state
        return f"{clock}  {self.modality} {self.stream}{_of_client(self)}  {self.name}  {change}"


@dataclass(frozen=True)
class Thumbnail:
    """A watcher's small picture of another connection's image stream (at most one a second per stream)."""

    client: int
    modality: str
    stream: str
    seq: int
    ts: float
    format: str  # "jpeg"
    width: int
    height: int
    data: bytes

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Thumbnail:
        return cls(
            client=message["client"],
            modality=message["modality"],
            stream=message["stream"],
            seq=message["seq"],
            ts=message["ts"],
            format=message["format"],
            width=message["width"],
            height=message["height"],
            data=bytes(message["data"]),
        )


@dataclass(frozen=True)
class StreamInfo:
    client: int
    modality: str
    stream: str
    labels_version: int | None
    since: float | None


@dataclass(frozen=True)
class Streams:
    """A watcher's list of every live stream of the server, its own included; sent again on each change."""

    streams: tuple[StreamInfo, ...]

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Streams:
        return cls(
            tuple(
                StreamInfo(s["client"], s["modality"], s["stream"], s.get("labels_version"), s.get("since"))
                for s in message["streams"]
            )
        )


def _of_client(item: Result | Event) -> str:
    """Watched copies name the connection they come from; a connection's own messages need not."""
    return f" client {item.client}" if item.watched else ""

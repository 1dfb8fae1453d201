"""Server settings: one frozen object, one field per command-line flag."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DeviceChoice = Literal["auto", "cpu", "cuda"]

DEFAULT_IMAGE_MODEL = "ViT-B-32"
DEFAULT_IMAGE_PRETRAINED = "datacomp_xl_s13b_b90k"
DEFAULT_AUDIO_MODEL = "laion/clap-htsat-unfused"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    image_model: str = DEFAULT_IMAGE_MODEL
    image_pretrained: str | None = DEFAULT_IMAGE_PRETRAINED
    audio_model: str = DEFAULT_AUDIO_MODEL
    image_labels: Path = Path("labels/image.txt")
    audio_labels: Path = Path("labels/audio.txt")
    no_image: bool = False
    no_audio: bool = False
    device: DeviceChoice = "auto"
    audio_hop: float = 1.0
    audio_window: float = 5.0
    max_batch: int = 8
    batch_wait_ms: float = 50.0
    label_cache: str = "~/.cache/sensorium/labels"
    max_message_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_audio_chunk_seconds: float = 10.0
    max_clip_seconds: float = 600.0
    max_top_k: int = 100
    max_requests: int = 16
    max_connections: int = 64
    max_streams: int = 8
    idle_timeout: float = 120.0
    max_errors: int = 50
    max_labels: int = 10_000
    max_label_file_bytes: int = 1024 * 1024
    token: str | None = None
    allow_origin: tuple[str, ...] = ()
    reload_debounce_ms: int = 200
    allow_label_edits: bool = False
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.no_image and self.no_audio:
            raise ValueError("--no-image and --no-audio together leave nothing to serve")
        if self.audio_hop <= 0:
            raise ValueError("--audio-hop must be positive")
        if not self.audio_hop <= self.audio_window <= 30:
            raise ValueError("--audio-window must be at least --audio-hop and at most 30 seconds")
        if self.max_batch < 1:
            raise ValueError("--max-batch must be at least 1")
        if self.max_requests < 1:
            raise ValueError("--max-requests must be at least 1")
        if self.token is not None and (not self.token or not self.token.isascii() or not self.token.isprintable()
                                       or any(c in self.token for c in " ,;\"")):  # fmt: skip
            raise ValueError("--token must be printable ASCII without spaces, commas, semicolons or quotes")

    @property
    def serves_image(self) -> bool:
        return not self.no_image

    @property
    def serves_audio(self) -> bool:
        return not self.no_audio

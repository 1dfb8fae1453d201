"""Server settings: one frozen object, one field per command-line flag.

Each field's metadata holds its flag's help and group; ``sensorium serve``'s flags are generated from
these fields (server/cli.py), so a new setting is one field here and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DeviceChoice = Literal["auto", "cpu", "cuda"]
BackendChoice = Literal["auto", "torch", "openvino"]
PrecisionChoice = Literal["auto", "fp32", "bf16", "fp16"]
LogLevel = Literal["debug", "info", "warning", "error"]

DEFAULT_IMAGE_MODEL = "ViT-B-32"
DEFAULT_IMAGE_PRETRAINED = "datacomp_xl_s13b_b90k"
DEFAULT_AUDIO_MODEL = "laion/clap-htsat-unfused"


def flag(group: str, help: str, default: Any = None, **extra: Any) -> Any:
    """A setting: its default, and what its command-line flag says (``%(default)s`` works as in argparse)."""
    return field(default=default, metadata={"group": group, "help": help, **extra})


@dataclass(frozen=True)
class Settings:
    host: str = flag("network", "address to bind (default %(default)s: this machine only)", "127.0.0.1")
    port: int = flag("network", "port (default %(default)s)", 8000)
    image_model: str = flag(
        "models",
        "open_clip: a built-in name, hf-hub:org/repo or local-dir:/path; transformers CLIP or SigLIP: a hub id "
        "(openai/clip-vit-base-patch32) or a save_pretrained folder (default %(default)s)",
        DEFAULT_IMAGE_MODEL,
    )
    image_pretrained: str | None = flag(
        "models",
        "pretrained tag or weights file for a built-in --image-model (default %(default)s)",
        DEFAULT_IMAGE_PRETRAINED,
    )
    audio_model: str = flag(
        "models",
        "CLAP: a transformers hub id or save_pretrained folder, or a laion_clap checkpoint (a .pt file, or "
        "laion-clap:NAME to download one) (default %(default)s)",
        DEFAULT_AUDIO_MODEL,
    )
    device: DeviceChoice = flag(
        "models", "auto (CUDA when present, with fp16), cpu or cuda (default %(default)s)", "auto"
    )
    backend: BackendChoice = flag(
        "models",
        "torch, openvino (CPU; pip install 'sensorium[openvino]'), or auto: the fastest correct one here "
        "(default %(default)s)",
        "auto",
    )
    precision: PrecisionChoice = flag(
        "models",
        "fp32, bf16, fp16, or auto: fp16 on CUDA, bf16 on a CPU with bf16 matrix units where a start-up probe "
        "finds it faster, else fp32 (default %(default)s)",
        "auto",
    )
    no_image: bool = flag("models", "serve audio only", False)
    no_audio: bool = flag("models", "serve images only", False)
    max_batch: int = flag("models", "most inputs per model call (default %(default)s)", 8)
    batch_wait_ms: float = flag(
        "models",
        "with several streams active, wait this long for a fuller batch; a lone input never waits "
        "(default %(default)s)",
        50.0,
    )
    image_labels: Path = flag(
        "labels",
        "image label file, or a folder of *.txt label files (a group each), watched for changes (default %(default)s)",
        Path("labels/image.txt"),
    )
    audio_labels: Path = flag(
        "labels", "audio label file or folder, watched for changes (default %(default)s)", Path("labels/audio.txt")
    )
    allow_label_edits: bool = flag(
        "labels", "let the dashboard (and PUT /v1/labels/MODALITY) rewrite the label files", False
    )
    label_cache: str = flag(
        "labels",
        "folder for label embeddings kept across restarts, per model and weights; '' turns it off "
        "(default %(default)s)",
        "~/.cache/sensorium/labels",
    )
    reload_debounce_ms: int = flag(
        "labels", "wait this long after a label file changes before reloading (default %(default)s)", 200
    )
    audio_hop: float = flag("audio", "seconds between audio results (default %(default)s)", 1.0)
    audio_window: float = flag("audio", "seconds of audio per result (default %(default)s)", 5.0)
    max_message_bytes: int = flag(
        "limits",
        "larger WebSocket messages close the connection, larger HTTP bodies get 413 (default %(default)s)",
        8 * 1024 * 1024,
    )
    max_image_pixels: int = flag("limits", "width x height, checked before decoding (default %(default)s)", 40_000_000)
    max_audio_chunk_seconds: float = flag("limits", "longest audio chunk on /ws (default %(default)s)", 10.0)
    max_clip_seconds: float = flag(
        "limits", "longest sound the HTTP API takes in one request (default %(default)s)", 600.0
    )
    max_top_k: int = flag("limits", "largest top_k a client may ask for (default %(default)s)", 100)
    max_requests: int = flag(
        "limits",
        "one-shot HTTP requests in the models at once; more get 503 with Retry-After (default %(default)s)",
        16,
    )
    max_connections: int = flag("limits", "more are refused (default %(default)s)", 64)
    max_streams: int = flag("limits", "streams per connection (default %(default)s)", 8)
    idle_timeout: float = flag("limits", "close a connection silent this many seconds (default %(default)s)", 120.0)
    max_errors: int = flag(
        "limits", "close a connection after this many bad messages within 10 s (default %(default)s)", 50
    )
    max_labels: int = flag("limits", "per label file (default %(default)s)", 10_000)
    max_label_file_bytes: int = flag("limits", "default %(default)s", 1024 * 1024)
    token: str | None = flag(
        "security",
        "require this token on /ws and every HTTP route but /health (default: $SENSORIUM_TOKEN, else none)",
        env="SENSORIUM_TOKEN",
    )
    allow_origin: tuple[str, ...] = flag(
        "security",
        "a browser origin allowed to open /ws, such as https://example.org (repeatable; "
        "default: only pages served by this server)",
        (),
    )
    silence_dbfs: float | None = flag(
        "audio",
        "audio windows quieter than this (RMS, dBFS) are not sent to the model; their result says silent "
        "(default %(default)s; 'off' turns it off)",
        -70.0,
    )
    event_start: float = flag(
        "events",
        "an event starts when a label's smoothed, calibrated score reaches this (standard deviations above "
        "the stream's own baseline for that label; default %(default)s)",
        4.0,
    )
    event_end: float = flag("events", "and ends when it falls under this (hysteresis; default %(default)s)", 2.0)
    event_min_seconds: float = flag(
        "events", "the score must stay at --event-start this long before a start (default %(default)s)", 1.0
    )
    event_hold_seconds: float = flag(
        "events", "and under --event-end this long before an end (default %(default)s)", 2.0
    )
    event_smooth_seconds: float = flag("events", "time constant of the score's smoothing (default %(default)s)", 0.5)
    event_baseline_seconds: float = flag(
        "events",
        "time constant of each stream's per-label baseline, learnt while the label is not present "
        "(default %(default)s)",
        120.0,
    )
    mqtt: str | None = flag(
        "outputs",
        "publish events to this MQTT broker, with Home Assistant discovery: mqtt://[user:password@]host[:port] "
        "(default: none)",
    )
    mqtt_prefix: str = flag("outputs", "MQTT topic prefix for states (default %(default)s)", "sensorium")
    mqtt_discovery_prefix: str = flag(
        "outputs", "Home Assistant discovery prefix (default %(default)s)", "homeassistant"
    )
    webhook: tuple[str, ...] = flag("outputs", "POST each event as JSON to this URL (repeatable)", ())
    webhook_secret: str | None = flag(
        "outputs",
        "sign webhook bodies with HMAC-SHA256 of this secret, header X-Sensorium-Signature "
        "(default: $SENSORIUM_WEBHOOK_SECRET, else unsigned)",
        env="SENSORIUM_WEBHOOK_SECRET",
    )
    data_dir: str = flag(
        "outputs",
        "folder of the event log (events.sqlite3); '' turns the log off (default %(default)s)",
        "~/.local/share/sensorium",
    )
    event_log_days: float = flag("outputs", "keep logged events this many days (default %(default)s)", 30.0)
    event_log_max_rows: int = flag("outputs", "and at most this many (default %(default)s)", 1_000_000)
    log_level: LogLevel = flag("logging", "default %(default)s", "info")

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
        if not self.event_end <= self.event_start:
            raise ValueError("--event-end must not be above --event-start")
        if min(self.event_min_seconds, self.event_hold_seconds) < 0 or self.event_smooth_seconds < 0:
            raise ValueError("--event-min-seconds, --event-hold-seconds and --event-smooth-seconds must be >= 0")
        if self.event_log_days <= 0 or self.event_log_max_rows < 1:
            raise ValueError("--event-log-days must be positive and --event-log-max-rows at least 1")
        if self.event_baseline_seconds <= 0:
            raise ValueError("--event-baseline-seconds must be positive")
        if self.token is not None and (not self.token or not self.token.isascii() or not self.token.isprintable()
                                       or any(c in self.token for c in " ,;\"")):  # fmt: skip
            raise ValueError("--token must be printable ASCII without spaces, commas, semicolons or quotes")

    @property
    def serves_image(self) -> bool:
        return not self.no_image

    @property
    def serves_audio(self) -> bool:
        return not self.no_audio

"""What ``sensorium serve`` checks before it loads anything: label files (or directories), models, and the port.

A mistyped path, a missing model or a taken port is reported at once, every problem together and once,
instead of after minutes of loading or after the server said it was running.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from .hub import DEV_MODELS_HINT
from .settings import Settings

BUNDLED_LABELS = Path(__file__).resolve().parent.parent / "labels"


def find_label_file(path: Path, default_name: str) -> Path:
    """The configured file or directory, or for the default relative path, the copy shipped beside the package."""
    if path.exists() or path.is_absolute():
        return path
    bundled = BUNDLED_LABELS / default_name
    if path == Path("labels") / default_name and bundled.exists():
        return bundled
    return path


def problems(settings: Settings) -> list[str]:
    """Everything that would stop the server from starting, found without loading a model."""
    from .encoders import missing_model, model_specs
    from .metrics import Metrics
    from .outputs import build_outputs

    found = []
    for modality, path, serves in (
        ("image", settings.image_labels, settings.serves_image),
        ("audio", settings.audio_labels, settings.serves_audio),
    ):
        if serves and not _is_file_or_directory(find_label_file(path, f"{modality}.txt")):
            found.append(
                f"--{modality}-labels {path}: no such file or directory (a label file, or a directory of *.txt "
                "label files; labels/README.md describes the format)"
            )
    try:
        build_outputs(settings, Metrics())  # a mistyped --mqtt or --webhook, said now rather than after loading
    except ValueError as exc:
        found.append(str(exc))
    try:
        specs = model_specs(settings)
    except ValueError as exc:  # --device cuda without CUDA
        return [*found, str(exc)]
    models = [problem for spec in specs if (problem := missing_model(spec)) is not None]
    if models:
        models[-1] += f". {DEV_MODELS_HINT}"
    return found + models


def _is_file_or_directory(path: Path) -> bool:
    # Whether a directory holds label files is the load's to say, with the reason, like a bad file's content.
    return path.is_file() or path.is_dir()


def listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound now, so a taken port is known before the models load."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = (
            "it is in use (another program, or another sensorium?)"
            if port and exc.errno == errno.EADDRINUSE
            else exc.strerror
        )
        raise OSError(f"cannot listen on {host}:{port}: {reason}; choose another with --port") from None
    sock.set_inheritable(True)
    return sock

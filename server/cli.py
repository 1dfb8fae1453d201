"""The ``sensorium`` command. Each ``serve`` flag sets the Settings field of the same name."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from . import __version__
from .settings import Settings

log = logging.getLogger("sensorium")

_DEFAULTS = Settings()


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the perception server", description="Run the perception server.")
    d = _DEFAULTS
    net = p.add_argument_group("network")
    net.add_argument("--host", default=d.host, help="address to bind (default %(default)s: this machine only)")
    net.add_argument("--port", type=int, default=d.port, help="port (default %(default)s)")
    models = p.add_argument_group("models")
    models.add_argument(
        "--image-model",
        default=d.image_model,
        help="open_clip model: a built-in name, hf-hub:org/repo, or local-dir:/path (default %(default)s)",
    )
    models.add_argument(
        "--image-pretrained",
        default=d.image_pretrained,
        help="pretrained tag or weights file for a built-in --image-model (default %(default)s)",
    )
    models.add_argument(
        "--audio-model",
        default=d.audio_model,
        help="CLAP checkpoint: a hub id or a folder written by save_pretrained (default %(default)s)",
    )
    models.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device, help="default %(default)s")
    models.add_argument("--no-image", action="store_true", help="serve audio only")
    models.add_argument("--no-audio", action="store_true", help="serve images only")
    models.add_argument(
        "--max-batch", type=int, default=d.max_batch, help="most inputs per model call (default %(default)s)"
    )
    models.add_argument(
        "--batch-wait-ms",
        type=float,
        default=d.batch_wait_ms,
        help="with several inputs waiting, wait this long for a fuller batch; a lone input never waits "
        "(default %(default)s)",
    )
    labels = p.add_argument_group("labels")
    labels.add_argument("--image-labels", type=Path, default=d.image_labels, help="default %(default)s")
    labels.add_argument("--audio-labels", type=Path, default=d.audio_labels, help="default %(default)s")
    labels.add_argument(
        "--allow-label-edits",
        action="store_true",
        help="let the dashboard (and PUT /v1/labels/MODALITY) rewrite the label files",
    )
    labels.add_argument(
        "--label-cache",
        default=d.label_cache,
        help="folder for label embeddings kept across restarts, per model and weights; '' turns it off "
        "(default %(default)s)",
    )
    labels.add_argument(
        "--reload-debounce-ms",
        type=int,
        default=d.reload_debounce_ms,
        help="wait this long after a label file changes before reloading (default %(default)s)",
    )
    audio = p.add_argument_group("audio")
    audio.add_argument(
        "--audio-hop", type=float, default=d.audio_hop, help="seconds between audio results (default %(default)s)"
    )
    audio.add_argument(
        "--audio-window", type=float, default=d.audio_window, help="seconds of audio per result (default %(default)s)"
    )
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-message-bytes", type=int, default=d.max_message_bytes, help="default %(default)s")
    limits.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels, help="default %(default)s")
    limits.add_argument(
        "--max-audio-chunk-seconds", type=float, default=d.max_audio_chunk_seconds, help="default %(default)s"
    )
    limits.add_argument(
        "--max-clip-seconds",
        type=float,
        default=d.max_clip_seconds,
        help="longest sound the HTTP API takes in one request (default %(default)s)",
    )
    limits.add_argument(
        "--max-top-k", type=int, default=d.max_top_k, help="largest top_k a client may ask for (default %(default)s)"
    )
    limits.add_argument(
        "--max-requests",
        type=int,
        default=d.max_requests,
        help="one-shot HTTP requests in the models at once; more get 503 with Retry-After (default %(default)s)",
    )
    limits.add_argument(
        "--max-connections", type=int, default=d.max_connections, help="more are refused (default %(default)s)"
    )
    limits.add_argument(
        "--max-streams", type=int, default=d.max_streams, help="streams per connection (default %(default)s)"
    )
    limits.add_argument(
        "--idle-timeout",
        type=float,
        default=d.idle_timeout,
        help="close a connection silent this many seconds (default %(default)s)",
    )
    limits.add_argument(
        "--max-errors",
        type=int,
        default=d.max_errors,
        help="close a connection after this many bad messages within 10 s (default %(default)s)",
    )
    limits.add_argument("--max-labels", type=int, default=d.max_labels, help="per label file (default %(default)s)")
    limits.add_argument("--max-label-file-bytes", type=int, default=d.max_label_file_bytes, help="default %(default)s")
    security = p.add_argument_group("security")
    security.add_argument(
        "--token",
        default=os.environ.get("SENSORIUM_TOKEN") or None,
        help="require this token on /ws and every HTTP route but /health (default: $SENSORIUM_TOKEN, else none)",
    )
    security.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        help="a browser origin allowed to open /ws, such as https://example.org (repeatable; "
        "default: only pages served by this server)",
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=d.log_level)


def _client_parsers(sub: argparse._SubParsersAction) -> None:
    from clients import microphone, webcam

    webcam.add_arguments(
        sub.add_parser("webcam", help="stream a camera or video file", description="Stream video to a server.")
    )
    microphone.add_arguments(
        sub.add_parser("mic", help="stream a microphone or sound file", description="Stream audio to a server.")
    )


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    from . import bench

    bench.add_arguments(
        sub.add_parser(
            "bench",
            help="measure the model's limit and what the server delivers of it",
            description=(bench.__doc__ or "").strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )


def _dev_models_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dev-models",
        help="write small random-weight checkpoints (for tests, benchmarks and offline trials)",
        description="Write random-weight CLIP and CLAP checkpoints that load through the real model code. "
        "Their labels are meaningless; they exercise and time the pipeline without any download.",
    )
    p.add_argument("out", type=Path, help="folder to write image/ and audio/ into")
    p.add_argument(
        "--image-arch",
        default="tiny",
        help="'tiny' or a built-in open_clip architecture such as ViT-B-32 (default %(default)s)",
    )
    p.add_argument(
        "--audio-arch",
        choices=("tiny", "htsat"),
        default="tiny",
        help="'tiny', or 'htsat' for the size of laion's CLAP (default %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensorium", description="Live zero-shot perception server.")
    parser.add_argument("--version", action="version", version=f"sensorium {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub)
    _client_parsers(sub)
    _bench_parser(sub)
    _dev_models_parser(sub)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    values = {f.name: getattr(args, f.name) for f in fields(Settings)}
    values["allow_origin"] = tuple(values["allow_origin"])
    return Settings(**values)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            settings = settings_from_args(args)
        except ValueError as exc:
            parser.error(str(exc))
        return serve(settings)
    if args.command == "webcam":
        from clients import webcam

        return webcam.run(args)
    if args.command == "mic":
        from clients import microphone

        return microphone.run(args)
    if args.command == "bench":
        from . import bench

        return bench.run(args)
    if args.command == "dev-models":
        from .devmodels import write_dev_models

        paths = write_dev_models(args.out, image_arch=args.image_arch, audio_arch=args.audio_arch)
        print(f"image model: --image-model local-dir:{paths['image']}")
        print(f"audio model: --audio-model {paths['audio']}")
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


def serve(settings: Settings) -> int:
    import uvicorn

    from .app import create_app
    from .drain import DrainingServer

    # Libraries log chatty INFO lines on the root logger; show theirs from WARNING, ours at the chosen level.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(settings.log_level.upper())
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: other machines can connect", settings.host)
    exit_code = 0

    def on_fatal(message: str) -> None:
        nonlocal exit_code
        exit_code = 2
        server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_max_size=settings.max_message_bytes,
        lifespan="on",
    )
    server = DrainingServer(config, app.state.runtime)
    server.run()
    if exit_code:
        print(f"sensorium: {app.state.runtime.error}", file=sys.stderr)
    return exit_code

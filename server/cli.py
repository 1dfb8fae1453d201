"""The ``sensorium`` command. Each ``serve`` flag sets the Settings field of the same name."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from . import __version__
from .settings import Settings

log = logging.getLogger("sensorium")


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="run the perception server", description="Run the perception server.")
    add_settings_flags(parser)


def _cluster_parser(sub: argparse._SubParsersAction) -> None:
    from .cluster import add_arguments

    parser = sub.add_parser(
        "cluster",
        help="run the server on a Ray cluster (pip install 'sensorium[cluster]'; docs/cluster.md)",
        description="Run the perception server on a Ray cluster: serve's flags, plus where the cluster is and how "
        "the models spread over it (docs/cluster.md).",
    )
    add_settings_flags(parser)
    add_arguments(parser)


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field, named after it, with the help and group its metadata gives."""
    hints = get_type_hints(Settings)
    groups: dict[str, Any] = {}
    for setting in fields(Settings):
        meta = setting.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        default: Any = setting.default
        if "env" in meta:
            default = os.environ.get(meta["env"]) or default
        kind = hints[setting.name]
        options: dict[str, Any] = {"help": meta["help"], "default": default}
        if kind is bool:
            options["action"] = "store_true"
        elif get_origin(kind) is Literal:
            options["choices"] = get_args(kind)
        elif get_origin(kind) is tuple:
            options.update(action="append", default=list(default))
        else:  # str, int, float, Path, or one of those or None
            base = next(t for t in (get_args(kind) or (kind,)) if t is not type(None))
            optional = type(None) in get_args(kind) and base is not str
            options["type"] = _or_off(base) if optional else base
        group.add_argument("--" + setting.name.replace("_", "-"), **options)


def _or_off(kind: Any) -> Any:
    """A flag's type for an optional number: 'off' or 'none' gives None."""

    def convert(text: str) -> Any:
        return None if text.strip().lower() in {"off", "none"} else kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in its error messages
    return convert


def _client_parsers(sub: argparse._SubParsersAction) -> None:
    from clients import microphone, webcam

    webcam.add_arguments(
        sub.add_parser("webcam", help="stream a camera or video file", description="Stream video to a server.")
    )
    microphone.add_arguments(
        sub.add_parser("mic", help="stream a microphone or sound file", description="Stream audio to a server.")
    )


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    from benchmarks import bench

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
        "--image-family",
        choices=("open_clip", "open_clip-siglip", "transformers-clip", "siglip", "siglip2"),
        default="open_clip",
        help="the image checkpoint's format: open_clip (local-dir:, --image-arch applies), open_clip-siglip, or a "
        "transformers save_pretrained folder of CLIP, SigLIP or SigLIP 2 (NaFlex) (default %(default)s)",
    )
    p.add_argument(
        "--audio-arch",
        choices=("tiny", "htsat"),
        default="tiny",
        help="'tiny', or 'htsat' for the size of laion's CLAP (default %(default)s)",
    )


def _models_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the models Sensorium knows: pretrained tags, download sizes, whether each is cached",
        description="List the image and audio models Sensorium knows, with the flags that serve each, its download "
        "size (from the hub when it answers; offline, ~ marks an estimate from the parameter count) and whether it "
        "is in the local cache. The defaults are marked with *.",
    )
    p.add_argument("--all", action="store_true", help="every open_clip pretrained tag as well")
    p.add_argument("--cached", action="store_true", help="only the models in the local cache")
    p.add_argument("--json", action="store_true", help="one JSON document, for programs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensorium", description="Live zero-shot perception server.")
    parser.add_argument("--version", action="version", version=f"sensorium {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub)
    _cluster_parser(sub)
    _client_parsers(sub)
    _bench_parser(sub)
    _dev_models_parser(sub)
    _models_parser(sub)
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
    if args.command == "cluster":
        from . import cluster

        try:
            settings = settings_from_args(args)
            cluster.options_from_args(args)
        except ValueError as exc:
            parser.error(str(exc))
        return cluster.run(settings, args)
    if args.command == "webcam":
        from clients import webcam

        return webcam.run(args)
    if args.command == "mic":
        from clients import microphone

        return microphone.run(args)
    if args.command == "bench":
        from benchmarks import bench

        return bench.run(args)
    if args.command == "dev-models":
        from .devmodels import image_model_flag, write_dev_models

        paths = write_dev_models(args.out, args.image_arch, args.audio_arch, args.image_family)
        print(f"image model: --image-model {image_model_flag(args.image_family, paths['image'])}")
        print(f"audio model: --audio-model {paths['audio']}")
        return 0
    if args.command == "models":
        from .models_command import list_models

        return list_models(sys.stdout, every=args.all, only_cached=args.cached, as_json=args.json)
    parser.error(f"unknown command {args.command}")
    return 2


def serve(settings: Settings) -> int:
    import uvicorn

    from .app import create_app
    from .drain import DrainingServer

    # Libraries log chatty INFO lines on the root logger; show theirs from WARNING, ours at the chosen level.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(settings.log_level.upper())
    from . import preflight

    # Everything that would stop the server, found before anything loads and reported together, once.
    found = preflight.problems(settings)
    try:
        sock = preflight.listen(settings.host, settings.port)
    except OSError as exc:
        found.insert(0, str(exc))
    if found:
        print("sensorium: cannot start:\n" + "\n".join(f"  - {problem}" for problem in found), file=sys.stderr)
        return 2
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info(
        "listening on http://%s:%d (dashboard at /, stream to ws://%s:%d/ws)", host, settings.port, host, settings.port
    )
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
    server.run(sockets=[sock])
    if exit_code:
        print(f"sensorium: {app.state.runtime.error}", file=sys.stderr)
    return exit_code

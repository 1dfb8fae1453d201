"""What the ``sensorium webcam`` and ``sensorium mic`` scripts share: flags, printing what comes back, the run."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from .client import DEFAULT_URL, SensoriumClient, ServerRefused, ServerUnreachable
from .messages import Event, Result
from .terminal import LivePrinter

END_WAIT_S = 10.0  # how long the scripts wait for ``ended`` after ending a stream


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every client script takes."""
    parser.add_argument("--url", default=DEFAULT_URL, help="server WebSocket URL (default %(default)s)")
    parser.add_argument("--top-k", type=int, default=None, help="labels per result (server default 5)")
    parser.add_argument("--min-score", type=float, default=None, help="hide labels scoring under this")
    parser.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up if the first connection takes longer (default %(default)g)",
    )
    parser.add_argument(
        "--embeddings",
        action="store_true",
        help="ask for each result's input embedding (Python: Result.embedding) and show its size",
    )
    parser.add_argument(
        "--events",
        action="store_true",
        help="print only events (a label starting or ending), one line each, not every result",
    )


def client_from_args(args: argparse.Namespace, on_status: Callable[[str], None]) -> SensoriumClient:
    return SensoriumClient(
        args.url,
        top_k=args.top_k,
        min_score=args.min_score,
        embeddings=args.embeddings,
        connect_timeout=args.connect_timeout,
        on_status=on_status,
    )


async def print_messages(
    client: SensoriumClient,
    printer: LivePrinter,
    *,
    events_only: bool = False,
    show_result: Callable[[Result], None] | None = None,
) -> None:
    """Print what the server sends until the client closes: events, status messages, and results unless
    ``events_only`` (results go to ``show_result`` instead when given, such as a preview window)."""
    async for message in client.events():
        if isinstance(message, Result):
            if show_result is not None:
                show_result(message)
            elif not events_only:
                printer.result(message)
        elif isinstance(message, Event):
            printer.event(message)
        elif isinstance(message, dict):
            printer.message(message)


def run_until_done(
    program: str,
    work: Coroutine[Any, Any, object],
    client: SensoriumClient,
    noun: str,
    source_errors: tuple[type[Exception], ...],
) -> int:
    """Run a client script's coroutine; print the summary at the end, also on Ctrl-C, and clear
    one-line messages instead of tracebacks for the failures a user can fix."""
    try:
        asyncio.run(work)
    except source_errors as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 2
    except ServerUnreachable as exc:
        print(f"{program}: {exc}. Is `sensorium serve` running?", file=sys.stderr)
        return 3
    except ServerRefused as exc:
        if client.ledger.sent:
            print(client.ledger.summary(noun))
        print(f"{program}: {exc}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        print(client.ledger.summary(noun))
        return 130
    print(client.ledger.summary(noun))
    return 0

"""Printing for people: one line per result (or one line kept up to date on a terminal), one per event."""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from .messages import Event, Result


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class LivePrinter:
    """Writes results to ``out``; with ``live`` on a terminal, one line rewritten in place.

    Status lines (connecting, reconnecting, server errors) go to ``err`` (default: ``out`` too).
    """

    def __init__(self, out: TextIO, live: bool, err: TextIO | None = None) -> None:
        self.out = out
        self.err = err or out
        self.live = live and out.isatty()
        self._dirty = False

    def result(self, result: Result) -> None:
        line = result.line()
        if self.live:
            self.out.write("\r\x1b[2K" + line)
            self._dirty = True
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def event(self, event: Event) -> None:
        """Events get a line of their own, kept: a live result line is finished first, not overwritten."""
        self.finish()
        self.out.write(event.line() + "\n")
        self.out.flush()

    def message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "error":
            seq = f" (seq {message['seq']})" if "seq" in message else ""
            self.status(f"server error {message['code']}{seq}: {message['message']}")
        elif kind == "labels":
            self.status(
                f"{message['modality']} labels reloaded: version {message['version']}, {message['count']} labels"
            )
        elif kind == "labels_error":
            self.status(f"{message['modality']} labels not reloaded: {message['message']}")

    def status(self, text: str) -> None:
        self.finish()
        self.err.write(f"-- {text}\n")
        self.err.flush()

    def finish(self) -> None:
        if self._dirty:
            self.out.write("\n")
            self.out.flush()
            self._dirty = False

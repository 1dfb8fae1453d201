"""Graceful shutdown under uvicorn: on SIGTERM (or Ctrl-C), drain before stopping."""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn

from .runtime import Runtime

log = logging.getLogger("sensorium")


class DrainingServer(uvicorn.Server):
    """The first signal drains: no new connections or inputs, the models finish what they hold, the
    results go out, every client is closed with 1001. Then uvicorn stops as usual. A second signal
    stops at once."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self._loop
        if self._draining or self.should_exit or loop is None or self.runtime.state != "ok":
            super().handle_exit(sig, frame)
            return
        self._draining = True
        log.info("signal %d: draining before shutdown (signal again to stop at once)", sig)
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain()))

    async def _drain(self) -> None:
        try:
            await self.runtime.drain()
        finally:
            self.should_exit = True

"""The connected sessions, in one place: admission, release, broadcast, and closing them all."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from .errors import CloseCode


class Member(Protocol):
    def send(self, message: dict[str, Any]) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Registry:
    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.draining = False  # set once: no new connections or inputs
        self._members: set[Member] = set()

    def admit(self, member: Member) -> tuple[int, str] | None:
        """Take a connection in, or say with which close code and reason it is refused."""
        if self.draining:
            return CloseCode.GOING_AWAY, "the server is shutting down"
        if len(self._members) >= self.max_connections:
            return CloseCode.TOO_MANY_CONNECTIONS, f"the server is full ({self.max_connections} connections)"
        self._members.add(member)
        return None

    def release(self, member: Member) -> None:
        self._members.discard(member)

    def broadcast(self, message: dict[str, Any]) -> None:
        """Send to every connected client (called on the event loop)."""
        for member in list(self._members):
            member.send(message)

    async def close_all(self, code: int, reason: str) -> None:
        await asyncio.gather(*(member.close(code, reason) for member in list(self._members)))

    def __len__(self) -> int:
        return len(self._members)

"""What the client raises when a server cannot be reached or will not take it, in one place."""

from __future__ import annotations

from typing import Any

# Close codes after which connecting again cannot help.
UNAUTHORIZED = 4401
FORBIDDEN_ORIGIN = 4403


class ServerUnreachable(ConnectionError):
    """The first connection could not be made."""


class ServerRefused(ConnectionError):
    """The server closed the connection with a code that connecting again cannot change (4401, 4403)."""

    def __init__(self, url: str, code: int, reason: str) -> None:
        self.url = url
        self.code = code
        self.reason = reason
        said = f"closed with {code}" + (f": {reason}" if reason else "")
        if code == UNAUTHORIZED and "token=" in url:
            text = f"the server refused the token in {url} ({said})"
        elif code == UNAUTHORIZED:
            text = f"the server requires a token: pass ?token=TOKEN in the URL (--url) ({said})"
        else:
            text = f"the server does not allow this client's origin ({said}); start it with --allow-origin ORIGIN"
        super().__init__(text)


def refusal(url: str, ws: Any) -> ServerRefused | None:
    """The ServerRefused a closed connection stands for, if its close code is final."""
    code = getattr(ws, "close_code", None)
    if code in (UNAUTHORIZED, FORBIDDEN_ORIGIN):
        return ServerRefused(url, code, getattr(ws, "close_reason", None) or "")
    return None


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__

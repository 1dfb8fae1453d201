"""``GET /v1/events``: the event log (server/eventlog.py) over HTTP. Its parameters are declared in
server/http_params.py like every other route's; this module turns them into a query.

``since`` and ``until`` take seconds since the epoch or an ISO 8601 date and time. INSTANT is exactly the
set the parser takes (real calendar dates only, leap years included), so the schema served at
/openapi.json and the server agree on every value.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import ErrorCode, InputError
from .eventlog import EventLog, EventLogUnavailable

# Seconds: at most 11 digits before the point, so a JavaScript Date.now() (milliseconds, 13 digits) is
# refused rather than read as a date 50,000 years ahead.
_SECONDS = r"[0-9]{1,11}(?:\.[0-9]{1,9})?"
_LEAP_YEAR = r"(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)"
_MONTH_DAY = (
    r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"  # every month has days 1 to 28
    r"|(?:0[13-9]|1[0-2])-(?:29|30)"  # all but February have 29 and 30
    r"|(?:0[13578]|1[02])-31)"
)
_DATE = rf"(?:[1-9][0-9]{{3}}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
# A '+' in a query string that was not percent-encoded arrives as a space: a space there means '+'.
_OFFSET = r"(?:Z|[+ -](?:[01][0-9]|2[0-3]):?[0-5][0-9])"
_TIME = rf"T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{{1,9}})?)?{_OFFSET}?"
INSTANT = rf"^(?:{_SECONDS}|{_DATE}(?:{_TIME})?)$"
INSTANT_RULE = "seconds since the epoch (1764000000.5) or an ISO 8601 date and time (2026-11-24T14:02:11Z)"

_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(\.[0-9]+)?)?(?:(Z)|([+ -])([0-9]{2}):?([0-9]{2}))?)?"
)


def parse_instant(name: str, text: str) -> float:
    """Seconds since the epoch of a value INSTANT matches. Without an offset a time is UTC."""
    try:
        if "-" not in text:
            return float(text)
        match = _ISO.fullmatch(text)
        if match is None:
            raise ValueError("not an ISO 8601 date")
        year, month, day, hour, minute, second, fraction, _, sign, off_h, off_m = match.groups()
        zone = timezone.utc
        if sign is not None:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            zone = timezone(-offset if sign == "-" else offset)
        moment = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), tzinfo=zone
        )
        return moment.timestamp() + float(fraction or 0)
    except ValueError:
        raise InputError(ErrorCode.BAD_FIELD, f"'{name}' must be {INSTANT_RULE}, got {text!r}") from None


async def answer(log: EventLog | None, values: dict[str, Any]) -> dict[str, Any]:
    """The route's body, ``{"events": [...]}``: the newest ``limit`` events that match, oldest first."""
    if log is None:
        raise InputError(ErrorCode.NOT_FOUND, "the event log is off: start the server with --data-dir FOLDER")
    since, until = (None if values[name] is None else parse_instant(name, values[name]) for name in ("since", "until"))
    try:
        events = await asyncio.to_thread(
            log.query,
            stream=values["stream"] or None,
            label=values["label"] or None,
            group=values["group"] or None,
            modality=values["modality"],
            since=since,
            until=until,
            limit=values["limit"],
        )
    except EventLogUnavailable as exc:
        raise InputError(ErrorCode.NOT_FOUND, str(exc)) from None
    return {"events": events}

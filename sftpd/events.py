"""The one JSON log event style of every sftpd command: one object a line, `time`, `event`, fields.

`time` is RFC 3339 in UTC with milliseconds and a `Z`; `event` names what happened as dotted
lower-case `subject.happened` (`login.failed`, `epoch.started`, `backup.published`), words
inside a part joined by `_`. The rest are the event's own fields. Output is ASCII: anything
else, U+2028/U+2029/U+0085 included, is escaped, so a file name a client chose can neither
break a line for a log reader nor pass for another event (C1 controls, U+2028/U+2029, bidi
controls and lone surrogates all become `\\uXXXX`). A name that was not UTF-8 (a client's bytes
decoded with surrogateescape) is written with U+FFFD for each bad byte, and its exact bytes go
beside it in hex as `<field>_hex`, so two different names never log as the same text.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

EVENT_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


def utc_iso(moment: datetime) -> str:
    """An aware time as ISO-8601 UTC with a `Z`, the form results and log lines use."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


_ESCAPED_BYTE: Final = re.compile("[\udc80-\udcff]")


def readable(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields with every undecodable name made lossless: U+FFFD in place of each byte that was
    not UTF-8, and the exact bytes beside it in hex as `<field>_hex`."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, str) and _ESCAPED_BYTE.search(value):
            raw = value.encode("utf-8", "surrogateescape")
            out[key] = raw.decode("utf-8", "replace")
            out[f"{key}_hex"] = raw.hex()
        else:
            out[key] = value
    return out


def encode(event: str, fields: dict[str, Any], moment: datetime | None = None) -> str:
    """One event as one line of JSON (without the newline)."""
    when = (moment or datetime.now(UTC)).astimezone(UTC)
    record: dict[str, Any] = {
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event": event,
        **readable(fields),
    }
    return json.dumps(record, default=str, ensure_ascii=True, separators=(",", ":"))


class EventLog:
    """Writes events to a stream (stdout unless given), flushed at once so a killed process
    still leaves in its log what it did."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def event(self, event: str, **fields: Any) -> None:
        # stdout is looked up at each write, so a redirected sys.stdout is honoured.
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(encode(event, fields) + "\n")
        stream.flush()


_STDOUT: Final = EventLog()


def emit(event: str, **fields: Any) -> None:
    """One event line on stdout: the jobs' progress log."""
    _STDOUT.event(event, **fields)

"""sftpd's one JSON event style: every event the code writes is named `subject.happened`."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from sftpd.events import EVENT_NAME, EventLog, encode

SFTPD = Path(__file__).resolve().parents[2] / "sftpd"
# A call that writes an event: emit("..."), audit.event("..."), self._log("...").
EVENT_CALL = re.compile(r'(?:\bemit|\.event|\b_log)\(\s*"([^"]*)"')
# The other name of `emit("a.b" if dry_run else "a.c", ...)`.
OTHER_NAME = re.compile(r'(?:\bemit|\.event|\b_log)\(\s*"[^"]*"\s+if\s[^"]*?else\s+"([^"]*)"')


def test_every_event_sftpd_writes_has_a_dotted_lower_case_name() -> None:
    names: set[str] = set()
    for source in SFTPD.rglob("*.py"):
        text = source.read_text()
        names.update(EVENT_CALL.findall(text))
        names.update(OTHER_NAME.findall(text))
    assert len(names) >= 40, sorted(names)
    bad = sorted(n for n in names if not EVENT_NAME.match(n))
    assert bad == [], bad
    # The three styles the commands once had are gone.
    assert not {"login_failed", "epoch.start", "backup-started"} & names


def test_one_line_of_ascii_json_with_time_first() -> None:
    moment = datetime(2026, 12, 2, 14, 3, 7, 123456, tzinfo=UTC)
    line = encode("upload.failed", {"path": "/upload/a\u2028b\u2029c\u0085d\u00e9.csv",
                                    "bytes": 3, "at": Path("/x")}, moment)
    assert line.isascii() and line.splitlines() == [line]
    assert "\\u2028" in line and "\\u2029" in line and "\\u0085" in line
    record = json.loads(line)
    assert list(record) == ["time", "event", "path", "bytes", "at"]
    assert record == {"time": "2026-12-02T14:03:07.123Z", "event": "upload.failed",
                      "path": "/upload/a\u2028b\u2029c\u0085d\u00e9.csv", "bytes": 3, "at": "/x"}


def test_a_log_writes_each_event_whole_and_flushed() -> None:
    stream = io.StringIO()
    log = EventLog(stream)
    log.event("login.failed", reason="unknown_key")
    log.event("address.banned", seconds=900)
    lines = stream.getvalue().splitlines()
    assert [json.loads(x)["event"] for x in lines] == ["login.failed", "address.banned"]

"""The authorized_keys options sftpd honours, and how one line's options are judged (both planes).

`sftpd serve` serves SFTP only, so of OpenSSH's key options just a few mean something here:

- `from="pattern-list"`: the key works only from matching client addresses (matched by asyncssh);
- `expiry-time="YYYYMMDD[Z]"` or `"YYYYMMDDHHMM[SS][Z]"`: the key stops working at that time
  (the server's local time zone unless suffixed with Z, as in OpenSSH);
- `command="internal-sftp -R"`: OpenSSH's read-only SFTP idiom; the session may read but every
  write, rename, remove, mkdir, rmdir and setstat is refused with "permission denied";
  `command="internal-sftp"` (plain SFTP) is accepted too;
- `restrict` and the `no-*` restrictions: they take away what the server never grants anyway.

Any other option (`command=` running something else, `permitopen`, `permitlisten`, `tunnel`,
`environment`, `principals`, `cert-authority`, `pty`, `verify-required`, `no-touch-required`,
...) is one the server cannot honour, and a key that the district restricted in a way the server
would silently ignore must not log in with more than was meant: such a line is refused, loudly,
by the server (logged and skipped) and by the operator (KeysValid), both through this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

READ_ONLY_COMMAND = "internal-sftp -R"
SFTP_COMMAND = "internal-sftp"
# Each only removes something sftpd never offers (pty, forwarding, agent, X11, ~/.ssh/rc).
RESTRICTIONS = frozenset({"restrict", "no-agent-forwarding", "no-port-forwarding", "no-pty",
                          "no-user-rc", "no-x11-forwarding"})
HONOURED = RESTRICTIONS | {"from", "expiry-time", "command"}

# OpenSSH's options that take no value; a first field that is one of these (or holds "=" or ",")
# is the options field, anything else is taken as the key type (and judged as one).
FLAGS = RESTRICTIONS | {"cert-authority", "agent-forwarding", "port-forwarding", "pty",
                        "user-rc", "x11-forwarding", "no-touch-required", "verify-required"}
_EXPIRY = re.compile(r"(\d{8})(\d{4})?(\d{2})?(Z?)")


@dataclass(frozen=True)
class KeyOptions:
    """What a line's options ask of the server."""

    read_only: bool = False
    expires_at: datetime | None = None
    sources: tuple[str, ...] = ()

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def split_options(line: str) -> tuple[str, str]:
    """(options text, the rest: key type, key data, comment); options text is "" when absent."""
    text = line.strip()
    end = _options_end(text)
    first = text[:end]
    if "=" in first or "," in first or first.lower() in FLAGS:
        return first, text[end:].strip()
    return "", text


def _options_end(text: str) -> int:
    """Index of the first blank outside double quotes (the end of the first field)."""
    quoted = False
    escaped = False
    for index, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch in " \t" and not quoted:
            return index
    return len(text)


def parse_options(text: str) -> list[tuple[str, str | None]]:
    """Comma-separated `name` or `name="value"` items, in order; ValueError on bad quoting."""
    items: list[tuple[str, str | None]] = []
    current = ""
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append(_item(current))
            current = ""
        else:
            current += ch
    if quoted:
        raise ValueError("an option's quotes are not closed")
    if escaped:
        raise ValueError("the options end with a lone backslash")
    items.append(_item(current))
    return items


def _item(text: str) -> tuple[str, str | None]:
    if not text:
        raise ValueError("empty option (two commas in a row, or a trailing comma)")
    name, sep, value = text.partition("=")
    if not name:
        raise ValueError(f"option {text[:40]!r} has no name")
    # OpenSSH compares option names without regard to case.
    return name.lower(), value if sep else None


def parse_expiry(value: str) -> datetime:
    """OpenSSH's expiry-time: YYYYMMDD or YYYYMMDDHHMM[SS], local time unless suffixed with Z."""
    match = _EXPIRY.fullmatch(value)
    if match is None:
        raise ValueError(f'expiry-time="{value[:40]}" is not YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]')
    day, hour_minute, seconds, zulu = match.groups()
    try:
        naive = datetime.strptime(day + (hour_minute or "0000") + (seconds or "00"),
                                  "%Y%m%d%H%M%S")
    except ValueError:
        raise ValueError(f'expiry-time="{value}" is not a valid date and time') from None
    return naive.replace(tzinfo=UTC) if zulu else naive.astimezone(UTC)


def judge_options(text: str) -> KeyOptions:
    """The KeyOptions of a line's options text; ValueError naming any option not honoured."""
    if not text:
        return KeyOptions()
    read_only = False
    expires_at: datetime | None = None
    sources: list[str] = []
    commands = 0
    for name, value in parse_options(text):
        if name not in HONOURED:
            raise ValueError(
                f"option {name[:40]!r} is not honoured by the SFTP server, so the key is not "
                "used (honoured: from=, expiry-time=, restrict, no-*, and "
                f'command="{READ_ONLY_COMMAND}" for a read-only key)')
        if name in RESTRICTIONS:
            if value is not None:
                raise ValueError(f"option {name!r} takes no value")
            continue
        if value is None or not value.strip():
            raise ValueError(f'option {name!r} needs a value: {name}="..."')
        if name == "from":
            sources.append(value)
        elif name == "expiry-time":
            # As OpenSSH: of several, the earliest counts.
            expires = parse_expiry(value)
            expires_at = expires if expires_at is None else min(expires_at, expires)
        else:
            if commands:
                raise ValueError("more than one command= option")
            commands += 1
            command = " ".join(value.split())
            if command not in (READ_ONLY_COMMAND, SFTP_COMMAND):
                raise ValueError(
                    f'command="{value[:60]}" is not honoured by the SFTP server, so the key is '
                    f'not used: it serves only SFTP; command="{READ_ONLY_COMMAND}" makes a '
                    "read-only key")
            read_only = command == READ_ONLY_COMMAND
    return KeyOptions(read_only=read_only, expires_at=expires_at, sources=tuple(sources))

"""An uploaded CSV file's bytes as COPY takes them: trailing blank lines dropped, nothing else
changed (the one feed both importers' COPY reads)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

# Line breaks held back at a chunk's end in case they are the file's last bytes; past this many
# they are passed on as they are (COPY then names the first blank line).
MAX_HELD = 1 << 16


def copy_chunks(stream: IO[bytes], size: int) -> Iterator[bytes]:
    """The file's bytes for COPY, less any blank lines at its very end: many exports end with
    one, and COPY would read it as a row with missing columns. The line break that ends the
    last record is kept."""
    held = b""
    while chunk := stream.read(size):
        data = held + chunk
        body = data.rstrip(b"\r\n")
        # Line breaks at the end of a chunk may be the file's last bytes: hold them back.
        held = data[len(body):]
        if body:
            yield body
        if len(held) > MAX_HELD:  # not a trailing blank line but a flood of them: COPY says so
            yield held
            held = b""
    if held:
        yield held[:2] if held.startswith(b"\r\n") else held[:1]

"""A bounded walk of an epoch: iterative (any depth is safe to meet), never following links,
refusing a tree deeper, larger or with longer paths than the processor will handle."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_ENTRIES = 100_000
# Paths inside an epoch longer than this are refused: deep below PATH_MAX (4096 with the root in
# front), so every path-based step on an accepted tree works.
MAX_PATH_BYTES = 1024


@dataclass(frozen=True)
class Limits:
    """How deep (folders inside the epoch) and how many entries an epoch may have."""

    max_depth: int = DEFAULT_MAX_DEPTH
    max_entries: int = DEFAULT_MAX_ENTRIES


DEFAULT_LIMITS = Limits()


class TreeTooLarge(Exception):
    """The epoch exceeds a limit; the message says which, for the district and staff."""


def entries(epoch: Path, limits: Limits) -> Iterator[Path]:
    """The epoch directory itself, then everything under it in name order (folders first at
    each level); links are listed but never entered. Raises TreeTooLarge on the first limit
    crossed, before descending further."""
    yield epoch
    count = 0
    # Explicit stack of (directory, depth): no recursion, so no RecursionError at any depth.
    stack: list[tuple[Path, int]] = [(epoch, 0)]
    while stack:
        directory, depth = stack.pop()
        with os.scandir(directory) as listing:
            children = sorted(listing, key=lambda e: e.name)
        folders = [c for c in children if c.is_dir(follow_symlinks=False)]
        files = [c for c in children if not c.is_dir(follow_symlinks=False)]
        if folders and depth + 1 > limits.max_depth:
            raise TreeTooLarge(f"it has folders nested deeper than {limits.max_depth} levels")
        for child in (*folders, *files):
            count += 1
            if count > limits.max_entries:
                raise TreeTooLarge(f"it holds more than {limits.max_entries} files and folders")
            path = Path(child.path)
            if len(os.fsencode(path.relative_to(epoch))) > MAX_PATH_BYTES:
                raise TreeTooLarge(f"a path in it is longer than {MAX_PATH_BYTES} bytes")
            yield path
        stack.extend((Path(f.path), depth + 1) for f in reversed(folders))


def is_plain_file(path: Path) -> bool:
    """A regular file, not a link to one."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return False

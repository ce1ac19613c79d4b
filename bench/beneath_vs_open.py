"""Benchmark: what resolving beneath the root costs per open, beside a plain open of the same path.

`sftpd serve` opens every path it touches with sftpd.server.beneath (openat2 with
RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or a walk with O_NOFOLLOW per directory on kernels
before 5.6); before, it opened the realpath'd name directly. This prints CPU microseconds per
open+close for the three ways, on a path as deep as a district's usual upload, in one run:

    python bench/beneath_vs_open.py [--depth 3] [--count 100000]

CPU time (process_time), not wall time, so a shared machine's load moves the figures little.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

from sftpd.server import beneath


def per_call(fn: Callable[[], int], count: int) -> float:
    start = time.process_time()
    for _ in range(count):
        os.close(fn())
    return (time.process_time() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=3, help="directories below the root")
    parser.add_argument("--count", type=int, default=100_000, help="opens per way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        rel = "/".join(["upload"] + [f"d{i}" for i in range(args.depth - 1)])
        os.makedirs(os.path.join(root, rel))
        rel_file = f"{rel}/users.csv"
        with open(os.path.join(root, rel_file), "w") as f:
            f.write("sourcedId\n")
        absolute = os.path.join(root, rel_file).encode()
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        parts = rel_file.encode().split(b"/")
        ways = {
            "os.open(realpath name) (before)": lambda: os.open(absolute, flags),
            "beneath.open_beneath (openat2)" if beneath.uses_openat2() else
            "beneath.open_beneath (walk)": lambda: beneath.open_beneath(
                root_fd, rel_file.encode(), os.O_RDONLY),
            "beneath walk (kernels < 5.6)": lambda: beneath._walk(root_fd, parts, flags, 0),
        }
        print(f"path depth {args.depth + 1} components, {args.count} opens each, CPU us/open")
        for name, fn in ways.items():
            per_call(fn, min(1000, args.count))  # warm up
            print(f"  {name:<36} {per_call(fn, args.count):7.2f}")
        os.close(root_fd)


if __name__ == "__main__":
    main()

"""The malloc arena cap (district_operator/allocator.py), seen in the process's own memory map."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

# Eight threads allocating at once; then the number of glibc thread-arena heaps, which glibc
# maps at 64 MiB-aligned addresses, read from /proc/self/maps.
PROGRAM = """
import sys, threading
from district_operator import allocator
print(allocator.limit_malloc_arenas() if sys.argv[1] == "cap" else "none")
def heaps():
    count = 0
    for line in open("/proc/self/maps"):
        fields = line.split()
        start = int(fields[0].split("-")[0], 16)
        if fields[1] == "rw-p" and len(fields) == 5 and start % (64 << 20) == 0:
            count += 1
    return count
barrier = threading.Barrier(8)
kept = []
def allocate():
    barrier.wait()
    kept.extend(bytearray(4096) for _ in range(200))
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(heaps())
"""


def run(mode: str, **env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], env=environment,
                          capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_threads_share_one_arena_once_capped() -> None:
    assert run("cap") == ["True", "0"]
    # Without the cap the same threads get arenas of their own (what the cap is for).
    uncapped, heaps = run("none")
    assert uncapped == "none" and int(heaps) >= 2


def test_an_explicit_environment_setting_wins() -> None:
    assert run("cap", MALLOC_ARENA_MAX="4")[0] == "False"

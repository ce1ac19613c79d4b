"""The C allocator's settings for the operator process: one malloc arena for all its threads."""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt() parameter number in glibc's malloc.h.
M_ARENA_MAX = -8


def limit_malloc_arenas(count: int = 1) -> bool:
    """Cap glibc's malloc arenas at count; True if the cap was set.

    glibc gives threads arenas of their own (up to eight per CPU), and memory freed into one
    arena is reused only by the threads attached to it.
    The operator's sixteen reconciling threads, kopf's event loop and the client's connection
    threads each leave memory behind in their arenas: at 400 Districts the operator's RSS after
    the burst was 157 MB with the default and 142 MB with one arena, for the same run time
    (bench/operator_scale.py, one run each). Most of its allocation happens under the GIL, so
    the threads seldom contend for the one arena (RSA key generation, which releases the GIL,
    is the exception). Must run before the threads start; an arena setting in the environment
    (MALLOC_ARENA_MAX or a glibc.malloc.arena_max tunable) wins, and other C libraries (musl)
    are left alone.
    """
    explicit = ("MALLOC_ARENA_MAX" in os.environ
                or "glibc.malloc.arena_max" in os.environ.get("GLIBC_TUNABLES", ""))
    if not sys.platform.startswith("linux") or explicit:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # this process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_ARENA_MAX, count))

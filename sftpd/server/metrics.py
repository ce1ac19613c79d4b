"""The server's Prometheus metrics: counters, gauges, tree freshness, and /metrics on the loop.

A few dozen lines instead of prometheus_client: that library's import pulls in http.server,
urllib.request, wsgiref and email (about 2.7 MB of a District pod's memory) and serves from a
thread of its own; here the text format is written by hand and served by the server's own
event loop. The format is Prometheus' text exposition format, version 0.0.4.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from sftpd import tree

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A scrape is one short GET: anything longer or slower is not Prometheus.
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_SECONDS = 10.0
# Connections that have not sent their request yet: past this many the oldest is hung up on,
# so a flood of idle connections cannot keep a scrape (or the liveness probe) out.
MAX_WAITING = 16
# processing.json is written into an epoch just before it is moved into upload-processed/
# (sftpd/epochs/report.py); the backup job publishes `<dump>.sha256` once pg_restore has read
# the dump back (sftpd/backup/rotation.py). Spelled here so serving imports neither package
# (sftpd.backup loads psycopg).
PROCESSING_JSON = "processing.json"
BACKUP_CHECKSUM_SUFFIX = ".dump.sha256"

Labels = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value != value:  # NaN
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Metric:
    """One counter or gauge, with or without labels; the unlabelled one always shows."""

    def __init__(self, name: str, help_text: str, kind: str, labelnames: Labels = ()) -> None:
        self.name = name
        self.help = help_text
        self.kind = kind
        self.labelnames = labelnames
        self._values: dict[Labels, float] = {} if labelnames else {(): 0.0}

    def labels(self, *values: str) -> _Child:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        self._values.setdefault(values, 0.0)
        return _Child(self, values)

    def inc(self, amount: float = 1.0) -> None:
        _Child(self, ()).inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        _Child(self, ()).inc(-amount)

    def set(self, value: float) -> None:
        self._values[()] = value

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def samples(self) -> Iterator[tuple[Labels, float]]:
        yield from sorted(self._values.items())


class _Child:
    __slots__ = ("labels", "metric")

    def __init__(self, metric: Metric, labels: Labels) -> None:
        self.metric = metric
        self.labels = labels

    def inc(self, amount: float = 1.0) -> None:
        if self.metric.kind == "counter" and amount < 0:
            raise ValueError("counters only go up")
        values = self.metric._values
        values[self.labels] = values.get(self.labels, 0.0) + amount


# A collector yields (name, help, kind, value) computed at scrape time; None leaves it out.
Sample = tuple[str, str, str, float | None]
Collector = Callable[[], Iterable[Sample]]


class Registry:
    """The metrics one process exposes, rendered on every scrape."""

    def __init__(self) -> None:
        self.metrics: list[Metric] = []
        self.collectors: list[Collector] = []
        # Collectors that touch the district's volume (possibly network storage): run in a
        # worker thread on each scrape, so a slow stat never stalls the sessions' event loop.
        self.blocking_collectors: list[Collector] = []

    def collect_blocking(self) -> list[Sample]:
        """The blocking collectors' samples; call it off the event loop."""
        return [sample for collector in self.blocking_collectors for sample in collector()]

    def counter(self, name: str, help_text: str, labelnames: Labels = ()) -> Metric:
        return self._add(Metric(name, help_text, "counter", labelnames))

    def gauge(self, name: str, help_text: str, labelnames: Labels = ()) -> Metric:
        return self._add(Metric(name, help_text, "gauge", labelnames))

    def _add(self, metric: Metric) -> Metric:
        self.metrics.append(metric)
        return metric

    def render(self, blocking_samples: Iterable[Sample] = ()) -> bytes:
        """The text format: the metrics, the collectors', then the given blocking ones'."""
        lines: list[str] = []

        def family(name: str, help_text: str, kind: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        for metric in self.metrics:
            family(metric.name, metric.help, metric.kind)
            for labels, value in metric.samples():
                pairs = ",".join(f'{n}="{_escape(v)}"'
                                 for n, v in zip(metric.labelnames, labels, strict=True))
                lines.append(f"{metric.name}{{{pairs}}} {_number(value)}" if pairs
                             else f"{metric.name} {_number(value)}")
        for name, help_text, kind, sample in (
                *(s for collector in self.collectors for s in collector()), *blocking_samples):
            family(name, help_text, kind)
            if sample is not None:
                lines.append(f"{name} {_number(sample)}")
        return ("\n".join(lines) + "\n").encode()


def newest_processed_epoch(root: Path) -> float | None:
    """Modification time of the newest processing.json in upload-processed/, None if none.

    One stat per processed epoch still kept (retention bounds them), on each scrape: cheaper than
    any bookkeeping that must survive restarts, and right after the jobs or retention changed
    the tree, which this process learns nothing about otherwise.
    """
    newest: float | None = None
    try:
        with os.scandir(root / tree.UPLOAD_PROCESSED) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    mtime = Path(entry.path, PROCESSING_JSON).stat().st_mtime
                except OSError:  # not an epoch, or removed by retention meanwhile
                    continue
                newest = mtime if newest is None else max(newest, mtime)
    except OSError:
        return None
    return newest


def newest_backup(root: Path) -> float | None:
    """Modification time of the newest verified backup's checksum file, None if none."""
    newest: float | None = None
    try:
        with os.scandir(root / tree.BACKUPS) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.endswith(BACKUP_CHECKSUM_SUFFIX):
                    continue
                try:
                    mtime = entry.stat().st_mtime
                except OSError:
                    continue
                newest = mtime if newest is None else max(newest, mtime)
    except OSError:
        return None
    return newest


def tree_collector(root: Path) -> Collector:
    """The freshness of the jobs' results, read from the tree the server shares with them.

    Alerting on these needs only this pod's scrape: neither the operator nor the API server.
    It stats files on the district's volume: register it in `blocking_collectors`.
    """
    def collect() -> Iterator[Sample]:
        yield ("sftpd_last_processed_epoch_timestamp_seconds",
               "Unix time the newest epoch in upload-processed/ was processed (absent: none yet)",
               "gauge", newest_processed_epoch(root))
        yield ("sftpd_last_backup_timestamp_seconds",
               "Unix time the newest verified backup in downloads/backups/ was published "
               "(absent: none yet)", "gauge", newest_backup(root))
    return collect


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def process_collector() -> Iterator[Sample]:
    """The standard process_* metrics, from /proc/self (as prometheus_client exports them)."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        fds = sum(1 for _ in Path("/proc/self/fd").iterdir())
    except (OSError, StopIteration, IndexError):
        return
    # Fields after the command name, counted from 0: utime 11, stime 12, starttime 19,
    # vsize 20, rss 21 (pages).
    yield ("process_cpu_seconds_total", "Total user and system CPU time spent in seconds",
           "counter", (int(stat[11]) + int(stat[12])) / _TICKS)
    yield ("process_start_time_seconds", "Start time of the process since unix epoch in seconds",
           "gauge", boot + int(stat[19]) / _TICKS)
    yield ("process_virtual_memory_bytes", "Virtual memory size in bytes", "gauge",
           float(stat[20]))
    yield ("process_resident_memory_bytes", "Resident memory size in bytes", "gauge",
           float(int(stat[21]) * _PAGE))
    yield ("process_open_fds", "Number of open file descriptors", "gauge", float(fds))


REGISTRY = Registry()
REGISTRY.collectors.append(process_collector)


async def _answer(registry: Registry, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter, received: Callable[[], None]) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_SECONDS)
        received()
        method, _, rest = head.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            status, body = b"405 Method Not Allowed", b"only GET\n"
        elif path not in (b"/metrics", b"/"):
            status, body = b"404 Not Found", b"see /metrics\n"
        else:
            slow = await asyncio.to_thread(registry.collect_blocking) \
                if registry.blocking_collectors else []
            status, body = b"200 OK", registry.render(slow)
        content_type = CONTENT_TYPE.encode() if status == b"200 OK" else b"text/plain"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type +
                     b"\r\nContent-Length: " + str(len(body)).encode() +
                     b"\r\nConnection: close\r\n\r\n" + (b"" if method == b"HEAD" else body))
        await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_SECONDS)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
            ConnectionError):
        pass  # a half request, an oversized one, a slow one or a reset: just hang up
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(port: int, host: str, registry: Registry = REGISTRY) -> asyncio.Server:
    """Answer GET /metrics on host:port from this event loop (no thread of its own)."""
    waiting: dict[asyncio.StreamWriter, None] = {}  # insertion order: the oldest first

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(waiting) >= MAX_WAITING:
            oldest = next(iter(waiting))
            del waiting[oldest]
            oldest.transport.abort()
        waiting[writer] = None
        try:
            await _answer(registry, reader, writer, lambda: waiting.pop(writer, None))
        finally:
            waiting.pop(writer, None)

    return await asyncio.start_server(connected, host or None, port, limit=MAX_REQUEST_BYTES,
                                      reuse_address=True)

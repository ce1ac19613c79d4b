"""`sftpd sif-pull`: pull the zone's objects and publish them as one Generic CSV epoch in upload/.

The epoch is built in a hidden `upload/.sftpd-pull-<name>-<random>/` (held with flock while it
is being built), its files fsynced, `COMPLETE` written last, and only then renamed to
`upload/<name>` (YYYYMMDD-HHMMSS, UTC, never an existing name: renameat2 without replace, the
next second on a clash). A pull that fails anywhere removes its hidden directory and publishes
nothing; one killed outright leaves it, and the next run removes it (a build still held by a
live run is left alone).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import gc
import os
import shutil
import signal
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from district_contract import commands, results
from district_contract.results import Outcome, PullResult

from sftpd import options, tree
from sftpd.epochs import checkpoints, fsops
from sftpd.epochs.checkpoints import checkpoint
from sftpd.epochs.names import COMPLETION_MARKER, EPOCH_NAME_FORMAT, PULL_PREFIX
from sftpd.events import emit, utc_iso
from sftpd.options import UsageError
from sftpd.sif import convert
from sftpd.sif.agent import Agent, SaveRaw
from sftpd.sif.errors import PullError, PullReason
from sftpd.sif.transport import (
    ENVELOPE_BYTES,
    Credentials,
    Transport,
    ZoneURLError,
    check_zone_url,
    read_credentials,
    tls_context,
)

# The raw SIF replies of the pull, kept in the epoch for audit (the importer ignores it).
RAW_DIRECTORY = "sif"
DEFAULT_MAX_BUFFER_SIZE = 10_000_000  # what SameGoal's Infinite Campus guide configures
MIN_MAX_BUFFER_SIZE = 4096
MAX_MAX_BUFFER_SIZE = 100_000_000
MAX_SOURCE_ID = 128
DEFAULT_TIMEOUT_SECONDS = 60
DEFAULT_WAIT_SECONDS = 900
DEFAULT_POLL_SECONDS = 2


def objects_list(text: str) -> tuple[str, ...]:
    """Object names separated by commas or spaces, each one the agent can convert."""
    names = tuple(dict.fromkeys(commands.separated(text)))
    unknown = [n for n in names if n not in convert.SUPPORTED]
    if unknown:
        raise ValueError(f"unknown SIF object {unknown[0]!r}; choose from "
                         + ", ".join(convert.SUPPORTED))
    if not names:
        raise ValueError("name at least one SIF object")
    return names


def source_id(text: str) -> str:
    """The agent's SIF_SourceId (its name in the zone): printable, no spaces, bounded."""
    if not (0 < len(text) <= MAX_SOURCE_ID) or not text.isprintable() or " " in text:
        raise ValueError(f"must be 1 to {MAX_SOURCE_ID} printable characters without spaces")
    return text


def zone_url(text: str) -> str:
    try:
        return check_zone_url(text)
    except ZoneURLError as exc:
        raise ValueError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opt = options.prepare(parser)
    opt.path(commands.ROOT, "the district's volume", required=True)
    opt.custom(commands.ZONE_URL, "the SIF zone's https:// URL", zone_url, required=True,
               metavar="URL")
    opt.custom(commands.SOURCE_ID, "the agent's SIF_SourceId, its name in the zone",
               source_id, required=True, metavar="NAME")
    opt.custom(commands.OBJECTS, "the SIF objects to request, separated by commas (also "
               f"{', '.join(n for n in convert.SUPPORTED if n not in convert.DEFAULT)})",
               objects_list, ",".join(convert.DEFAULT), metavar="NAMES")
    opt.number(commands.MAX_BUFFER_SIZE, "the largest message the agent accepts, in bytes "
               f"(SIF_MaxBufferSize, {MIN_MAX_BUFFER_SIZE} to {MAX_MAX_BUFFER_SIZE})",
               DEFAULT_MAX_BUFFER_SIZE, minimum=MIN_MAX_BUFFER_SIZE)
    opt.path(commands.SIF_AUTH_DIR, "a directory with username and password (HTTP basic) or "
             "tls.crt and tls.key (a client certificate)")
    opt.path(commands.SIF_CA_FILE, "the zone's CA certificates (PEM; default the system's)")
    opt.number("timeout-seconds", "the longest one exchange with the zone may take",
               DEFAULT_TIMEOUT_SECONDS, minimum=1)
    opt.number("wait-seconds", "the longest the agent polls for the responses in all",
               DEFAULT_WAIT_SECONDS, minimum=1)
    opt.number("poll-seconds", "the pause between polls of an empty queue",
               DEFAULT_POLL_SECONDS, kind=float, minimum=0)
    opt.path(commands.RESULT_FILE, "write the one-line JSON result here")


@dataclass(frozen=True)
class Settings:
    """The checked options of one run."""

    upload: Path
    processed: Path
    zone_url: str
    source_id: str
    objects: tuple[str, ...]
    max_buffer_size: int
    credentials: Credentials
    context: ssl.SSLContext
    timeout: float
    wait_seconds: float
    poll_seconds: float


def settings(args: argparse.Namespace) -> Settings:
    if not args.root.is_dir():
        raise UsageError(f"--root {args.root} is not a directory")
    if args.max_buffer_size > MAX_MAX_BUFFER_SIZE:
        raise UsageError(f"--{commands.MAX_BUFFER_SIZE}: at most {MAX_MAX_BUFFER_SIZE}, not "
                         f"{args.max_buffer_size}")
    objects: tuple[str, ...] = args.objects
    for name, needs in convert.NEEDS.items():
        lacking = [n for n in needs if n not in objects]
        if name in objects and lacking:
            raise UsageError(f"--{commands.OBJECTS}: {name} needs {' and '.join(lacking)} too "
                             "(only together do they make rows)")
    if args.ca_file is not None and not args.ca_file.is_file():
        raise UsageError(f"--{commands.SIF_CA_FILE}: {args.ca_file} is not a file")
    try:
        credentials = read_credentials(args.auth_dir)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--{commands.SIF_AUTH_DIR}: {exc}") from None
    try:
        context = tls_context(args.ca_file, credentials)
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"--{commands.SIF_CA_FILE} or --{commands.SIF_AUTH_DIR}: cannot load "
                         f"the certificates: {exc}") from None
    return Settings(upload=args.root / tree.UPLOAD, processed=args.root / tree.UPLOAD_PROCESSED,
                    zone_url=args.zone_url, source_id=args.source_id, objects=objects,
                    max_buffer_size=args.max_buffer_size, credentials=credentials,
                    context=context, timeout=float(args.timeout_seconds),
                    wait_seconds=float(args.wait_seconds), poll_seconds=args.poll_seconds)


def remove_leftovers(upload: Path) -> list[str]:
    """Remove hidden builds of killed runs; one still held by a live run is left alone."""
    removed = []
    for entry in sorted(upload.iterdir()):
        if not entry.name.startswith(PULL_PREFIX):
            continue
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink()
            removed.append(entry.name)
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a pull running now
        finally:
            os.close(fd)
        shutil.rmtree(entry)
        removed.append(entry.name)
    if removed:
        fsops.fsync_dir(upload)
    return removed


def _taken(s: Settings, name: str) -> bool:
    return any((d / name).exists() or (d / name).is_symlink() for d in (s.upload, s.processed))


def _free_name(s: Settings, moment: datetime) -> tuple[str, datetime]:
    while _taken(s, f"{moment:{EPOCH_NAME_FORMAT}}"):
        moment += timedelta(seconds=1)
    return f"{moment:{EPOCH_NAME_FORMAT}}", moment


def _fsync_tree(building: Path) -> None:
    for folder, _dirs, files in os.walk(building, topdown=False):
        for file_name in files:
            fd = os.open(Path(folder, file_name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsops.fsync_dir(Path(folder))


def publish(s: Settings, building: Path, moment: datetime) -> str:
    """COMPLETE last, then the first free YYYYMMDD-HHMMSS from moment on; the name it got."""
    _fsync_tree(building)
    checkpoint("sif-pull: files fsynced, no COMPLETE yet")
    fd = os.open(building / COMPLETION_MARKER,
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsops.fsync_dir(building)
    checkpoint("sif-pull: COMPLETE written, not renamed yet")
    for _attempt in range(3600):
        name, moment = _free_name(s, moment)
        try:
            fsops.rename_noreplace(building, s.upload / name)
        except FileExistsError:  # the district made it just now
            moment += timedelta(seconds=1)
            continue
        fsops.fsync_dir(s.upload)
        return name
    raise PullError(PullReason.FILE_SYSTEM_ERROR, "no free epoch name within an hour of now")


def _raw_saver(raw: Path) -> SaveRaw:
    def save(sequence: int, object_name: str, packet: int, data: bytes) -> None:
        name = f"{sequence:05d}-{object_name}-packet{packet}.xml"
        with (raw / name).open("xb") as out:
            out.write(data)
    return save


def pull(s: Settings) -> PullResult:
    """One pull: build the epoch hidden, publish it whole, or leave nothing."""
    if not s.upload.is_dir():
        raise PullError(PullReason.FILE_SYSTEM_ERROR, f"{s.upload} is not a directory")
    for name in remove_leftovers(s.upload):
        emit("pull.leftover_removed", name=name)
    started = datetime.now(UTC)
    name, _ = _free_name(s, started.astimezone(UTC).replace(microsecond=0))
    # A name of its own even beside another pull started in the same second.
    building = Path(tempfile.mkdtemp(prefix=f"{PULL_PREFIX}{name}-", dir=s.upload))
    building.chmod(0o755)
    fd = os.open(building, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    fcntl.flock(fd, fcntl.LOCK_EX)
    published = False
    transport = Transport(s.zone_url, s.context, s.credentials, s.timeout,
                          s.max_buffer_size + ENVELOPE_BYTES)
    try:
        raw = building / RAW_DIRECTORY
        raw.mkdir()
        conversion = convert.Conversion(today=started.date())
        agent = Agent(transport, s.source_id, s.max_buffer_size, on_object=conversion.add,
                      save_raw=_raw_saver(raw), wait_seconds=s.wait_seconds,
                      poll_seconds=s.poll_seconds)
        emit("pull.started", zone_url=s.zone_url, source_id=s.source_id,
             objects=list(s.objects))
        stats = agent.pull(s.objects)
        checkpoint("sif-pull: every response received")
        rows = conversion.write(building, s.objects)
        emit("pull.converted", rows=rows, skipped=dict(conversion.skipped))
        final = publish(s, building, datetime.now(UTC).replace(microsecond=0))
        published = True
        emit("pull.published", epoch=final, rows=rows)
    finally:
        transport.close()
        os.close(fd)
        if not published:
            shutil.rmtree(building, ignore_errors=True)
    skipped = "; ".join(f"{count} {what} left out" for what, count in
                        sorted(conversion.skipped.items()))
    counted = ", ".join(f"{rows[f]} rows in {f}" for f in rows)
    return PullResult(outcome=Outcome.SUCCEEDED, epoch=final, zone_url=s.zone_url,
                      objects=tuple(f"{n}={stats.objects[n]}" for n in s.objects),
                      messages=stats.messages, packets=stats.packets,
                      completed_at=utc_iso(datetime.now(UTC)),
                      message=f"published upload/{final}: {counted}"
                              + (f" ({skipped})" if skipped else ""))


class Stopped(BaseException):
    """SIGTERM arrived: unwind through the cleanups (the hidden build is removed), then report."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stopped


def _failure(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, PullError):
        return exc.reason, exc.message
    if isinstance(exc, Stopped):
        return PullReason.INTERRUPTED, "stopped (SIGTERM); nothing was published"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return PullReason.DISK_FULL, f"writing the epoch failed: {exc}"
    return PullReason.FILE_SYSTEM_ERROR, f"writing the epoch failed: {exc}"


def run(args: argparse.Namespace) -> int:
    s = settings(args)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # A pull allocates millions of short-lived, acyclic objects (elements, strings, rows) while
    # its live set grows: the cyclic collector's repeated scans of it cost about a third of
    # the run and find nothing that reference counting does not free.
    gc.disable()
    try:
        result = pull(s)
        code = commands.EXIT_OK
    except (PullError, Stopped, OSError) as exc:
        reason, message = _failure(exc)
        result = PullResult(outcome=Outcome.FAILED, reason=str(reason), message=message,
                            zone_url=s.zone_url, completed_at=utc_iso(datetime.now(UTC)))
        code = commands.EXIT_FAILED
    finally:
        gc.enable()
        signal.signal(signal.SIGTERM, previous)
    if result.failed:
        emit("pull.failed", reason=result.reason, message=result.message)
    line = results.write(args.result_file, result)
    emit("pull.finished", result=line, checkpoints=checkpoints.passed())
    return code

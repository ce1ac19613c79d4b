"""`sftpd serve`: command-line options (each also an SFTPD_* variable) and the process lifecycle."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from district_contract import commands

from sftpd import options, tree
from sftpd.server import metrics
from sftpd.server.access import check_login, parse_networks
from sftpd.server.app import ServerSettings, SFTPDistrictServer
from sftpd.server.audit import AuditLog

DEFAULT_HOST_KEYS = (
    "/etc/sftpd/host-keys/ssh_host_ed25519_key",
    "/etc/sftpd/host-keys/ssh_host_rsa_key",
)
DEFAULT_AUTHORIZED_KEYS = "/etc/sftpd/authorized-keys/authorized_keys"


def parse_size(text: str) -> int:
    """A byte count such as 1048576, 512M or 64G (binary multiples)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = int(number) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a size must be positive")
    return value


def add_listener_options(opt: options.Options, *, idle_help: str, max_sessions: int,
                         max_unauthenticated: int, banned: str) -> None:
    """The metrics listener, login, session and ban limits: `sftpd serve` and `sftpd gateway`
    take the same options, each with its own defaults (banned: what a ban keys on)."""
    opt.number(commands.METRICS_PORT, "Prometheus metrics port, 0 to disable", 9090, minimum=0)
    # The pod's metrics port must be reachable by the cluster's Prometheus.
    opt.text("metrics-bind", "address for the metrics listener", "0.0.0.0",  # noqa: S104
             metavar="ADDRESS")
    opt.number("login-grace-time", "seconds a client has to authenticate", 30, kind=float,
               minimum=0)
    opt.number("max-auth-tries", "failed authentication attempts per connection", 6, minimum=1)
    opt.number("idle-timeout", idle_help, 900, kind=float, minimum=0)
    opt.number("max-sessions", "concurrent logged-in sessions", max_sessions, minimum=1)
    opt.number("max-unauthenticated-per-source",
               "connections from one address that have not logged in yet", 10, minimum=1)
    opt.number("max-unauthenticated", "connections in all that have not logged in yet",
               max_unauthenticated, minimum=1)
    opt.number("max-channels", "SFTP/scp channels open at once on one connection", 10,
               minimum=1)
    opt.number("ban-after", f"failed logins from one {banned} that start a ban (0: never)", 10,
               minimum=0)
    opt.number("ban-window", "seconds over which failed logins are counted", 600, kind=float,
               minimum=0)
    opt.number("ban-time", f"seconds a banned {banned} is refused", 900, kind=float, minimum=0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opt = options.prepare(parser)
    opt.text(commands.ROOT, "the district's data directory", "/data", metavar="PATH")
    opt.text(commands.LOGIN, "the one user name that may log in, e.g. the district's domain "
             "applegrove.org (lowercase letters, digits, . - _)", required=True, metavar="NAME")
    opt.items(commands.HOST_KEY, "host private key file (OpenSSH format)", DEFAULT_HOST_KEYS,
              metavar="PATH")
    opt.items(commands.NEXT_HOST_KEY, "a host key being rolled in (OpenSSH format): announced "
              "after login, never used for the key exchange; an absent file is skipped",
              metavar="PATH")
    opt.text(commands.AUTHORIZED_KEYS, "authorized_keys file, re-read when it changes",
             DEFAULT_AUTHORIZED_KEYS, metavar="PATH")
    opt.number(commands.PORT, "SSH port", 2222, minimum=0)
    opt.items("bind", "address to listen on (default: all)", metavar="ADDRESS")
    opt.items(commands.ALLOWED_SOURCE, "client address or CIDR allowed to connect (default: any)",
              metavar="CIDR")
    add_listener_options(opt, idle_help="seconds of inactivity before a session is closed",
                         max_sessions=100, max_unauthenticated=50, banned="address")
    opt.switch("compat-macs", "also offer hmac-sha2-256/512 (encrypt-and-MAC) for libssh2 < 1.11 "
                              "clients such as curl on Debian 12")
    opt.number("shutdown-grace", "seconds SIGTERM waits for sessions to finish", 10, kind=float,
               minimum=0)
    opt.number("max-open-handles", "files and directory listings one session may hold open", 64,
               minimum=1)
    opt.custom("max-file-size", "largest file a district may write, in bytes (a K, M, G or T "
               "suffix multiplies by 1024s); the volume's size bounds it too", parse_size, "64G",
               metavar="SIZE")
    opt.items(commands.DOWNLOAD_DIRECTORIES, "read-only directory made under /downloads for a "
              f"state integration ({tree.DOWNLOAD_DIRECTORY_RULE})", metavar="NAME")
    # Behind the shared gateway (docs/gateway.md).
    opt.items(commands.PROXY_FROM, "gateway address or CIDR: a connection from one must start "
              "with a PROXY v2 header naming the real client (default: none)", metavar="CIDR")
    opt.text(commands.GATEWAY_KEY, "the gateway's public key file, accepted only on a "
             "PROXY-headed connection from a --proxy-from address", metavar="PATH")


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    return ServerSettings(
        root=Path(args.root),
        login=check_login(args.login),
        host_keys=[Path(p) for p in args.host_key],
        authorized_keys=Path(args.authorized_keys),
        next_host_keys=[Path(p) for p in args.next_host_key],
        port=args.port,
        bind=args.bind or [""],
        allowed_sources=parse_networks(args.allowed_source),
        login_grace_seconds=args.login_grace_time,
        max_auth_tries=args.max_auth_tries,
        idle_timeout_seconds=args.idle_timeout,
        max_sessions=args.max_sessions,
        max_unauthenticated_per_source=args.max_unauthenticated_per_source,
        max_unauthenticated=args.max_unauthenticated,
        max_channels=args.max_channels,
        ban_after_failures=args.ban_after,
        ban_window_seconds=args.ban_window,
        ban_seconds=args.ban_time,
        compat_macs=args.compat_macs,
        max_open_handles=args.max_open_handles,
        max_file_size=args.max_file_size,
        download_directories=tuple(dict.fromkeys(
            tree.check_download_directory(name) for name in args.download_directories)),
        proxy_sources=parse_networks(args.proxy_from, commands.PROXY_FROM),
        gateway_key=None if not args.gateway_key else Path(args.gateway_key),
    )


def raise_descriptor_limit() -> int:
    """Lift the soft limit on open descriptors to the hard one; the limit now in force.

    Each session may hold --max-open-handles files (a write handle also holds its epoch's
    directory lock), and the soft limit is often 1024 where the hard one is far higher."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    return soft


async def serve(settings: ServerSettings, args: argparse.Namespace, audit: AuditLog) -> int:
    raise_descriptor_limit()
    server = SFTPDistrictServer(settings, audit)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    exporter: asyncio.Server | None = None
    if args.metrics_port:
        metrics.REGISTRY.blocking_collectors.append(metrics.tree_collector(Path(args.root)))
        exporter = await metrics.serve(args.metrics_port, args.metrics_bind)
    await server.start()
    await stop.wait()
    audit.event("server.stopping", signal="SIGTERM/SIGINT", open_sessions=len(server.connections))
    await server.stop(args.shutdown_grace)
    if exporter is not None:
        exporter.close()
    return commands.EXIT_OK


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop when it is installed, asyncio's own otherwise.

    uvloop's transports and loop are C: per packet they cost less than asyncio's Python ones,
    which shows in bulk transfers (see docs/sftpd.md, benchmark figures). The server behaves the
    same on either loop.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        raise options.UsageError(str(exc)) from None
    audit = AuditLog()
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(serve(settings, args, audit))
    except (ValueError, OSError, RuntimeError) as exc:
        # Keys that cannot be loaded, a port in use, an asyncssh this server cannot patch.
        audit.event("server.start_failed", error=str(exc))
        print(f"sftpd serve: {exc}", file=sys.stderr)
        return commands.EXIT_FAILED

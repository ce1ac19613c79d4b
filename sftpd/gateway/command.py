"""`sftpd gateway`: command-line options (each also an SFTPD_* variable) and the process
lifecycle."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from district_contract import commands

from sftpd import options
from sftpd.gateway import metrics
from sftpd.gateway.server import Gateway, GatewaySettings
from sftpd.server import metrics as server_metrics
from sftpd.server.audit import AuditLog
from sftpd.server.command import (
    DEFAULT_HOST_KEYS,
    add_listener_options,
    event_loop_factory,
    raise_descriptor_limit,
)

DEFAULT_ROUTES = "/etc/sftpd/routes"
DEFAULT_GATEWAY_KEY = "/etc/sftpd/gateway-key/gateway_key"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opt = options.prepare(parser)
    opt.text(commands.ROUTES, "directory of routing shard files (*.json), reread when they "
             "change", DEFAULT_ROUTES, metavar="PATH")
    opt.items(commands.HOST_KEY, "the gateway's host private key file (OpenSSH format)",
              DEFAULT_HOST_KEYS, metavar="PATH")
    opt.items(commands.NEXT_HOST_KEY, "the gateway's next host key (announced after login, "
              "not yet used to sign; absent files skipped), for a rotation with overlap",
              metavar="PATH")
    opt.text(commands.GATEWAY_KEY, "private key the gateway logs in to district servers with",
             DEFAULT_GATEWAY_KEY, metavar="PATH")
    opt.number(commands.PORT, "SSH port", 2222, minimum=0)
    opt.items("bind", "address to listen on (default: all)", metavar="ADDRESS")
    add_listener_options(opt, idle_help="seconds a logged-in client may stay with no channel "
                         "open", max_sessions=5000, max_unauthenticated=500,
                         banned="pair of login and address")
    opt.number("backend-timeout", "seconds to reach and log in to a district's server", 15,
               kind=float, minimum=0.1)
    opt.number("routes-poll", "seconds between checks of the routing files", 1, kind=float,
               minimum=0.1)
    opt.number("shutdown-grace", "seconds SIGTERM waits for sessions to finish", 10, kind=float,
               minimum=0)


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    return GatewaySettings(
        routes=Path(args.routes),
        host_keys=[Path(p) for p in args.host_key],
        gateway_key=Path(args.gateway_key),
        next_host_keys=[Path(p) for p in args.next_host_key],
        port=args.port,
        bind=args.bind or [""],
        login_grace_seconds=args.login_grace_time,
        max_auth_tries=args.max_auth_tries,
        max_sessions=args.max_sessions,
        max_unauthenticated_per_source=args.max_unauthenticated_per_source,
        max_unauthenticated=args.max_unauthenticated,
        max_channels=args.max_channels,
        idle_timeout_seconds=args.idle_timeout,
        ban_after_failures=args.ban_after,
        ban_window_seconds=args.ban_window,
        ban_seconds=args.ban_time,
        backend_timeout_seconds=args.backend_timeout,
        routes_poll_seconds=args.routes_poll,
    )


async def serve(settings: GatewaySettings, args: argparse.Namespace, log: AuditLog) -> int:
    raise_descriptor_limit()
    gateway = Gateway(settings, log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    exporter: asyncio.Server | None = None
    if args.metrics_port:
        exporter = await server_metrics.serve(args.metrics_port, args.metrics_bind,
                                              metrics.REGISTRY)
    await gateway.start()
    await stop.wait()
    log.event("gateway.stopping", signal="SIGTERM/SIGINT", open_sessions=len(gateway.connections))
    await gateway.stop(args.shutdown_grace)
    if exporter is not None:
        exporter.close()
    return commands.EXIT_OK


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    log = AuditLog()
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(serve(settings, args, log))
    except (ValueError, OSError, RuntimeError) as exc:
        log.event("gateway.start_failed", error=str(exc))
        print(f"sftpd gateway: {exc}", file=sys.stderr)
        return commands.EXIT_FAILED

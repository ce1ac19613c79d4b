"""The operator's configuration from flags and environment (the Helm chart sets the environment)."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass

from district_operator.builders.common import BuildInputs, Resources

ENV_PREFIX = "DISTRICT_OPERATOR_"
DEFAULT_IMAGE = "district-sftp:latest"


def parse_resources(text: str) -> dict[str, str]:
    """`cpu=50m,memory=64Mi` -> {"cpu": "50m", "memory": "64Mi"}; empty -> {}."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise argparse.ArgumentTypeError(
                f"resource {item!r} is not NAME=QUANTITY (for example cpu=50m,memory=64Mi)")
        out[name.strip()] = value.strip()
    return out


# A Secret's name: a DNS subdomain (RFC 1123), as the API server requires.
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def secret_name(text: str) -> str:
    """A pull Secret's name, refused here rather than by every apply of every District."""
    if len(text) > 253 or not _SECRET_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Secret name (lower-case letters, digits, '-' and '.')")
    return text


@dataclass(frozen=True)
class OperatorConfig:
    inputs: BuildInputs
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    resync_seconds: float = 300.0
    metrics_port: int = 8080
    health_port: int = 8081
    peering: str | None = None
    workers: int = 16
    clock_offset_seconds: float = 0.0


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name, default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = BuildInputs(image=DEFAULT_IMAGE)

    def res(resources: Resources) -> tuple[str, str]:
        return (",".join(f"{k}={v}" for k, v in resources.requests.items()),
                ",".join(f"{k}={v}" for k, v in resources.limits.items()))

    server_req, server_lim = res(defaults.server_resources)
    job_req, job_lim = res(defaults.job_resources)
    add = parser.add_argument
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=None,
                       help="watch Districts in this namespace; repeatable "
                            f"(env {ENV_PREFIX}NAMESPACES, comma-separated)")
    scope.add_argument("--all-namespaces", "-A", action="store_true",
                       default=_env("ALL_NAMESPACES", "") in ("1", "true"),
                       help="watch Districts in every namespace")
    add("--image", default=_env("IMAGE", DEFAULT_IMAGE),
        help=f"the data-plane image for servers and jobs (env {ENV_PREFIX}IMAGE)")
    add("--image-pull-policy", default=_env("IMAGE_PULL_POLICY", "IfNotPresent"),
        choices=["Always", "IfNotPresent", "Never"])
    add("--image-pull-secret", action="append", dest="image_pull_secrets", metavar="NAME",
        default=None, type=secret_name,
        help="a Secret in each District's namespace for pulling the data-plane image from a "
             f"private registry; repeatable (env {ENV_PREFIX}IMAGE_PULL_SECRETS, comma-separated)")
    add("--server-requests", type=parse_resources,
        default=parse_resources(_env("SERVER_REQUESTS", server_req)))
    add("--server-limits", type=parse_resources,
        default=parse_resources(_env("SERVER_LIMITS", server_lim)))
    add("--job-requests", type=parse_resources,
        default=parse_resources(_env("JOB_REQUESTS", job_req)))
    add("--job-limits", type=parse_resources,
        default=parse_resources(_env("JOB_LIMITS", job_lim)))
    add("--resync-seconds", type=float, default=float(_env("RESYNC_SECONDS", "300")),
        help="re-check every District this often (drift, referenced Secrets)")
    add("--metrics-port", type=int, default=int(_env("METRICS_PORT", "8080")),
        help="Prometheus /metrics port, 0 to disable")
    add("--health-port", type=int, default=int(_env("HEALTH_PORT", "8081")),
        help="kopf's liveness probe port (/healthz), 0 to disable")
    add("--peering", default=_env("PEERING", "") or None,
        help="kopf peering name: replicas with the same name elect one active operator; "
             "absent: standalone")
    add("--workers", type=int, default=int(_env("WORKERS", "16")),
        help="threads reconciling Districts concurrently")
    add("--clock-offset", type=float, dest="clock_offset_seconds",
        default=float(_env("CLOCK_OFFSET", "0")), metavar="SECONDS",
        help="run the operator's clock this many seconds ahead (or behind, negative): for "
             "drills and tests of spec.processing.expectEvery; 0 in production")


def _env_pull_secrets() -> list[str]:
    names = [n.strip() for n in _env("IMAGE_PULL_SECRETS", "").split(",") if n.strip()]
    try:
        return [secret_name(n) for n in names]
    except argparse.ArgumentTypeError as exc:
        raise SystemExit(f"district-operator: {ENV_PREFIX}IMAGE_PULL_SECRETS: {exc}") from exc


def from_args(args: argparse.Namespace) -> OperatorConfig:
    namespaces = args.namespace or [n for n in _env("NAMESPACES", "").split(",") if n]
    if not namespaces and not args.all_namespaces:
        raise SystemExit("district-operator: give --namespace NS (repeatable) or --all-namespaces")
    return OperatorConfig(
        inputs=BuildInputs(
            image=args.image,
            image_pull_policy=args.image_pull_policy,
            image_pull_secrets=tuple(args.image_pull_secrets or _env_pull_secrets()),
            server_resources=Resources(requests=args.server_requests, limits=args.server_limits),
            job_resources=Resources(requests=args.job_requests, limits=args.job_limits),
        ),
        namespaces=tuple(namespaces),
        all_namespaces=bool(args.all_namespaces and not namespaces),
        resync_seconds=args.resync_seconds,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        peering=args.peering,
        workers=args.workers,
        clock_offset_seconds=args.clock_offset_seconds,
    )

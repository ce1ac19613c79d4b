"""The operator's configuration from flags and environment (the Helm chart sets the environment)."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass

from district_operator import names
from district_operator.builders.common import BuildInputs, Resources
from district_operator.model import HostKeysSpec, ServiceMode, overlap_seconds

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
class GatewayConfig:
    """The shared SSH gateway the chart installed (docs/gateway.md): where the operator
    publishes its routing ConfigMaps and keeps its Secrets, and what district servers in
    shared mode are told about it."""

    namespace: str
    name: str = names.GATEWAY_DEFAULT_NAME
    # The addresses district servers take a PROXY v2 header from (`sftpd serve --proxy-from`):
    # the gateway pods' addresses as the district pods see them, usually the pod network.
    proxy_from: tuple[str, ...] = ()
    # The gateway's host keys: spec.hostKeys.rotate and .overlap of a District, for the gateway.
    host_keys_rotate: str = ""
    host_keys_overlap: str = "7d"

    @property
    def host_keys(self) -> HostKeysSpec:
        """The gateway's rotation settings in the form a District's spec.hostKeys takes (the
        rotate value checked by from_args: a whole number, empty for 0)."""
        rotate = self.host_keys_rotate.strip()
        return HostKeysSpec(rotate=int(rotate) if rotate.isdigit() else 0,
                            overlap=self.host_keys_overlap)


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
    gateway: GatewayConfig | None = None  # None: no gateway installed
    # spec.service.mode for a District that does not say (the chart's districts.serviceMode)
    service_mode: ServiceMode = "dedicated"


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
    add("--service-mode", choices=["dedicated", "shared"],
        default=_env("SERVICE_MODE", "dedicated"),
        help="spec.service.mode of a District that does not set it (env "
             f"{ENV_PREFIX}SERVICE_MODE)")
    add("--gateway-namespace", default=_env("GATEWAY_NAMESPACE", ""), metavar="NS",
        help="the namespace of the shared SSH gateway: its routing ConfigMaps and Secrets are "
             f"written there; empty: no gateway (env {ENV_PREFIX}GATEWAY_NAMESPACE)")
    add("--gateway-name", default=_env("GATEWAY_NAME", names.GATEWAY_DEFAULT_NAME),
        help="the gateway's name: its Service, and the prefix of its ConfigMaps and Secrets")
    add("--gateway-proxy-from", default=_env("GATEWAY_PROXY_FROM", ""), metavar="CIDR[,CIDR]",
        help="the gateway pods' addresses as district servers see them (sftpd serve "
             "--proxy-from); required with --gateway-namespace")
    add("--gateway-host-keys-rotate", default=_env("GATEWAY_HOST_KEYS_ROTATE", ""),
        help="raise this number to rotate the gateway's host keys (as a District's "
             "spec.hostKeys.rotate); empty: 0")
    add("--gateway-host-keys-overlap", default=_env("GATEWAY_HOST_KEYS_OVERLAP", "7d"),
        help="how long the gateway announces its next host keys before they sign")


def _env_pull_secrets() -> list[str]:
    names = [n.strip() for n in _env("IMAGE_PULL_SECRETS", "").split(",") if n.strip()]
    try:
        return [secret_name(n) for n in names]
    except argparse.ArgumentTypeError as exc:
        raise SystemExit(f"district-operator: {ENV_PREFIX}IMAGE_PULL_SECRETS: {exc}") from exc


def from_args(args: argparse.Namespace) -> OperatorConfig:
    gateway = None
    if args.gateway_namespace:
        proxy_from = tuple(c.strip() for c in args.gateway_proxy_from.split(",") if c.strip())
        if not proxy_from:
            raise SystemExit("district-operator: --gateway-namespace needs --gateway-proxy-from "
                             "(the gateway pods' addresses as district servers see them)")
        rotate = args.gateway_host_keys_rotate.strip()
        if rotate and not rotate.isdigit():
            raise SystemExit(f"district-operator: --gateway-host-keys-rotate {rotate!r} is not a "
                             "whole number (raise it to rotate the gateway's host keys)")
        try:
            overlap_seconds(args.gateway_host_keys_overlap)
        except ValueError as exc:
            raise SystemExit(f"district-operator: --gateway-host-keys-overlap: {exc}") from None
        gateway = GatewayConfig(namespace=args.gateway_namespace, name=args.gateway_name,
                                proxy_from=proxy_from,
                                host_keys_rotate=args.gateway_host_keys_rotate,
                                host_keys_overlap=args.gateway_host_keys_overlap)
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
        gateway=gateway,
        service_mode="shared" if args.service_mode == "shared" else "dedicated",
    )

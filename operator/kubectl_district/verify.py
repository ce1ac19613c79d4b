"""`kubectl district verify`: connect as the district would, with a hint per failure."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import ipaddress
import os
import secrets
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from district_contract import layout
from district_operator import keys, names
from district_operator.model import District

from kubectl_district import output
from kubectl_district.authorized import list_keys
from kubectl_district.connectinfo import PublishedHostKey, published_host_keys
from kubectl_district.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PluginError
from kubectl_district.session import Session, published

PASSPHRASE_ENV = "KUBECTL_DISTRICT_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
# A hidden name with a temporary-upload suffix: the epoch processor treats it as an upload in
# flight, so it never gathers or processes it, even in the moment before it is removed.
PROBE_PREFIX = ".kubectl-district-verify-"
PROBE_SUFFIX = layout.TEMPORARY_SUFFIXES[0]
TOP_DIRECTORIES = tuple(d for d in layout.TREE if "/" not in d)

STEP_REACH = "reach the endpoint"
STEP_HOST_KEY = "host key matches"
STEP_LOGIN = "key accepted"
STEP_TREE = "tree visible"
STEP_WRITE = "write in /upload"
STEPS = (STEP_REACH, STEP_HOST_KEY, STEP_LOGIN, STEP_TREE, STEP_WRITE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district")
    parser.add_argument("--identity", "-i", required=True, type=Path, metavar="KEY",
                        help="the district's private key file (the one without .pub); "
                             f"a passphrase is read from ${PASSPHRASE_ENV} or the terminal")
    parser.add_argument("--endpoint", metavar="HOST:PORT",
                        help="connect here instead of the published endpoint (e.g. through "
                             "`kubectl port-forward`); the published host keys still apply")
    parser.add_argument("--bind-address", metavar="ADDRESS",
                        help="local address to connect from (like ssh -b)")
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="seconds to wait for the endpoint and the handshake (default 10)")
    output.add_output_argument(parser)


@dataclass
class Step:
    name: str
    outcome: str = "skipped"  # ok | failed | skipped
    detail: str = ""
    hint: str = ""


@dataclass
class Report:
    district: str
    namespace: str
    login: str
    endpoint: str
    identity: str
    steps: list[Step] = field(default_factory=lambda: [Step(name) for name in STEPS])

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def ok(self, name: str, detail: str) -> None:
        self.step(name).outcome, self.step(name).detail = "ok", detail

    def fail(self, name: str, detail: str, hint: str) -> None:
        step = self.step(name)
        step.outcome, step.detail, step.hint = "failed", detail, hint

    @property
    def passed(self) -> bool:
        return all(s.outcome == "ok" for s in self.steps)


@dataclass(frozen=True)
class Target:
    """Everything known before connecting: where, who, and what the server must prove."""

    district: District
    host: str
    port: int
    host_keys: tuple[PublishedHostKey, ...]
    key_sources: Mapping[str, str]  # fingerprint -> where the District lists it
    service_type: str
    # spec.service.mode shared: the endpoint and host keys are the shared gateway's, which
    # routes by the user name (the District's login) to the District's server.
    shared: bool = False
    login: str = ""

    @property
    def user(self) -> str:
        return self.login or self.district.login


def load_identity(path: Path) -> asyncssh.SSHKey:
    if not path.is_file():
        raise PluginError(f"--identity {path}: no such file", exit_code=EXIT_USAGE)
    text = path.read_text(errors="replace")
    if "PRIVATE KEY" not in text:
        raise PluginError(f"--identity {path} is not a private key",
                          "give the private key file: the one without .pub that `kubectl "
                          "district keygen` wrote", EXIT_USAGE)
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        return asyncssh.import_private_key(text, passphrase)
    except asyncssh.KeyImportError as exc:
        if "Passphrase" not in str(exc) or not sys.stdin.isatty():
            raise PluginError(f"cannot read {path}: {exc}",
                              f"set ${PASSPHRASE_ENV} for a key protected by a passphrase",
                              EXIT_USAGE) from None
    except asyncssh.KeyEncryptionError as exc:
        raise PluginError(f"cannot decrypt {path}: {exc}", exit_code=EXIT_USAGE) from None
    try:
        return asyncssh.import_private_key(text, getpass.getpass(f"Passphrase for {path}: "))
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        raise PluginError(f"cannot decrypt {path}: {exc}", exit_code=EXIT_USAGE) from None


def parse_endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise PluginError(f"--endpoint {text!r}: expected HOST:PORT", exit_code=EXIT_USAGE)
    return host.strip("[]"), int(port)


class _HostKeyCheck(asyncssh.SSHClient):
    """Compares the key the server presents with the published ones, and remembers it."""

    def __init__(self, expected: tuple[PublishedHostKey, ...]) -> None:
        self.expected = {k.public_line.split()[1] for k in expected}
        self.presented: asyncssh.SSHKey | None = None
        self.matched = False

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        self.presented = key
        self.matched = key.export_public_key("openssh").decode().split()[1] in self.expected
        return self.matched


def host_key_algorithms(host_keys: tuple[PublishedHostKey, ...]) -> list[str]:
    """Ask for the published key types, in their order, as OpenSSH does for known hosts."""
    algorithms: list[str] = []
    for key in host_keys:
        algorithms += (["rsa-sha2-512", "rsa-sha2-256"] if key.key_type == "ssh-rsa"
                       else [key.key_type])
    return algorithms


def _fingerprint(key: asyncssh.SSHKey) -> str:
    return keys.parse_authorized_key(key.export_public_key("openssh").decode()).fingerprint


def _refused_hint(target: Target, local_address: str) -> str:
    ranges = target.district.allowed_source_ranges
    if target.shared:
        return ("the shared gateway refused the connection before login: it judges the "
                "District's spec.allowedSourceRanges "
                f"({', '.join(ranges) or 'not set'}) on the address it sees (after NAT; this "
                f"machine connects from {local_address}), and bans an address for a while "
                "after too many failed logins; the gateway's log names the reason "
                "(`connection.refused` or `login.failed`, with this login as `user`)")
    if ranges and not _address_in(local_address, ranges):
        return (f"source address not allowed: this machine connects from {local_address}, "
                f"and spec.allowedSourceRanges allows only {', '.join(ranges)}; add the "
                "district's public address (as the server sees it, after NAT) to "
                "spec.allowedSourceRanges")
    return ("the server refused the connection before login: the address it sees "
            "(after NAT) is not in spec.allowedSourceRanges "
            f"({', '.join(ranges) or 'not set'}), or it is banned for a while after too "
            "many failed logins; the server's audit log names the reason "
            f"(`kubectl logs deploy/{names.deployment(target.district.name)} | grep "
            "connection.refused`)")


def _address_in(address: str, ranges: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
        return any(ip in ipaddress.ip_network(r, strict=False) for r in ranges)
    except ValueError:
        return False


def _unreachable_hint(target: Target, error: str) -> str:
    district = target.district
    if district.suspend:
        return (f"the District is suspended (spec.suspend: true): its server is stopped and "
                "logins are refused; resume it with `kubectl patch district "
                f"{district.name} --type merge -p '{{\"spec\":{{\"suspend\":false}}}}'`")
    if target.shared:
        return (f"nothing answered at the shared gateway {target.host}:{target.port} ({error}): "
                "check that the gateway's pods are ready and its LoadBalancer Service has this "
                "address, and that no firewall between here and it drops SSH")
    if target.service_type == "ClusterIP" or target.host.endswith(".svc"):
        return (f"{target.host} is a cluster-internal name: run verify inside the cluster, or "
                f"`kubectl port-forward svc/{names.service(district.name)} 2222:"
                f"{target.port}` and pass --endpoint 127.0.0.1:2222")
    return (f"nothing answered at {target.host}:{target.port} ({error}): check that the "
            "server is ready (`kubectl district status " + district.name + "`), and that no "
            "firewall between here and the load balancer drops SSH")


def _login_hint(target: Target, identity_fingerprint: str) -> str:
    source = target.key_sources.get(identity_fingerprint)
    name = target.district.name
    if source is not None and target.shared:
        return (f"the key is in the District ({source}) but the gateway or the server did not "
                "accept it yet: the operator publishes keys to the gateway within seconds; if "
                f"this persists, `kubectl district status {name}` shows whether KeysValid or "
                "Routed reports a problem")
    if source is None:
        return (f"key not installed: {identity_fingerprint} is not among the District's keys; "
                f"install its public half with `kubectl district keys add {name} --key "
                "KEY.pub` (or --print-patch for a GitOps repository)")
    return (f"the key is in the District ({source}) but the server did not accept it yet: "
            "the operator rolls keys out within about a minute; if this persists, "
            f"`kubectl district status {name}` shows whether KeysValid reports a problem")


def _reach(target: Target, report: Report, bind_address: str | None,
           timeout: float) -> socket.socket | None:
    """The plain TCP connection, kept apart from SSH so each failure gets its own hint."""
    started = time.monotonic()
    try:
        sock = socket.create_connection((target.host, target.port), timeout,
                                        (bind_address, 0) if bind_address else None)
    except OSError as exc:
        error = "timed out" if isinstance(exc, TimeoutError) else str(exc.strerror or exc)
        report.fail(STEP_REACH, f"{target.host}:{target.port}: {error}",
                    _unreachable_hint(target, error))
        return None
    report.ok(STEP_REACH, f"{target.host}:{target.port} answered in "
                          f"{(time.monotonic() - started) * 1000:.0f} ms")
    return sock


async def _login(target: Target, report: Report, identity: asyncssh.SSHKey,
                 sock: socket.socket, seconds: float) -> None:
    local_address = str(sock.getsockname()[0])
    checker = _HostKeyCheck(target.host_keys)
    identity_fingerprint = _fingerprint(identity)
    try:
        connection = await asyncio.wait_for(asyncssh.connect(
            sock=sock, host=target.host, port=target.port, username=target.user,
            client_factory=lambda: checker, known_hosts=([], [], []),
            server_host_key_algs=host_key_algorithms(target.host_keys),
            client_keys=[identity], agent_path=None, config=None, password=None,
            preferred_auth="publickey", login_timeout=seconds), seconds)
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        _handshake_failed(target, report, checker, identity_fingerprint, local_address, exc)
        return
    async with connection:
        report.ok(STEP_HOST_KEY, _presented(checker) + " matches status.knownHosts")
        report.ok(STEP_LOGIN, f"logged in as {target.user} with "
                              f"{identity_fingerprint}")
        async with connection.start_sftp_client() as sftp:
            await _check_tree(sftp, report)
            if report.step(STEP_TREE).outcome == "ok":
                await _probe_upload(sftp, report)


def _presented(checker: _HostKeyCheck) -> str:
    key = checker.presented
    return "no host key" if key is None else f"{key.get_algorithm()} {_fingerprint(key)}"


def _handshake_failed(target: Target, report: Report, checker: _HostKeyCheck,
                      identity_fingerprint: str, local_address: str, exc: Exception) -> None:
    detail = str(getattr(exc, "reason", "") or exc) or type(exc).__name__
    if checker.presented is not None and not checker.matched:
        published_list = ", ".join(f"{k.key_type} {k.fingerprint}" for k in target.host_keys)
        whose = ("the shared gateway (a wrong --endpoint or DNS name, or someone in between), "
                 "or the gateway's host-key Secret was replaced" if target.shared else
                 "the District's server (a wrong --endpoint or DNS name, or someone in "
                 "between), or its host-keys Secret "
                 f"{names.host_keys_secret(target.district.name)} was replaced")
        report.fail(STEP_HOST_KEY, f"the server presented {_presented(checker)}; "
                                   f"the District publishes {published_list}",
                    f"host key mismatch: this is not {whose}; do not accept the new key until "
                    "you know why")
        return
    if isinstance(exc, asyncssh.KeyExchangeFailed) and checker.presented is None:
        report.fail(STEP_HOST_KEY, f"the server offers none of the published host key types "
                                   f"({', '.join(k.key_type for k in target.host_keys)}): "
                                   f"{detail}",
                    "host key mismatch: this is not the District's server, or its host keys "
                    "were replaced")
        return
    if checker.presented is None:
        report.fail(STEP_HOST_KEY, f"the server closed the connection before showing a host "
                                   f"key: {detail}", _refused_hint(target, local_address))
        return
    report.ok(STEP_HOST_KEY, _presented(checker) + " matches status.knownHosts")
    if isinstance(exc, asyncssh.PermissionDenied):
        report.fail(STEP_LOGIN, f"the server refused {identity_fingerprint} for user "
                                f"{target.user}", _login_hint(target,
                                                                        identity_fingerprint))
        return
    report.fail(STEP_LOGIN, f"the connection failed during login: {detail}",
                "try again; if it persists, the server's log (`kubectl logs deploy/"
                f"{names.deployment(target.district.name)}`) says why")


async def _check_tree(sftp: asyncssh.SFTPClient, report: Report) -> None:
    try:
        entries = set(await sftp.listdir("/"))
    except asyncssh.SFTPError as exc:
        report.fail(STEP_TREE, f"cannot list /: {exc.reason}",
                    "the server's data volume may not be mounted: check `kubectl district "
                    "status` (StorageReady)")
        return
    missing = [d for d in TOP_DIRECTORIES if d not in entries]
    if missing:
        report.fail(STEP_TREE, f"missing: {', '.join('/' + d for d in missing)}",
                    "the server creates the tree at start; restart it with `kubectl rollout "
                    "restart deploy/...` and check its log")
        return
    report.ok(STEP_TREE, ", ".join("/" + d for d in TOP_DIRECTORIES))


async def _probe_upload(sftp: asyncssh.SFTPClient, report: Report) -> None:
    path = f"/{layout.UPLOAD}/{PROBE_PREFIX}{secrets.token_hex(6)}{PROBE_SUFFIX}"
    payload = b"kubectl district verify: this file is removed right away\n"
    try:
        async with sftp.open(path, "wb") as handle:
            await handle.write(payload)
        written = (await sftp.stat(path)).size
    except asyncssh.SFTPError as exc:
        report.fail(STEP_WRITE, f"cannot write {path}: {exc.reason}",
                    "the volume may be full or read-only: `kubectl district status` "
                    "(StorageReady) and the server's log say more")
        await _remove_quietly(sftp, path)
        return
    try:
        await sftp.remove(path)
        left = await sftp.exists(path)
    except asyncssh.SFTPError as exc:
        report.fail(STEP_WRITE, f"wrote {path} but cannot remove it: {exc.reason}",
                    f"remove {path} by hand; it is ignored by processing meanwhile")
        return
    if left or written != len(payload):
        report.fail(STEP_WRITE, f"{path}: wrote {written} of {len(payload)} bytes"
                    + ("; it is still there" if left else ""),
                    "the server's log says why")
        return
    report.ok(STEP_WRITE, f"wrote and removed {path} ({written} bytes)")


async def _remove_quietly(sftp: asyncssh.SFTPClient, path: str) -> None:
    with contextlib.suppress(asyncssh.SFTPError):
        await sftp.remove(path)


def make_target(session: Session, body: Mapping[str, Any], district: District,
                endpoint: str | None) -> Target:
    status = published(body, district.name, "knownHosts",
                       *(() if endpoint else ("endpoint",)))
    if endpoint:
        host, port = parse_endpoint(endpoint)
    else:
        host, port = str(status["endpoint"]["host"]), int(status["endpoint"]["port"])
    entries, _ = list_keys(session, district)
    sources = {e["fingerprint"]: e["source"] for e in entries if e["fingerprint"]}
    published_endpoint = status.get("endpoint") or {}
    return Target(district, host, port, published_host_keys(status["knownHosts"]), sources,
                  district.service.type, shared=published_endpoint.get("mode") == "shared",
                  login=str(published_endpoint.get("user") or district.login))


def _print(report: Report, identity_source: str | None) -> None:
    print(f"Verifying District {report.district} as {report.login}@{report.endpoint} with key "
          f"{report.identity}"
          + (f" ({identity_source})" if identity_source else " (not listed in the District)"))
    width = max(len(s) for s in STEPS)
    for step in report.steps:
        mark = {"ok": "ok", "failed": "FAIL", "skipped": "skip"}[step.outcome]
        print(f"  {mark:<5} {step.name:<{width}}  {step.detail}".rstrip())
        if step.hint:
            print(f"        hint: {step.hint}")
    print("All checks passed: the district can connect and upload." if report.passed else
          "Verification failed.")


def run(args: argparse.Namespace, session: Session) -> int:
    body, district = session.district(args.district)
    identity = load_identity(args.identity)
    target = make_target(session, body, district, args.endpoint)
    report = Report(district.name, district.namespace, target.user,
                    f"{target.host}:{target.port}", _fingerprint(identity))
    sock = _reach(target, report, args.bind_address, args.connect_timeout)
    if sock is not None:
        with sock:
            asyncio.run(_login(target, report, identity, sock, args.connect_timeout))
    if args.output == "table":
        _print(report, target.key_sources.get(report.identity))
    else:
        output.dump({**asdict(report), "passed": report.passed}, args.output)
    return EXIT_OK if report.passed else EXIT_FAILED

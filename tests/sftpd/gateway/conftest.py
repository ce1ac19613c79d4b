"""Two real `sftpd serve` districts behind one real `sftpd gateway`, with their keys and the
routing shards the operator will publish, written here with the contract's encoder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from district_contract import routes

from tests.sftpd.server.conftest import (
    Keys,
    SecretVolume,
    ServerProcess,
    free_port,
    keygen,
    start_server,
)

LOGIN_A = "applegrove.org"
LOGIN_B = "lincoln.k12.example"
GATEWAY_SOURCE = "127.0.0.1"  # where the gateway connects to the backends from


@dataclass
class GatewayProcess:
    """A running `sftpd gateway` with its port and event log."""

    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    metrics_port: int

    def metric(self, name: str) -> float | None:
        """One sample of the gateway's /metrics (name with its labels, as exposed); None when
        it is not there."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
        return None

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [r for r in records if name is None or r["event"] == name]

    def wait_event(self, name: str, match: dict[str, Any] | None = None,
                   timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in reversed(self.events(name)):
                if all(record.get(k) == v for k, v in (match or {}).items()):
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no {name} {match} in the gateway log:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode


@dataclass
class Routes:
    """The routing directory: every entry, written as the shards they belong in."""

    directory: Path
    entries: dict[str, list[routes.RouteEntry]] = field(default_factory=dict)
    shards: int = 16

    def publish(self, entries: list[routes.RouteEntry]) -> None:
        by_shard: dict[int, list[routes.RouteEntry]] = {}
        for entry in entries:
            by_shard.setdefault(routes.shard_of(entry.login, self.shards), []).append(entry)
        for shard in range(self.shards):
            data = routes.encode(by_shard.get(shard, []), shard, self.shards)
            target = self.directory / routes.shard_file(shard)
            if target.exists() and target.read_bytes() == data:
                continue
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)


@dataclass
class District:
    login: str
    keys: Keys
    server: ServerProcess

    def entry(self, *client_keys: Path, **changes: Any) -> routes.RouteEntry:
        fields: dict[str, Any] = {
            "login": self.login, "namespace": f"ns-{self.login.split('.')[0]}",
            "name": self.login.split(".")[0], "backend": f"127.0.0.1:{self.server.port}",
            "authorized_keys": tuple(self.keys.pub(k) for k in (client_keys or
                                                                  (self.keys.client,))),
            "host_keys": (self.keys.pub(self.keys.host_ed25519),)}
        fields.update(changes)
        return routes.RouteEntry(**fields)


@dataclass
class Setup:
    a: District
    b: District
    routes: Routes
    gateway: GatewayProcess
    gateway_key: Path
    host_key: Path

    def fingerprint(self, key: Path) -> str:
        return asyncssh.read_public_key(f"{key}.pub").get_fingerprint()


def district_keys(directory: Path) -> Keys:
    directory.mkdir()
    keys = Keys(directory, keygen(directory / "ssh_host_ed25519_key"),
                keygen(directory / "ssh_host_rsa_key", "rsa"), keygen(directory / "client"),
                keygen(directory / "other"), SecretVolume(directory / "authorized-keys"))
    keys.authorize(keys.client)
    return keys


def start_gateway(base: Path, routes_dir: Path, host_key: Path, gateway_key: Path,
                  *extra: str) -> GatewayProcess:
    port, metrics_port = free_port(), free_port()
    log = base / "gateway.jsonl"
    cmd = [sys.executable, "-m", "sftpd", "gateway", "--routes", str(routes_dir),
           "--host-key", str(host_key), "--gateway-key", str(gateway_key), "--port", str(port),
           "--bind", "127.0.0.1", "--routes-poll", "0.5", "--metrics-port", str(metrics_port),
           "--metrics-bind", "127.0.0.1", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTPD_")}
    stderr = base / "gateway.stderr"
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=stderr.open("wb"), env=env)
    gateway = GatewayProcess(port, log, proc, metrics_port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sftpd gateway exited: {stderr.read_text()}")
        if log.exists() and '"gateway.listening"' in log.read_text():
            return gateway
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("sftpd gateway did not start listening")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("gateway")
    gateway_key = keygen(base / "gateway_key")
    host_key = keygen(base / "gateway_host_ed25519_key")
    started: list[ServerProcess] = []
    districts = []
    for login, name in ((LOGIN_A, "a"), (LOGIN_B, "b")):
        keys = district_keys(base / f"keys-{name}")
        server = start_server(base / f"data-{name}", keys, base / f"audit-{name}.jsonl",
                              "--proxy-from", GATEWAY_SOURCE, "--gateway-key",
                              f"{gateway_key}.pub", "--ban-after", "3", login=login)
        started.append(server)
        districts.append(District(login, keys, server))
    a, b = districts
    routes_dir = base / "routes"
    routes_dir.mkdir()
    table = Routes(routes_dir)
    table.publish([a.entry(), b.entry()])
    gateway = start_gateway(base, routes_dir, host_key, gateway_key, "--ban-after", "3")
    yield Setup(a, b, table, gateway, gateway_key, host_key)
    assert gateway.stop() == 0
    for server in started:
        assert server.stop() == 0

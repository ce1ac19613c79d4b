"""connect-info and verify for a District in shared mode: the gateway's address and host keys,
the District's login as the user name, and a real login through a real `sftpd gateway`.

The operator (a real process, given a gateway) writes the gateway's Secrets and the District's
children and status. Stood in for: the cloud load balancer (the gateway Service's status gets
127.0.0.1), the gateway's pod (`sftpd gateway` runs locally with the host keys and key pair
from the operator's Secrets), the District's pod (`sftpd serve` with the operator's Secrets and
environment), and the routing data, which this test writes itself in the contract's format
(publishing it is the operator's routing part, tested with it)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from district_contract import routes
from district_devtools.ports import free_port
from district_operator import api, keys, names

from tests.conftest import require_binary
from tests.district_operator.conftest import OperatorProcess, make_namespace, wait_for
from tests.kubectl_district.conftest import (
    create_district,
    patch_status,
    plugin,
    public_line,
    secret_files,
    serve_district,
    wait_published,
)
from tests.sftpd.gateway.conftest import GatewayProcess, Routes, start_gateway
from tests.sftpd.server.conftest import ServerProcess

pytestmark = pytest.mark.cluster
NS = "plugin-shared"
GATEWAY_NS = "plugin-shared-gateway"
GATEWAY = "gw"
LOGIN = "maple.k12.example.org"


@dataclass
class Shared:
    gateway: GatewayProcess
    server: ServerProcess
    gateway_host_keys: dict[str, str]
    own_host_keys: dict[str, str]


@pytest.fixture(scope="module")
def shared(crd: Any, kube: api.Kube, client_keys: list[Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    for namespace in (NS, GATEWAY_NS):
        make_namespace(crd, namespace)
    base = tmp_path_factory.mktemp("shared")
    operator = OperatorProcess(NS, base / "operator.log", "--gateway-namespace", GATEWAY_NS,
                               "--gateway-name", GATEWAY, "--gateway-proxy-from", "127.0.0.1")
    try:
        gateway_port = free_port()
        crd.kubectl("-n", GATEWAY_NS, "create", "service", "loadbalancer",
                    names.gateway_service(GATEWAY), f"--tcp={gateway_port}:2222")
        patch_status(crd, "service", GATEWAY_NS, names.gateway_service(GATEWAY),
                     {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}})
        create_district(crd, NS, "maple", login=LOGIN, authorizedKeys=[
            public_line(client_keys[0])], allowedSourceRanges=["127.0.0.0/8"],
            service={"mode": "shared"})
        wait_published(kube, NS, "maple", contains=f"[127.0.0.1]:{gateway_port}")
        wait_for(lambda: secret_files(kube, NS, names.authorized_keys_secret("maple")).get(
            names.GATEWAY_PUBLIC_KEY_FILE), what="maple's copy of the gateway key")
        server = serve_district(kube, NS, "maple", free_port(), base / "maple")
        # The gateway's pod: its host keys and key pair as the operator wrote them.
        gateway_dir = base / "gateway"
        gateway_dir.mkdir()
        host_keys = secret_files(kube, GATEWAY_NS, names.gateway_host_keys_secret(GATEWAY))
        pair = secret_files(kube, GATEWAY_NS, names.gateway_key_secret(GATEWAY))
        for file_name, text in {**host_keys, **pair}.items():
            (gateway_dir / file_name).write_text(text)
            (gateway_dir / file_name).chmod(0o600)
        own = secret_files(kube, NS, names.host_keys_secret("maple"))
        routes_dir = gateway_dir / "routes"
        routes_dir.mkdir()
        Routes(routes_dir).publish([routes.RouteEntry(
            login=LOGIN, namespace=NS, name="maple", backend=f"127.0.0.1:{server.port}",
            authorized_keys=(public_line(client_keys[0]),),
            allowed_sources=("127.0.0.0/8",),
            host_keys=tuple(own[f + ".pub"].strip() for f in names.HOST_KEY_FILES.values()))])
        gateway = start_gateway(
            gateway_dir, routes_dir, gateway_dir / names.HOST_KEY_FILES["ssh-ed25519"],
            gateway_dir / names.GATEWAY_PRIVATE_KEY_FILE,
            "--host-key", str(gateway_dir / names.HOST_KEY_FILES["ssh-rsa"]),
            "--port", str(gateway_port))
        gateway.port = gateway_port
        yield Shared(gateway, server, host_keys, own)
        assert gateway.stop() == 0
        assert server.stop() == 0
    finally:
        operator.stop()
        for namespace in (NS, GATEWAY_NS):
            crd.kubectl("delete", "namespace", namespace, "--wait=false")


def fingerprints(files: dict[str, str]) -> set[str]:
    return {k.fingerprint for k in keys.describe_host_keys(files)}


def test_connect_info_names_the_gateway_and_the_login(shared: Shared, client_keys: list[Path],
                                                      tmp_path: Path) -> None:
    shown = plugin("connect-info", "maple", "-n", NS, "--identity", str(client_keys[0]))
    assert shown.returncode == 0, shown.stderr
    assert f"127.0.0.1 port {shared.gateway.port} (the shared SSH gateway" in shown.stdout
    assert f"Login:     {LOGIN} (public key authentication only; the gateway routes" in \
        shown.stdout
    facts = json.loads(plugin("connect-info", "maple", "-n", NS, "--identity",
                              str(client_keys[0]), "-o", "json").stdout)
    assert facts["mode"] == "shared" and facts["login"] == LOGIN
    assert facts["port"] == shared.gateway.port
    assert {k["fingerprint"] for k in facts["hostKeys"]} == fingerprints(
        shared.gateway_host_keys)
    assert not {k["fingerprint"] for k in facts["hostKeys"]} & fingerprints(
        shared.own_host_keys)
    assert f"{LOGIN}@127.0.0.1" in facts["commands"]["sftp"]
    # The printed OpenSSH commands, pasted: strict host key checking against the gateway's
    # keys, the login routed to maple's server.
    require_binary("sftp")
    pasted = subprocess.run(
        ["bash", "-c", f"{facts['commands']['knownHosts']}\n{facts['commands']['sftp']}"],
        input="ls /\n", capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert pasted.returncode == 0, pasted.stderr
    assert "upload" in pasted.stdout
    shared.gateway.wait_event("login.succeeded", {"user": LOGIN})


def test_verify_checks_the_gateway_host_key_and_logs_in_through_it(
        shared: Shared, client_keys: list[Path]) -> None:
    before = len(shared.server.events("login.succeeded"))
    checked = plugin("verify", "maple", "-n", NS, "--identity", str(client_keys[0]),
                     "-o", "json")
    report = json.loads(checked.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert report["passed"] and report["login"] == LOGIN
    assert report["endpoint"] == f"127.0.0.1:{shared.gateway.port}"
    host_key = next(s for s in report["steps"] if s["name"] == "host key matches")
    assert any(fp in host_key["detail"] for fp in fingerprints(shared.gateway_host_keys))
    # Through the gateway: the server behind it logged the login as the gateway's, for the
    # client's key.
    logins = shared.server.wait_event("login.succeeded", before + 1)
    assert logins[-1]["via"] == "127.0.0.1" and logins[-1]["user"] == LOGIN


def test_verify_against_the_district_server_itself_is_a_host_key_mismatch(
        shared: Shared, client_keys: list[Path]) -> None:
    """Straight to the District's server (its own host keys): not what the status publishes.
    (From 127.0.0.2: 127.0.0.1 is the gateway's address, from which the server wants the
    PROXY header first.)"""
    checked = plugin("verify", "maple", "-n", NS, "--identity", str(client_keys[0]),
                     "--endpoint", f"127.0.0.1:{shared.server.port}",
                     "--bind-address", "127.0.0.2")
    assert checked.returncode != 0
    assert "host key mismatch: this is not the shared gateway" in checked.stdout


def test_status_says_the_district_is_behind_the_gateway(shared: Shared) -> None:
    shown = plugin("status", "maple", "-n", NS)
    assert shown.returncode == 0, shown.stderr
    assert f"127.0.0.1:{shared.gateway.port}  login {LOGIN}  (through the shared SSH gateway)" \
        in shown.stdout

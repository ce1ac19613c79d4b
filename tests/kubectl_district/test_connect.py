"""connect-info, verify, status and list against the operator's real output and a local sftpd.

The operator (a real process) turns Districts into Secrets, a Deployment and a Service and
publishes their status. Stood in for: the cloud load balancer (the Service's status gets the
address 127.0.0.1, the port is the District's service port) and the pod (`sftpd serve` runs
locally on that port with the host keys and authorized keys from the operator's Secrets and the
allow-list from its Deployment), so the published endpoint is where the server really answers.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from district_devtools.ports import free_port
from district_operator import api, names

from tests.conftest import require_binary
from tests.district_operator.conftest import OperatorProcess, wait_for
from tests.kubectl_district.conftest import (
    create_district,
    district_status,
    environment_with_plugin_on_path,
    fingerprint_of,
    patch_status,
    plugin,
    public_line,
    secret_files,
    serve_district,
    wait_published,
)
from tests.sftpd.server.conftest import ServerProcess

pytestmark = pytest.mark.cluster
LOGIN = "lincoln.k12.example.org"


@pytest.fixture(scope="module")
def lincoln(crd: Any, kube: api.Kube, namespace: str, operator: OperatorProcess,
            client_keys: list[Path], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[ServerProcess]:
    """District lincoln, published at 127.0.0.1:PORT, served there by a local sftpd; its login
    is its domain, as SameGoal names accounts."""
    port = free_port()
    create_district(crd, namespace, "lincoln", login=LOGIN,
                    authorizedKeys=[public_line(client_keys[0])],
                    allowedSourceRanges=["127.0.0.1/32"],
                    service={"type": "LoadBalancer", "port": port})
    # Two more, reconciled meanwhile: a cluster-internal one, and a suspended one.
    create_district(crd, namespace, "jackson", authorizedKeys=[public_line(client_keys[1])],
                    service={"type": "ClusterIP"})
    create_district(crd, namespace, "kennedy", suspend=True, service={"type": "ClusterIP"})
    wait_for(lambda: kube.get("Service", namespace, names.service("lincoln")),
             what="lincoln's Service")
    patch_status(crd, "service", namespace, names.service("lincoln"),
                 {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}})
    wait_published(kube, namespace, "lincoln", contains=f"[127.0.0.1]:{port}")
    server = serve_district(kube, namespace, "lincoln", port,
                            tmp_path_factory.mktemp("lincoln-server"))
    yield server
    assert server.stop() == 0


def md5_of(path: Path) -> str:
    """ssh-keygen's MD5 fingerprint of a key file (`MD5:aa:bb:...`)."""
    out = subprocess.run([require_binary("ssh-keygen"), "-l", "-E", "md5", "-f", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def upload_listing(server: ServerProcess) -> list[str]:
    return sorted(p.name for p in (server.root / "upload").iterdir())


def test_connect_info_commands_work_as_printed(lincoln: ServerProcess, kube: api.Kube,
                                               namespace: str, client_keys: list[Path],
                                               tmp_path: Path) -> None:
    key = client_keys[0]
    shown = plugin("connect-info", "lincoln", "-n", namespace, "--identity", str(key))
    assert shown.returncode == 0, shown.stderr
    host_keys = secret_files(kube, namespace, names.host_keys_secret("lincoln"))
    for file_name in names.HOST_KEY_FILES.values():
        public = tmp_path / f"{file_name}.pub"
        public.write_text(host_keys[f"{file_name}.pub"])
        assert fingerprint_of(public) in shown.stdout
        assert any(fingerprint_of(public) in line and md5_of(public) in line
                   for line in shown.stdout.splitlines()), shown.stdout
    assert f"Login:     {LOGIN} (public key authentication only)" in shown.stdout
    assert f"127.0.0.1 port {lincoln.port}" in shown.stdout
    facts = json.loads(plugin("connect-info", "lincoln", "-n", namespace, "--identity",
                              str(key), "-o", "json").stdout)
    commands = facts["commands"]
    assert commands["sftp"] in shown.stdout and commands["lftp"] in shown.stdout
    ed25519 = next(k for k in facts["hostKeys"] if k["type"] == "ssh-ed25519")
    assert f"ssh-ed25519 255 {ed25519['fingerprint'].removeprefix('SHA256:')}=" in \
        commands["winscp"]

    # The OpenSSH snippet, pasted into a shell in an empty directory: host key checked
    # strictly against the published known_hosts lines.
    require_binary("sftp")
    pasted = subprocess.run(["bash", "-c", f"{commands['knownHosts']}\n{commands['sftp']}"],
                            input="ls /\n", capture_output=True, text=True, cwd=tmp_path,
                            timeout=60)
    assert pasted.returncode == 0, pasted.stderr
    assert "upload-processed" in pasted.stdout
    assert lincoln.events("login.succeeded")[-1]["user"] == LOGIN
    require_binary("lftp")
    lftp = subprocess.run(["bash", "-c", commands["lftp"]], input="cls -1 /\nbye\n",
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert lftp.returncode == 0, lftp.stderr
    assert "downloads/" in lftp.stdout


def test_verify_passes_and_leaves_nothing_in_upload(lincoln: ServerProcess, namespace: str,
                                                    client_keys: list[Path]) -> None:
    before = upload_listing(lincoln)
    result = plugin("verify", "lincoln", "-n", namespace, "--identity", str(client_keys[0]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks passed" in result.stdout
    assert result.stdout.count("  ok ") == 5
    assert upload_listing(lincoln) == before
    # The probe really went through the server: written under a name the epoch processor
    # leaves alone, then removed.
    written = [e["path"] for e in lincoln.events("file.opened") if e.get("mode") == "write"]
    assert len(written) == 1
    probe = written[0].rsplit("/", 1)[1]
    from sftpd.uploads import is_temporary_name

    assert written[0].startswith("/upload/.") and is_temporary_name(probe)

    as_json = json.loads(plugin("verify", "lincoln", "-n", namespace, "--identity",
                                str(client_keys[0]), "-o", "json").stdout)
    assert as_json["passed"] and [s["outcome"] for s in as_json["steps"]] == ["ok"] * 5


def test_verify_names_the_missing_key(lincoln: ServerProcess, namespace: str,
                                      client_keys: list[Path]) -> None:
    stranger = client_keys[3]
    result = plugin("verify", "lincoln", "-n", namespace, "--identity", str(stranger))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("ok") and "host key matches" in line for line in lines)
    assert any(line.strip().startswith("FAIL") and "key accepted" in line for line in lines)
    assert f"key not installed: {fingerprint_of(stranger)}" in result.stdout
    assert "keys add lincoln --key" in result.stdout


def test_verify_host_key_mismatch(lincoln: ServerProcess, kube: api.Kube, namespace: str,
                                  client_keys: list[Path]) -> None:
    jackson = wait_published(kube, namespace, "jackson")
    # jackson's own endpoint is a cluster-internal name: nothing answers from here.
    internal = plugin("verify", "jackson", "-n", namespace, "--identity", str(client_keys[1]),
                      "--connect-timeout", "3")
    assert internal.returncode == 1
    assert "cluster-internal name" in internal.stdout and "port-forward" in internal.stdout
    # Pointed at lincoln's server, jackson's published host keys do not match.
    result = plugin("verify", "jackson", "-n", namespace, "--identity", str(client_keys[1]),
                    "--endpoint", f"127.0.0.1:{lincoln.port}")
    assert result.returncode == 1
    assert "host key mismatch" in result.stdout
    for published in jackson["hostKeys"]:
        if published["type"] == "ssh-ed25519":
            assert published["fingerprint"] in result.stdout
    assert "key accepted" in result.stdout and "skip" in result.stdout
    assert not lincoln.events("login.succeeded") or all(
        e.get("fingerprint") != fingerprint_of(client_keys[1])
        for e in lincoln.events("login.succeeded"))


def test_verify_source_address_not_allowed(lincoln: ServerProcess, namespace: str,
                                           client_keys: list[Path]) -> None:
    result = plugin("verify", "lincoln", "-n", namespace, "--identity", str(client_keys[0]),
                    "--bind-address", "127.0.0.2")
    assert result.returncode == 1
    assert "source address not allowed" in result.stdout
    assert "127.0.0.2" in result.stdout and "127.0.0.1/32" in result.stdout
    lincoln.wait_event("connection.refused")


def test_verify_suspended_district(lincoln: ServerProcess, kube: api.Kube, namespace: str,
                                   client_keys: list[Path]) -> None:
    wait_published(kube, namespace, "kennedy")
    # A suspended District has no server: nothing listens where it would.
    result = plugin("verify", "kennedy", "-n", namespace, "--identity", str(client_keys[0]),
                    "--endpoint", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "the District is suspended" in result.stdout


def test_missing_district_and_missing_status(crd: Any, namespace: str, unwatched: str,
                                             client_keys: list[Path]) -> None:
    create_district(crd, unwatched, "polk", authorizedKeys=[public_line(client_keys[0])])
    for command in (["connect-info", "polk"], ["status", "polk"],
                    ["verify", "polk", "--identity", str(client_keys[0])]):
        result = plugin(*command, "-n", unwatched)
        assert result.returncode == 1, command
        assert "error: District 'polk' has no status yet" in result.stderr, command
        assert "is the operator running" in result.stderr
        result = plugin(*[("nobody" if c == "polk" else c) for c in command], "-n", namespace)
        assert result.returncode == 1
        assert f"District 'nobody' not found in namespace '{namespace}'" in result.stderr
    bad_identity = plugin("verify", "lincoln", "-n", namespace, "--identity",
                          f"{client_keys[0]}.pub")
    assert bad_identity.returncode == 2 and "is not a private key" in bad_identity.stderr


def test_status_and_list(lincoln: ServerProcess, crd: Any, kube: api.Kube,
                         namespace: str) -> None:
    status = plugin("status", "lincoln", "-n", namespace)
    assert status.returncode == 0, status.stderr
    assert f"127.0.0.1:{lincoln.port}" in status.stdout
    for condition in ("Ready", "ServerReady", "KeysValid", "UploadsNeedAttention"):
        assert condition in status.stdout
    facts = yaml.safe_load(plugin("status", "lincoln", "-n", namespace, "-o", "yaml").stdout)
    assert facts["endpoint"] == {"host": "127.0.0.1", "port": lincoln.port, "user": LOGIN,
                                 "mode": "dedicated"}
    assert facts["conditions"] == district_status(kube, namespace, "lincoln")["conditions"]

    # The list, once through kubectl's own plugin mechanism (the pinned kubectl finds
    # kubectl-district on PATH).
    listed = subprocess.run([str(crd.bin_dir / "kubectl"), "district", "list", "-n", namespace],
                            capture_output=True, text=True, timeout=60,
                            env=environment_with_plugin_on_path())
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert {"lincoln", "jackson", "kennedy"} <= set(rows)
    assert "Suspended" in rows["kennedy"]
    assert f"127.0.0.1:{lincoln.port}" in rows["lincoln"]
    everywhere = json.loads(plugin("list", "-A", "-o", "json").stdout)
    assert {d["namespace"] for d in everywhere} >= {namespace}
    assert os.environ.get("KUBECONFIG")

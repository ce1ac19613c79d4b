"""Plugin fixtures: `kubectl-district` as a process, client keys, the operator, a local sftpd."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from district_operator import api, names

from tests.conftest import require_binary
from tests.district_operator.conftest import (
    OperatorProcess,
    apply_yaml,
    district_manifest,
    make_namespace,
    wait_for,
)
from tests.sftpd.server.conftest import Keys, SecretVolume, ServerProcess, start_server

NAMESPACE = "plugin-e2e"
# A namespace no operator watches: Districts there never get a status.
UNWATCHED = "plugin-unwatched"


def plugin(*args: str, input: str | None = None, cwd: Path | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, as a user would."""
    return subprocess.run([require_binary("kubectl-district"), *args], input=input,
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def ssh_keygen(path: Path, kind: str = "ed25519", bits: int | None = None,
               comment: str = "it@district.example") -> Path:
    command = [require_binary("ssh-keygen"), "-q", "-N", "", "-t", kind, "-C", comment,
               "-f", str(path)]
    if bits:
        command += ["-b", str(bits)]
    subprocess.run(command, check=True)
    return path


def fingerprint_of(path: Path) -> str:
    """ssh-keygen's own SHA256 fingerprint of a key file: the reference the plugin must match."""
    out = subprocess.run([require_binary("ssh-keygen"), "-l", "-E", "sha256", "-f", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def public_line(key: Path) -> str:
    return Path(f"{key}.pub").read_text().strip()


@pytest.fixture(scope="session")
def client_keys(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    directory = tmp_path_factory.mktemp("plugin-client-keys")
    return [ssh_keygen(directory / f"id{n}", comment=f"it{n}@district.example")
            for n in range(4)]


@pytest.fixture(scope="session")
def namespace(crd: Any) -> Iterator[str]:
    yield make_namespace(crd, NAMESPACE)
    crd.kubectl("delete", "namespace", NAMESPACE, "--wait=false")


@pytest.fixture(scope="session")
def unwatched(crd: Any) -> Iterator[str]:
    yield make_namespace(crd, UNWATCHED)
    crd.kubectl("delete", "namespace", UNWATCHED, "--wait=false")


@pytest.fixture(scope="session")
def operator(namespace: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    process = OperatorProcess(namespace,
                              tmp_path_factory.mktemp("plugin-operator") / "operator.log")
    yield process
    process.stop()


def create_district(crd: Any, namespace: str, name: str, **spec: Any) -> None:
    apply_yaml(crd, district_manifest(name, namespace, **spec))


def district_status(kube: api.Kube, namespace: str, name: str) -> dict[str, Any]:
    return dict((kube.get(names.KIND, namespace, name) or {}).get("status") or {})


def wait_published(kube: api.Kube, namespace: str, name: str, what: str = "knownHosts",
                   contains: str = "") -> dict[str, Any]:
    return wait_for(lambda: (lambda s: s if contains in str(s.get(what) or "") and s.get(what)
                             else None)(district_status(kube, namespace, name)),
                    timeout=60, what=f"District {name}'s status.{what}")


def secret_files(kube: api.Kube, namespace: str, name: str) -> dict[str, str]:
    secret = wait_for(lambda: kube.get("Secret", namespace, name), what=f"Secret {name}")
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def serve_district(kube: api.Kube, namespace: str, district: str, port: int,
                   directory: Path) -> ServerProcess:
    """`sftpd serve` on a local port as the district's pod runs it: the host keys and authorized
    keys the operator wrote into its Secrets, laid out as the kubelet mounts them, and the
    server settings from the environment of the operator's Deployment."""
    host_keys = secret_files(kube, namespace, names.host_keys_secret(district))
    key_dir = directory / "host-keys"
    key_dir.mkdir(parents=True)
    for file_name, text in host_keys.items():
        (key_dir / file_name).write_text(text)
        (key_dir / file_name).chmod(0o600)
    authorized = SecretVolume(directory / "authorized-keys")
    authorized.publish(secret_files(kube, namespace, names.authorized_keys_secret(district)))
    deployment = wait_for(lambda: kube.get("Deployment", namespace, names.deployment(district)),
                          what="the server's Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    extra: list[str] = []
    for source in (env.get("SFTPD_ALLOWED_SOURCE") or "").split(","):
        if source:
            extra += ["--allowed-source", source]
    # The login the operator set (argparse keeps the last --login, after start_server's own).
    extra += ["--login", env["SFTPD_LOGIN"]]
    if env.get("SFTPD_PROXY_FROM"):
        # Shared mode: behind the gateway, with the gateway key from the same volume.
        extra += ["--proxy-from", env["SFTPD_PROXY_FROM"], "--gateway-key",
                  str(authorized.directory / names.GATEWAY_PUBLIC_KEY_FILE)]
    keys = Keys(key_dir, key_dir / names.HOST_KEY_FILES["ssh-ed25519"],
                key_dir / names.HOST_KEY_FILES["ssh-rsa"], Path("/nonexistent"),
                Path("/nonexistent"), authorized)
    return _start_on(port, directory, keys, extra)


def _start_on(port: int, directory: Path, keys: Keys, extra: list[str]) -> ServerProcess:
    # start_server picks its own free port; the District's Service names ours, so pass it last
    # (argparse keeps the last --port).
    server = start_server(directory / "data", keys, directory / "audit.jsonl", *extra,
                          "--port", str(port))
    server.port = port
    return server


def patch_status(crd: Any, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Write an object's status as the controller that owns it would (a kubelet, a cloud)."""
    crd.kubectl("-n", namespace, "patch", kind, name, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": status}))


def environment_with_plugin_on_path() -> dict[str, str]:
    script = Path(require_binary("kubectl-district"))
    return {**os.environ, "PATH": f"{script.parent}{os.pathsep}{os.environ.get('PATH', '')}"}

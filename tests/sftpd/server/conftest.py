"""A real `sftpd serve` process on a free port, keys laid out like a Secret volume, and clients."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_binary

LOGIN = "lincoln"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, kind: str = "ed25519") -> Path:
    require_binary("ssh-keygen")
    args = ["ssh-keygen", "-q", "-N", "", "-t", kind, "-f", str(path)]
    if kind == "rsa":
        args += ["-b", "3072"]
    subprocess.run(args, check=True)
    return path


@dataclass
class SecretVolume:
    """A directory with the kubelet's layout: name -> ..data/name, ..data -> ..<timestamp>/."""

    directory: Path
    generation: int = 0

    def publish(self, files: dict[str, str]) -> None:
        self.generation += 1
        version = self.directory / f"..2026_11_29_{self.generation:04d}"
        version.mkdir(parents=True)
        for name, text in files.items():
            (version / name).write_text(text)
            link = self.directory / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        tmp = self.directory / "..data_tmp"
        tmp.symlink_to(version.name)
        os.replace(tmp, self.directory / "..data")  # the kubelet's atomic swap


@dataclass
class Keys:
    directory: Path
    host_ed25519: Path
    host_rsa: Path
    client: Path
    other: Path
    authorized: SecretVolume

    def pub(self, key: Path) -> str:
        return key.with_suffix(".pub").read_text().strip()

    def authorize(self, *keys: Path, extra: str = "") -> None:
        lines = [self.pub(k) for k in keys]
        self.authorized.publish({"authorized_keys": extra + "\n".join(lines) + "\n"})

    @property
    def authorized_keys(self) -> Path:
        return self.authorized.directory / "authorized_keys"


@dataclass
class ServerProcess:
    """A running `sftpd serve` with its root, port and audit log."""

    root: Path
    port: int
    metrics_port: int
    log: Path
    proc: subprocess.Popen[bytes]
    extra: list[str] = field(default_factory=list)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            record = json.loads(line)
            if name is None or record["event"] == name:
                out.append(record)
        return out

    def wait_event(self, name: str, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {count}x {name!r} in the audit log:\n{self.log.read_text()}")

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


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    k = Keys(d, keygen(d / "ssh_host_ed25519_key"), keygen(d / "ssh_host_rsa_key", "rsa"),
             keygen(d / "client"), keygen(d / "other"), SecretVolume(d / "authorized-keys"))
    k.authorize(k.client)
    return k


def start_server(root: Path, keys: Keys, log: Path, *extra: str,
                 login: str = LOGIN) -> ServerProcess:
    port, metrics_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "sftpd", "serve", "--root", str(root), "--login", login,
           "--host-key", str(keys.host_ed25519), "--host-key", str(keys.host_rsa),
           "--authorized-keys", str(keys.authorized_keys), "--port", str(port),
           "--bind", "127.0.0.1", "--metrics-port", str(metrics_port),
           "--metrics-bind", "127.0.0.1", *extra]
    out = log.open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTPD_")}
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
    server = ServerProcess(root, port, metrics_port, log, proc, list(extra))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sftpd serve exited: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        if log.exists() and '"server.listening"' in log.read_text():
            return server
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("sftpd serve did not start listening")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[ServerProcess]:
    """The module's server: 127.0.0.2 is outside its allow-list; 127.0.0.3 gets banned fast."""
    base = tmp_path_factory.mktemp("srv")
    srv = start_server(base / "data", keys, base / "audit.jsonl",
                       "--allowed-source", "127.0.0.1/32", "--allowed-source", "127.0.0.3",
                       "--ban-after", "4", "--ban-time", "300", "--max-auth-tries", "3")
    yield srv
    assert srv.stop() == 0


def ssh_options(keys: Keys, key: Path | None = None) -> list[str]:
    return ["-i", str(key or keys.client), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]


def openssh_sftp(server: ServerProcess, keys: Keys, batch: str, key: Path | None = None,
                 *extra: str) -> subprocess.CompletedProcess[str]:
    require_binary("sftp")
    return subprocess.run(
        ["sftp", *ssh_options(keys, key), *extra, "-P", str(server.port), "-b", "-",
         f"{LOGIN}@127.0.0.1"],
        input=batch, capture_output=True, text=True, timeout=60)


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything observable about a tree: type, size, mode, mtime, link target, content."""
    state: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            target = os.readlink(p) if p.is_symlink() else None
            body = p.read_bytes() if p.is_file() and not p.is_symlink() else None
            state[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                               target, body)
    return state


def which_or_skip(name: str) -> str:
    return require_binary(name) if shutil.which(name) is None else str(shutil.which(name))

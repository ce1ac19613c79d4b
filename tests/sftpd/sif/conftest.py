"""Fixtures for the SIF pull tests: the ZIS stand-in as its own process, real sftpd runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from district_devtools.sif.testca import ZonePKI, make_zone_pki

from sftpd import tree

AGENT = "samegoal-agent"
USERNAME = "samegoal"
PASSWORD = "correct horse battery staple"
STUDENTS = 300


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@dataclass
class Zone:
    """One ZIS stand-in process."""

    process: subprocess.Popen[bytes]
    port: int
    journal: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/zone"

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        lines = [json.loads(line) for line in self.journal.read_text().splitlines()]
        return [e for e in lines if kind is None or e["kind"] == kind]


@dataclass
class Zones:
    """Starts stand-in zones for one test and stops them all afterwards."""

    pki: ZonePKI
    directory: Path
    started: list[Zone] = field(default_factory=list)

    def start(self, *, fault: str | None = None, client_cert: bool = False,
              students: int = STUDENTS) -> Zone:
        n = len(self.started)
        port_file = self.directory / f"zone{n}.port"
        journal = self.directory / f"zone{n}.jsonl"
        argv = [sys.executable, "-m", "district_devtools.sif.zis", "--port-file", str(port_file),
                "--cert", str(self.pki.server_cert), "--key", str(self.pki.server_key),
                "--students", str(students), "--journal", str(journal)]
        if client_cert:
            argv += ["--client-ca", str(self.pki.ca_cert)]
        else:
            argv += ["--username", USERNAME, "--password", PASSWORD]
        if fault:
            argv += ["--fault", fault]
        process = subprocess.Popen(argv, env=_env())
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the ZIS stand-in did not start")
            time.sleep(0.05)
        zone = Zone(process, int(port_file.read_text()), journal)
        self.started.append(zone)
        return zone

    def stop(self) -> None:
        for zone in self.started:
            zone.process.terminate()
        for zone in self.started:
            try:
                zone.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                zone.process.kill()
                zone.process.wait()


@pytest.fixture(scope="session")
def zone_pki(tmp_path_factory: pytest.TempPathFactory) -> ZonePKI:
    return make_zone_pki(tmp_path_factory.mktemp("zone-pki"), AGENT)


@pytest.fixture
def zones(zone_pki: ZonePKI, tmp_path: Path) -> Iterator[Zones]:
    started = Zones(zone_pki, tmp_path)
    yield started
    started.stop()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "district"
    tree.ensure_tree(path)
    return path


@pytest.fixture
def basic_auth(tmp_path: Path) -> Path:
    """The Secret as the pod mounts it: username and password (a trailing newline included,
    as `kubectl create secret --from-file` keeps one)."""
    directory = tmp_path / "sif-auth"
    directory.mkdir()
    (directory / "username").write_text(USERNAME + "\n")
    (directory / "password").write_text(PASSWORD)
    return directory


@pytest.fixture
def cert_auth(tmp_path: Path, zone_pki: ZonePKI) -> Path:
    directory = tmp_path / "sif-cert"
    directory.mkdir()
    (directory / "tls.crt").write_bytes(zone_pki.client_cert.read_bytes())
    (directory / "tls.key").write_bytes(zone_pki.client_key.read_bytes())
    return directory


@dataclass
class Run:
    """One finished `sftpd` process: exit code, result line, progress events, stderr."""

    code: int
    result: dict[str, Any] | None
    events: list[dict[str, Any]]
    stderr: str


def run_sftpd(command: str, root: Path, *args: str, timeout: float = 240) -> Run:
    """Run the real `sftpd <command>` console command in its own process."""
    result_file = root.parent / f"{command}-result.json"
    result_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "sftpd", command, "--root", str(root), "--result-file",
            str(result_file), *args]
    proc = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return Run(proc.returncode, result, events, proc.stderr)


def pull(root: Path, zone_url: str, auth: Path | None, ca: Path, *extra: str) -> Run:
    args = ["--zone-url", zone_url, "--source-id", AGENT, "--ca-file", str(ca)]
    if auth is not None:
        args += ["--auth-dir", str(auth)]
    return run_sftpd("sif-pull", root, *args, *extra)


def process_epochs(root: Path, database_url: str) -> Run:
    return run_sftpd("process-epochs", root, "--database-url", database_url,
                     "--settle-seconds", "300")


def upload_entries(root: Path) -> list[str]:
    """Everything in upload/, hidden names included."""
    return sorted(os.listdir(root / tree.UPLOAD))

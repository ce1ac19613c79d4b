"""The README's quick start: `make demo`'s program starts a real node, serves a real sftp login
with the printed command, imports an epoch uploaded with it within about a minute, and Ctrl-C
leaves nothing running and the machine as it found it."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, missing, require_binary

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.timeout(1200)]


def demo_processes(base: Path) -> dict[int, str]:
    """Processes that belong to the demo in `base`: its path in their command line or
    environment, or their root there (containers run in root file systems beneath it)."""
    marker = str(base).encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            root = os.readlink(entry / "root")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if marker in cmdline or marker in environ or root.startswith(str(base)):
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:120]
    return found


def programs_running(text: str) -> list[int]:
    """Processes of this machine whose command line contains text (containers' included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                if text.encode() in cmdline:
                    found.append(int(entry.name))
    return found


def pod_processes() -> list[int]:
    """Processes in the kubelet's pod cgroups (every container of the node)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if "kubepods" in (entry / "cgroup").read_text():
                    found.append(int(entry.name))
    return found


class Lines:
    """The demo's stdout, read by a thread so a wait never blocks on a half-read buffer."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.proc = proc
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def until(self, pattern: str, timeout: float) -> list[str]:
        """Lines up to and including the first that matches, or fail with what was seen."""
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if re.search(pattern, line):
                return self.seen[start:]
        pytest.fail(f"the demo never printed {pattern!r} (exit {self.proc.poll()}):\n"
                    + "\n".join(self.seen))


def stop_demo(proc: subprocess.Popen[str], base: Path | None) -> None:
    """After a failure: stop the demo as a person would, then anything it left behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pid in demo_processes(base) if base else {}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_demo_serves_sftp_and_stops_cleanly(tmp_path: Path) -> None:
    require_binary("sftp")
    if os.geteuid() != 0:
        missing("root, for the demo's real node")
    from district_devtools.localcluster.controlplane import (
        ControlPlaneUnavailable,
        binaries_dir,
    )
    from district_devtools.localcluster.realnode import machine_snapshot
    try:
        binaries_dir()
    except ControlPlaneUnavailable as exc:
        missing(str(exc))
    before = machine_snapshot()
    stderr = (tmp_path / "demo.err").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "district_devtools.demo"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=stderr, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base: Path | None = None
    try:
        lines = Lines(proc)
        command = shlex.split(lines.until(r"^\s+sftp -i ", 900)[-1])
        base = Path(command[command.index("-i") + 1]).parent
        table = lines.until(r"Ctrl-C", 30)
        district_row = next(line for line in table if line.startswith("lincoln "))
        assert district_row.split()[1] == "True", table

        running = demo_processes(base)
        names = " ".join(running.values())
        for program in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                        "kubelet", "kube-proxy", "containerd", "postgres"):
            assert program in names, f"{program} not found among the demo's processes {running}"
        # The operator and the SFTP server run in containers (their own mount namespaces).
        for program in ("district-operator run", "sftpd serve"):
            assert programs_running(program), f"no {program!r} process runs"

        # The printed command as is, plus batch mode and a strict host key check: an epoch
        # the way districts upload one, then the epochs CronJob (every minute) imports it.
        epoch = "20261202-120000"
        upload = tmp_path / "hello.csv"
        upload.write_text("sourcedId,name\n1,smoke\n")
        (tmp_path / "COMPLETE").write_text("")
        login = [*command[:-1], "-b", "-", "-o", "StrictHostKeyChecking=yes",
                 "-o", "BatchMode=yes", command[-1]]
        done = subprocess.run(login, input=f"mkdir /upload/{epoch}\n"
                              f"put {upload} /upload/{epoch}/hello.csv\n"
                              f"put {tmp_path / 'COMPLETE'} /upload/{epoch}/COMPLETE\n"
                              f"ls /upload\n", capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert f"/upload/{epoch}" in done.stdout
        assert (base / "volume" / "upload" / epoch / "hello.csv").read_text() == \
            upload.read_text()
        # Not a recognized format: the CronJob looks at it and reports it waiting for staff.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            listing = subprocess.run([*login[:-1], command[-1]], input="ls /upload\n",
                                     capture_output=True, text=True, timeout=60)
            assert listing.returncode == 0, listing.stderr
            if epoch in _district_field(base, "uploadsNeedingAttention"):
                break
            time.sleep(5)
        else:
            pytest.fail("the epochs CronJob never looked at the upload within 150 s")

        proc.send_signal(signal.SIGINT)
        assert proc.wait(180) == 0
        left = demo_processes(base)
        assert left == {}, f"still running after Ctrl-C: {left}"
        assert not pod_processes(), "container processes still run after Ctrl-C"
        assert not base.exists()
        assert machine_snapshot() == before
    finally:
        stop_demo(proc, base)
        stderr.close()


def _district_field(base: Path, field: str) -> str:
    """A field of the demo District's status, read with the demo's own kubeconfig."""
    kubeconfig = base / "cluster" / "kubeconfig"
    from district_devtools.localcluster.controlplane import binaries_dir
    result = subprocess.run([str(binaries_dir() / "kubectl"), "--kubeconfig", str(kubeconfig),
                             "-n", "districts", "get", "district", "lincoln", "-o",
                             f"jsonpath={{.status.{field}}}"],
                            capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else ""

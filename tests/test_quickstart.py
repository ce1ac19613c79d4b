"""The README's quick start: `make demo`'s program starts, serves a real sftp login, and Ctrl-C
leaves nothing running."""

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

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.timeout(420)]


def demo_processes(base: Path) -> dict[int, str]:
    """Processes that belong to the demo in `base`: its path in their command line or
    environment, or their root there (the SFTP server's pod runs chrooted into it)."""
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
        missing("root, for the demo's mount namespace")
    from district_devtools.localcluster.controlplane import (
        ControlPlaneUnavailable,
        binaries_dir,
    )
    try:
        binaries_dir()
    except ControlPlaneUnavailable as exc:
        missing(str(exc))
    stderr = (tmp_path / "demo.err").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "district_devtools.demo"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=stderr, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base: Path | None = None
    try:
        lines = Lines(proc)
        command = shlex.split(lines.until(r"^\s+sftp -i ", 300)[-1])
        base = Path(command[command.index("-i") + 1]).parent
        table = lines.until(r"Ctrl-C", 30)
        district_row = next(line for line in table if line.startswith("lincoln "))
        assert district_row.split()[1] == "True", table

        running = demo_processes(base)
        names = " ".join(running.values())
        for program in ("etcd", "kube-apiserver", "kube-controller-manager", "postgres",
                        "district_operator.cli", "sftpd"):
            assert program in names, f"{program} not found among the demo's processes {running}"

        upload = tmp_path / "hello.csv"
        upload.write_text("sourcedId,name\n1,smoke\n")
        # The printed command as is, plus batch mode and a strict host key check.
        login = [*command[:-1], "-b", "-", "-o", "StrictHostKeyChecking=yes",
                 "-o", "BatchMode=yes", command[-1]]
        done = subprocess.run(login, input=f"put {upload} /upload/hello.csv\nls /upload\n",
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "/upload/hello.csv" in done.stdout
        assert (base / "volume" / "upload" / "hello.csv").read_text() == upload.read_text()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0
        left = demo_processes(base)
        assert left == {}, f"still running after Ctrl-C: {left}"
        assert not base.exists()
    finally:
        stop_demo(proc, base)
        stderr.close()

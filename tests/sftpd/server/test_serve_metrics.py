"""`sftpd serve`'s /metrics: the jobs' freshness read from the tree, the format, hostile scrapes."""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from tests.sftpd.epochs.conftest import DATA, run_process
from tests.sftpd.server.conftest import Keys, ServerProcess, openssh_sftp


def scrape(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text: str = r.read().decode()
    return text


def sample(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def touched(path: Path, mtime: float, directory: bool = False) -> Path:
    if directory:
        path.mkdir(parents=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
    os.utime(path, (mtime, mtime))
    return path


def test_last_processed_epoch_is_the_newest_processing_json(server: ServerProcess) -> None:
    name = "sftpd_last_processed_epoch_timestamp_seconds"
    processed = server.root / "upload-processed"
    text = scrape(server)
    assert f"# TYPE {name} gauge" in text
    assert sample(text, name) is None  # nothing processed yet: no sample, so no false alert
    day = 86400.0
    base = time.time() - 10 * day
    touched(processed / "2026-11-20" / "processing.json", base)
    touched(processed / "2026-11-21" / "processing.json", base + day)
    assert sample(scrape(server), name) == base + day
    # Newer, but none of them a processed epoch: a directory without processing.json (retention
    # halfway through deleting it), a hidden one, and a loose file.
    touched(processed / "half-deleted", base + 5 * day, directory=True)
    touched(processed / ".sftpd-moving" / "processing.json", base + 6 * day)
    touched(processed / "stray.txt", base + 7 * day)
    assert sample(scrape(server), name) == base + day
    touched(processed / "2026-11-22" / "processing.json", base + 2 * day)
    assert sample(scrape(server), name) == base + 2 * day


@pytest.mark.postgres
def test_last_processed_epoch_follows_a_real_upload_and_process_epochs_run(
        server: ServerProcess, keys: Keys, database_url: str, tmp_path: Path) -> None:
    """The gauge the overdue alert reads, end to end: an upload through OpenSSH's sftp into the
    running server, the real `sftpd process-epochs` importing it into PostgreSQL, one scrape."""
    name = "sftpd_last_processed_epoch_timestamp_seconds"
    epoch = "2026-12-02T0200Z-metrics"
    source = DATA / "v1.1-bulk"
    (tmp_path / "COMPLETE").write_bytes(b"")
    puts = "".join(f"put {f} /upload/{epoch}/{f.name}\n" for f in sorted(source.iterdir()))
    done = openssh_sftp(server, keys, f"mkdir /upload/{epoch}\n{puts}"
                                      f"put {tmp_path / 'COMPLETE'} /upload/{epoch}/COMPLETE\n")
    assert done.returncode == 0, done.stderr
    before = scrape_value(server, name)
    started = time.time()
    run = run_process(server.root, database_url, now=None)  # the real clock, as in a pod
    finished = time.time()
    assert run.code == 0, run.stderr
    assert run.result is not None
    assert [p["name"] for p in run.result["processed"]] == [epoch]
    value = scrape_value(server, name)
    assert value is not None and (before is None or value > before)
    # Processing finished within the run; processedAt (what the operator's status shows) is
    # the run's start, at most the run's length before the gauge.
    assert started - 1 <= value <= finished + 1
    processed_at = datetime.fromisoformat(run.result["processed"][0]["processedAt"]).timestamp()
    assert 0 <= value - processed_at <= finished - started + 1


def scrape_value(server: ServerProcess, name: str) -> float | None:
    return sample(scrape(server), name)


def test_last_backup_is_the_newest_verified_backup(server: ServerProcess) -> None:
    name = "sftpd_last_backup_timestamp_seconds"
    backups = server.root / "downloads" / "backups"
    assert sample(scrape(server), name) is None
    base = time.time() - 5 * 86400.0
    touched(backups / "lincoln-20261120T020000Z.dump", base)
    touched(backups / "lincoln-20261120T020000Z.dump.sha256", base)
    assert sample(scrape(server), name) == base
    # A dump still being written, and one whose checksum (written after pg_restore read it
    # back) is not there yet, are no backup.
    touched(backups / ".incomplete-lincoln-20261122T020000Z.dump.sha256", base + 2 * 86400)
    touched(backups / "lincoln-20261123T020000Z.dump", base + 3 * 86400)
    assert sample(scrape(server), name) == base


def test_process_metrics(server: ServerProcess) -> None:
    text = scrape(server)
    rss = sample(text, "process_resident_memory_bytes")
    assert rss is not None and 5e6 < rss < 1e9
    start = sample(text, "process_start_time_seconds")
    assert start is not None and abs(start - time.time()) < 3600
    fds = sample(text, "process_open_fds")
    assert fds is not None and fds >= 3
    assert (sample(text, "process_cpu_seconds_total") or 0) > 0


def test_exposition_is_valid_prometheus_text(server: ServerProcess, keys: Keys,
                                             promtool: Path) -> None:
    """Every line parses with Prometheus' parsers: promtool's, and prometheus_client's."""
    from prometheus_client.parser import text_string_to_metric_families

    # An operation with a label value, so labelled samples are in the text too.
    assert openssh_sftp(server, keys, "ls /\n").returncode == 0
    text = scrape(server)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["sftpd_logins"].type == "counter"
    assert any(s.labels.get("op") for s in families["sftpd_operations"].samples)
    result = subprocess.run([str(promtool), "check", "metrics"], input=text, text=True,
                            capture_output=True, timeout=60)
    # Exit 3 is lint advice only (naming conventions); a parse error is exit 1.
    assert result.returncode in (0, 3), result.stdout + result.stderr
    assert "error" not in (result.stdout + result.stderr).lower()


def test_hostile_scrapes_are_cut_off_and_the_server_stays_up(server: ServerProcess,
                                                            keys: Keys) -> None:
    port = server.metrics_port
    # A client that connects and sends nothing does not hold up a real scrape.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
        assert sample(scrape(server), "sftpd_open_sessions") is not None
        # An endless request head is refused once it passes the limit, not buffered.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as big:
            with pytest.raises(OSError):
                for _ in range(64):
                    big.sendall(b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 4096 + b"\r\n")
                    time.sleep(0.01)
            assert big.recv(1) == b""
        idle.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        assert idle.recv(12) == b"HTTP/1.1 200"
    for method, path, status in (("POST", "/metrics", 405), ("GET", "/../etc/passwd", 404)):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=b"x" if method == "POST" else None)
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(request, timeout=10)
        assert exc.value.code == status
    assert openssh_sftp(server, keys, "ls /\n").returncode == 0
    assert server.proc.poll() is None


def test_a_flood_of_idle_connections_cannot_keep_a_scrape_out(server: ServerProcess,
                                                              keys: Keys) -> None:
    """Past 16 connections without a request the oldest are hung up on: a scrape still gets in."""
    port = server.metrics_port
    flood = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
    try:
        # The 24 oldest are closed by the server as the newer ones arrive.
        closed: set[socket.socket] = set()
        deadline = time.monotonic() + 8
        while len(closed) < 24 and time.monotonic() < deadline:
            readable, _, _ = select.select([s for s in flood if s not in closed], [], [], 0.2)
            for s in readable:
                with contextlib.suppress(ConnectionResetError):
                    assert s.recv(1) == b""
                closed.add(s)
        assert closed == set(flood[:24])
        # While the 16 newest still wait, a scrape (the liveness probe's GET) is answered.
        assert sample(scrape(server), "sftpd_open_sessions") is not None
        assert openssh_sftp(server, keys, "ls /\n").returncode == 0
    finally:
        for s in flood:
            s.close()


def test_serving_loads_neither_prometheus_client_nor_psycopg() -> None:
    """What `sftpd serve` imports: heavy modules it does not need would cost every District pod."""
    code = ("import sys\n"
            "from sftpd import cli\n"
            "cli.build_parser('serve')\n"
            "import sftpd.server.command\n"
            "heavy = {'prometheus_client', 'psycopg', 'http.server', 'urllib.request',"
            " 'sftpd.backup', 'sftpd.epochs.processor'}\n"
            "print(sorted(heavy & set(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_serving_leaves_out_asyncssh_x509_support() -> None:
    """`sftpd serve` refuses cryptography.x509 (1.2 MiB) before asyncssh's optional import of
    it (which needs pyOpenSSL besides, so it never succeeded); asyncssh loads without it, and the
    jobs' processes are not affected. The server tests run `sftpd serve` this way throughout."""
    code = ("import sys\n"
            "from sftpd import cli\n"
            "try:\n"
            "    cli.main(['serve', '--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('asyncssh' in sys.modules, 'cryptography.x509' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.splitlines()[-1] == "True False"
    job = ("import sys\n"
           "from sftpd import cli\n"
           "try:\n"
           "    cli.main(['retention', '--help'])\n"
           "except SystemExit:\n"
           "    pass\n"
           "import cryptography.x509\n")
    subprocess.run([sys.executable, "-c", job], capture_output=True, timeout=60, check=True)


def test_label_values_survive_any_text(promtool: Path) -> None:
    """Label values are escaped: a quote, a backslash or a newline cannot break the format."""
    from prometheus_client.parser import text_string_to_metric_families

    from sftpd.server.metrics import Registry

    registry = Registry()
    errors = registry.counter("sftpd_errors_total", "SFTP operations refused or failed",
                              ("op", "reason"))
    hostile = 'a "quoted" \\ back\nslash'
    errors.labels("open", hostile).inc(2)
    registry.gauge("sftpd_open_sessions", "SSH connections currently open").set(3)
    text = registry.render([("sftpd_last_backup_timestamp_seconds", "newest backup", "gauge",
                             1.5e9)]).decode()
    result = subprocess.run([str(promtool), "check", "metrics"], input=text, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("sftpd_errors_total", (("op", "open"), ("reason", hostile)))] == 2
    assert samples[("sftpd_open_sessions", ())] == 3
    assert samples[("sftpd_last_backup_timestamp_seconds", ())] == 1.5e9
    with pytest.raises(ValueError, match="only go up"):
        errors.labels("open", "x").inc(-1)

"""Benchmark: memory of an idle `sftpd serve` and of each idle session, beside OpenSSH's sshd.

Starts both servers (as bench/sftp_vs_openssh.py does: same host key, cipher and key
exchange; sftpd with its metrics endpoint on, as in a District pod), logs in once to each
(and scrapes sftpd's /metrics once), and prints for the server's main process its RSS, how much
of it is anonymous (the process's own heap: what each District pod really adds to a node) and
how much is mapped files (the interpreter, libcrypto, shared with every other pod of the same
image on a node), then the growth per idle session (an SFTP channel held open) summed over
the server and every process it forked for the sessions (sshd forks per connection), and the
highest RSS of that process tree while several uploads run at once (what a limit must allow).

A floor is printed beside: `python -c 'import asyncssh'` and a bare interpreter, measured the
same way, since no asyncssh server can be smaller than the library it imports.

    python bench/sftpd_memory.py                 # 100 idle sessions, 8 uploads of 64 MiB
    python bench/sftpd_memory.py --sessions 20 --upload-mib 16   # quicker

Needs root (sshd's ChrootDirectory, a dedicated user) and /usr/sbin/sshd.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sftp_vs_openssh import (
    Target,
    connect_options,
    free_port,
    sftp_batch,
    start_openssh,
    wait_port,
)

FIELDS = ("Rss", "RssAnon", "RssFile", "Pss")


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS split into anonymous and file-backed pages, and PSS, of one process, in KiB."""
    out = {k: 0 for k in FIELDS}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            name = "Rss" if key == "VmRSS" else "RssFile" if key == "RssShmem" else key
            out[name] += int(value.split()[0])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            out["Pss"] = int(line.split()[1])
    return out


def total_kib(target: Target) -> dict[str, int]:
    """The same figures summed over the server and its descendants."""
    total = {k: 0 for k in FIELDS}
    for pid in target.pids():
        try:
            for k, v in status_kib(pid).items():
                total[k] += v
        except OSError:  # a forked process that exited meanwhile
            continue
    return total


def floor_kib(code: str) -> dict[str, int]:
    """The figures of `python -c code` once it has run, in a process of its own."""
    proc = subprocess.Popen([sys.executable, "-c", f"{code}\nimport time\ntime.sleep(60)"])
    try:
        time.sleep(0.5)
        deadline = time.monotonic() + 30
        last = -1
        while time.monotonic() < deadline:  # settled once RSS stops moving
            now = status_kib(proc.pid)
            if now["Rss"] == last:
                return now
            last = now["Rss"]
            time.sleep(0.5)
        return status_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def start_sftpd(work: Path, host_key: Path, client_key: Path) -> tuple[Target, int]:
    """`sftpd serve` as a District pod runs it: with metrics (sftp_vs_openssh.py turns them off)."""
    port, metrics_port = free_port(), free_port()
    auth = work / "sftpd_authorized_keys"
    auth.write_text(client_key.with_suffix(".pub").read_text())
    proc = subprocess.Popen(
        [sys.executable, "-m", "sftpd", "serve", "--root", str(work / "sftpd-root"),
         "--login", "district", "--host-key", str(host_key), "--authorized-keys", str(auth),
         "--port", str(port), "--bind", "127.0.0.1", "--metrics-port", str(metrics_port),
         "--metrics-bind", "127.0.0.1", "--max-sessions", "2000", "--ban-after", "0"],
        stdout=subprocess.DEVNULL)
    wait_port(port)
    wait_port(metrics_port)
    return Target("sftpd (asyncssh)", port, "district", "/upload", proc), metrics_port


def scrape(port: int) -> None:
    """One Prometheus scrape, as the District pod gets every 30 seconds."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        r.read()


async def one_login(target: Target, key: Path) -> None:
    options = connect_options(target, asyncssh.read_private_key(str(key)))
    async with asyncssh.connect(**options) as conn, conn.start_sftp_client() as sftp:
        await sftp.listdir("/")


async def per_session(target: Target, key: Path, sessions: int) -> dict[str, float]:
    """KiB each idle session adds (an SFTP channel open), over the server's process tree."""
    client_key = asyncssh.read_private_key(str(key))
    before = total_kib(target)
    conns: list[asyncssh.SSHClientConnection] = []
    clients = []
    # Fewer logins in flight than sftpd serve's default pre-login limit per address (10).
    gate = asyncio.Semaphore(8)

    async def open_one() -> None:
        async with gate:
            conn = await asyncssh.connect(**connect_options(target, client_key))
            conns.append(conn)
            clients.append(await conn.start_sftp_client())

    await asyncio.gather(*(open_one() for _ in range(sessions)))
    await asyncio.sleep(2)
    after = total_kib(target)
    for conn in conns:
        conn.close()
    await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
    return {k: (after[k] - before[k]) / sessions for k in FIELDS}


def peak_during_uploads(target: Target, key: Path, source: Path, uploads: int) -> int:
    """Highest RSS (KiB) of the server's process tree, sampled while uploads run at once."""
    with ThreadPoolExecutor(uploads) as pool:
        running = [pool.submit(sftp_batch, target, key, f"put {source} {target.upload_dir}/"
                                                        f"peak-{i}.bin\n")
                   for i in range(uploads)]
        peak = 0
        while not all(f.done() for f in running):
            peak = max(peak, total_kib(target)["Rss"])
            time.sleep(0.05)
        for f in running:
            f.result()
    for i in range(uploads):
        sftp_batch(target, key, f"rm {target.upload_dir}/peak-{i}.bin\n")
    return peak


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100, help="idle sessions held open")
    parser.add_argument("--uploads", type=int, default=8, help="concurrent uploads for the peak")
    parser.add_argument("--upload-mib", type=int, default=64, help="size of each upload (MiB)")
    args = parser.parse_args()
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
        print("needs root and /usr/sbin/sshd", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sftpmem-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(work / name)],
                       check=True)
    host_key, key = work / "host", work / "client"
    source = work / "payload.bin"
    source.write_bytes(os.urandom(args.upload_mib * 2**20))
    idle: dict[str, dict[str, int]] = {}
    session: dict[str, dict[str, float]] = {}
    peak: dict[str, int] = {}
    sftpd_target, metrics_port = start_sftpd(work, host_key, key)
    targets = [sftpd_target, start_openssh(work, host_key, key)]
    try:
        for t in targets:
            asyncio.run(one_login(t, key))
            if t is sftpd_target:
                scrape(metrics_port)
            time.sleep(1)  # the login's connection is gone; sshd's forks have exited
            idle[t.name] = status_kib(t.proc.pid)
            session[t.name] = asyncio.run(per_session(t, key, args.sessions))
            peak[t.name] = peak_during_uploads(t, key, source, args.uploads)
    finally:
        for t in targets:
            t.proc.send_signal(signal.SIGTERM)
            t.proc.wait(30)
            t.cpu.remove()
        shutil.rmtree(work, ignore_errors=True)
    floors = {"python -c 'import asyncssh'": floor_kib("import asyncssh"),
              "python -c pass": floor_kib("pass")}

    ours, ref = targets[0].name, targets[1].name
    print(f"\nIdle server after start and one login (main process), MiB; {args.sessions} idle "
          f"sessions for the per-session rows, KiB; Python {sys.version.split()[0]}, "
          f"asyncssh {asyncssh.__version__}")
    print(f"{'':34s} {'RSS':>8s} {'anon':>8s} {'file':>8s} {'PSS':>8s}")
    for name, figures in [(ours, idle[ours]), (ref, idle[ref]), *floors.items()]:
        print(f"{name:34s} " + " ".join(f"{mib(figures[k]):>8s}" for k in FIELDS))
    print(f"\n{'per idle session (KiB)':34s} {'RSS':>8s} {'anon':>8s} {'file':>8s} {'PSS':>8s}")
    for name in (ours, ref):
        print(f"{name:34s} " + " ".join(f"{session[name][k]:8.0f}" for k in FIELDS))
    print(f"\n{'peak RSS, ' + str(args.uploads) + ' uploads of ' + str(args.upload_mib):34s} "
          f"{'MiB':>8s}")
    for name in (ours, ref):
        print(f"{name:34s} {mib(peak[name]):>8s}")
    print("\nsshd's per-session figures are its forked processes (RSS counts the pages they "
          "share with the listener again; PSS splits them); sftpd's are one process's growth.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

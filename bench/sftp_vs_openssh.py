"""Benchmark: `sftpd serve` beside OpenSSH's chrooted internal-sftp, same key type and cipher.

Prints, side by side: upload and download throughput with the OpenSSH sftp client, sessions per
second (connect, auth, list, close) serially and 16 at a time, and server memory per idle session.

    python bench/sftp_vs_openssh.py                 # 1 GiB transfers, 500 idle sessions
    python bench/sftp_vs_openssh.py --size-mib 64 --sessions 100 --idle 100   # quick run

Needs root (sshd's ChrootDirectory, a dedicated user) and /usr/sbin/sshd.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncssh

USER = "sftpbench"
CIPHER = "aes128-gcm@openssh.com"
KEX = "curve25519-sha256"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


@dataclass
class Target:
    name: str
    port: int
    user: str
    upload_dir: str  # as the client sees it
    proc: subprocess.Popen[bytes]

    def pids(self) -> list[int]:
        """The server process and every descendant (sshd forks per connection)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
        return out

    def memory_kib(self) -> tuple[int, int]:
        """(RSS, PSS) summed over the server's processes, in KiB."""
        rss = pss = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            except OSError:
                continue
        return rss, pss


def ssh_opts(key: Path) -> list[str]:
    return ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            "-o", f"KexAlgorithms={KEX}", "-o", "HostKeyAlgorithms=ssh-ed25519", "-c", CIPHER]


def sftp_batch(target: Target, key: Path, batch: str) -> None:
    subprocess.run(["sftp", *ssh_opts(key), "-P", str(target.port), "-b", "-",
                    f"{target.user}@127.0.0.1"], input=batch.encode(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def start_sftpd(work: Path, host_key: Path, client_key: Path) -> Target:
    port = free_port()
    auth = work / "sftpd_authorized_keys"
    auth.write_text(client_key.with_suffix(".pub").read_text())
    proc = subprocess.Popen(
        [sys.executable, "-m", "sftpd", "serve", "--root", str(work / "sftpd-root"),
         "--login", "district", "--host-key", str(host_key), "--authorized-keys", str(auth),
         "--port", str(port), "--bind", "127.0.0.1", "--metrics-port", "0",
         "--max-sessions", "2000", "--ban-after", "0", "--idle-timeout", "3600"],
        stdout=subprocess.DEVNULL)
    wait_port(port)
    return Target("sftpd (asyncssh)", port, "district", "/upload", proc)


def ensure_user() -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-d", "/", "-s", "/usr/sbin/nologin", USER], check=True)
    # useradd leaves the account locked ("!"), which sshd refuses without PAM; "*" only means
    # "no password".
    subprocess.run(["usermod", "-p", "*", USER], check=True)


def start_openssh(work: Path, host_key: Path, client_key: Path) -> Target:
    ensure_user()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    chroot = work / "sshd-root"
    chroot.mkdir()
    # ChrootDirectory must be owned by root and writable by nobody else, all the way up.
    for p in (chroot, *chroot.parents):
        if p.stat().st_uid == 0 and p.stat().st_mode & 0o022 and p != Path("/"):
            os.chmod(p, p.stat().st_mode & ~0o022)
    upload = chroot / "upload"
    upload.mkdir()
    entry = pwd.getpwnam(USER)
    os.chown(upload, entry.pw_uid, entry.pw_gid)
    auth = work / "sshd_authorized_keys"
    auth.write_text(client_key.with_suffix(".pub").read_text())
    port = free_port()
    config = work / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {work}/sshd.pid
AuthorizedKeysFile {auth}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
MaxStartups 2000
MaxSessions 10
Ciphers {CIPHER}
KexAlgorithms {KEX}
HostKeyAlgorithms ssh-ed25519
Subsystem sftp internal-sftp
Match User {USER}
    ChrootDirectory {chroot}
    ForceCommand internal-sftp
    AllowTcpForwarding no
    X11Forwarding no
""")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    return Target("OpenSSH internal-sftp", port, USER, "/upload", proc)


def throughput(target: Target, key: Path, source: Path, size: int) -> tuple[float, float]:
    remote = f"{target.upload_dir}/bench.bin"
    start = time.perf_counter()
    sftp_batch(target, key, f"put {source} {remote}\n")
    up = size / (time.perf_counter() - start)
    sink = source.with_name("download.bin")
    start = time.perf_counter()
    sftp_batch(target, key, f"get {remote} {sink}\nrm {remote}\n")
    down = size / (time.perf_counter() - start)
    sink.unlink()
    return up, down


def sessions_per_second(target: Target, key: Path, count: int, parallel: int) -> float:
    def one(_: int) -> None:
        sftp_batch(target, key, "ls /\n")

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(count)))
    return count / (time.perf_counter() - start)


async def idle_memory(target: Target, key: Path, sessions: int) -> tuple[float, float]:
    """KiB per idle session (RSS delta, PSS delta), each session holding an SFTP channel open."""
    client_key = asyncssh.read_private_key(str(key))
    before = target.memory_kib()
    conns: list[asyncssh.SSHClientConnection] = []
    clients = []
    sem = asyncio.Semaphore(32)

    async def open_one() -> None:
        async with sem:
            conn = await asyncssh.connect("127.0.0.1", target.port, username=target.user,
                                          client_keys=[client_key], known_hosts=None,
                                          agent_path=None, encryption_algs=[CIPHER],
                                          kex_algs=[KEX])
            conns.append(conn)
            clients.append(await conn.start_sftp_client())

    await asyncio.gather(*(open_one() for _ in range(sessions)))
    await asyncio.sleep(2)
    after = target.memory_kib()
    for conn in conns:
        conn.close()
    await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
    return (after[0] - before[0]) / sessions, (after[1] - before[1]) / sessions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="transfer size (MiB)")
    parser.add_argument("--sessions", type=int, default=200, help="sessions per rate test")
    parser.add_argument("--idle", type=int, default=500, help="idle sessions for memory")
    args = parser.parse_args()
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists() or not shutil.which("sftp"):
        print("needs root, /usr/sbin/sshd and the OpenSSH sftp client", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sftpbench-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(work / "host")],
                   check=True)
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(work / "client")],
                   check=True)
    host_key, key = work / "host", work / "client"
    source = work / "payload.bin"
    with source.open("wb") as f:
        chunk = os.urandom(1024 * 1024)
        for _ in range(args.size_mib):
            f.write(chunk)
    size = args.size_mib * 1024 * 1024
    targets = [start_sftpd(work, host_key, key), start_openssh(work, host_key, key)]
    results: dict[str, dict[str, float]] = {}
    try:
        for t in targets:
            sftp_batch(t, key, "ls /\n")  # warm up
            # Memory first, on a server that has not yet grown (and kept) buffers elsewhere.
            rss, pss = asyncio.run(idle_memory(t, key, args.idle))
            up, down = throughput(t, key, source, size)
            serial = sessions_per_second(t, key, args.sessions // 4, 1)
            parallel = sessions_per_second(t, key, args.sessions, 16)
            results[t.name] = {"up": up / 2**20, "down": down / 2**20, "serial": serial,
                               "parallel": parallel, "rss": rss, "pss": pss}
    finally:
        for t in targets:
            t.proc.send_signal(signal.SIGTERM)
            t.proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    ours, ref = results[targets[0].name], results[targets[1].name]
    rows = [("upload MiB/s (sftp put)", "up", "{:.1f}"),
            ("download MiB/s (sftp get)", "down", "{:.1f}"),
            ("sessions/s serial", "serial", "{:.1f}"),
            ("sessions/s 16 at a time", "parallel", "{:.1f}"),
            (f"KiB RSS per idle session ({args.idle})", "rss", "{:.1f}"),
            (f"KiB PSS per idle session ({args.idle})", "pss", "{:.1f}")]
    print(f"\n{args.size_mib} MiB transfers, cipher {CIPHER}, kex {KEX}, ed25519 host key, "
          f"{os.cpu_count()} CPUs")
    print(f"{'':38s} {'sftpd':>12s} {'OpenSSH':>12s} {'ratio':>8s}")
    for label, field, fmt in rows:
        ratio = ours[field] / ref[field] if ref[field] else float("nan")
        print(f"{label:38s} {fmt.format(ours[field]):>12s} {fmt.format(ref[field]):>12s} "
              f"{ratio:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

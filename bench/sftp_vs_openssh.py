"""Benchmark: `sftpd serve` beside OpenSSH's chrooted internal-sftp, same key type and cipher.

Prints, side by side: upload and download throughput with the OpenSSH sftp client, sessions per
second (connect, auth, list, close) serially and 16 at a time, and server memory per idle session.
Every rate is measured --repeat times, the two servers taking turns; the table shows the best run
and the spread (worst-best), since a shared machine's load moves every figure.

Besides wall-clock rates it prints the CPU time each side used, taken from a cpuacct cgroup per
server (forked sshd processes included) and one for the OpenSSH clients: that figure does not
move with the machine's load, and the client's CPU per session bounds any server's sessions/s.
Sessions/s is also measured with an in-process asyncssh client, which starts no processes.

    python bench/sftp_vs_openssh.py                 # 1 GiB transfers, 500 idle sessions, 2 runs
    python bench/sftp_vs_openssh.py --size-mib 64 --sessions 100 --idle 100 --repeat 1  # quick

Needs root (sshd's ChrootDirectory, a dedicated user, cgroups) and /usr/sbin/sshd.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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


class CpuGroup:
    """A cgroup that adds up the CPU time of every process put in it, and of their forks."""

    def __init__(self, name: str) -> None:
        self.path: Path | None = None
        self.v2 = False
        candidates = [(Path("/sys/fs/cgroup/cpuacct"), False), (Path("/sys/fs/cgroup"), True),
                      (Path("/sys/fs/cgroup/unified"), True)]
        for base, v2 in candidates:
            usage = "cpu.stat" if v2 else "cpuacct.usage"
            if (base / usage).exists() or (v2 and (base / "cgroup.controllers").exists()):
                try:
                    path = base / f"{name}-{os.getpid()}"
                    path.mkdir(exist_ok=True)
                except OSError:
                    continue
                if (path / usage).exists():
                    self.path, self.v2 = path, v2
                    return

    @contextlib.contextmanager
    def joined(self) -> Iterator[None]:
        """This process (and so every child it starts meanwhile) in the group, then back out."""
        self.add(os.getpid())
        try:
            yield
        finally:
            if self.path:
                (self.path.parent / "cgroup.procs").write_text(str(os.getpid()))

    def add(self, pid: int) -> None:
        if self.path:
            (self.path / "cgroup.procs").write_text(str(pid))

    def seconds(self) -> float:
        """CPU seconds used so far by the group (NaN when cgroups are not available)."""
        if self.path is None:
            return float("nan")
        if self.v2:
            for line in (self.path / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) / 1e6
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        if self.path:
            for pid in (self.path / "cgroup.procs").read_text().split():
                # Stragglers (none once the servers are stopped) go back to the root group.
                with contextlib.suppress(OSError):
                    (self.path.parent / "cgroup.procs").write_text(pid)
            for _ in range(50):  # sshd's per-connection processes may still be exiting
                try:
                    self.path.rmdir()
                    return
                except OSError:
                    time.sleep(0.1)


@dataclass
class Target:
    name: str
    port: int
    user: str
    upload_dir: str  # as the client sees it
    proc: subprocess.Popen[bytes]
    cpu: CpuGroup = field(init=False)

    def __post_init__(self) -> None:
        self.cpu = CpuGroup(f"sftpbench-server-{self.proc.pid}")
        self.cpu.add(self.proc.pid)

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


def cpu_during(groups: list[CpuGroup], work: Callable[[], float]) -> tuple[float, list[float]]:
    """Run work(); return its result and the CPU seconds each group used meanwhile."""
    before = [g.seconds() for g in groups]
    result = work()
    return result, [g.seconds() - b for g, b in zip(groups, before, strict=True)]


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


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def throughput(target: Target, key: Path, source: Path, size: int) -> dict[str, float]:
    """MiB/s up and down, and the server's CPU milliseconds per MiB each way."""
    remote = f"{target.upload_dir}/bench.bin"
    sink = source.with_name("download.bin")
    mib = size / 2**20
    up, (up_cpu,) = cpu_during([target.cpu], lambda: timed(
        lambda: sftp_batch(target, key, f"put {source} {remote}\n")))
    down, (down_cpu,) = cpu_during([target.cpu], lambda: timed(
        lambda: sftp_batch(target, key, f"get {remote} {sink}\n")))
    sftp_batch(target, key, f"rm {remote}\n")
    sink.unlink()
    return {"up": mib / up, "down": mib / down,
            "up_cpu": 1000 * up_cpu / mib, "down_cpu": 1000 * down_cpu / mib}


def sessions_per_second(target: Target, key: Path, count: int, parallel: int,
                        clients: CpuGroup) -> tuple[float, float, float]:
    """OpenSSH sftp sessions/s, and CPU milliseconds per session of the server and the client."""
    def one(_: int) -> None:
        sftp_batch(target, key, "ls /\n")

    def run() -> float:
        with ThreadPoolExecutor(parallel) as pool:
            return timed(lambda: list(pool.map(one, range(count))))

    # The clients' group counts sftp, the ssh it starts, and this process starting them.
    with clients.joined():
        elapsed, (server_cpu, client_cpu) = cpu_during([target.cpu, clients], run)
    return count / elapsed, 1000 * server_cpu / count, 1000 * client_cpu / count


def connect_options(target: Target, key: asyncssh.SSHKey) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": target.port, "username": target.user,
            "client_keys": [key], "known_hosts": None, "agent_path": None, "config": [],
            "encryption_algs": [CIPHER], "kex_algs": [KEX],
            "server_host_key_algs": ["ssh-ed25519"]}


async def asyncssh_sessions(target: Target, key: Path, count: int, parallel: int) -> float:
    """Sessions/s (connect, auth, list /, close) from an in-process asyncssh client."""
    options = connect_options(target, asyncssh.read_private_key(str(key)))
    gate = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with gate, asyncssh.connect(**options) as conn, \
                conn.start_sftp_client() as sftp:
            await sftp.listdir("/")

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
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
            conn = await asyncssh.connect(**connect_options(target, client_key))
            conns.append(conn)
            clients.append(await conn.start_sftp_client())

    await asyncio.gather(*(open_one() for _ in range(sessions)))
    await asyncio.sleep(2)
    after = target.memory_kib()
    for conn in conns:
        conn.close()
    await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
    return (after[0] - before[0]) / sessions, (after[1] - before[1]) / sessions


ROWS: list[tuple[str, str, str, bool]] = [
    # label, key, format, higher is better
    ("upload MiB/s (sftp put)", "up", "{:.1f}", True),
    ("download MiB/s (sftp get)", "down", "{:.1f}", True),
    ("sessions/s serial (OpenSSH sftp)", "serial", "{:.1f}", True),
    ("sessions/s 16 at a time (OpenSSH sftp)", "parallel", "{:.1f}", True),
    ("sessions/s serial (asyncssh client)", "py_serial", "{:.1f}", True),
    ("sessions/s 16 at a time (asyncssh client)", "py_parallel", "{:.1f}", True),
    ("server CPU ms per MiB up", "up_cpu", "{:.2f}", False),
    ("server CPU ms per MiB down", "down_cpu", "{:.2f}", False),
    ("server CPU ms per session (serial)", "serial_cpu", "{:.2f}", False),
    ("server CPU ms per session (16 at a time)", "parallel_cpu", "{:.2f}", False),
    ("OpenSSH client CPU ms per session (serial)", "client_cpu", "{:.2f}", False),
    ("KiB RSS per idle session", "rss", "{:.1f}", False),
    ("KiB PSS per idle session", "pss", "{:.1f}", False),
]


def measure(target: Target, key: Path, source: Path, size: int, args: argparse.Namespace,
            clients: CpuGroup) -> dict[str, float]:
    row = throughput(target, key, source, size)
    row["serial"], row["serial_cpu"], row["client_cpu"] = sessions_per_second(
        target, key, args.sessions // 4, 1, clients)
    row["parallel"], row["parallel_cpu"], _ = sessions_per_second(
        target, key, args.sessions, 16, clients)
    row["py_serial"] = asyncio.run(asyncssh_sessions(target, key, args.sessions // 4, 1))
    row["py_parallel"] = asyncio.run(asyncssh_sessions(target, key, args.sessions, 16))
    return row


def best(values: list[float], higher: bool) -> float:
    return max(values) if higher else min(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="transfer size (MiB)")
    parser.add_argument("--sessions", type=int, default=200,
                        help="sessions per 16-at-a-time rate test (a quarter of it serially)")
    parser.add_argument("--idle", type=int, default=500, help="idle sessions for memory")
    parser.add_argument("--repeat", type=int, default=2, help="runs of every rate measurement")
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
    load_before = os.getloadavg()
    clients = CpuGroup("sftpbench-clients")
    targets = [start_sftpd(work, host_key, key), start_openssh(work, host_key, key)]
    runs: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
    memory: dict[str, dict[str, float]] = {}
    try:
        for t in targets:
            sftp_batch(t, key, "ls /\n")  # warm up
            # Memory first, on a server that has not yet grown (and kept) buffers elsewhere.
            rss, pss = asyncio.run(idle_memory(t, key, args.idle))
            memory[t.name] = {"rss": rss, "pss": pss}
        for _ in range(args.repeat):
            for t in targets:  # taking turns, so a burst of load hits both
                runs[t.name].append(measure(t, key, source, size, args, clients))
    finally:
        for t in targets:
            t.proc.send_signal(signal.SIGTERM)
            t.proc.wait(30)
            t.cpu.remove()
        clients.remove()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    def cell(name: str, key: str, fmt: str, higher: bool) -> tuple[float, str, str]:
        if key in memory[name]:
            return memory[name][key], fmt.format(memory[name][key]), ""
        values = [r[key] for r in runs[name]]
        top = best(values, higher)
        spread = f"{fmt.format(min(values))}-{fmt.format(max(values))}" if len(values) > 1 else ""
        return top, fmt.format(top), spread

    ours, ref = targets[0].name, targets[1].name
    print(f"\n{args.size_mib} MiB transfers, cipher {CIPHER}, kex {KEX}, ed25519 host key, "
          f"{os.cpu_count()} CPUs, best of {args.repeat} run(s) (spread in brackets), "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"{'':42s} {'sftpd':>22s} {'OpenSSH':>22s} {'ratio':>7s}")
    for label, key_name, fmt, higher in ROWS:
        a, a_text, a_spread = cell(ours, key_name, fmt, higher)
        b, b_text, b_spread = cell(ref, key_name, fmt, higher)
        ratio = a / b if b else float("nan")
        a_text += f" [{a_spread}]" if a_spread else ""
        b_text += f" [{b_spread}]" if b_spread else ""
        print(f"{label:42s} {a_text:>22s} {b_text:>22s} {ratio:>6.2f}x")
    client = min(r["client_cpu"] for r in runs[ours] + runs[ref])
    sshd = min(r["parallel_cpu"] for r in runs[ref])
    if client == client:  # not NaN
        print(f"\nThe OpenSSH sftp+ssh client alone uses {client:.1f} ms CPU per session: with "
              f"{os.cpu_count()} CPUs no server can exceed {1000 / client:.0f} sessions/s serially "
              f"or {1000 * (os.cpu_count() or 1) / client:.0f} sessions/s in parallel with it; "
              f"once the CPUs are the limit, a server using no CPU at all would be at most "
              f"{(client + sshd) / client:.1f}x as fast as sshd ({sshd:.1f} ms per session).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

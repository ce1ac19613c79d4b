"""Benchmark: a district's `sftpd serve` through `sftpd gateway` vs straight to it.

The same OpenSSH sftp client and cipher (aes128-gcm, curve25519) both ways: upload and download
throughput, the two paths taking turns --repeat times (best and worst shown, since a shared
machine's load moves every figure) with each process's CPU time per MiB (the least of the
repeats); sessions per second (connect, log in, list /, close) with
an in-process asyncssh client; and the memory one idle proxied session costs the gateway (and
the district server behind it), from VmRSS before and after --idle sessions.

    python bench/gateway_vs_direct.py                       # 256 MiB, 200 sessions, 300 idle
    python bench/gateway_vs_direct.py --size-mib 64 --sessions 50 --idle 100 --repeat 1

Direct clients connect from 127.0.0.2: 127.0.0.1 is the server's --proxy-from address, which
must start with a PROXY header (the gateway's connections come from there).
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
from contextlib import AsyncExitStack
from pathlib import Path

import asyncssh
from district_contract import routes

CIPHER = "aes128-gcm@openssh.com"
KEX = "curve25519-sha256"
LOGIN = "applegrove.org"
DIRECT_SOURCE = "127.0.0.2"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(path)], check=True)
    return path


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(cmd: list[str], log: Path, ready: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTPD_")}
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if log.exists() and ready in log.read_text():
            return proc
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.05)
    raise RuntimeError(f"{cmd[3]} did not start")


def sftp_batch(port: int, key: Path, batch: str, source: str) -> float:
    started = time.perf_counter()
    subprocess.run(["sftp", "-q", "-i", str(key), "-o", "IdentitiesOnly=yes",
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "BatchMode=yes", "-o", f"Ciphers={CIPHER}", "-o", f"KexAlgorithms={KEX}",
                    "-o", f"BindAddress={source}", "-P", str(port), "-b", "-",
                    f"{LOGIN}@127.0.0.1"], input=batch.encode(), check=True,
                   capture_output=True, timeout=600)
    return time.perf_counter() - started


async def sessions_per_second(port: int, key: Path, count: int, source: str) -> float:
    started = time.perf_counter()
    for _ in range(count):
        async with asyncssh.connect("127.0.0.1", port, username=LOGIN, client_keys=[str(key)],
                                    known_hosts=None, agent_path=None, config=None,
                                    local_addr=(source, 0), encryption_algs=[CIPHER],
                                    kex_algs=[KEX]) as conn, \
                conn.start_sftp_client() as sftp:
            await sftp.listdir("/")
    return count / (time.perf_counter() - started)


async def until_login(port: int, key: Path, seconds: float = 30) -> float:
    """Seconds until key logs in through the gateway (tried every 50 ms)."""
    started = time.perf_counter()
    attempt = 0
    while time.perf_counter() - started < seconds:
        # Each try from its own address: the gateway bans a login and address after
        # --ban-after failures, and the retries before the change arrives are failures.
        attempt += 1
        source = f"127.0.{3 + attempt // 250}.{attempt % 250 + 1}"
        try:
            async with asyncssh.connect("127.0.0.1", port, username=LOGIN,
                                        client_keys=[str(key)], known_hosts=None,
                                        agent_path=None, config=None,
                                        local_addr=(source, 0)) as conn, \
                    conn.start_sftp_client() as sftp:
                await sftp.listdir("/")
                return time.perf_counter() - started
        except (asyncssh.Error, OSError):
            await asyncio.sleep(0.05)
    raise RuntimeError("the new key never got in")


def publish(directory: Path, entries: list[routes.RouteEntry]) -> None:
    """Every shard of the table, each written atomically (only the changed ones rewritten)."""
    by: dict[int, list[routes.RouteEntry]] = {}
    for entry in entries:
        by.setdefault(routes.shard_of(entry.login), []).append(entry)
    for shard in range(routes.SHARDS):
        data = routes.encode(by.get(shard, []), shard)
        target = directory / routes.shard_file(shard)
        if target.exists() and target.read_bytes() == data:
            continue
        target.with_suffix(".tmp").write_bytes(data)
        os.replace(target.with_suffix(".tmp"), target)


def others(count: int, key_line: str) -> list[routes.RouteEntry]:
    return [routes.RouteEntry(f"district{n:05d}.k12.example", f"d{n:05d}", f"d{n:05d}",
                              f"d{n:05d}-sftp.d{n:05d}.svc:22", (key_line, key_line),
                              ("203.0.113.0/24",)) for n in range(count)]


async def idle_cost(port: int, key: Path, count: int, pids: list[int]) -> list[float]:
    """KiB per idle session (logged in, SFTP channel open) for each process in pids."""
    before = [rss_kib(p) for p in pids]
    async with AsyncExitStack() as stack:
        for _ in range(count):
            conn = await stack.enter_async_context(asyncssh.connect(
                "127.0.0.1", port, username=LOGIN, client_keys=[str(key)], known_hosts=None,
                agent_path=None, config=None, encryption_algs=[CIPHER], kex_algs=[KEX]))
            sftp = await stack.enter_async_context(conn.start_sftp_client())
            await sftp.listdir("/")
        await asyncio.sleep(1)
        after = [rss_kib(p) for p in pids]
    return [(a - b) / count for a, b in zip(after, before, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--districts", type=int, default=1000,
                        help="Districts in the routing table for the key-change figure")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    client = keygen(work / "client")
    gateway_key = keygen(work / "gateway_key")
    host = keygen(work / "host")
    gw_host = keygen(work / "gw_host")
    (work / "authorized_keys").write_text(Path(f"{client}.pub").read_text())
    server_port, gateway_port = free_port(), free_port()
    server = start([sys.executable, "-m", "sftpd", "serve", "--root", str(work / "data"),
                    "--login", LOGIN, "--host-key", str(host), "--authorized-keys",
                    str(work / "authorized_keys"), "--port", str(server_port), "--bind",
                    "127.0.0.1", "--metrics-port", "0", "--proxy-from", "127.0.0.1",
                    "--gateway-key", f"{gateway_key}.pub", "--max-sessions", "2000",
                    "--max-unauthenticated-per-source", "100"],
                   work / "server.log", "server.listening")
    (work / "routes").mkdir()
    entry = routes.RouteEntry(LOGIN, "bench", "applegrove", f"127.0.0.1:{server_port}",
                              (Path(f"{client}.pub").read_text().strip(),),
                              host_keys=(Path(f"{host}.pub").read_text().strip(),))
    client_line = Path(f"{client}.pub").read_text().strip()
    table = [entry, *others(args.districts - 1, client_line)]
    publish(work / "routes", table)
    gateway = start([sys.executable, "-m", "sftpd", "gateway", "--routes", str(work / "routes"),
                     "--host-key", str(gw_host), "--gateway-key", str(gateway_key),
                     "--port", str(gateway_port), "--bind", "127.0.0.1",
                     "--max-unauthenticated-per-source", "100"],
                    work / "gateway.log", "gateway.listening")
    try:
        source = work / "payload.bin"
        with source.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        paths = {"direct": (server_port, DIRECT_SOURCE), "gateway": (gateway_port, "127.0.0.1")}
        rates: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[list[float]]] = {}  # ms/MiB: server, gateway
        for _ in range(args.repeat):
            for name, (port, src) in paths.items():
                for what, batch in (("upload", f"put {source} /upload/{name}.bin\n"),
                                    ("download", f"get /upload/{name}.bin {work / 'back.bin'}\n")):
                    before = [cpu_seconds(server.pid), cpu_seconds(gateway.pid)]
                    took = sftp_batch(port, client, batch, src)
                    after = [cpu_seconds(server.pid), cpu_seconds(gateway.pid)]
                    rates.setdefault((name, what), []).append(args.size_mib / took)
                    cpu.setdefault((name, what), []).append(
                        [1000 * (a - b) / args.size_mib for a, b in zip(after, before,
                                                                         strict=True)])
        for name, (port, src) in paths.items():
            rates[(name, "sessions/s")] = [asyncio.run(
                sessions_per_second(port, client, args.sessions, src)) for _ in range(args.repeat)]
        # A key added to a District: the backend's file and the routing shard, as the operator
        # will write them; the time until it logs in through the running gateway.
        added = keygen(work / "added")
        added_line = Path(f"{added}.pub").read_text().strip()
        (work / "authorized_keys").write_text(f"{client_line}\n{added_line}\n")
        started = time.perf_counter()
        publish(work / "routes", [routes.RouteEntry(
            LOGIN, entry.namespace, entry.name, entry.backend, (client_line, added_line),
            host_keys=entry.host_keys), *table[1:]])
        written = time.perf_counter() - started
        reached = written + asyncio.run(until_login(gateway_port, added))
        gw_cost, server_cost = asyncio.run(
            idle_cost(gateway_port, client, args.idle, [gateway.pid, server.pid]))
        load = os.getloadavg()
        print(f"gateway vs direct, {args.size_mib} MiB, {CIPHER}, OpenSSH sftp; "
              f"best of {args.repeat} (worst); load average {load[0]:.1f} {load[1]:.1f} "
              f"{load[2]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'':14}{'direct':>18}{'gateway':>18}{'ratio':>8}")
        for what, unit in (("upload", "MiB/s"), ("download", "MiB/s"), ("sessions/s", "")):
            d, g = rates[("direct", what)], rates[("gateway", what)]
            print(f"{what:14}{max(d):>9.1f} ({min(d):5.1f}){max(g):>11.1f} ({min(g):5.1f})"
                  f"{max(g) / max(d):>7.2f}x {unit}")
        for what in ("upload", "download"):
            # The least of the repeats: what the work costs with the least interference.
            d = [min(run[i] for run in cpu[("direct", what)]) for i in (0, 1)]
            g = [min(run[i] for run in cpu[("gateway", what)]) for i in (0, 1)]
            print(f"CPU ms per MiB, {what}: direct: server {d[0]:.1f}; through the gateway: "
                  f"server {g[0]:.1f} + gateway {g[1]:.1f}")
        print(f"a key added to one of {args.districts} Districts ({routes.SHARDS} shards) logs "
              f"in through the gateway after {reached:.2f} s (shards written in "
              f"{written * 1000:.0f} ms; the gateway polls every second)")
        print(f"idle proxied session ({args.idle} open): gateway {gw_cost:.1f} KiB each, "
              f"district server behind it {server_cost:.1f} KiB each")
    finally:
        for proc in (gateway, server):
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)  # the payload is --size-mib MiB
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: `sftpd serve` under attack: an honest client's latency and the server's memory.

For each attack (issue 14's items 3, 4, 5, 8 and 14), while it runs, a second process logs in
with asyncssh, lists /downloads and logs out, again and again; the table prints that honest
client's login+list latency (median, p95, max, and failed or timed-out tries) and the server's
peak RSS (sampled every 10 ms) during the attack, beside an idle baseline measured the same way
in the same run against the same server process. The attacks:

- idle: nothing (the reference);
- 3: hundreds of idle TCP connections from one stranger's address that never say a word;
- 4: one SFTP READ of 512 MiB on a big file (sent raw: asyncssh's own read splits requests);
- 5a: copy-data from a handle onto itself, overlapping, to end of file (bounded by a tmpfs);
- 5b: copy-data of 192 MiB from a big file into /upload;
- 8: one session opening thousands of handles and holding them;
- 14: thousands of SFTP channels opened on one connection and held.

The bench runs against whatever `sftpd serve` it finds (the tree on PYTHONPATH) with its
default limits and prints figures only; where the server refuses part of an attack, the
"attack" column says how much of it got through. Everything is on loopback, bounded in count
and time, and stops by itself (about a minute and a half with the defaults).

    python bench/sftpd_under_attack.py
    python bench/sftpd_under_attack.py --seconds 4 --sockets 200 --handles 2000 --channels 500
    python bench/sftpd_under_attack.py --attacks 3,14     # those two (and the idle phases)

The server's tree is a tmpfs of --tmpfs-mib when the bench may mount one (root), so that a copy
that never ends fills that and not the machine's disk; without it the copy attacks are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

LOGIN = "bench"
MIB = 1 << 20
BIG_FILE_MIB = 600
STRANGER = "127.0.0.9"  # the attacker's source address; the honest client uses 127.0.0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the honest client, in its own process so the attacks' event loop cannot slow it -------

async def probe(port: int, key: str, seconds: float, try_seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            async with asyncio.timeout(try_seconds):
                async with asyncssh.connect("127.0.0.1", port, username=LOGIN,
                                            client_keys=[key], known_hosts=None,
                                            agent_path=None) as conn, \
                        conn.start_sftp_client() as sftp:
                    await sftp.listdir("/downloads")
            latencies.append(time.monotonic() - start)
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            failures.append(type(exc).__name__)
        await asyncio.sleep(0.1)
    return {"latencies": latencies, "failures": failures}


def run_probe(args: argparse.Namespace) -> int:
    result = asyncio.run(probe(args.port, args.key, args.seconds, args.timeout))
    print(json.dumps(result))
    return 0


# ---- the server and its memory -------------------------------------------------------------

def rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """Samples a process's RSS every 10 ms in a thread and keeps the highest value."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Bench:
    workdir: Path
    root: Path
    client_key: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    can_fill: bool = False
    rows: list[tuple[str, dict[str, Any], int, str]] = field(default_factory=list)

    def start_server(self) -> None:
        host_key = self.workdir / "host_ed25519"
        host_key.write_bytes(asyncssh.generate_private_key("ssh-ed25519")
                             .export_private_key())
        authorized = self.workdir / "authorized_keys"
        authorized.write_bytes(asyncssh.read_private_key(str(self.client_key))
                               .export_public_key())
        self.port = free_port()
        log = (self.workdir / "audit.jsonl").open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SFTPD_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sftpd", "serve", "--root", str(self.root), "--login", LOGIN,
             "--host-key", str(host_key), "--authorized-keys", str(authorized),
             "--port", str(self.port), "--bind", "127.0.0.1", "--metrics-port", "0"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while b'"server.listening"' not in (self.workdir / "audit.jsonl").read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sftpd serve did not start: "
                                   + (self.workdir / "audit.jsonl").read_text()[-2000:])
            time.sleep(0.05)

    def stop_server(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def phase(self, name: str, seconds: float, try_seconds: float,
                    attack: Callable[[float], Awaitable[str]] | None) -> None:
        assert self.proc is not None
        await asyncio.sleep(1.0)  # let the previous phase's connections go
        with PeakRSS(self.proc.pid) as peak:
            prober = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--probe", "--port", str(self.port),
                "--key", str(self.client_key), "--seconds", str(seconds),
                "--timeout", str(try_seconds), stdout=asyncio.subprocess.PIPE)
            deadline = time.monotonic() + seconds + 1.0
            outcome = "-"
            if attack is not None:
                try:
                    outcome = await asyncio.wait_for(attack(deadline), seconds + try_seconds + 10)
                except TimeoutError:
                    outcome = "attack still running when stopped"
                except (OSError, asyncssh.Error) as exc:
                    outcome = f"attacker: {type(exc).__name__}: {exc}"[:90]
            out, _ = await prober.communicate()
        result = json.loads(out) if out.strip() else {"latencies": [], "failures": ["none"]}
        alive = self.proc.poll() is None
        self.rows.append((name, result, peak.peak, outcome if alive else outcome + "; SERVER DIED"))
        print(f"  {name}: done ({outcome})", file=sys.stderr, flush=True)
        if not alive:
            self.start_server()

    def connect(self) -> Any:
        return asyncssh.connect("127.0.0.1", self.port, username=LOGIN,
                                client_keys=[str(self.client_key)], known_hosts=None,
                                agent_path=None, local_addr=(STRANGER, 0))


# ---- the attacks ---------------------------------------------------------------------------

async def hold_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


def peer_state(sock: socket.socket, greeted: bool) -> str:
    """"closed" when the server has closed the socket (whatever it sent first), "greeted" when
    it sent its version line and keeps the connection, else "pending" (not accepted yet)."""
    try:
        while data := sock.recv(65536):
            greeted = greeted or data.startswith(b"SSH-")
    except (BlockingIOError, InterruptedError):
        return "greeted" if greeted else "pending"
    except OSError as exc:
        # Not connected yet (still waiting in the listen backlog) is not closed.
        return "pending" if exc.errno == errno.ENOTCONN else "closed"
    return "closed"


def idle_sockets(bench: Bench, count: int) -> Callable[[float], Awaitable[str]]:
    async def attack(deadline: float) -> str:
        socks: list[socket.socket] = []
        try:
            for _ in range(count):
                sock = socket.socket()
                sock.bind((STRANGER, 0))
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", bench.port))
                socks.append(sock)
            # Connections beyond the listen backlog wait for a SYN retry: poll until settled.
            states = ["pending"] * count
            settle_by = min(deadline, time.monotonic() + 6.0)
            while time.monotonic() < settle_by:
                await asyncio.sleep(0.5)
                states = [state if state == "closed" else
                          peer_state(sock, state == "greeted")
                          for sock, state in zip(socks, states, strict=True)]
            await hold_until(deadline)
            return (f"{states.count('greeted')} of {count} held open by the server, "
                    f"{states.count('closed')} refused, {states.count('pending')} never accepted")
        finally:
            for sock in socks:
                sock.close()
    return attack


def huge_read(bench: Bench, mib: int) -> Callable[[float], Awaitable[str]]:
    async def attack(deadline: float) -> str:
        async with bench.connect() as conn, conn.start_sftp_client() as sftp:
            f = await sftp.open("/downloads/big.bin", "rb")
            start = time.monotonic()
            try:
                data, _ = await sftp._handler.read(f._handle, 0, mib * MIB)
                what = f"got {len(data) / MIB:.0f} MiB back"
            except (OSError, asyncssh.Error) as exc:
                what = f"{type(exc).__name__}: {exc}"[:50]
            took = time.monotonic() - start
            await hold_until(deadline)
            return f"1 READ of {mib} MiB: {what} in {took:.1f} s"
    return attack


def copy_onto_itself(bench: Bench) -> Callable[[float], Awaitable[str]]:
    async def attack(deadline: float) -> str:
        if not bench.can_fill:
            return "skipped (no tmpfs: needs root)"
        async with bench.connect() as conn, conn.start_sftp_client() as sftp:
            if not sftp.supports_remote_copy:
                return "server has no copy-data"
            await sftp.makedirs("/upload/attack", exist_ok=True)
            f = await sftp.open("/upload/attack/self.bin", "w+b")
            await f.write(b"x" * MIB)
            start = time.monotonic()
            try:
                async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                    await sftp._handler.copy_data(f._handle, 0, 0, f._handle, MIB)
                what = "finished"
            except TimeoutError:
                what = "still copying at the end"
            except (OSError, asyncssh.Error) as exc:
                what = f"{type(exc).__name__}: {exc}"[:70]
            took = time.monotonic() - start
            try:
                attrs = await sftp.stat("/upload/attack/self.bin")
                size = f"file {(attrs.size or 0) / MIB:.0f} MiB"
                await sftp.remove("/upload/attack/self.bin")
            except asyncssh.SFTPNoSuchFile:
                size = "file gone"  # the server removes an upload that failed on a full disk
            await hold_until(deadline)
            return f"overlapping copy: {what} after {took:.1f} s, {size}"
    return attack


def large_copy(bench: Bench, mib: int) -> Callable[[float], Awaitable[str]]:
    async def attack(deadline: float) -> str:
        if not bench.can_fill:
            return "skipped (no tmpfs: needs root)"
        async with bench.connect() as conn, conn.start_sftp_client() as sftp:
            if not sftp.supports_remote_copy:
                return "server has no copy-data"
            await sftp.makedirs("/upload/attack", exist_ok=True)
            src = await sftp.open("/downloads/big.bin", "rb")
            dst = await sftp.open("/upload/attack/copy.bin", "wb")
            start = time.monotonic()
            try:
                await sftp._handler.copy_data(src._handle, 0, mib * MIB, dst._handle, 0)
                what = "done"
            except (OSError, asyncssh.Error) as exc:
                what = f"{type(exc).__name__}: {exc}"[:50]
            took = time.monotonic() - start
            with contextlib.suppress(asyncssh.SFTPError):
                await dst.close()
                await sftp.remove("/upload/attack/copy.bin")
            await hold_until(deadline)
            return f"copy of {mib} MiB: {what} in {took:.1f} s"
    return attack


def many_handles(bench: Bench, count: int) -> Callable[[float], Awaitable[str]]:
    async def attack(deadline: float) -> str:
        async with bench.connect() as conn, conn.start_sftp_client() as sftp:
            opened = 0
            refusal = ""
            batch = 100
            while opened < count and not refusal:
                results = await asyncio.gather(
                    *(sftp._handler.open(b"/downloads/small.csv", asyncssh.FXF_READ,
                                         asyncssh.SFTPAttrs())
                      for _ in range(min(batch, count - opened))), return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException):
                        refusal = f"{type(result).__name__}: {result}"[:40]
                    else:
                        opened += 1
            await hold_until(deadline)
            return f"{opened} handles held" + (f", then {refusal}" if refusal else "")
    return attack


def many_channels(bench: Bench, count: int) -> Callable[[float], Awaitable[str]]:
    async def attack(deadline: float) -> str:
        async with bench.connect() as conn:
            clients = []
            refusal = ""
            for _ in range(count):
                try:
                    clients.append(await conn.start_sftp_client())
                except (OSError, asyncssh.Error) as exc:
                    refusal = f"{type(exc).__name__}: {exc}"[:40]
                    break
            await hold_until(deadline)
            for client in clients:
                client.exit()
            return f"{len(clients)} channels held" + (f", then {refusal}" if refusal else "")
    return attack


# ---- set-up and report ---------------------------------------------------------------------

@contextlib.contextmanager
def server_tree(workdir: Path, tmpfs_mib: int) -> Iterator[tuple[Path, bool]]:
    root = workdir / "root"
    root.mkdir()
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={tmpfs_mib}m", "tmpfs",
                                  str(root)], capture_output=True).returncode == 0
    try:
        (root / "downloads").mkdir()
        (root / "upload").mkdir()
        (root / "downloads" / "small.csv").write_text("id\n1\n")
        # Sparse: as big as an attacker needs, costing neither disk nor tmpfs pages.
        with (root / "downloads" / "big.bin").open("wb") as f:
            f.truncate(BIG_FILE_MIB * MIB)
        for i in range(20):
            (root / "downloads" / f"report-{i:02d}.csv").write_text("id\n1\n")
        yield root, mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(root)], check=False)


def figures(result: dict[str, Any]) -> tuple[str, ...]:
    lat = sorted(result["latencies"])
    fails = len(result["failures"])
    if not lat:
        return (f"0/{fails}", "-", "-", "-")
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    return (f"{len(lat)}/{len(lat) + fails}", f"{statistics.median(lat) * 1000:.0f}",
            f"{p95 * 1000:.0f}", f"{lat[-1] * 1000:.0f}")


def report(bench: Bench, args: argparse.Namespace) -> None:
    print(f"sftpd serve under attack: honest client = asyncssh login + list /downloads + logout "
          f"in a loop for {args.seconds:.0f} s per phase (timeout {args.timeout:.0f} s per try), "
          f"from 127.0.0.1; attacker from {STRANGER}; {os.cpu_count()} CPUs shared with the "
          "bench itself.")
    head = ("phase", "ok/tries", "median ms", "p95 ms", "max ms", "peak RSS MiB", "attack")
    rows = [(name, *figures(result), f"{peak / MIB:.0f}", outcome)
            for name, result, peak, outcome in bench.rows]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head) - 1)]
    for row in [head, *rows]:
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row[:-1], widths, strict=True))]
        print("  ".join(cells) + "  " + str(row[-1]))
    for name, result, _, _ in bench.rows:
        if result["failures"]:
            kinds = {k: result["failures"].count(k) for k in sorted(set(result["failures"]))}
            print(f"  {name}: honest tries that failed: {kinds}")


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="sftpd-attack-") as tmp:
        workdir = Path(tmp)
        client_key = workdir / "client"
        client_key.write_bytes(asyncssh.generate_private_key("ssh-ed25519")
                               .export_private_key())
        with server_tree(workdir, args.tmpfs_mib) as (root, mounted):
            bench = Bench(workdir, root, client_key, can_fill=mounted)
            bench.start_server()
            try:
                phases: list[tuple[str, Callable[[float], Awaitable[str]] | None]] = [
                    ("idle baseline", None),
                    (f"3: {args.sockets} idle unauthenticated sockets",
                     idle_sockets(bench, args.sockets)),
                    ("4: one 512 MiB READ", huge_read(bench, 512)),
                    ("5a: copy-data onto itself", copy_onto_itself(bench)),
                    ("5b: copy-data of 192 MiB", large_copy(bench, 192)),
                    (f"8: {args.handles} handles, one session", many_handles(bench, args.handles)),
                    (f"14: {args.channels} channels, one connection",
                     many_channels(bench, args.channels)),
                    ("idle again", None),
                ]
                wanted = set(args.attacks.split(",")) if args.attacks else None
                for name, attack in phases:
                    if attack is None or wanted is None or name.split(":")[0] in wanted:
                        await bench.phase(name, args.seconds, args.timeout, attack)
            finally:
                bench.stop_server()
            report(bench, args)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=8, help="length of each phase")
    parser.add_argument("--timeout", type=float, default=15, help="honest try timeout")
    parser.add_argument("--sockets", type=int, default=300)
    parser.add_argument("--handles", type=int, default=5000)
    parser.add_argument("--channels", type=int, default=2000)
    parser.add_argument("--tmpfs-mib", type=int, default=256)
    parser.add_argument("--attacks", help="only these, comma-separated (e.g. 3,14); the idle "
                                          "phases always run")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return run_probe(args)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())

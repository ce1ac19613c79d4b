"""Benchmark: the gateway's CPU per MiB, this tree's `sftpd gateway` beside another tree's.

Both gateways stand in front of one `sftpd serve` (this tree's) and take turns carrying the same
OpenSSH sftp transfers (aes128-gcm, curve25519) up and down; each transfer's CPU time of the
gateway that carried it (from /proc/<pid>/stat) per MiB is the figure, the least and the median
of --repeat transfers, with the load average. On a shared machine CPU per MiB is the steady
figure where throughput is not.

    git archive main | tar -x -C /tmp/main-tree
    python bench/gateway_cpu.py --reference /tmp/main-tree --size-mib 64 --repeat 6

Each gateway runs from its own tree (its directory on PYTHONPATH and as the working directory,
so `python -m sftpd` imports that tree's code).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from district_contract import routes
from gateway_vs_direct import LOGIN, cpu_seconds, free_port, keygen, publish, sftp_batch, start

HERE = Path(__file__).resolve().parent.parent


def tree_path(tree: Path) -> str:
    return ":".join(str(tree / part) for part in ("", "operator", "contract", "devtools"))


def start_gateway(tree: Path, work: Path, host_key: Path,
                  gateway_key: Path) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    saved_path, saved_dir = os.environ.get("PYTHONPATH"), os.getcwd()
    os.environ["PYTHONPATH"] = tree_path(tree)
    os.chdir(tree)
    try:
        proc = start([sys.executable, "-m", "sftpd", "gateway", "--routes", str(work / "routes"),
                      "--host-key", str(host_key), "--gateway-key", str(gateway_key), "--port",
                      str(port), "--bind", "127.0.0.1", "--metrics-port", "0"],
                     work / f"gateway-{port}.log", "gateway.listening")
    finally:
        os.chdir(saved_dir)
        if saved_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_path
    return port, proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True,
                        help="another source tree of district-sftp (e.g. main, exported)")
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=6)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gateway-cpu-"))
    client, gateway_key = keygen(work / "client"), keygen(work / "gateway_key")
    host, gateway_host = keygen(work / "host"), keygen(work / "gateway_host")
    (work / "authorized_keys").write_text(Path(f"{client}.pub").read_text())
    server_port = free_port()
    server = start([sys.executable, "-m", "sftpd", "serve", "--root", str(work / "data"),
                    "--login", LOGIN, "--host-key", str(host), "--authorized-keys",
                    str(work / "authorized_keys"), "--port", str(server_port), "--bind",
                    "127.0.0.1", "--metrics-port", "0", "--proxy-from", "127.0.0.1",
                    "--gateway-key", f"{gateway_key}.pub"], work / "server.log",
                   "server.listening")
    (work / "routes").mkdir()
    publish(work / "routes", [routes.RouteEntry(
        LOGIN, "bench", "applegrove", f"127.0.0.1:{server_port}",
        (Path(f"{client}.pub").read_text().strip(),),
        host_keys=(Path(f"{host}.pub").read_text().strip(),))])
    gateways: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        for name, tree in (("reference", args.reference.resolve()), ("this tree", HERE)):
            gateways[name] = start_gateway(tree, work, gateway_host, gateway_key)
        payload = work / "payload.bin"
        with payload.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        cpu: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeat):
            for name, (port, proc) in gateways.items():
                for what, batch in (("upload", f"put {payload} /upload/cpu.bin\n"),
                                    ("download", f"get /upload/cpu.bin {work / 'back.bin'}\n")):
                    before = cpu_seconds(proc.pid)
                    sftp_batch(port, client, batch, "127.0.0.1")
                    cpu.setdefault((name, what), []).append(
                        1000 * (cpu_seconds(proc.pid) - before) / args.size_mib)
        load = os.getloadavg()
        print(f"gateway CPU ms per MiB, {args.size_mib} MiB x {args.repeat} each way, OpenSSH "
              f"sftp, aes128-gcm; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on "
              f"{os.cpu_count()} CPUs")
        print(f"{'':10}{'reference: least':>18}{'median':>8}{'this tree: least':>20}{'median':>8}")
        for what in ("upload", "download"):
            ref, this = cpu[("reference", what)], cpu[("this tree", what)]
            print(f"{what:10}{min(ref):>18.2f}{statistics.median(ref):>8.2f}"
                  f"{min(this):>20.2f}{statistics.median(this):>8.2f}")
    finally:
        for _, proc in gateways.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

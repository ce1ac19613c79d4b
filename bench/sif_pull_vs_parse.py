"""`sftpd sif-pull` of N StudentPersonal objects vs a plain streaming parse of the same XML bytes.

    python bench/sif_pull_vs_parse.py [--students 50000] [--max-buffer-size 10000000] [--repeat 3]

The ZIS stand-in (district_devtools.sif.zis, its own process, HTTPS with the test CA, HTTP
basic authentication) serves a made-up district of N students; every object is made before it
listens. The sftpd side is the whole command in its own process, timed from start to exit:
process start, SIF_Register, SIF_Request for SchoolInfo, StudentPersonal and
StudentSchoolEnrollment (students.csv needs all three), every SIF_GetMessage and SIF_Ack over
TLS, the defused streaming read of every packet, the conversion, the audit copies of the
replies, students.csv, fsync, COMPLETE and the rename. The reference is the same library
(defusedxml's iterparse, DTDs, entities and external references forbidden) reading the very
bytes that pull received (the epoch's sif/*.xml, read into memory first), touching every
element (cleared once read) and nothing else. Interleaved, best of N; the load average is
printed before and after: on a shared machine the wall clock follows the neighbours' load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

from defusedxml.ElementTree import iterparse
from district_devtools.sif.testca import make_zone_pki

from sftpd import tree

AGENT = "bench-agent"
OBJECTS = "SchoolInfo,StudentPersonal,StudentSchoolEnrollment"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_zone(work: Path, students: int, env: dict[str, str]) -> tuple[subprocess.Popen[bytes],
                                                                        str]:
    pki = make_zone_pki(work / "pki", AGENT)
    port_file = work / "zone.port"
    zone = subprocess.Popen([sys.executable, "-m", "district_devtools.sif.zis", "--port-file",
                             str(port_file), "--cert", str(pki.server_cert), "--key",
                             str(pki.server_key), "--username", "bench", "--password", "bench",
                             "--students", str(students)], env=env)
    while not port_file.exists():
        if zone.poll() is not None:
            raise SystemExit("the ZIS stand-in did not start")
        time.sleep(0.1)
    return zone, f"https://127.0.0.1:{port_file.read_text()}/zone"


def run_pull(work: Path, url: str, buffer: int, env: dict[str, str], n: int) -> tuple[float,
                                                                                  Path, dict]:
    root = work / f"district{n}"
    tree.ensure_tree(root)
    result_file = work / f"result{n}.json"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sftpd", "sif-pull", "--root", str(root),
                    "--zone-url", url, "--source-id", AGENT, "--objects", OBJECTS,
                    "--ca-file", str(work / "pki" / "ca.crt"), "--auth-dir", str(work / "auth"),
                    "--max-buffer-size", str(buffer), "--result-file", str(result_file)],
                   env=env, stdout=subprocess.DEVNULL, check=True)
    elapsed = time.perf_counter() - started
    result = json.loads(result_file.read_text())
    return elapsed, root / tree.UPLOAD / result["epoch"], result


def plain_parse(blobs: list[bytes]) -> tuple[float, int]:
    """Every element of every reply through defusedxml's iterparse, cleared once read (the
    usual streaming idiom), nothing else done."""
    started = time.perf_counter()
    elements = 0
    for blob in blobs:
        for _event, elem in iterparse(BytesIO(blob), events=("end",), forbid_dtd=True,
                                      forbid_entities=True, forbid_external=True):
            elements += 1
            elem.clear()
    return time.perf_counter() - started, elements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=50_000)
    parser.add_argument("--max-buffer-size", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    print(f"load average before: {load()}")
    with tempfile.TemporaryDirectory(prefix="sif-bench-") as tmp:
        work = Path(tmp)
        (work / "auth").mkdir()
        (work / "auth" / "username").write_text("bench")
        (work / "auth" / "password").write_text("bench")
        zone, url = start_zone(work, args.students, env)
        try:
            pulls: list[float] = []
            parses: list[float] = []
            for n in range(args.repeat):
                elapsed, epoch, result = run_pull(work, url, args.max_buffer_size, env, n)
                pulls.append(elapsed)
                blobs = [p.read_bytes() for p in sorted((epoch / "sif").iterdir())]
                parsed, elements = plain_parse(blobs)
                parses.append(parsed)
                size = sum(len(b) for b in blobs)
                rows = (epoch / "students.csv").read_bytes().count(b"\n") - 1
        finally:
            zone.terminate()
            zone.wait()
    mib = size / (1 << 20)
    print(f"{args.students} students: {', '.join(result['objects'])}; {result['packets']} "
          f"packets, {mib:.1f} MiB of XML, {elements} elements; {rows} rows in students.csv")
    print(f"{'':34} best s  all runs (s)               MiB/s")
    print(f"{'plain iterparse of the same bytes':34} {min(parses):6.2f}  "
          f"{' '.join(f'{t:.2f}' for t in parses):24} {mib / min(parses):6.1f}")
    print(f"{'sftpd sif-pull (whole command)':34} {min(pulls):6.2f}  "
          f"{' '.join(f'{t:.2f}' for t in pulls):24} {mib / min(pulls):6.1f}")
    print(f"throughput ratio (sif-pull / plain parse): {min(parses) / min(pulls):.2f}x "
          "(target >= 0.50x)")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()

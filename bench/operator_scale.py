"""Benchmark: the operator reconciling N Districts from scratch against a raw server-side apply.

Starts its own local control plane (etcd, kube-apiserver, kube-controller-manager), installs the
District CRD, and for each N:

* raw apply: the same children the operator's builders produce for N Districts (host-key Secret
  with keys generated beforehand, untimed, then the eight applied children), server-side applied
  by the Python client from a pool of threads as fast as it goes: the API server's own limit;
* raw apply + keys: the same, with the host-key generation (Ed25519 + RSA-3072) inside the timing,
  the work no operator can skip;
* operator: `district-operator run` started after the N Districts exist; timed from its start until
  every District's status.observedGeneration is set (seen through a watch); its peak RSS (VmHWM)
  read from /proc.

Besides the times it prints CPU seconds: etcd's, the API server's and the controller manager's
during the raw apply and during the operator's run (each timed phase starts once the control
plane has caught up with the one before), the host key generation's, and the operator's
own. From them, a floor: the least time any operator that generates the keys could take on this
machine, (control-plane CPU of the raw apply + key generation CPU) / CPUs.

    python bench/operator_scale.py                 # N = 200 and 1000
    python bench/operator_scale.py --sizes 50 --workers 16
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from district_devtools.localcluster.controlplane import ControlPlane
from district_devtools.ports import free_port
from district_operator import api, builders, drift, keys, names
from district_operator.model import parse_district

REPO = Path(__file__).resolve().parent.parent
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINzdmVxOZfojVuZlP43haO0MLMrCWjfq6GUob3Hg22Ly"
       " it@lincoln.k12.example")
INPUTS = builders.BuildInputs(image="registry.invalid/district-sftp:bench")


def district(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": names.API_VERSION, "kind": names.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"authorizedKeys": [KEY], "service": {"type": "ClusterIP"},
                     "processing": {"databaseSecretRef": {"name": "bench-db"}},
                     "backups": {"databaseSecretRef": {"name": "bench-db"}}}}


def prepare_namespace(plane: ControlPlane, kube: api.Kube, namespace: str, count: int,
                      workers: int) -> list[dict[str, Any]]:
    """The namespace, its database Secret and N Districts (untimed); returns the created objects."""
    plane.kubectl("create", "namespace", namespace)
    kube.create({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "bench-db", "namespace": namespace},
                 "stringData": {"uri": "postgresql://bench@db.example/bench"}})
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(kube.create, [district(f"d{n:04d}", namespace)
                                           for n in range(count)]))


def manifests_for(body: dict[str, Any], host_key_files: dict[str, str]) -> list[dict[str, Any]]:
    parsed = parse_district(body)
    check = keys.check_keys([("spec", line) for line in parsed.authorized_keys])
    return [drift.with_hash(m) for m in [builders.host_keys_secret(parsed, host_key_files),
                                         *builders.desired_children(
                                             parsed, INPUTS, check.authorized_keys_file())]]


def pregenerate_keys(count: int) -> tuple[list[dict[str, str]], float]:
    """Host keys for count Districts, and the CPU seconds generating them took."""
    started = time.process_time()
    files = [keys.generate_host_keys() for _ in range(count)]
    return files, time.process_time() - started


def raw_apply(kube: api.Kube, bodies: list[dict[str, Any]], workers: int,
              pregenerated: list[dict[str, str]] | None) -> float:
    """Seconds to apply every District's children; keys generated inside it when not given."""

    def one(index: int) -> None:
        files = keys.generate_host_keys() if pregenerated is None else pregenerated[index]
        for manifest in manifests_for(bodies[index], files):
            kube.apply(manifest)

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(len(bodies))))
    return time.monotonic() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plane_cpu_seconds(plane: ControlPlane) -> float:
    """CPU seconds used so far by etcd, the API server and the controller manager."""
    return sum(cpu_seconds(pid) for pid in plane.pids.values())


def wait_until_quiet(plane: ControlPlane, timeout: float = 300) -> float:
    """Wait until the control plane idles (under 0.2 CPU over 2 s); returns the seconds waited.

    The controller manager goes on working after a phase's last request (a ReplicaSet and a Pod
    for every Deployment, CronJob bookkeeping), and that work, on the same two cores, would
    otherwise be charged to whichever phase runs next.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = plane_cpu_seconds(plane)
        time.sleep(2)
        if plane_cpu_seconds(plane) - before < 0.4:
            break
    return time.monotonic() - started


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request_counts(port: int) -> dict[str, int]:
    """The operator's own count of API requests by verb, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, int] = {}
    for match in re.finditer(r'^district_operator_api_requests_total\{kind="(\w+)",verb="(\w+)"\}'
                             r' ([0-9.e+]+)$', text, re.MULTILINE):
        key = f"{match.group(2)} {match.group(1)}"
        counts[key] = counts.get(key, 0) + int(float(match.group(3)))
    return counts


def wait_until_observed(plane: ControlPlane, namespace: str, count: int,
                        process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Return once every District in namespace has status.observedGeneration.

    One list and then a watch (kubectl's): polling a list of 1,000 Districts several times a
    second would cost the API server, which the operator is measured against, real CPU.
    """
    watcher = subprocess.Popen(
        [str(plane.bin_dir / "kubectl"), "--kubeconfig", str(plane.kubeconfig), "get",
         names.PLURAL, "-n", namespace, "--watch",
         "-o", "jsonpath={.metadata.name} {.status.observedGeneration}{'\\n'}"],
        stdout=subprocess.PIPE, text=True)
    assert watcher.stdout is not None
    # Lines come through a thread, so that an operator that dies (and so stops changing
    # Districts) is noticed within a second rather than when the API server ends the watch.
    lines: queue.Queue[str | None] = queue.Queue()

    def read(stream: IO[str]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, args=(watcher.stdout,), daemon=True).start()
    done: set[str] = set()
    try:
        while len(done) < count:
            if process.poll() is not None:
                raise RuntimeError(f"the operator exited; see {log_path}")
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError("the watch on Districts ended early")
            name, _, observed = line.strip().partition(" ")
            if observed:
                done.add(name)
    finally:
        watcher.kill()
        watcher.wait()


def run_operator(plane: ControlPlane, namespace: str, count: int, workers: int,
                 log_path: Path) -> tuple[float, float, dict[str, int]]:
    metrics_port = free_port()
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "district_operator.cli", "run", "--namespace", namespace,
             "--image", INPUTS.image, "--workers", str(workers), "--resync-seconds", "3600",
             "--metrics-port", str(metrics_port), "--health-port", "0"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_observed(plane, namespace, count, process, log_path)
            elapsed = time.monotonic() - started
            counts = request_counts(metrics_port)
            counts["cpu seconds"] = round(cpu_seconds(process.pid))
            time.sleep(2)  # the follow-up watch events (controllers' status updates) settle
            return elapsed, peak_rss_mb(process.pid), counts
        finally:
            process.terminate()
            process.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--workers", type=int, default=16,
                        help="threads for the raw apply and the operator (default 16)")
    args = parser.parse_args()
    # Three namespaces of N Services each: the default /24 of Service addresses holds only 254.
    # A /16 keeps 10.0.0.1 (in the API server's certificate) as the first address.
    rows = []
    with tempfile.TemporaryDirectory(prefix="operator-scale-") as tmp:
        for count in args.sizes:
            plane = ControlPlane.start(Path(tmp) / f"cluster-{count}")
            os.environ["KUBECONFIG"] = str(plane.kubeconfig)
            try:
                plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "district.yaml"))
                plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                              f"crd/{names.PLURAL}.{names.GROUP}")
                # The operator's field manager: raw_apply stands for the operator's own applies.
                kube = api.Kube(api.load_configuration(pool_size=args.workers * 2),
                                field_manager=names.FIELD_MANAGER)
                bodies = prepare_namespace(plane, kube, "raw", count, args.workers)
                pregenerated, keygen_cpu = pregenerate_keys(count)
                wait_until_quiet(plane)
                plane_before = plane_cpu_seconds(plane)
                raw = raw_apply(kube, bodies, args.workers, pregenerated)
                raw_plane_cpu = plane_cpu_seconds(plane) - plane_before
                bodies = prepare_namespace(plane, kube, "rawkeys", count, args.workers)
                wait_until_quiet(plane)
                raw_keys = raw_apply(kube, bodies, args.workers, None)
                prepare_namespace(plane, kube, "operator", count, args.workers)
                wait_until_quiet(plane)
                plane_before = plane_cpu_seconds(plane)
                operator, rss, counts = run_operator(plane, "operator", count, args.workers,
                                                     Path(tmp) / f"operator-{count}.log")
                operator_plane_cpu = plane_cpu_seconds(plane) - plane_before
                kube.close()
            finally:
                plane.stop()
            # The least wall time for any operator that generates the host keys on this
            # machine: the API server's and etcd's CPU for the raw apply plus the key generation,
            # spread perfectly over every CPU.
            floor = (raw_plane_cpu + keygen_cpu) / (os.cpu_count() or 1)
            rows.append((count, raw, raw_keys, operator, rss, raw_plane_cpu, keygen_cpu,
                         counts["cpu seconds"], operator_plane_cpu, floor))
            print(json.dumps({"districts": count, "raw_apply_s": round(raw, 1),
                              "raw_apply_with_keygen_s": round(raw_keys, 1),
                              "operator_s": round(operator, 1),
                              "operator_peak_rss_mb": round(rss, 1),
                              "control_plane_cpu_s_raw_apply": round(raw_plane_cpu, 1),
                              "control_plane_cpu_s_operator": round(operator_plane_cpu, 1),
                              "host_key_generation_cpu_s": round(keygen_cpu, 1),
                              "operator_requests_until_done": counts}), file=sys.stderr)
    print(f"{'districts':>9} {'raw apply':>10} {'raw+keys':>10} {'operator':>10} "
          f"{'op/raw':>7} {'op/raw+keys':>12} {'peak RSS':>9}")
    for count, raw, raw_keys, operator, rss, *_ in rows:
        print(f"{count:>9} {raw:>9.1f}s {raw_keys:>9.1f}s {operator:>9.1f}s "
              f"{operator / raw:>6.2f}x {operator / raw_keys:>11.2f}x {rss:>7.0f}MB")
    print(f"\nCPU seconds ({os.cpu_count()} CPUs): control plane = etcd + kube-apiserver + "
          "kube-controller-manager; floor = (control plane CPU of the raw apply + host key "
          "generation CPU) / CPUs, the least time any operator that generates the keys can take "
          "here")
    print(f"{'districts':>9} {'plane raw':>10} {'keygen':>8} {'operator':>9} {'plane op':>9} "
          f"{'floor':>8} {'floor/raw':>10} {'op/floor':>9}")
    for count, raw, _, operator, _, raw_plane, keygen, op_cpu, op_plane, floor in rows:
        print(f"{count:>9} {raw_plane:>9.1f}s {keygen:>7.1f}s {op_cpu:>8.0f}s {op_plane:>8.1f}s "
              f"{floor:>7.1f}s {floor / raw:>9.2f}x {operator / floor:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the operator reconciling N Districts from scratch against a raw server-side apply.

Starts its own local control plane (etcd, kube-apiserver, kube-controller-manager), installs the
District CRD, and for each N:

* raw apply: the same children the operator's builders produce for N Districts (host-key Secret
  with keys generated beforehand, untimed, then the eight applied children), server-side applied
  by the Python client from a pool of threads as fast as it goes: the API server's own limit;
* raw apply + keys: the same, with the host-key generation (Ed25519 + RSA-3072) inside the timing,
  the work no operator can skip;
* operator: `district-operator run` started after the N Districts exist; timed from its start until
  every District's status.observedGeneration is set; its peak RSS (VmHWM) read from /proc.

    python bench/operator_scale.py                 # N = 200 and 1000
    python bench/operator_scale.py --sizes 50 --workers 16
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from district_operator import api, builders, drift, keys, names
from district_operator.localcluster.controlplane import ControlPlane
from district_operator.localcluster.ports import free_port
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


def raw_apply(kube: api.Kube, bodies: list[dict[str, Any]], workers: int,
              generate_keys: bool) -> float:
    pregenerated = None if generate_keys else [keys.generate_host_keys() for _ in bodies]

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


def run_operator(kube: api.Kube, namespace: str, count: int, workers: int,
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
            while True:
                done = sum(1 for d in kube.list(names.KIND, namespace)
                           if (d.get("status") or {}).get("observedGeneration"))
                if done == count:
                    break
                if process.poll() is not None:
                    raise RuntimeError(f"the operator exited; see {log_path}")
                time.sleep(0.25)
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
                kube = api.Kube(api.load_configuration(pool_size=args.workers * 2))
                raw = raw_apply(kube, prepare_namespace(plane, kube, "raw", count, args.workers),
                                args.workers, generate_keys=False)
                raw_keys = raw_apply(kube, prepare_namespace(plane, kube, "rawkeys", count,
                                                             args.workers),
                                     args.workers, generate_keys=True)
                prepare_namespace(plane, kube, "operator", count, args.workers)
                operator, rss, counts = run_operator(kube, "operator", count, args.workers,
                                             Path(tmp) / f"operator-{count}.log")
                kube.close()
            finally:
                plane.stop()
            rows.append((count, raw, raw_keys, operator, rss))
            print(json.dumps({"districts": count, "raw_apply_s": round(raw, 1),
                              "raw_apply_with_keygen_s": round(raw_keys, 1),
                              "operator_s": round(operator, 1),
                              "operator_peak_rss_mb": round(rss, 1),
                              "operator_requests_until_done": counts}), file=sys.stderr)
    print(f"{'districts':>9} {'raw apply':>10} {'raw+keys':>10} {'operator':>10} "
          f"{'op/raw':>7} {'op/raw+keys':>12} {'peak RSS':>9}")
    for count, raw, raw_keys, operator, rss in rows:
        print(f"{count:>9} {raw:>9.1f}s {raw_keys:>9.1f}s {operator:>9.1f}s "
              f"{operator / raw:>6.2f}x {operator / raw_keys:>11.2f}x {rss:>7.0f}MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: how long a District change takes to reach the gateway's routing shards, with
N shared-mode Districts published.

Starts its own local control plane (etcd, kube-apiserver, kube-controller-manager), installs
the District CRD, creates N Districts in shared mode (each with its host-key Secret made
beforehand, one key pair copied, so the RSA key generation of N Districts, which the operator
does only once per District, does not hide the publication) and one pod labelled as a gateway
pod, then starts `district-operator run --gateway-namespace ...` as a process and measures:

* first publication: from the operator's start until all N entries are in the shard
  ConfigMaps (read back and decoded with district_contract.routes, once a second): this is
  the operator reconciling N new Districts (every child created) as much as the publication;
* key added: from the District patch (the API write) adding a key until its shard ConfigMap
  holds the key (a GET every 10 ms), --repeat times, each on another District;
* reference, from the same run and the same polling: from a plain ConfigMap patch to a GET
  showing it (what the API server alone takes to accept and show a write).

Load averages are printed before and after.

    python bench/gateway_route_change.py                    # 1,000 Districts, 20 changes
    python bench/gateway_route_change.py --districts 200 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from district_contract import routes
from district_devtools.localcluster.controlplane import ControlPlane
from district_devtools.ports import free_port
from district_operator import api, builders, keys, names, rotation
from district_operator.model import parse_district

REPO = Path(__file__).resolve().parent.parent
NAMESPACE, GATEWAY_NS, GATEWAY = "bench", "gateway", "gw"
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINzdmVxOZfojVuZlP43haO0MLMrCWjfq6GUob3Hg22Ly"
       " it@lincoln.k12.example")
POLL = 0.01
# Reading back all N entries is a list of up to 256 ConfigMaps: once a second, not to load the
# API server the operator is being measured against.
FULL_POLL = 1.0


def new_key(comment: str) -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{public} {comment}"


def login(n: int) -> str:
    return f"d{n:04d}.k12.example"


def district(n: int) -> dict[str, Any]:
    return {"apiVersion": names.API_VERSION, "kind": names.KIND,
            "metadata": {"name": f"d{n:04d}", "namespace": NAMESPACE},
            "spec": {"login": login(n), "authorizedKeys": [KEY],
                     "service": {"mode": "shared", "type": "ClusterIP"}}}


def prepare(plane: ControlPlane, kube: api.Kube, count: int) -> None:
    for namespace in (NAMESPACE, GATEWAY_NS):
        plane.kubectl("create", "namespace", namespace)
    kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "gw-0", "namespace": GATEWAY_NS, "labels": names.gateway_selector(GATEWAY)},
        "spec": {"containers": [{"name": "gateway", "image": "registry.invalid/gw:bench"}]}})
    files = keys.generate_host_keys()

    def one(n: int) -> None:
        body = kube.create(district(n))
        parsed = parse_district(body)
        kube.create(builders.host_keys_secret(parsed, files,
                                              rotation.initial_annotations(parsed)))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))


def published(kube: api.Kube) -> dict[str, routes.RouteEntry]:
    entries: dict[str, routes.RouteEntry] = {}
    for body in kube.list("ConfigMap", GATEWAY_NS, f"{names.LABEL_COMPONENT}=routes"):
        for text in (body.get("data") or {}).values():
            entries.update((e.login, e) for e in routes.decode(text.encode()))
    return entries


def reconciled(kube: api.Kube) -> int:
    """Districts whose status says their current generation was reconciled."""
    return sum(1 for d in kube.list(names.KIND, NAMESPACE)
               if (d.get("status") or {}).get("observedGeneration") == d["metadata"]["generation"])


def shard_holds(kube: api.Kube, who: str, key: str) -> bool:
    shard = routes.shard_of(who)
    body = kube.get("ConfigMap", GATEWAY_NS, names.gateway_routes_configmap(GATEWAY, shard))
    text = ((body or {}).get("data") or {}).get(routes.shard_file(shard), "")
    return key.split()[1] in text


def wait(predicate: Any, timeout: float, what: str, poll: float = POLL) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(poll)
    raise TimeoutError(what)


def key_change(kube: api.Kube, n: int) -> float:
    added = new_key(f"bench-{n}")
    started = time.monotonic()
    kube.merge_patch(names.KIND, NAMESPACE, f"d{n:04d}",
                     {"spec": {"authorizedKeys": [KEY, added]}})
    wait(lambda: shard_holds(kube, login(n), added), 60, f"the key of d{n:04d}")
    return time.monotonic() - started


def reference(kube: api.Kube, n: int) -> float:
    value = f"v{n}-{time.monotonic_ns()}"
    started = time.monotonic()
    kube.merge_patch("ConfigMap", GATEWAY_NS, "bench-reference", {"data": {"value": value}})
    wait(lambda: ((kube.get("ConfigMap", GATEWAY_NS, "bench-reference") or {}).get("data")
                  or {}).get("value") == value, 60, "the reference ConfigMap")
    return time.monotonic() - started


def figures(values: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
            "max_s": round(max(values), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--districts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="route-change-") as tmp:
        plane = ControlPlane.start(Path(tmp) / "cluster")
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        process = None
        try:
            plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "district.yaml"))
            plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          f"crd/{names.PLURAL}.{names.GROUP}")
            kube = api.Kube(api.load_configuration(pool_size=32), field_manager="bench",
                            extra_kinds=api.GATEWAY_KINDS)
            prepare(plane, kube, args.districts)
            kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": "bench-reference", "namespace": GATEWAY_NS}, "data": {"value": ""}})
            print(f"{args.districts} shared Districts created", flush=True)
            log = (Path(tmp) / "operator.log").open("wb")
            launched = time.monotonic()
            process = subprocess.Popen(
                [sys.executable, "-m", "district_operator.cli", "run", "--namespace", NAMESPACE,
                 "--image", "registry.invalid/district-sftp:bench", "--workers",
                 str(args.workers), "--resync-seconds", "3600", "--metrics-port",
                 str(free_port()), "--health-port", "0", "--gateway-namespace", GATEWAY_NS,
                 "--gateway-name", GATEWAY, "--gateway-proxy-from", "10.0.0.0/8"],
                stdout=log, stderr=subprocess.STDOUT)
            seen: dict[str, float] = {}

            def progress() -> bool:
                now = time.monotonic() - launched
                if "reconciled" not in seen and reconciled(kube) >= args.districts:
                    seen["reconciled"] = now
                if "published" not in seen and len(published(kube)) >= args.districts:
                    seen["published"] = now
                return len(seen) == 2

            wait(progress, 3600, "the first full publication", FULL_POLL)
            first = seen["published"]
            # The reference for `first`: every District reconciled (its status written), in
            # the same run; the publication's own part is what comes after it, if anything.
            print(f"first publication of {args.districts}: {first:.1f} s "
                  f"(operator start to every entry in the ConfigMaps); every District "
                  f"reconciled: {seen['reconciled']:.1f} s", flush=True)
            time.sleep(5)  # the reconciles' follow-up events settle
            changes, references = [], []
            step = max(1, args.districts // max(1, args.repeat))
            for i in range(args.repeat):
                references.append(reference(kube, i))
                changes.append(key_change(kube, (i * step) % args.districts))
            print(json.dumps({
                "districts": args.districts,
                "first_publication_s": round(first, 1),
                "every_district_reconciled_s": round(seen["reconciled"], 1),
                "key_added_to_shard": figures(changes),
                "reference_configmap_write_to_read": figures(references),
                "load_average_after": os.getloadavg(),
            }), flush=True)
            kube.close()
        finally:
            if process is not None:
                process.terminate()
                process.wait(30)
            plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

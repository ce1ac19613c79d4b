"""How long the real kubelet takes to show a changed ConfigMap in a running pod's projected volume.

Dev tooling, never shipped. Needs a running control plane with its real node
(`scripts/local-cluster start --node --dir DIR`). It makes a pod whose one projected volume
lists `--sources` optional ConfigMaps (`lat-routes-000` ...), as the gateway's routing volume
does, writes one of them and times until the new content is in the pod's volume, read where the
kubelet writes it (`<kubelet root>/pods/<uid>/volumes/kubernetes.io~projected/routes/`, the
directory the container's mount shows), every 10 ms. Two ways:

- `plain`: the ConfigMap written, nothing else;
- `annotate`: the ConfigMap written, then the pod's annotation `districtsftp.io/routes-revision`
  patched at once (a pod update: the kubelet syncs that pod now instead of at its next periodic
  sync).

    python -m district_devtools.configmap_latency --dir /tmp/19rn --trials 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from district_devtools.localcluster.controlplane import ControlPlane
from district_devtools.localcluster.realnode import RealNode
from district_devtools.ports import wait_until

NAMESPACE = "configmap-latency"
POD = "latency-probe"
PREFIX = "lat-routes-"
ANNOTATION = "districtsftp.io/routes-revision"


def shard(i: int) -> str:
    return f"{PREFIX}{i:03d}"


def file_name(i: int) -> str:
    return f"routes-{i:03d}.json"


def setup(plane: ControlPlane, image: str, sources: int, existing: int) -> str:
    """The namespace, `existing` of the `sources` ConfigMaps, and the pod; returns its uid."""
    plane.kubectl("create", "namespace", NAMESPACE, check=False)
    maps = [{"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": shard(i), "namespace": NAMESPACE},
             "data": {file_name(i): json.dumps({"revision": 0})}} for i in range(existing)]
    if maps:
        plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                           "items": maps}))
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD, "namespace": NAMESPACE, "annotations": {ANNOTATION: "0"}},
        "spec": {
            "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "Never",
                "command": ["python3", "-c", "import time; time.sleep(10**9)"],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "routes", "mountPath": "/etc/sftpd/routes",
                                  "readOnly": True}]}],
            "volumes": [{"name": "routes", "projected": {"sources": [
                {"configMap": {"name": shard(i), "optional": True,
                               "items": [{"key": file_name(i), "path": file_name(i)}]}}
                for i in range(sources)]}}],
        },
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
    plane.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"pod/{POD}",
                  "--timeout=180s")
    uid: str = json.loads(plane.kubectl("-n", NAMESPACE, "get", "pod", POD, "-o",
                                        "json").stdout)["metadata"]["uid"]
    return uid


def trial(plane: ControlPlane, volume: Path, index: int, revision: int, annotate: bool,
          timeout: float) -> float:
    """Write shard `index` with `revision`; seconds from the write's return to the new content
    in the pod's volume."""
    body = json.dumps({"revision": revision})
    plane.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": shard(index), "namespace": NAMESPACE},
        "data": {file_name(index): body}}))
    written = time.monotonic()
    if annotate:
        plane.kubectl("-n", NAMESPACE, "annotate", "--overwrite", "pod", POD,
                      f"{ANNOTATION}={revision}")
    path = volume / file_name(index)
    while True:
        try:
            if path.read_text() == body:
                return time.monotonic() - written
        except OSError:
            pass
        if time.monotonic() - written > timeout:
            raise TimeoutError(f"{path} not updated after {timeout:.0f}s")
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="configmap_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="the local cluster's directory")
    parser.add_argument("--sources", type=int, default=256, help="ConfigMaps in the volume")
    parser.add_argument("--existing", type=int, default=16,
                        help="how many of them exist (the rest are optional and absent)")
    parser.add_argument("--trials", type=int, default=5, help="writes per way")
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--modes", default="plain,annotate")
    parser.add_argument("--gap", type=float, default=1.7, help="seconds between writes")
    parser.add_argument("--keep", action="store_true", help="leave the namespace")
    args = parser.parse_args(argv)
    plane = ControlPlane.load(args.dir)
    node = RealNode.load(args.dir / "node")
    image = next(i for i in node.ctr("images", "ls", "-q").stdout.split()
                 if i.startswith("localhost/district-sftp:"))
    uid = setup(plane, image, args.sources, args.existing)
    volume = (node.directory / "kubelet" / "pods" / uid / "volumes" / "kubernetes.io~projected"
              / "routes")
    wait_until(lambda: (volume / file_name(0)).exists(), 60, "the pod's projected volume")
    revision = int(time.time())
    results: dict[str, list[float]] = {}
    try:
        for mode in args.modes.split(","):
            results[mode] = []
            for n in range(args.trials):
                revision += 1
                # Different shards, existing ones and ones created by the write.
                index = (n * 37 + (3 if mode == "annotate" else 0)) % args.sources
                seconds = trial(plane, volume, index, revision, mode == "annotate",
                                args.timeout)
                results[mode].append(seconds)
                print(f"{mode:9} shard {index:3d} "
                      f"{'existing' if index < args.existing else 'created '} "
                      f"{seconds:6.2f} s", flush=True)
                # Spread the writes over the kubelet's periodic sync.
                time.sleep(args.gap)
    finally:
        if not args.keep:
            plane.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    for mode, values in results.items():
        print(f"{mode}: n={len(values)} min {min(values):.2f} s, median "
              f"{statistics.median(values):.2f} s, max {max(values):.2f} s "
              f"(sources {args.sources}, existing {args.existing}; load {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

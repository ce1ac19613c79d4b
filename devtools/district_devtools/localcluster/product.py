"""The product on the real node: the chart with the locally built image, a database the pods
reach, a volume for a District's claim, and the load balancer stand-in."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from district_devtools.localcluster.controlplane import ControlPlane
from district_devtools.localcluster.realnode import GATEWAY, RealNode
from district_devtools.ports import wait_until

RELEASE = "district-sftp"
RELEASE_NAMESPACE = "district-sftp-system"
# The only stand-in left on the real node: no cloud load balancer exists here. It gives a
# LoadBalancer Service the node bridge's address as its ingress; kube-proxy then routes that
# address and the Service's port to the pod, as it routes a cloud load balancer's.
LOAD_BALANCER_ADDRESS = GATEWAY



@dataclass
class RealCluster:
    """The control plane, its real node and the app image the node has imported."""

    plane: ControlPlane
    node: RealNode
    image: str  # localhost/district-sftp:<content hash>

    @property
    def image_repository(self) -> str:
        return self.image.rsplit(":", 1)[0]

    @property
    def image_tag(self) -> str:
        return self.image.rsplit(":", 1)[1]

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.plane.bin_dir / "helm"), "--kubeconfig",
                                 str(self.plane.kubeconfig), *args],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result

    def install_chart(self, chart: Path, namespaces: list[str],
                      values: dict[str, str] | None = None) -> None:
        """helm install the chart with the image the node has; the operator runs as a pod."""
        settings = {
            "image.repository": self.image_repository, "image.tag": self.image_tag,
            # The image is in the node's containerd already and in no registry.
            "image.pullPolicy": "Never",
            "operator.resyncSeconds": "10",
            **{f"watch.namespaces[{i}]": ns for i, ns in enumerate(namespaces)},
            **(values or {}),
        }
        args = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
        # Not helm's --wait: it waits for a LoadBalancer Service's address (the gateway's),
        # which only the stand-in below gives.
        self.helm("install", RELEASE, str(chart), "-n", RELEASE_NAMESPACE, "--create-namespace",
                  *args)
        services = json.loads(self.plane.kubectl("-n", RELEASE_NAMESPACE, "get", "services",
                                                 "-o", "json").stdout)["items"]
        for service in services:
            if service["spec"]["type"] == "LoadBalancer":
                self.expose(RELEASE_NAMESPACE, service["metadata"]["name"])
        self.plane.kubectl("-n", RELEASE_NAMESPACE, "rollout", "status", "deployment",
                           "--timeout=180s")

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        result = self.plane.kubectl("-n", namespace, "get", kind, name, "-o", "json",
                                    check=False)
        if result.returncode != 0:
            return None
        body: dict[str, Any] = json.loads(result.stdout)
        return body

    def local_volume(self, namespace: str, claim: str, path: Path) -> None:
        """A hostPath PersistentVolume of the claim's size reserved for `claim` (no provisioner
        runs here); the directory belongs to the pods' user, as a provisioner's volume would."""
        body = wait_until(lambda: self.get("pvc", namespace, claim), 60, f"the claim {claim}")
        size = body["spec"]["resources"]["requests"]["storage"]
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, 10001, 10001)
        self.plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-{claim}"},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain",
                     "claimRef": {"namespace": namespace, "name": claim},
                     "hostPath": {"path": str(path), "type": "Directory"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In",
                          "values": [self.node.name]}]}]}}},
        }))

    def expose(self, namespace: str, service: str) -> None:
        """The load balancer stand-in: the Service's status gets the bridge address."""
        wait_until(lambda: self.get("service", namespace, service), 60, f"Service {service}")
        self.plane.kubectl("-n", namespace, "patch", "service", service, "--subresource=status",
                           "--type=merge", "-p", json.dumps({"status": {"loadBalancer": {
                               "ingress": [{"ip": LOAD_BALANCER_ADDRESS}]}}}))

"""A District's workloads on this machine: its server pod and jobs, run by the kubelet stand-in."""

# The control plane's own controllers do their part for real: the Deployment and ReplicaSet
# controllers create the server's Pod, the Job controller creates a Job's Pod and marks the Job
# Complete once the Pod succeeded. This module does what the rest of a cluster would: the
# scheduler's binding, the kubelet's running and status (kubelet.py), the cloud load balancer's
# address on the Service, and the volume provisioner's binding of the claim.

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from district_operator import api, names

from district_devtools.localcluster import kubelet
from district_devtools.ports import wait_until

MANUAL_ANNOTATION = "cronjob.kubernetes.io/instantiate"
# Kinds only the dev cluster's stand-ins and the tests address, never the operator (so not in
# api.KINDS, which the chart's Role must grant): the provisioner's PersistentVolumes, and the
# ReplicaSets the Deployment controller makes, which tests look at. A client addresses them when
# given them as `extra_kinds`.
DEV_KINDS: api.Kinds = {
    "PersistentVolume": ("/api/v1", "persistentvolumes"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
}



def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def wait_for_pod(kube: api.Kube, namespace: str, labels: Mapping[str, str],
                 timeout: float = 60) -> dict[str, Any]:
    """The newest live Pod a controller created with these labels."""
    def newest() -> dict[str, Any] | None:
        pods = [p for p in kube.list("Pod", namespace, _selector(labels))
                if not p["metadata"].get("deletionTimestamp")]
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
        return pods[-1] if pods else None
    return wait_until(newest, timeout, f"a pod labelled {_selector(labels)}")


def expose_service(kube: api.Kube, namespace: str, service: str, address: str) -> None:
    """The cloud load balancer's part: give a LoadBalancer Service its external address."""
    kube.acting_as(kubelet.FIELD_MANAGER).merge_patch(
        "Service", namespace, service,
        {"status": {"loadBalancer": {"ingress": [{"ip": address}]}}}, "status")


def bind_claim(kube: api.Kube, namespace: str, claim: str, directory: Path) -> None:
    """The provisioner's part: a hostPath PersistentVolume for `directory`, bound to the claim."""
    pvc = wait_until(lambda: kube.get("PersistentVolumeClaim", namespace, claim), 60,
                     f"claim {claim}")
    size = pvc["spec"]["resources"]["requests"]["storage"]
    volume = f"local-{namespace}-{claim}"
    body = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
            "spec": {"capacity": {"storage": size}, "accessModes": pvc["spec"]["accessModes"],
                     "persistentVolumeReclaimPolicy": "Retain",
                     "storageClassName": pvc["spec"].get("storageClassName") or "",
                     "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
                     "claimRef": {"namespace": namespace, "name": claim,
                                  "uid": pvc["metadata"]["uid"]}}}
    provisioner = kube.acting_as(kubelet.FIELD_MANAGER, extra_kinds=DEV_KINDS)
    with contextlib.suppress(api.AlreadyExistsError):
        provisioner.create(body)
    provisioner.merge_patch("PersistentVolumeClaim", namespace, claim,
                            {"spec": {"volumeName": volume}})
    provisioner.merge_patch("PersistentVolumeClaim", namespace, claim,
                            {"status": {"phase": "Bound", "accessModes": pvc["spec"]["accessModes"],
                                        "capacity": {"storage": size}}}, "status")


@dataclass
class RunningServer:
    """The district's SFTP server pod, running locally."""

    pod: kubelet.LocalPod
    pod_name: str
    port: int
    metrics_port: int

    def stop(self) -> kubelet.ContainerResult | None:
        return self.pod.stop()


def start_server(kube: api.Kube, namespace: str, district: str, workdir: Path, data_dir: Path,
                 port: int, metrics_port: int, timeout: float = 60) -> RunningServer:
    """Run the Pod the Deployment's controllers created, listening on local ports."""
    found = wait_for_pod(kube, namespace, names.server_selector(district), timeout)
    pod_name = found["metadata"]["name"]
    if not found["spec"].get("nodeName"):
        kubelet.bind_pod(kube, namespace, pod_name)
    # The container port and the metrics port are the pod's own; here they share the
    # machine's network, so they move to free loopback ports.
    pod = kubelet.LocalPod(
        kube=kube, namespace=namespace, pod_spec=found["spec"], workdir=workdir,
        claims={names.data_pvc(district): data_dir}, pod_name=pod_name,
        pod_uid=found["metadata"]["uid"],
        env_overrides={"SFTPD_PORT": str(port), "SFTPD_BIND": "127.0.0.1",
                       "SFTPD_METRICS_PORT": str(metrics_port),
                       "SFTPD_METRICS_BIND": "127.0.0.1"})
    pod.start()
    try:
        pod.wait_ready(port, timeout)
        kubelet.report_running(kube, namespace, pod_name, pod, ready=True)
    except BaseException:
        pod.stop(grace=5)
        raise
    return RunningServer(pod=pod, pod_name=pod_name, port=port, metrics_port=metrics_port)


@dataclass
class JobRun:
    job_name: str
    pod_name: str
    result: kubelet.ContainerResult
    pod: kubelet.LocalPod


def create_job_from_cronjob(kube: api.Kube, namespace: str, cronjob_name: str,
                            job_name: str) -> dict[str, Any]:
    """What `kubectl create job --from=cronjob/NAME` does: a Job from the jobTemplate."""
    cronjob = kube.get("CronJob", namespace, cronjob_name)
    if cronjob is None:
        raise LookupError(f"CronJob {namespace}/{cronjob_name} not found")
    template = cronjob["spec"]["jobTemplate"]
    meta = template.get("metadata") or {}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": job_name, "namespace": namespace, "labels": dict(meta.get("labels") or {}),
        "annotations": {**(meta.get("annotations") or {}), MANUAL_ANNOTATION: "manual"},
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                             "name": cronjob_name, "uid": cronjob["metadata"]["uid"],
                             "controller": True}]},
        "spec": template["spec"]}
    return kube.acting_as(kubelet.FIELD_MANAGER).create(job)


def run_cronjob(kube: api.Kube, namespace: str, district: str, job: str, workdir: Path,
                data_dir: Path, job_name: str, timeout: float = 600) -> JobRun:
    """Create a Job from the district's CronJob, run the Pod the Job controller made, report."""
    create_job_from_cronjob(kube, namespace, names.cronjob(district, job), job_name)
    found = wait_for_pod(kube, namespace, {names.LABEL_JOB_NAME: job_name})
    pod_name = found["metadata"]["name"]
    if not found["spec"].get("nodeName"):
        kubelet.bind_pod(kube, namespace, pod_name)
    pod = kubelet.LocalPod(kube=kube, namespace=namespace, pod_spec=found["spec"],
                           workdir=workdir, claims={names.data_pvc(district): data_dir},
                           pod_name=pod_name, pod_uid=found["metadata"]["uid"])
    pod.start()
    kubelet.report_running(kube, namespace, pod_name, pod, ready=True)
    try:
        result = pod.wait(timeout)
    finally:
        pod.stop(grace=5)
    kubelet.report_terminated(kube, namespace, pod_name, pod, result)
    return JobRun(job_name=job_name, pod_name=pod_name, result=result, pod=pod)

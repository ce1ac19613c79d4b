"""Cluster fixtures for operator tests: namespaces, Districts, the operator as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from district_devtools.ports import free_port, wait_until
from district_operator import api, names

REPO = Path(__file__).resolve().parents[2]
TEST_IMAGE = "registry.invalid/district-sftp:test"
RESYNC_SECONDS = 3.0


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.2,
             what: str = "condition") -> Any:
    """Poll until predicate() is truthy and return its value, or fail saying what never happened."""
    try:
        return wait_until(predicate, timeout, what, interval=interval)
    except TimeoutError as exc:
        pytest.fail(str(exc))


class OperatorProcess:
    """`district-operator run` as a child process, with its metrics endpoint for counting."""

    def __init__(self, namespace: str, log_path: Path, *extra: str) -> None:
        self.metrics_port = free_port()
        self.log_path = log_path
        args = [sys.executable, "-m", "district_operator.cli", "run", "--namespace", namespace,
                "--image", TEST_IMAGE, "--resync-seconds", str(RESYNC_SECONDS),
                "--metrics-port", str(self.metrics_port), "--health-port", "0", *extra]
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for(self._metrics_up, timeout=30, what="the operator's metrics endpoint")

    def _metrics_up(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"the operator exited with {self.process.returncode}:\n{self.log()}")
        try:
            self.metrics()
        except OSError:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(r"^(district_operator_\w+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if match:
                values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
        return values

    def total(self, metric: str) -> float:
        return sum(v for k, v in self.metrics().items()
                   if k == metric or k.startswith(metric + "{"))

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def make_namespace(cluster: Any, name: str) -> str:
    cluster.kubectl("create", "namespace", name)
    return name


def district_manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": names.API_VERSION, "kind": names.KIND,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def apply_yaml(cluster: Any, obj: dict[str, Any], check: bool = True
               ) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-f", "-", input=json.dumps(obj), check=check)


def settled(kube: api.Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """The District once the operator has reconciled its current generation."""
    body = kube.get(names.KIND, namespace, name)
    if body and (body.get("status") or {}).get("observedGeneration") == \
            body["metadata"]["generation"]:
        return body
    return None


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


def finish_job(crd: Any, kube: api.Kube, namespace: str, cronjob_name: str,
               job_name: str, results: list[tuple[str, int]]) -> dict[str, Any]:
    """Start a Job from the CronJob's template as the CronJob controller would, then end each of
    its pods with the given (termination message, exit code) through the pod status subresource,
    as a kubelet would (none runs here). The real job controller decides the Job's outcome."""
    cronjob = kube.get("CronJob", namespace, cronjob_name)
    assert cronjob is not None
    template = cronjob["spec"]["jobTemplate"]
    job = kube.create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": job_name, "namespace": namespace, "labels": template["metadata"]["labels"],
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                             "name": cronjob_name, "uid": cronjob["metadata"]["uid"],
                             "controller": True}]}, "spec": template["spec"]})
    done: set[str] = set()
    for message, exit_code in results:
        pod = wait_for(lambda: next((p for p in kube.list(
            "Pod", namespace, f"{names.LABEL_JOB_NAME}={job_name}")
            if p["metadata"]["name"] not in done), None), what=f"a pod of {job_name}")
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]["name"]
        crd.kubectl("-n", namespace, "patch", "pod", name, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {
                        "phase": "Succeeded" if exit_code == 0 else "Failed",
                        "containerStatuses": [{
                            "name": container, "image": TEST_IMAGE, "imageID": "",
                            "ready": False, "restartCount": 0, "started": False,
                            "state": {"terminated": {
                                "exitCode": exit_code, "message": message,
                                "reason": "Completed" if exit_code == 0 else "Error",
                                "startedAt": "2026-11-28T02:00:00Z",
                                "finishedAt": "2026-11-28T02:01:00Z"}}}]}}))
        done.add(name)
    return job

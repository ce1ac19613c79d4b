"""Chart fixtures: the pinned helm binary, and rendering the chart into parsed manifests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import missing

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "district-sftp"
RELEASE = "ds"
RELEASE_NAMESPACE = "district-sftp-system"
FULLNAME = f"{RELEASE}-district-sftp"


def pinned(name: str) -> str:
    for line in (REPO / "scripts" / "versions.env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in scripts/versions.env")


# helm built from its Go module reports a default Kubernetes version of v1.20 for offline
# rendering (no ldflags for it), which the chart's kubeVersion refuses: render for the version
# the local control plane runs.
KUBE_VERSION = pinned("KUBERNETES_VERSION")


def set_args(values: dict[str, str] | None) -> list[str]:
    return [arg for key, value in (values or {}).items() for arg in ("--set", f"{key}={value}")]


@dataclass(frozen=True)
class Helm:
    binary: Path

    def run(self, *args: str, check: bool = True, kubeconfig: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        extra = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
        result = subprocess.run([str(self.binary), *args, *extra], capture_output=True,
                                text=True, timeout=120)
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed ({result.returncode}):\n"
                        f"{result.stdout}\n{result.stderr}", pytrace=False)
        return result

    def template_text(self, values: dict[str, str] | None = None, *args: str) -> str:
        return self.run("template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
                        "--kube-version", KUBE_VERSION, *set_args(values), *args).stdout

    def template(self, values: dict[str, str] | None = None, *args: str) -> Manifests:
        docs = [d for d in yaml.safe_load_all(self.template_text(values, *args)) if d]
        return Manifests(docs)

    def lint(self, values: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run("lint", str(CHART), "--strict", "--namespace", RELEASE_NAMESPACE,
                        "--kube-version", KUBE_VERSION, *set_args(values), check=False)


class Manifests(list[dict[str, Any]]):
    """The rendered objects, with lookups by kind and name."""

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None, namespace: str | None = None
            ) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind)
                 if (name is None or d["metadata"]["name"] == name)
                 and (namespace is None or d["metadata"].get("namespace") == namespace)]
        assert len(found) == 1, f"expected one {kind} {name or ''} {namespace or ''}: {found}"
        return found[0]

    def kinds(self) -> set[str]:
        return {d["kind"] for d in self}

    def container(self) -> dict[str, Any]:
        container: dict[str, Any] = self.one("Deployment")["spec"]["template"]["spec"][
            "containers"][0]
        return container

    def env(self) -> dict[str, str]:
        return {e["name"]: e["value"] for e in self.container()["env"]}


def rule_set(rules: Iterable[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """RBAC rules flattened to (group, resource, resourceName or '*', verb) grants."""
    grants = set()
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for name in rule.get("resourceNames") or ["*"]:
                    for verb in rule["verbs"]:
                        grants.add((group, resource, name, verb))
    return grants


@pytest.fixture(scope="session")
def helm() -> Helm:
    """The helm pinned in scripts/versions.env, built beside the control plane's binaries."""
    from district_devtools.localcluster.controlplane import (
        ControlPlaneUnavailable,
        binaries_dir,
    )

    try:
        binary = binaries_dir() / "helm"
    except ControlPlaneUnavailable as exc:
        missing(str(exc))
        raise
    if not binary.exists():
        missing(f"helm at {binary}")
    return Helm(binary)


def service_account_kubeconfig(cluster: Any, path: Path, account: str,
                               namespace: str) -> Path:
    """A kubeconfig holding only a token of a ServiceAccount the chart made (not the admin's):
    what the operator's pod gets, for checking its RBAC with its own calls."""
    token = cluster.kubectl("create", "token", account, "-n", namespace,
                            "--duration", "1h").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    ca = admin["clusters"][0]["cluster"]["certificate-authority-data"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server,
                                                   "certificate-authority-data": ca}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator",
                                                      "namespace": namespace}}]}))
    path.chmod(0o600)
    return path

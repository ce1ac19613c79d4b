"""The real node: it runs the image built from the Dockerfile in a restricted pod, and its stop
leaves the machine as it found it (processes, mounts, cgroups, bridge, netns, paths, sysctls,
iptables chains)."""

from __future__ import annotations

import json
import time

import pytest
from district_devtools.localcluster.controlplane import ControlPlane, repo_root
from district_devtools.localcluster.realnode import (
    GATEWAY,
    NodeUnavailable,
    RealNode,
    build_images,
    machine_snapshot,
    node_binaries_dir,
    prepare_bridge,
)

from tests.conftest import missing

pytestmark = pytest.mark.cluster


def restricted_pod(image: str) -> dict[str, object]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probe", "namespace": "default"},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "Never",
                # The image's entrypoint is sftpd; its help is the cheapest real run of it.
                "args": ["--help"],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


def test_a_real_node_runs_the_image_and_stop_leaves_the_machine_as_found(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp_path = tmp_path_factory.mktemp("rn")  # short: the node's unix sockets live beneath
    repo = repo_root()
    assert repo is not None
    before = machine_snapshot()
    try:
        bin_dir = node_binaries_dir(repo)
        images = build_images(repo)
    except NodeUnavailable as exc:
        missing(str(exc))
        raise
    prepare_bridge()
    plane = ControlPlane.start(tmp_path / "cluster", address=GATEWAY)
    node: RealNode | None = None
    try:
        node = RealNode.start(plane, tmp_path / "cluster" / "node", bin_dir, images)
        app = next(name for _, name in images if "pause" not in name)
        plane.kubectl("apply", "-f", "-", input=json.dumps(restricted_pod(app)))
        deadline = time.monotonic() + 120
        phase = ""
        while time.monotonic() < deadline and phase not in ("Succeeded", "Failed"):
            time.sleep(1)
            phase = plane.kubectl("get", "pod", "probe", "-o",
                                  "jsonpath={.status.phase}").stdout
        assert phase == "Succeeded", plane.kubectl("describe", "pod", "probe").stdout
        logs = plane.kubectl("logs", "probe").stdout
        assert "usage: sftpd" in logs
        during = machine_snapshot()
        assert during["processes"] != before["processes"]  # the node really ran
    finally:
        if node is not None:
            node.stop(plane)
        plane.stop()
        RealNode.remove_bridge()
    after = machine_snapshot()
    assert after == before

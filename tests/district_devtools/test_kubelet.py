"""The kubelet stand-in lays volumes out and confines a container the way a kubelet would."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from district_devtools.localcluster import kubelet
from district_operator import names

from tests.conftest import REPO, missing


def test_secret_volume_has_the_kubelets_layout(tmp_path: Path) -> None:
    """A timestamped directory, `..data` pointing at it, every key a link through `..data`."""
    directory = tmp_path / "keys"
    kubelet.write_secret_volume(directory, {"a": b"A", "b": b"B"}, {"defaultMode": 0o400},
                                "keys")
    data = directory / "..data"
    assert data.is_symlink()
    stamp = os.readlink(data)
    assert re.fullmatch(r"\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d+", stamp)
    for key in ("a", "b"):
        assert os.readlink(directory / key) == f"..data/{key}"
        assert stat.S_IMODE((directory / stamp / key).stat().st_mode) == 0o400
    assert (directory / "a").read_bytes() == b"A"


def test_secret_update_swaps_data_link_and_drops_removed_keys(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    kubelet.write_secret_volume(directory, {"a": b"1", "gone": b"x"}, {}, "keys")
    before = os.readlink(directory / "..data")
    kubelet.write_secret_volume(directory, {"a": b"2", "new": b"y"}, {}, "keys")
    after = os.readlink(directory / "..data")
    assert after != before and not (directory / before).exists()
    assert (directory / "a").read_bytes() == b"2" and (directory / "new").read_bytes() == b"y"
    assert not (directory / "gone").exists() and not (directory / "gone").is_symlink()
    assert sorted(p.name for p in directory.iterdir()) == sorted([after, "..data", "a", "new"])


def test_secret_items_choose_keys_paths_and_modes(tmp_path: Path) -> None:
    spec = {"secretName": "s", "defaultMode": 0o644,
            "items": [{"key": "a", "path": "sub/one", "mode": 0o600}]}
    kubelet.write_secret_volume(tmp_path / "v", {"a": b"A", "b": b"B"}, spec, "v")
    assert sorted(p.name for p in (tmp_path / "v").iterdir() if not p.name.startswith("..")) \
        == ["sub"]
    assert (tmp_path / "v" / "sub" / "one").read_bytes() == b"A"
    assert stat.S_IMODE((tmp_path / "v" / "sub" / "one").stat().st_mode) == 0o600
    with pytest.raises(kubelet.PodSpecError, match="couldn't find key c"):
        kubelet.write_secret_volume(tmp_path / "w", {"a": b"A"},
                                    {"secretName": "s", "items": [{"key": "c", "path": "c"}]},
                                    "w")


def test_fs_group_makes_owner_only_files_group_readable(tmp_path: Path) -> None:
    """0400 host keys stay readable by uid 10001 only through fsGroup: kubelet adds 0440."""
    if os.geteuid() != 0:
        missing("root, to change group ownership")
    kubelet.write_secret_volume(tmp_path / "v", {"k": b"K"}, {"defaultMode": 0o400}, "v")
    kubelet.apply_fs_group(tmp_path / "v", names.RUN_AS_USER, read_only=True)
    real = (tmp_path / "v" / "k").resolve()
    assert real.stat().st_gid == names.RUN_AS_USER
    assert stat.S_IMODE(real.stat().st_mode) == 0o440


def test_env_expansion_follows_kubernetes() -> None:
    env = {"A": "x"}
    assert kubelet.expand("$(A)-$(B)-$$(A)", env) == "x-$(B)-$(A)"


def pod_spec(script: str, **container: Any) -> dict[str, Any]:
    return {
        "securityContext": {"runAsUser": names.RUN_AS_USER, "runAsGroup": names.RUN_AS_USER,
                            "fsGroup": names.RUN_AS_USER, "runAsNonRoot": True},
        "containers": [{"name": "c", "command": ["sh", "-c", script],
                        "securityContext": {"readOnlyRootFilesystem": True,
                                            "allowPrivilegeEscalation": False},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                         {"name": "tmp", "mountPath": "/tmp"},
                                         {"name": "ro", "mountPath": "/etc/standin/ro",
                                          "readOnly": True}],
                        **container}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "claim"}},
                    {"name": "tmp", "emptyDir": {}}, {"name": "ro", "emptyDir": {}}],
    }


def run(tmp_path: Path, script: str, **container: Any) -> kubelet.ContainerResult:
    if os.geteuid() != 0:
        missing("root, for the kubelet stand-in's mount namespace")
    pod = kubelet.LocalPod(kube=None, namespace="n", pod_spec=pod_spec(script, **container),  # type: ignore[arg-type]
                           workdir=tmp_path / "pod", claims={"claim": tmp_path / "claim"})
    pod.start()
    return pod.wait(60)


def test_container_is_confined_to_its_volumes(tmp_path: Path) -> None:
    script = ("set -e; id -u; id -G; pwd; echo data > /data/f; echo tmp > /tmp/f; "
              "touch /etc/standin/ro/f 2>/dev/null && exit 11; "
              "printf '{\"outcome\":\"Succeeded\"}' > /dev/termination-log")
    result = run(tmp_path, script)
    log = (tmp_path / "pod" / "container.log").read_text()
    assert result.exit_code == 0, log
    assert log.split()[:3] == [str(names.RUN_AS_USER), str(names.RUN_AS_USER),
                               kubelet.IMAGE_WORKDIR]
    assert json.loads(result.message) == {"outcome": "Succeeded"}
    written = tmp_path / "claim" / "f"
    assert written.read_text() == "data\n" and written.stat().st_uid == names.RUN_AS_USER
    # The mount points were made inside the container's root, never on this machine.
    assert not Path("/data").exists() and not Path("/etc/standin").exists()
    assert not Path("/dev/termination-log").exists()


def test_root_file_system_is_read_only_even_for_root(tmp_path: Path) -> None:
    """As uid 0 (so file permissions cannot be what refuses), only the volumes take writes."""
    spec = pod_spec("for f in /f /etc/standin/f /usr/f /data/f /tmp/f; do "
                    "touch $f 2>/dev/null && echo wrote $f || echo refused $f; done")
    spec["securityContext"] = {"runAsUser": 0}
    if os.geteuid() != 0:
        missing("root, for the kubelet stand-in's mount namespace")
    pod = kubelet.LocalPod(kube=None, namespace="n", pod_spec=spec,  # type: ignore[arg-type]
                           workdir=tmp_path / "pod", claims={"claim": tmp_path / "claim"})
    pod.start()
    assert pod.wait(60).exit_code == 0
    assert pod.log_path.read_text().splitlines() == [
        "refused /f", "refused /etc/standin/f", "refused /usr/f", "wrote /data/f",
        "wrote /tmp/f"]
    assert not Path("/usr/f").exists()


def test_failure_without_message_falls_back_to_the_log(tmp_path: Path) -> None:
    result = run(tmp_path, "echo first; echo the last words >&2; exit 3",
                 terminationMessagePolicy="FallbackToLogsOnError")
    assert (result.exit_code, result.reason) == (3, "Error")
    assert result.message.splitlines()[-1] == "the last words"


def test_non_root_pod_refuses_uid_zero(tmp_path: Path) -> None:
    spec = pod_spec("true")
    spec["securityContext"]["runAsUser"] = 0
    pod = kubelet.LocalPod(kube=None, namespace="n", pod_spec=spec,  # type: ignore[arg-type]
                           workdir=tmp_path / "pod", claims={"claim": tmp_path / "claim"})
    if os.geteuid() != 0:
        missing("root")
    with pytest.raises(kubelet.PodSpecError, match="runAsNonRoot"):
        pod.start()


def test_stand_in_matches_the_images_dockerfile() -> None:
    """Entrypoint, working directory, user and environment as the Dockerfile builds them."""
    text = (REPO / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]
    assert json.loads(re.search(r"^ENTRYPOINT (.+)$", final, re.M).group(1)) == \
        list(kubelet.IMAGE_ENTRYPOINT)
    assert re.search(r"^WORKDIR (\S+)$", final, re.M).group(1) == kubelet.IMAGE_WORKDIR
    assert re.search(r"^USER (\d+):(\d+)$", final, re.M).groups() == \
        (str(names.RUN_AS_USER), str(names.RUN_AS_USER))
    for key, value in kubelet.IMAGE_ENV.items():
        assert re.search(rf"\b{key}={value}\b", final), f"{key}={value} not in the image's ENV"
    assert kubelet.DATA_PLANE_ENTRYPOINT[-1] == kubelet.IMAGE_ENTRYPOINT[0]


def test_image_files_under_a_volume_stay_visible(tmp_path: Path) -> None:
    """The stand-ins for the image's files (interpreter, checkout) may live under /tmp, where
    the pod mounts an emptyDir: they are bound back on top, read-only, and the rest of /tmp
    stays the pod's own."""
    if os.geteuid() != 0:
        missing("root, for the kubelet stand-in's mount namespace")
    image = tmp_path / "image"
    image.mkdir()
    (image / "marker").write_text("from the image\n")
    (tmp_path / "host-only").write_text("not for the pod\n")
    assert str(image).startswith("/tmp/"), "pytest's temporary directory is expected in /tmp"
    script = (f"cat {image}/marker; touch {image}/x 2>/dev/null && echo wrote || echo refused; "
              f"test -e {tmp_path}/host-only && echo leaked || echo hidden")
    pod = kubelet.LocalPod(kube=None, namespace="n", pod_spec=pod_spec(script),  # type: ignore[arg-type]
                           workdir=tmp_path / "pod", claims={"claim": tmp_path / "claim"},
                           reachable=[*kubelet.interpreter_paths(), str(image)])
    pod.start()
    assert pod.wait(60).exit_code == 0, pod.log_path.read_text()
    assert pod.log_path.read_text().splitlines() == ["from the image", "refused", "hidden"]

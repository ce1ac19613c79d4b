"""The kubelet's part on this machine: materialize a pod spec's volumes and run its container."""

# What it stands in for, and what it does not (docs/architecture.md says the same):
#
# - Volumes as the kubelet lays them out: a Secret volume is a directory holding a timestamped
#   data directory, a `..data` symlink to it and one symlink per key through `..data`, with
#   `items`, `mode` and `defaultMode`; emptyDir is a fresh 0777 directory; a
#   persistentVolumeClaim is a local directory the caller names. With `fsGroup` (and root) the
#   volumes get the kubelet's group ownership and permission bits, with
#   `fsGroupChangePolicy: OnRootMismatch` honoured for the claim.
# - The container runs in a private mount namespace whose root is a read-only view of this
#   machine with the volumes bind-mounted at their real mountPaths (readOnly honoured) and the
#   termination message file at its real path, as runAsUser/runAsGroup with fsGroup as a
#   supplementary group, no_new_privs when allowPrivilegeEscalation is false, all capabilities
#   gone with the uid change. Env comes from value, secretKeyRef and fieldRef, with $(VAR)
#   expansion; the image's entrypoint is the caller's (there is no image).
# - Not stood in for: images and their file systems (the container sees this machine's
#   programs), network namespaces (the container shares the host's network, so the caller maps
#   ports through environment overrides), NetworkPolicy, resource limits, seccomp, PID
#   namespaces, probes other than tcpSocket, restarts. Needs root (CI and the demo run as root).

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from district_operator import api

FIELD_MANAGER = "kubelet-stand-in"
NODE_NAME = "local-kubelet"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
# What the kubelet keeps of a termination message, and of the logs when falling back to them.
MAX_TERMINATION_BYTES = 4096
FALLBACK_LOG_BYTES = 2048
FALLBACK_LOG_LINES = 80
# The kubelet's permission masks for fsGroup ownership (pkg/volume/volume_linux.go).
READ_WRITE_MASK = 0o660
READ_ONLY_MASK = 0o440
EXEC_MASK = 0o110
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The data-plane image (Dockerfile): ENTRYPOINT ["sftpd"], here this interpreter running the
# package; its WORKDIR and ENV, which a container starts with.
DATA_PLANE_ENTRYPOINT: tuple[str, ...] = (sys.executable, "-m", "sftpd")
IMAGE_ENTRYPOINT: tuple[str, ...] = ("sftpd",)
IMAGE_WORKDIR = "/tmp"
IMAGE_ENV: Mapping[str, str] = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


def checkout_paths() -> tuple[str, ...]:
    """Where this process imports both planes and their contract from: the image's contents."""
    import district_contract
    import district_operator

    import sftpd
    return tuple(dict.fromkeys(str(Path(str(module.__file__)).resolve().parents[1])
                               for module in (sftpd, district_operator, district_contract)))


def interpreter_paths() -> tuple[str, ...]:
    """What the entrypoint needs to read: the interpreter, its libraries, this checkout."""
    paths = {sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent),
             sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
             *checkout_paths()}
    return tuple(sorted(paths))




class PodSpecError(RuntimeError):
    """The pod cannot start as specified (what the kubelet would report as an event)."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def secret_data(kube: api.Kube, namespace: str, name: str) -> dict[str, bytes] | None:
    secret = kube.get("Secret", namespace, name)
    if secret is None:
        return None
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


# ---- volumes ------------------------------------------------------------------------------

def write_secret_volume(directory: Path, data: Mapping[str, bytes], spec: Mapping[str, Any],
                        volume: str) -> None:
    """The kubelet's atomic-writer layout: files in a timestamped dir, links via `..data`;
    on an existing volume, the kubelet's update: a new dir, `..data` swapped, the old removed."""
    default_mode = int(spec.get("defaultMode", 0o644))
    items = spec.get("items")
    files: dict[str, tuple[bytes, int]] = {}
    if items:
        for item in items:
            if item["key"] not in data:
                if spec.get("optional"):
                    continue
                raise PodSpecError(f"volume {volume}: couldn't find key {item['key']} "
                                   f"in Secret {spec.get('secretName')}")
            files[item["path"]] = (data[item["key"]], int(item.get("mode", default_mode)))
    else:
        files = {key: (value, default_mode) for key, value in data.items()}
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    payload = directory / stamp
    payload.mkdir(mode=0o755)
    for relative, (content, mode) in files.items():
        target = payload / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode)
    data_link = directory / "..data"
    previous = str(data_link.readlink()) if data_link.is_symlink() else None
    # The swap a running container sees as one change: a new link renamed over `..data`.
    (directory / "..data_tmp").symlink_to(stamp)
    (directory / "..data_tmp").replace(data_link)
    tops = {relative.split("/")[0] for relative in files}
    for entry in directory.iterdir():
        if not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    for top in sorted(tops):
        if not (directory / top).is_symlink():
            (directory / top).symlink_to(f"..data/{top}")
    if previous is not None:
        shutil.rmtree(directory / previous)


def apply_fs_group(root: Path, group: int, read_only: bool) -> None:
    """What the kubelet does to a volume for fsGroup: group ownership and group access bits."""
    mask = READ_ONLY_MASK if read_only else READ_WRITE_MASK
    for path in [root, *root.rglob("*")]:
        os.lchown(path, -1, group)
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        extra = mask | (stat.S_ISGID | EXEC_MASK if stat.S_ISDIR(info.st_mode) else 0)
        path.chmod(stat.S_IMODE(info.st_mode) | extra)


def _owned_by_group(root: Path, group: int) -> bool:
    info = root.stat()
    return info.st_gid == group and bool(info.st_mode & stat.S_ISGID)


# ---- env ----------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z0-9]+)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, $$ escapes, others stay."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return _REFERENCE.sub(replace, text)


@dataclass
class ContainerResult:
    """How a container ended, as the kubelet reports it."""

    exit_code: int
    message: str
    started_at: str
    finished_at: str

    @property
    def reason(self) -> str:
        return "Completed" if self.exit_code == 0 else "Error"


@dataclass
class LocalPod:
    """One pod spec, materialized under `workdir`, its (single) container run as a process."""

    kube: api.Kube
    namespace: str
    pod_spec: Mapping[str, Any]
    workdir: Path
    claims: Mapping[str, Path] = field(default_factory=dict)
    entrypoint: Sequence[str] = DATA_PLANE_ENTRYPOINT
    env_overrides: Mapping[str, str] = field(default_factory=dict)
    # Host paths the entrypoint reads (the image's files here): made reachable for runAsUser.
    reachable: Sequence[str] = field(default_factory=interpreter_paths)
    pod_name: str = "local"
    pod_uid: str = ""
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    volume_dirs: dict[str, Path] = field(default_factory=dict)
    secret_contents: dict[str, Mapping[str, bytes]] = field(default_factory=dict)

    @property
    def container(self) -> Mapping[str, Any]:
        containers = self.pod_spec.get("containers") or []
        if len(containers) != 1:
            raise PodSpecError(f"the stand-in runs exactly one container, not {len(containers)}")
        return containers[0]  # type: ignore[no-any-return]

    @property
    def security(self) -> Mapping[str, Any]:
        return self.pod_spec.get("securityContext") or {}

    @property
    def log_path(self) -> Path:
        return self.workdir / "container.log"

    @property
    def termination_file(self) -> Path:
        return self.workdir / "termination-log"

    def materialize(self) -> None:
        """Lay out every volume the pod declares, as the kubelet would before starting it."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        group = self.security.get("fsGroup")
        as_root = os.geteuid() == 0
        for volume in self.pod_spec.get("volumes") or []:
            name = volume["name"]
            if "secret" in volume:
                target = self.workdir / "volumes" / name
                self._write_secret(volume, target)
            elif "emptyDir" in volume:
                target = self.workdir / "volumes" / name
                target.mkdir(parents=True)
                target.chmod(0o777)
                if group is not None and as_root:
                    apply_fs_group(target, int(group), read_only=False)
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if claim not in self.claims:
                    raise PodSpecError(f"volume {name}: no local directory for claim {claim}")
                target = self.claims[claim]
                target.mkdir(parents=True, exist_ok=True)
                policy = self.security.get("fsGroupChangePolicy", "Always")
                if group is not None and as_root and not (
                        policy == "OnRootMismatch" and _owned_by_group(target, int(group))):
                    apply_fs_group(target, int(group), read_only=False)
            else:
                raise PodSpecError(f"volume {name}: this stand-in has no {sorted(volume)} volumes")
            self.volume_dirs[name] = target

    def _write_secret(self, volume: Mapping[str, Any], target: Path) -> bool:
        spec = volume["secret"]
        data = secret_data(self.kube, self.namespace, spec["secretName"])
        if data is None and not spec.get("optional"):
            raise PodSpecError(f"volume {volume['name']}: Secret {spec['secretName']} not found")
        if self.secret_contents.get(volume["name"]) == (data or {}):
            return False
        write_secret_volume(target, data or {}, spec, volume["name"])
        group = self.security.get("fsGroup")
        if group is not None and os.geteuid() == 0:
            apply_fs_group(target, int(group), read_only=True)
        self.secret_contents[volume["name"]] = data or {}
        return True

    def sync_secrets(self) -> list[str]:
        """The kubelet's periodic sync: Secret volumes whose Secret changed are swapped in
        place, under the running container; returns the volumes that changed."""
        return [volume["name"] for volume in self.pod_spec.get("volumes") or []
                if "secret" in volume
                and self._write_secret(volume, self.volume_dirs[volume["name"]])]

    def environment(self) -> dict[str, str]:
        """The container's environment: literal values, Secret keys and pod fields, expanded."""
        fields = {"metadata.name": self.pod_name, "metadata.namespace": self.namespace,
                  "metadata.uid": self.pod_uid, "spec.nodeName": NODE_NAME,
                  "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
        # The container imports the planes from the same checkout as this process, as an image
        # built from it would hold them.
        env = {"PATH": CONTAINER_PATH, **IMAGE_ENV, "PYTHONPATH": os.pathsep.join(checkout_paths()),
               "HOSTNAME": self.pod_name, "HOME": "/"}
        for item in self.container.get("env") or []:
            name = item["name"]
            if "value" in item:
                env[name] = expand(str(item["value"]), env)
                continue
            source = item.get("valueFrom") or {}
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                data = secret_data(self.kube, self.namespace, ref["name"])
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise PodSpecError(f"env {name}: Secret {ref['name']} key {ref['key']} "
                                       "not found (CreateContainerConfigError)")
                env[name] = data[ref["key"]].decode()
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                if path not in fields:
                    raise PodSpecError(f"env {name}: fieldRef {path} is not stood in for")
                env[name] = fields[path]
            else:
                raise PodSpecError(f"env {name}: this stand-in has no {sorted(source)}")
        env.update(self.env_overrides)
        return env

    def argv(self, env: Mapping[str, str]) -> list[str]:
        command = list(self.container.get("command") or self.entrypoint)
        return [expand(part, env) for part in [*command, *(self.container.get("args") or [])]]

    def mounts(self) -> list[dict[str, Any]]:
        out = []
        for mount in self.container.get("volumeMounts") or []:
            source = self.volume_dirs[mount["name"]]
            if mount.get("subPath"):
                source = source / mount["subPath"]
            out.append({"source": str(source), "target": mount["mountPath"],
                        "readOnly": bool(mount.get("readOnly"))})
        self.termination_file.write_bytes(b"")
        self.termination_file.chmod(0o666)
        out.append({"source": str(self.termination_file),
                    "target": self.container.get("terminationMessagePath",
                                                 DEFAULT_TERMINATION_PATH),
                    "readOnly": False})
        return out

    def start(self) -> subprocess.Popen[bytes]:
        """Start the container's process in its own mount namespace and process group."""
        if os.geteuid() != 0:
            raise PodSpecError("the kubelet stand-in needs root for its mount namespace")
        if not self.volume_dirs:
            self.materialize()
        env = self.environment()
        pod_security = self.security
        container_security = self.container.get("securityContext") or {}
        user = container_security.get("runAsUser", pod_security.get("runAsUser", 0))
        group = container_security.get("runAsGroup", pod_security.get("runAsGroup", 0))
        groups = list(pod_security.get("supplementalGroups") or [])
        if pod_security.get("fsGroup") is not None:
            groups.insert(0, pod_security["fsGroup"])
        if (container_security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
                and user == 0):
            raise PodSpecError("container has runAsNonRoot and image will run as root")
        rootfs = self.workdir / "rootfs"
        rootfs.mkdir(exist_ok=True)
        plan = {
            "rootfs": str(rootfs), "mounts": self.mounts(), "argv": self.argv(env), "env": env,
            "uid": int(user), "gid": int(group), "groups": [int(g) for g in groups],
            "workingDir": self.container.get("workingDir") or IMAGE_WORKDIR,
            "readOnlyRoot": bool(container_security.get("readOnlyRootFilesystem")),
            "noNewPrivs": container_security.get("allowPrivilegeEscalation") is False,
            "reachable": list(self.reachable),
        }
        plan_file = self.workdir / "plan.json"
        plan_file.write_text(json.dumps(plan))
        self.started_at = _now()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "district_devtools.localcluster.container",
                 str(plan_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        return self.process

    def wait(self, timeout: float | None = None) -> ContainerResult:
        """Wait for the container to end; its result with the termination message."""
        assert self.process is not None, "start() first"
        code = self.process.wait(timeout)
        return self._result(code)

    def stop(self, grace: float | None = None) -> ContainerResult | None:
        """SIGTERM, then SIGKILL after the pod's grace period, as the kubelet stops a pod."""
        if self.process is None:
            return None
        if grace is None:
            grace = float(self.pod_spec.get("terminationGracePeriodSeconds", 30))
        if self.process.poll() is None:
            with _suppress_gone():
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with _suppress_gone():
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        # Anything the container left behind in its group goes too.
        with _suppress_gone():
            os.killpg(self.process.pid, signal.SIGKILL)
        return self._result(self.process.returncode)

    def _result(self, code: int) -> ContainerResult:
        message = self.termination_file.read_bytes()[:MAX_TERMINATION_BYTES].decode(
            errors="replace")
        policy = self.container.get("terminationMessagePolicy", "File")
        if not message.strip() and code != 0 and policy == "FallbackToLogsOnError":
            tail = self.log_path.read_bytes()[-FALLBACK_LOG_BYTES:].decode(errors="replace")
            message = "\n".join(tail.splitlines()[-FALLBACK_LOG_LINES:])
        # A signal's death is reported by the kubelet as 128 + the signal number.
        exit_code = code if code >= 0 else 128 - code
        return ContainerResult(exit_code=exit_code, message=message, started_at=self.started_at,
                               finished_at=_now())

    def wait_ready(self, port: int, timeout: float = 30) -> None:
        """The tcpSocket readiness probe, on the local port the container port maps to."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise PodSpecError(f"the container exited with {self.process.returncode} before "
                                   f"it was ready:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not ready on port {port} after {timeout:.0f}s:\n"
                                       f"{self.log_tail()}") from None
                time.sleep(0.1)

    def log_tail(self, size: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-size:].decode(errors="replace")


class _suppress_gone:  # noqa: N801 - used like contextlib.suppress
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], ProcessLookupError | PermissionError)


# ---- reporting to the API, as the kubelet (and the scheduler) would -----------------------

def bind_pod(kube: api.Kube, namespace: str, pod_name: str) -> None:
    """The scheduler's part: bind the pod to this stand-in's node name."""
    kube.acting_as(FIELD_MANAGER).bind_pod(namespace, pod_name, NODE_NAME)


def _conditions(ready: bool, reason: str | None = None) -> list[dict[str, Any]]:
    now = _now()
    out = [{"type": kind, "status": "True", "lastTransitionTime": now}
           for kind in ("PodScheduled", "Initialized")]
    for kind in ("ContainersReady", "Ready"):
        condition = {"type": kind, "status": "True" if ready else "False",
                     "lastTransitionTime": now}
        if reason:
            condition["reason"] = reason
        out.append(condition)
    return out


def _patch_status(kube: api.Kube, namespace: str, pod_name: str, status: Mapping[str, Any]
                  ) -> dict[str, Any]:
    return kube.acting_as(FIELD_MANAGER).merge_patch("Pod", namespace, pod_name,
                                                     {"status": dict(status)}, "status")


def report_running(kube: api.Kube, namespace: str, pod_name: str, pod: LocalPod,
                   ready: bool = True) -> dict[str, Any]:
    """Pod status Running (and Ready once the probe passed), as the kubelet writes it."""
    container = pod.container
    return _patch_status(kube, namespace, pod_name, {
        "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
        "startTime": pod.started_at, "conditions": _conditions(ready),
        "containerStatuses": [{
            "name": container["name"], "image": container.get("image", ""), "imageID": "",
            "ready": ready, "started": True, "restartCount": 0,
            "state": {"running": {"startedAt": pod.started_at}}}],
    })


def report_terminated(kube: api.Kube, namespace: str, pod_name: str, pod: LocalPod,
                      result: ContainerResult) -> dict[str, Any]:
    """Pod status Succeeded/Failed with the terminated container and its termination message."""
    container = pod.container
    terminated: dict[str, Any] = {"exitCode": result.exit_code, "reason": result.reason,
                                  "startedAt": result.started_at,
                                  "finishedAt": result.finished_at}
    if result.message:
        terminated["message"] = result.message
    return _patch_status(kube, namespace, pod_name, {
        "phase": "Succeeded" if result.exit_code == 0 else "Failed",
        "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": result.started_at,
        "conditions": _conditions(False, "PodCompleted"),
        "containerStatuses": [{
            "name": container["name"], "image": container.get("image", ""), "imageID": "",
            "ready": False, "started": False, "restartCount": 0,
            "state": {"terminated": terminated}}],
    })

"""The Dockerfile cannot be built here (no container runtime): check everything it refers to.

Paths it copies exist and are in the build context; its builder stage, replayed on exactly the
copied files, produces a wheel whose console scripts are the ones the image and the chart run;
its user is the pods' uid; its Python satisfies requires-python; nothing needs a shell.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from district_operator import builders, names
from district_operator.model import parse_district
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def build_args() -> dict[str, str]:
    args = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value.strip('"')
    return args


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for word, rest in instructions():
        if word == "FROM":
            out.append([])
        if out:
            out[-1].append((word, rest))
    return out


def local_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    copies = []
    for word, rest in instructions():
        if word == "COPY" and "--from=" not in rest:
            parts = rest.split()
            copies.append((parts[:-1], parts[-1]))
    return copies


def dockerignored(path: str) -> bool:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    parts = path.strip("/").split("/")
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if any(fnmatch.fnmatch("/".join(parts[:n]), pattern) for n in range(1, len(parts) + 1)):
            return True
        if pattern.startswith("**/") and any(fnmatch.fnmatch(p, bare) for p in parts):
            return True
    return False


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def test_two_stages_from_the_same_python() -> None:
    builder, runtime = stages()
    assert builder[0][1].endswith(" AS builder")
    assert runtime[0][1] == builder[0][1].removesuffix(" AS builder")
    assert any("--from=builder" in rest for word, rest in runtime if word == "COPY")


def test_copied_paths_exist_and_are_in_the_build_context() -> None:
    sources = [s for group, _ in local_copies() for s in group]
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: missing in the repository"
        assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    # The build context leaves out what the image never needs.
    for heavy in ("tests", ".git", "docs", "bench", "charts"):
        assert dockerignored(heavy), heavy


def test_python_version_satisfies_requires_python() -> None:
    image = build_args()["PYTHON_IMAGE"]
    match = re.fullmatch(r"python:(\d+\.\d+)-slim-(\w+)", image)
    assert match, f"{image}: expected python:<major.minor>-slim-<debian release>"
    assert match.group(1) in SpecifierSet(PYPROJECT["project"]["requires-python"])
    # The tests and CI run this same minor version.
    assert match.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_user_is_the_pods_uid() -> None:
    runtime = stages()[-1]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users == [f"{names.RUN_AS_USER}:{names.RUN_AS_USER}"]
    useradd = next(rest for word, rest in runtime if word == "RUN" and "useradd" in rest)
    assert f"--uid {names.RUN_AS_USER}" in useradd and f"--gid {names.RUN_AS_USER}" in useradd
    chart_values = yaml.safe_load((REPO / "charts/district-sftp/values.yaml").read_text())
    assert chart_values["podSecurityContext"]["runAsUser"] == names.RUN_AS_USER
    assert builders.common.pod_security_context()["runAsUser"] == names.RUN_AS_USER


def test_postgresql_clients_for_the_backup_job() -> None:
    packages = build_args()["POSTGRESQL_CLIENT_PACKAGES"].split()
    assert packages and all(re.fullmatch(r"postgresql-client-\d+", p) for p in packages)
    install = next(rest for word, rest in stages()[-1] if word == "RUN" and "apt-get" in rest)
    assert "${POSTGRESQL_CLIENT_PACKAGES}" in install
    assert "--no-install-recommends" in install and "rm -rf /var/lib/apt/lists/*" in install


def district_containers() -> list[dict[str, Any]]:
    """The containers the operator writes for a District with every job on."""
    district = parse_district({
        "apiVersion": names.API_VERSION, "kind": names.KIND,
        "metadata": {"name": "lincoln", "namespace": "d", "uid": "u-1", "generation": 1},
        "spec": {"authorizedKeys": [], "processing": {"databaseSecretRef": {"name": "db"}},
                 "backups": {"databaseSecretRef": {"name": "db"}}}})
    children = builders.desired_children(district, builders.BuildInputs(image="i"), "")
    containers = []
    for child in children:
        if child["kind"] == "Deployment":
            containers += child["spec"]["template"]["spec"]["containers"]
        elif child["kind"] == "CronJob":
            containers += child["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return containers


def test_entrypoint_runs_what_the_operator_and_the_chart_ask_for() -> None:
    runtime = stages()[-1]
    entrypoint = exec_form(next(rest for word, rest in runtime if word == "ENTRYPOINT"))
    assert entrypoint == ["sftpd"]
    scripts = PYPROJECT["project"]["scripts"]
    assert entrypoint[0] in scripts
    # District pods give arguments only, so the image's entry point must be sftpd...
    containers = district_containers()
    assert len(containers) == 4
    subcommands = {c["args"][0] for c in containers}
    assert all("command" not in c for c in containers)
    assert subcommands == {"serve", "process-epochs", "retention", "backup"}
    for subcommand in subcommands:
        result = subprocess.run([sys.executable, "-m", "sftpd", subcommand, "--help"],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"sftpd {subcommand}: {result.stderr}"
    # ...and the chart's operator Deployment replaces it with the other console script.
    deployment = (REPO / "charts/district-sftp/templates/deployment.yaml").read_text()
    command = re.search(r"command: \[(\S+)\]", deployment)
    assert command is not None and command.group(1) in scripts
    assert command.group(1) == "district-operator"


def test_no_shell_at_run_time() -> None:
    for word, rest in stages()[-1]:
        if word in ("ENTRYPOINT", "CMD"):
            exec_form(rest)
    offenders = []
    for source in [*(REPO / "sftpd").rglob("*.py"), *(REPO / "operator").rglob("*.py")]:
        text = source.read_text()
        if re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(|/bin/sh", text):
            offenders.append(str(source.relative_to(REPO)))
    assert offenders == []


def test_builder_stage_makes_a_wheel_with_both_entry_points(tmp_path: Path) -> None:
    """Replay the builder's COPY lines into an empty directory and build the wheel from it."""
    context = tmp_path / "src"
    context.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for sources, destination in local_copies():
        for source in sources:
            target = context / destination
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=ignore)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / source, target / Path(source).name)
    wheels = tmp_path / "wheels"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                             "--no-build-isolation", "--wheel-dir", str(wheels), "."],
                            cwd=context, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"pip wheel failed on the copied files:\n{result.stdout}\n{result.stderr}")
    [wheel] = wheels.glob("district_sftp-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in files
                            if n.endswith(".dist-info/entry_points.txt"))
    scripts = PYPROJECT["project"]["scripts"]
    for script in ("sftpd", "district-operator"):
        assert f"{script} = {scripts[script]}" in entry_points
        module = scripts[script].split(":")[0].replace(".", "/") + ".py"
        assert module in files, f"{script}: {module} is not in the wheel"
    assert "sftpd/tree.py" in files and "district_operator/names.py" in files
    assert not any(name.startswith("tests/") for name in files)

"""Shared fixtures: a real Kubernetes control plane and a throwaway PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from district_devtools.postgres import (
    PostgresServer,
    PostgresUnavailable,
    start_postgres,
)

REPO = Path(__file__).resolve().parent.parent
# The field manager of the tests' own API writes (creating Districts, Secrets, ...).
TEST_FIELD_MANAGER = "district-tests"


def missing(what: str) -> None:
    """Skip on a developer machine; in CI a missing server or binary is a failure, never a skip."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI needs {what}", pytrace=False)
    pytest.skip(f"needs {what}")


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"the `{name}` program")
        raise AssertionError("unreachable")
    return path


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL server of its own, on a free loopback port, for the whole session."""
    # Not under tmp_path_factory: pytest makes its base 0700 for root, and the server runs as
    # the postgres user, which must be able to reach its data directory.
    base = Path(tempfile.mkdtemp(prefix="district-sftp-postgres-"))
    try:
        server = start_postgres(base)
    except PostgresUnavailable as exc:
        shutil.rmtree(base, ignore_errors=True)
        missing(str(exc))
        raise
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


_db_counter = 0


@pytest.fixture
def database_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's server; its libpq URL."""
    global _db_counter
    _db_counter += 1
    return postgres.create_database(f"t{os.getpid()}_{_db_counter}")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real etcd + kube-apiserver + kube-controller-manager for the whole session."""
    from district_devtools.localcluster.controlplane import ControlPlane, ControlPlaneUnavailable

    try:
        plane = ControlPlane.start(tmp_path_factory.mktemp("cluster"))
    except ControlPlaneUnavailable as exc:
        missing(str(exc))
        raise
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(plane.kubeconfig)
    try:
        yield plane
    finally:
        plane.stop()
        if old is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old


@pytest.fixture(scope="session")
def crd(cluster: Any) -> Any:
    """The cluster with the District CRD from crds/ installed (operator and plugin tests)."""
    from district_operator import names

    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(REPO / "crds" / "district.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    f"crd/{names.PLURAL}.{names.GROUP}")
    return cluster


@pytest.fixture(scope="session")
def kube(crd: Any) -> Iterator[Any]:
    """An API client writing as the tests (field manager `district-tests`)."""
    from district_operator import api

    client = api.Kube(field_manager=TEST_FIELD_MANAGER)
    yield client
    client.close()

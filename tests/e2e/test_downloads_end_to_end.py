"""End to end: spec.downloads applied to a real API server, the docviewer and pdfs CronJobs' pod
specs run as uid 10001 against a real PostgreSQL, the results back in the District's status, and
the district downloading the export with OpenSSH `sftp`.

What is stood in for, and how: as in test_district_end_to_end.py (the kubelet stand-in runs
the Pods the real Job and Deployment controllers made, with the Secret volumes laid out as the
kubelet lays them out, `items` and `defaultMode` and fsGroup included; a Binding stands in for
the scheduler; the Service's status for the cloud load balancer; a hostPath volume for the
provisioner). The Job controller and the operator are real.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from district_devtools.localcluster import node
from district_devtools.ports import free_port, wait_until
from district_devtools.postgres import PostgresServer
from district_operator import api, names

from sftpd import tree
from sftpd.downloads.contract import contract_sql
from sftpd.downloads.tokens import decode_token, generate_key, read_keys
from tests.conftest import REPO, TEST_FIELD_MANAGER, missing, require_binary
from tests.e2e.test_district_end_to_end import DISTRICT, LB_ADDRESS, condition, sftp

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.timeout(600)]

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
# (student, form, exported by the docviewer and extracted by pdfs today)
DOCUMENTS = (("S1", "IEP", True), ("S2", "504 Plan", True), ("S2", "ETR", False))


@pytest.fixture
def namespace(cluster: Any) -> Iterator[str]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(REPO / "crds" / "district.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    f"crd/{names.PLURAL}.{names.GROUP}")
    name = f"e2e-downloads-{os.getpid()}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    cluster.kubectl("delete", "persistentvolume", f"local-{name}-{names.data_pvc(DISTRICT)}",
                    "--wait=false", check=False)


@pytest.fixture
def operator(namespace: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "operator.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "district_operator.cli", "run", "--namespace", namespace,
         "--image", "registry.invalid/district-sftp:e2e", "--resync-seconds", "5",
         "--metrics-port", str(free_port()), "--health-port", "0"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    yield proc
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    log.close()


def seed(url: str) -> dict[int, tuple[str, str]]:
    """The documents contract and DOCUMENTS, active today; the ids exported -> (student, form)."""
    today = datetime.now(UTC).date()
    exported = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(contract_sql().encode())
        conn.execute("INSERT INTO documents.students VALUES ('S1', false), ('S2', false)")
        for student, form, chosen in DOCUMENTS:
            row = conn.execute(
                "INSERT INTO documents.documents (student_id, form, start_date, end_date,"
                " complete, pdf) VALUES (%s, %s, %s, %s, true, %s) RETURNING id",
                (student, form, today.replace(day=1), today.replace(year=today.year + 1),
                 PDF)).fetchone()
            assert row is not None
            if chosen:
                exported[row[0]] = (student, form)
    return exported


def test_downloads_end_to_end(cluster: Any, postgres: PostgresServer, namespace: str,
                              operator: subprocess.Popen[bytes], tmp_path: Path) -> None:
    require_binary("sftp")
    if os.geteuid() != 0:
        missing("root, for the kubelet stand-in's mount namespace")
    kube = api.Kube(field_manager=TEST_FIELD_MANAGER)
    database_url = postgres.create_database(f"e2e_downloads_{os.getpid()}")
    exported = seed(database_url)
    key = tmp_path / "district_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    token_key = generate_key()
    cluster.kubectl("-n", namespace, "create", "secret", "generic", "lincoln-db",
                    f"--from-literal=uri={database_url}")
    cluster.kubectl("-n", namespace, "create", "secret", "generic", "lincoln-docviewer",
                    f"--from-literal=fernet={token_key}")
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": names.API_VERSION, "kind": names.KIND,
        "metadata": {"name": DISTRICT, "namespace": namespace},
        "spec": {"authorizedKeys": [key.with_suffix(".pub").read_text().strip()],
                 "processing": {"databaseSecretRef": {"name": "lincoln-db"}},
                 "downloads": {
                     "docviewer": {"forms": ["IEP", "504 Plan"],
                                   "baseURL": "https://viewer.example.org/lincoln",
                                   "tokenSecretRef": {"name": "lincoln-docviewer",
                                                      "key": "fernet"}},
                     "pdfs": {"schedule": "0 4 1 7 *", "forms": ["IEP", "504 Plan"]},
                     "directories": ["state-ids"]}}}))
    for job in names.DOWNLOAD_JOBS:
        wait_until(lambda j=job: kube.get("CronJob", namespace, names.cronjob(DISTRICT, j)), 60,
                   f"CronJob {DISTRICT}-{job}")
    data_dir = tmp_path / "pvc"
    node.bind_claim(kube, namespace, names.data_pvc(DISTRICT), data_dir)
    node.expose_service(kube, namespace, names.service(DISTRICT), LB_ADDRESS)
    # The server runs with the Deployment's environment, SFTPD_DOWNLOAD_DIRECTORIES included.
    server = node.start_server(kube, namespace, DISTRICT, tmp_path / "server", data_dir,
                               free_port(), free_port())
    try:
        docviewer = node.run_cronjob(kube, namespace, DISTRICT, names.JOB_DOCVIEWER,
                                     tmp_path / "docviewer", data_dir, f"{DISTRICT}-docviewer-e2e")
        assert docviewer.result.exit_code == 0, docviewer.pod.log_tail()
        made = json.loads(docviewer.result.message)
        assert (made["kind"], made["outcome"], made["rows"]) == ("docviewer", "Succeeded", 2), made
        # The job read the token key as uid 10001 from the Secret volume: each URL's token
        # decodes with the Secret's key to an exported document.
        csv_path = data_dir / tree.DOCVIEWER / made["epoch"] / "documents.csv"
        rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
        key_file = tmp_path / "token-key"
        key_file.write_text(token_key + "\n")
        decoded = {}
        for row in rows:
            assert row["URL"].startswith("https://viewer.example.org/lincoln?token=")
            token = row["URL"].split("token=", 1)[1]
            document = decode_token(read_keys(key_file), token, datetime.now(UTC)).document_id
            decoded[document] = (row["Student Id"], row["Form"])
        assert decoded == exported

        pdfs = node.run_cronjob(kube, namespace, DISTRICT, names.JOB_PDFS, tmp_path / "pdfs",
                                data_dir, f"{DISTRICT}-pdfs-e2e")
        assert pdfs.result.exit_code == 0, pdfs.pod.log_tail()
        extracted = json.loads(pdfs.result.message)
        assert (extracted["outcome"], extracted["documents"]) == ("Succeeded", 2), extracted

        def recorded() -> dict[str, Any] | None:
            s = (kube.get(names.KIND, namespace, DISTRICT) or {}).get("status") or {}
            return s if s.get("lastDocviewer") and s.get("lastPdfs") else None
        status = wait_until(recorded, 90, "the download jobs' results in the District's status")
        assert status["lastDocviewer"]["epoch"] == made["epoch"]
        assert status["lastDocviewer"]["rows"] == 2
        assert status["lastPdfs"]["epoch"] == extracted["epoch"]
        assert condition(status, "DownloadsHealthy")["reason"] == "DownloadsSucceeded"

        # The district fetches the newest export over SFTP, byte for byte.
        known_hosts = tmp_path / "known_hosts"
        wait_until(lambda: district_known_hosts(kube, namespace), 60, "knownHosts")
        known_hosts.write_text(district_known_hosts(kube, namespace) or "")
        fetched = tmp_path / "documents.csv"
        got = sftp(key, server.port, known_hosts,
                   f"get /{tree.DOCVIEWER}/{made['epoch']}/documents.csv {fetched}\n"
                   "ls /downloads\n")
        assert got.returncode == 0, got.stderr
        assert fetched.read_bytes() == csv_path.read_bytes()
        # spec.downloads.directories reached the server through the Deployment's environment.
        assert "/downloads/state-ids" in got.stdout.split()
        assert (data_dir / tree.DOWNLOADS / "state-ids").is_dir()
    finally:
        server.stop()
        kube.close()


def district_known_hosts(kube: api.Kube, namespace: str) -> str | None:
    status = (kube.get(names.KIND, namespace, DISTRICT) or {}).get("status") or {}
    return status.get("knownHosts")

"""connect-info's host key fingerprints against ssh-keygen's own: SHA256 and the MD5 form older
clients pin (SameGoal's upload agent, older WinSCP), side by side."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import pytest
from district_operator.model import parse_district
from kubectl_district import connectinfo

from tests.conftest import require_binary
from tests.kubectl_district.conftest import public_line, ssh_keygen


def ssh_keygen_fingerprint(public: Path, digest: str) -> str:
    """`ssh-keygen -l -E <digest> -f`'s fingerprint: the reference clients show."""
    out = subprocess.run([require_binary("ssh-keygen"), "-l", "-E", digest, "-f", str(public)],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]


@pytest.fixture(scope="module")
def host_keys(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("host-keys")
    return [ssh_keygen(d / "ed25519"), ssh_keygen(d / "rsa", "rsa", 3072),
            ssh_keygen(d / "ecdsa", "ecdsa", 256)]


def known_hosts(keys: list[Path]) -> str:
    return "".join(f"[sftp.example]:22 {' '.join(public_line(k).split()[:2])}\n" for k in keys)


def test_md5_and_sha256_are_ssh_keygens(host_keys: list[Path]) -> None:
    published = connectinfo.published_host_keys(known_hosts(host_keys))
    assert [k.key_type for k in published] == ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"]
    for key, shown in zip(host_keys, published, strict=True):
        public = Path(f"{key}.pub")
        assert shown.fingerprint == ssh_keygen_fingerprint(public, "sha256")
        assert shown.md5_fingerprint == ssh_keygen_fingerprint(public, "md5")
        assert shown.md5_fingerprint.startswith("MD5:") and len(shown.md5_fingerprint) == 51


def test_connect_info_prints_both_beside_each_other(host_keys: list[Path]) -> None:
    district = parse_district({"metadata": {"name": "applegrove", "namespace": "d"},
                               "spec": {"login": "applegrove.org"}})
    status = {"endpoint": {"host": "sftp.example", "port": 22},
              "knownHosts": known_hosts(host_keys)}
    facts = connectinfo.connection_facts(district, status, "id_ed25519")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        connectinfo._print(facts)
    lines = printed.getvalue().splitlines()
    for key in host_keys:
        public = Path(f"{key}.pub")
        sha256, md5 = (ssh_keygen_fingerprint(public, d) for d in ("sha256", "md5"))
        assert any(sha256 in line and md5 in line for line in lines), printed.getvalue()
    assert json.loads(json.dumps(facts))["hostKeys"][0]["md5"] == ssh_keygen_fingerprint(
        Path(f"{host_keys[0]}.pub"), "md5")
    assert "Login:     applegrove.org (public key authentication only)" in lines
    assert "applegrove.org@sftp.example" in facts["commands"]["sftp"]

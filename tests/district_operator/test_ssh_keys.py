"""Key checks against keys made by the real ssh-keygen, and host keys ssh-keygen accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from district_operator import keys

from tests.conftest import require_binary


def keygen(tmp_path: Path, key_type: str, bits: int | None = None, comment: str = "c") -> str:
    binary = require_binary("ssh-keygen")
    path = tmp_path / f"{key_type}-{bits}"
    args = [binary, "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(path)]
    if bits:
        args += ["-b", str(bits)]
    subprocess.run(args, check=True)
    return (path.with_suffix(".pub") if path.suffix else Path(f"{path}.pub")).read_text().strip()


def ssh_keygen_fingerprint(tmp_path: Path, public_line: str) -> str:
    file = tmp_path / "fp.pub"
    file.write_text(public_line + "\n")
    out = subprocess.run([require_binary("ssh-keygen"), "-lf", str(file)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


@pytest.mark.parametrize(("key_type", "bits"), [("ed25519", None), ("ecdsa", 256),
                                                 ("rsa", 3072)])
def test_good_keys_are_accepted_with_ssh_keygens_fingerprint(tmp_path: Path, key_type: str,
                                                            bits: int | None) -> None:
    line = keygen(tmp_path, key_type, bits, comment="it@lincoln.k12.example")
    key = keys.parse_authorized_key(line)
    assert key.line == line
    assert key.fingerprint == ssh_keygen_fingerprint(tmp_path, line)


@pytest.mark.parametrize(("line", "reason"), [
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBroken", "damaged"),
    ('from="10.0.0.1" ssh-ed25519 AAAA', "options such as from=... are not accepted"),
    ("hello there", "key type 'hello' is not supported"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
    ("ssh-ed25519", "missing"),
])
def test_bad_keys_say_why(line: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        keys.parse_authorized_key(line)


def test_type_must_match_the_key_data(tmp_path: Path) -> None:
    blob = keygen(tmp_path, "ed25519").split()[1]
    with pytest.raises(ValueError, match=r"mismatch|says ssh-rsa"):
        keys.parse_authorized_key(f"ssh-rsa {blob}")


def test_weak_rsa_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1024 bits is too weak"):
        keys.parse_authorized_key(keygen(tmp_path, "rsa", 1024))


def test_check_keeps_good_keys_once_and_reports_each_bad_one(tmp_path: Path) -> None:
    good = keygen(tmp_path, "ed25519")
    other = keygen(tmp_path, "ecdsa", 256)
    check = keys.check_keys([("a", good), ("b", "ssh-ed25519 AAAAnope"), ("c", good),
                             ("d", "# a comment"), ("e", ""), ("f", other)])
    assert [k.line for k in check.accepted] == [good, other]
    assert [r.source for r in check.rejected] == ["b"]
    assert check.authorized_keys_file() == f"{good}\n{other}\n"


def test_secret_lines_keep_honoured_options_and_refuse_the_others(tmp_path: Path) -> None:
    """The same judgement as the server's (district_contract.keyoptions), so KeysValid names
    what the server would skip."""
    good = keygen(tmp_path, "ed25519", comment="sis@lincoln")
    read_only = f'restrict,command="internal-sftp -R",from="203.0.113.0/24" {good}'
    check = keys.check_keys([
        ("a", read_only),
        ("b", f'expiry-time="20301231Z" {good}'),
        ("c", f'command="/usr/bin/rsync --server" {good}'),
        ("d", f'permitopen="db:5432" {good}'),
        ("e", f'environment="A=1" {good}'),
        ("f", f'tunnel="1",no-pty {good}'),
        ("g", f'expiry-time="tomorrow" {good}'),
    ])
    assert [k.line for k in check.accepted] == [read_only, f'expiry-time="20301231Z" {good}']
    assert check.accepted[0].comment == "sis@lincoln"
    reasons = {r.source: r.reason for r in check.rejected}
    assert set(reasons) == {"c", "d", "e", "f", "g"}
    assert "command=" in reasons["c"] and "read-only" in reasons["c"]
    assert "'permitopen' is not honoured" in reasons["d"]
    assert "'environment' is not honoured" in reasons["e"]
    assert "'tunnel' is not honoured" in reasons["f"]
    assert "expiry-time" in reasons["g"]


def test_generated_host_keys_are_what_ssh_keygen_reads(tmp_path: Path) -> None:
    files = keys.generate_host_keys()
    assert set(files) == {"ssh_host_ed25519_key", "ssh_host_ed25519_key.pub",
                          "ssh_host_rsa_key", "ssh_host_rsa_key.pub"}
    described = keys.describe_host_keys(files)
    assert [k.key_type for k in described] == ["ssh-ed25519", "ssh-rsa"]
    for key in described:
        private = tmp_path / key.key_type
        private.write_text(files[f"ssh_host_{key.key_type.removeprefix('ssh-')}_key"])
        private.chmod(0o600)
        derived = subprocess.run([require_binary("ssh-keygen"), "-y", "-f", str(private)],
                                 check=True, capture_output=True, text=True).stdout.split()
        assert derived[:2] == key.public_line.split()[:2]
        assert key.fingerprint == ssh_keygen_fingerprint(tmp_path, key.public_line)
    assert "3072" in subprocess.run(
        [require_binary("ssh-keygen"), "-lf", str(tmp_path / "ssh-rsa")],
        check=True, capture_output=True, text=True).stdout.split()[0]
    assert keys.generate_host_keys() != files  # fresh keys each time


def test_known_hosts_lines_use_brackets_for_other_ports() -> None:
    files = keys.generate_host_keys()
    described = keys.describe_host_keys(files)
    assert keys.known_hosts("198.51.100.7", 22, described).splitlines()[0] == (
        "198.51.100.7 " + described[0].public_line)
    assert keys.known_hosts("sftp.example", 2022, described).startswith("[sftp.example]:2022 ")

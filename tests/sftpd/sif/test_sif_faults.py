"""`sftpd sif-pull` when the zone fails or turns hostile: a clear reason, nothing published."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from district_devtools.ports import free_port
from district_devtools.sif.testca import ZonePKI
from district_devtools.sif.zis import XXE_TARGET

from sftpd import tree
from tests.sftpd.sif.conftest import (
    AGENT,
    PASSWORD,
    Zones,
    _env,
    pull,
    run_sftpd,
    upload_entries,
)

# fault switch of the stand-in, extra options, the reason, words the message must hold
FAULTS = [
    ("empty", ("--wait-seconds", "3", "--poll-seconds", "0.5"), "ResponsesMissing",
     "held no response for SchoolInfo"),
    ("register-error", (), "RegistrationRefused", "SIF_Error category 5 (Registration)"),
    ("request-error", (), "RequestRefused",
     "SIF_Error category 8 (Request and Response) code 1"),
    ("malformed", (), "MalformedXml", "not well-formed XML (line"),
    ("xxe", (), "UnsafeXml", "refused unread"),
    ("billion-laughs", (), "UnsafeXml", "refused unread"),
    ("cut", (), "ConnectionLost", "the connection was cut during SIF_GetMessage"),
    ("sleeping", (), "ReceiverSleeping", "SIF_Status 8"),
    ("oversize", ("--max-buffer-size", "65536"), "ReplyTooLarge", "more than the 131072"),
]


def assert_failed_cleanly(root: Path, run_code: int, result: dict[str, object] | None,
                          reason: str, words: str) -> None:
    assert run_code == 1
    assert result is not None
    assert (result["kind"], result["outcome"], result["reason"]) == ("pull", "Failed", reason), \
        result
    assert words in str(result["message"]), result["message"]
    assert result.get("epoch", "") == ""
    assert upload_entries(root) == []  # no epoch, and no hidden build either


@pytest.mark.parametrize(("fault", "extra", "reason", "words"), FAULTS,
                         ids=[f[0] for f in FAULTS])
def test_a_zone_fault_publishes_nothing(zones: Zones, zone_pki: ZonePKI, root: Path,
                                        basic_auth: Path, fault: str, extra: tuple[str, ...],
                                        reason: str, words: str) -> None:
    zone = zones.start(fault=fault)
    run = pull(root, zone.url, basic_auth, zone_pki.ca_cert, *extra)
    assert_failed_cleanly(root, run.code, run.result, reason, words)
    assert any(e["event"] == "pull.failed" and e["reason"] == reason for e in run.events)
    if fault == "xxe":
        secret = Path(XXE_TARGET).read_text().strip()
        assert secret not in str(run.result) + "".join(map(str, run.events))


def test_wrong_credentials(zones: Zones, zone_pki: ZonePKI, root: Path,
                           tmp_path: Path) -> None:
    zone = zones.start()
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "username").write_text("samegoal")
    (wrong / "password").write_text(PASSWORD + "x")
    run = pull(root, zone.url, wrong, zone_pki.ca_cert)
    assert_failed_cleanly(root, run.code, run.result, "AuthenticationFailed", "HTTP 401")
    assert zone.entries() == []  # the zone never saw a message


def test_an_untrusted_zone_certificate(zones: Zones, zone_pki: ZonePKI, root: Path,
                                       basic_auth: Path) -> None:
    zone = zones.start()
    run = pull(root, zone.url, basic_auth, zone_pki.other_ca_cert)
    assert_failed_cleanly(root, run.code, run.result, "UntrustedCertificate",
                          "certificate is not trusted")
    assert zone.entries() == []  # the password never went to an unverified server


def test_the_zone_is_down(zone_pki: ZonePKI, root: Path, basic_auth: Path) -> None:
    url = f"https://127.0.0.1:{free_port()}/zone"
    run = pull(root, url, basic_auth, zone_pki.ca_cert)
    assert_failed_cleanly(root, run.code, run.result, "ZoneUnreachable", "cannot reach")


def test_a_killed_pull_is_never_visible_and_its_build_is_removed_next_time(
        zones: Zones, zone_pki: ZonePKI, root: Path, basic_auth: Path) -> None:
    empty = zones.start(fault="empty")
    argv = [sys.executable, "-m", "sftpd", "sif-pull", "--root", str(root), "--zone-url",
            empty.url, "--source-id", AGENT, "--ca-file", str(zone_pki.ca_cert), "--auth-dir",
            str(basic_auth), "--wait-seconds", "120", "--poll-seconds", "0.2"]
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not empty.entries("SIF_GetMessage"):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    (build,) = upload_entries(root)
    assert build.startswith(".sftpd-pull-")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert upload_entries(root) == [build]  # hidden, never an epoch
    zone = zones.start()
    run = pull(root, zone.url, basic_auth, zone_pki.ca_cert)
    assert run.code == 0, run.stderr
    assert run.result is not None
    assert upload_entries(root) == [run.result["epoch"]]
    assert {"event": "pull.leftover_removed", "name": build}.items() <= next(
        e for e in run.events if e["event"] == "pull.leftover_removed").items()


def test_a_build_held_by_a_running_pull_is_left_alone(zone_pki: ZonePKI, root: Path,
                                                      basic_auth: Path) -> None:
    held = root / tree.UPLOAD / ".sftpd-pull-20260101-000000"
    held.mkdir()
    fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        run = pull(root, f"https://127.0.0.1:{free_port()}/zone", basic_auth,
                   zone_pki.ca_cert)
        assert run.code == 1
        assert upload_entries(root) == [held.name]
    finally:
        os.close(fd)


def test_a_sigterm_publishes_nothing(zones: Zones, zone_pki: ZonePKI, root: Path,
                                     basic_auth: Path) -> None:
    empty = zones.start(fault="empty")
    result_file = root.parent / "term-result.json"
    argv = [sys.executable, "-m", "sftpd", "sif-pull", "--root", str(root), "--zone-url",
            empty.url, "--source-id", AGENT, "--ca-file", str(zone_pki.ca_cert), "--auth-dir",
            str(basic_auth), "--wait-seconds", "120", "--poll-seconds", "0.2",
            "--result-file", str(result_file)]
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not empty.entries("SIF_GetMessage"):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.terminate()
    assert proc.wait(timeout=60) == 1
    assert '"reason":"Interrupted"' in result_file.read_text()
    assert upload_entries(root) == []


@pytest.mark.parametrize(("args", "words"), [
    (("--zone-url", "http://127.0.0.1:1/zone"), "must be an https:// URL"),
    (("--objects", "StudentPersonal,Grades"), "unknown SIF object 'Grades'"),
    (("--objects", "StudentPersonal"), "StudentPersonal needs StudentSchoolEnrollment"),
    (("--objects", "SchoolInfo,StudentContactRelationship"),
     "StudentContactRelationship needs StudentContactPersonal"),
    (("--max-buffer-size", "100"), "must be at least 4096"),
    (("--source-id", "two words"), "without spaces"),
    (("--ca-file", "/nonexistent/ca.crt"), "is not a file"),
])
def test_bad_usage_touches_nothing(zone_pki: ZonePKI, root: Path, basic_auth: Path,
                                   args: tuple[str, ...], words: str) -> None:
    given = dict(zip(args[::2], args[1::2], strict=True))
    options = {"--zone-url": "https://127.0.0.1:1/zone", "--source-id": AGENT,
               "--ca-file": str(zone_pki.ca_cert), "--auth-dir": str(basic_auth), **given}
    run = run_sftpd("sif-pull", root, *[x for kv in options.items() for x in kv])
    assert run.code == 2
    assert words in run.stderr
    assert run.result is not None and run.result["reason"] == "InvalidArguments"
    assert upload_entries(root) == []


def test_an_auth_dir_with_half_a_pair_is_bad_usage(zone_pki: ZonePKI, root: Path,
                                                   tmp_path: Path) -> None:
    half = tmp_path / "half"
    half.mkdir()
    (half / "username").write_text("samegoal")
    run = run_sftpd("sif-pull", root, "--zone-url", "https://127.0.0.1:1/zone", "--source-id",
                    AGENT, "--auth-dir", str(half))
    assert run.code == 2
    assert "needs both username and password" in run.stderr


def test_a_root_that_is_not_a_directory_is_bad_usage(tmp_path: Path) -> None:
    run = run_sftpd("sif-pull", tmp_path / "nowhere", "--zone-url", "https://127.0.0.1:1/z",
                    "--source-id", AGENT)
    assert run.code == 2 and "is not a directory" in run.stderr

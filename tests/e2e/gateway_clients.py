"""Real SSH clients run from outside the real node (a network namespace) through the gateway's
load balancer address: OpenSSH sftp, lftp and paramiko, and the JSON log lines of a pod."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from district_devtools.localcluster.outside import OutsideClient

from tests.conftest import require_binary


@dataclass(frozen=True)
class Target:
    """Where a client connects and with what: the gateway's address, a login and a key."""

    host: str
    port: int
    login: str
    key: Path
    known_hosts: Path


def _ssh_options(target: Target) -> list[str]:
    return ["-i", str(target.key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={target.known_hosts}", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10"]


def openssh_sftp(outside: OutsideClient, target: Target, batch: str,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """OpenSSH's sftp in batch mode, strict host key checking against the given known_hosts."""
    argv = [require_binary("sftp"), "-b", "-", "-P", str(target.port), *_ssh_options(target),
            f"{target.login}@{target.host}"]
    return subprocess.run(outside.command(argv), input=batch, capture_output=True, text=True,
                          timeout=timeout, check=False)


def lftp(outside: OutsideClient, target: Target, commands: str,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """lftp's sftp:// (it runs OpenSSH's ssh with the sftp subsystem): `commands` after open."""
    ssh = " ".join(["ssh", "-a", "-x", *_ssh_options(target)])
    script = (f"set sftp:connect-program \"{ssh}\"; set net:max-retries 1; "
              f"set net:timeout 15; open -u {target.login}, -p {target.port} "
              f"sftp://{target.host}; {commands}; bye")
    return subprocess.run(outside.command([require_binary("lftp"), "-c", script]),
                          capture_output=True, text=True, timeout=timeout, check=False)


def paramiko_client(outside: OutsideClient, target: Target) -> paramiko.SSHClient:
    """A logged-in paramiko client; the gateway's host key checked against known_hosts."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(target.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = outside.connect(target.host, target.port)
    try:
        client.connect(target.host, port=target.port, username=target.login,
                       key_filename=str(target.key), sock=sock,  # type: ignore[arg-type]
                       look_for_keys=False, allow_agent=False, timeout=15, auth_timeout=15,
                       banner_timeout=15)
    except BaseException:
        client.close()
        sock.close()
        raise
    return client


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON events of a log (`kubectl logs --prefix` lines keep their pod in `_pod`)."""
    events = []
    for line in text.splitlines():
        pod = ""
        if line.startswith("[pod/"):
            pod, _, line = line.partition("] ")
            pod = pod[len("[pod/"):].split("/")[0]
        start = line.find("{")
        if start < 0:
            continue
        try:
            event = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            event["_pod"] = pod
            events.append(event)
    return events

"""`kubectl district connect-info`: endpoint, host keys and ready-to-paste client commands."""

from __future__ import annotations

import argparse
import base64
import hashlib
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from district_operator import keys
from district_operator.model import District

from kubectl_district import output
from kubectl_district.errors import EXIT_OK
from kubectl_district.keygen import DEFAULT_FILE
from kubectl_district.session import Session, published


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district")
    parser.add_argument("--identity", default=DEFAULT_FILE, metavar="KEY",
                        help=f"the private key file to name in the commands (default "
                             f"{DEFAULT_FILE}, as `keygen` writes it)")
    output.add_output_argument(parser)


@dataclass(frozen=True)
class PublishedHostKey:
    """One host key from status.knownHosts, with what clients show of it."""

    key_type: str
    public_line: str
    fingerprint: str
    bits: int

    @property
    def md5_fingerprint(self) -> str:
        """`MD5:aa:bb:...` as `ssh-keygen -l -E md5` prints it: the form older clients pin
        (SameGoal's upload agent, older WinSCP)."""
        blob = base64.b64decode(self.public_line.split()[1])
        # Not for security: it names the key the way those clients compare it.
        digest = hashlib.md5(blob, usedforsecurity=False).digest()
        return "MD5:" + ":".join(f"{b:02x}" for b in digest)

    @property
    def winscp_fingerprint(self) -> str:
        """WinSCP's -hostkey form: `type bits base64-sha256=` (padded, without `SHA256:`)."""
        digest = self.fingerprint.removeprefix("SHA256:")
        return f"{self.key_type} {self.bits} {digest}{'=' * (-len(digest) % 4)}"


def _bits(public_line: str) -> int:
    key = serialization.load_ssh_public_key(public_line.encode())
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 255  # what ssh-keygen -l, PuTTY and WinSCP print for Ed25519
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return int(key.key_size)
    return 0


def published_host_keys(known_hosts: str) -> tuple[PublishedHostKey, ...]:
    """Parse the status' known_hosts lines (`host key-type base64`) into host keys."""
    found = []
    for line in known_hosts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        public_line = f"{fields[1]} {fields[2]}"
        parsed = keys.parse_authorized_key(public_line)
        found.append(PublishedHostKey(parsed.key_type, public_line, parsed.fingerprint,
                                      _bits(public_line)))
    return tuple(found)


def connection_facts(district: District, status: Mapping[str, Any],
                     identity: str) -> dict[str, Any]:
    endpoint = status["endpoint"]
    host, port = str(endpoint["host"]), int(endpoint["port"])
    # In shared mode the endpoint and host keys are the gateway's, and the user name it routes
    # by is the District's login (the status says both; older statuses have neither).
    shared = endpoint.get("mode") == "shared"
    login = str(endpoint.get("user") or district.login)
    host_keys = published_host_keys(status["knownHosts"])
    # During a rotation knownHosts also lists the next keys (status.nextHostKeys).
    upcoming = {k.get("fingerprint") for k in status.get("nextHostKeys") or []}
    known_hosts_file = f"{district.name}_known_hosts"
    ssh_options = (f"-o UserKnownHostsFile={shlex.quote(known_hosts_file)} "
                   # UpdateHostKeys: the client learns the next keys of a host key
                   # rotation (announced after login) before they are used; OpenSSH leaves it
                   # off when UserKnownHostsFile is given.
                   "-o StrictHostKeyChecking=yes -o UpdateHostKeys=yes")
    key = shlex.quote(identity)
    heredoc = f"cat > {shlex.quote(known_hosts_file)} <<'EOF'\n{status['knownHosts'].rstrip()}\nEOF"
    lftp_setting = f'set sftp:connect-program "ssh -a -x -i {key} {ssh_options}"'
    winscp_key = identity + ".ppk"
    # WinSCP takes one expected fingerprint; it prefers Ed25519 host keys, as the server does.
    current = [k for k in host_keys if k.fingerprint not in upcoming] or list(host_keys)
    winscp_hostkey = next((k for k in current if k.key_type == "ssh-ed25519"),
                          current[0]).winscp_fingerprint
    return {
        "district": district.name,
        "namespace": district.namespace,
        "login": login,
        "mode": "shared" if shared else "dedicated",
        "host": host,
        "port": port,
        "hostKeys": [{"type": k.key_type, "bits": k.bits, "fingerprint": k.fingerprint,
                      "md5": k.md5_fingerprint, "next": k.fingerprint in upcoming}
                     for k in host_keys],
        "nextKeysFrom": (status.get("hostKeyRotation") or {}).get("promoteAt")
        if upcoming else None,
        "knownHosts": status["knownHosts"],
        "knownHostsFile": known_hosts_file,
        "commands": {
            "knownHosts": heredoc,
            "sftp": f"sftp -i {key} {ssh_options} -P {port} {login}@{host}",
            "lftp": (f"lftp -e {shlex.quote(lftp_setting)} "
                     f"-u {login}, -p {port} sftp://{host}"),
            "winscpKeygen": f'winscp.com /keygen "{identity}" /output="{winscp_key}"',
            "winscp": (f'winscp.com /command "open sftp://{login}@{host}:{port}/ '
                       f'-privatekey=""{winscp_key}"" -hostkey=""{winscp_hostkey}""" '
                       '"ls /upload" "exit"'),
        },
    }


def _print(facts: Mapping[str, Any]) -> None:
    commands = facts["commands"]
    lines = [
        f"District:  {facts['district']} (namespace {facts['namespace']})",
        f"Endpoint:  {facts['host']} port {facts['port']}"
        + (" (the shared SSH gateway: every district connects here)"
           if facts["mode"] == "shared" else ""),
        f"Login:     {facts['login']} (public key authentication only"
        + ("; the gateway routes by this user name)" if facts["mode"] == "shared" else ")"),
        "Host keys (what the client must show on first connect):",
        *(f"  {k['type']:<12} {k['bits']:>4}  {k['fingerprint']}  {k['md5']}"
          + (f"  (next: in use from {facts['nextKeysFrom']})" if k["next"] else "")
          for k in facts["hostKeys"]),
        "",
        "known_hosts lines:",
        facts["knownHosts"].rstrip(),
        "",
        "# OpenSSH sftp (Linux, macOS, Windows 10 and later): save the host keys once,",
        commands["knownHosts"],
        "# then connect:",
        commands["sftp"],
        "",
        "# lftp (uses ssh underneath, with the same known_hosts file):",
        commands["lftp"],
        "",
        "# WinSCP (Windows): convert the key to PuTTY's format once, then connect:",
        commands["winscpKeygen"],
        commands["winscp"],
        "",
        "Upload into /upload/<batch>/; results appear in /upload-processed/; backups and "
        "exports are in /downloads/.",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def run(args: argparse.Namespace, session: Session) -> int:
    body, district = session.district(args.district)
    status = published(body, district.name, "endpoint", "knownHosts")
    facts = connection_facts(district, status, args.identity)
    if args.output == "table":
        _print(facts)
    else:
        output.dump(facts, args.output)
    return EXIT_OK

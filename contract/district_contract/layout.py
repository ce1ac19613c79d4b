"""The district's directory tree and the pod it is served from: paths, ports and user."""

from __future__ import annotations

from typing import Final

# The tree on the district's volume, relative to its root (what a district sees as /...).
UPLOAD: Final = "upload"
UPLOAD_PROCESSED: Final = "upload-processed"
DOWNLOADS: Final = "downloads"
BACKUPS: Final = f"{DOWNLOADS}/backups"
DOCVIEWER: Final = f"{DOWNLOADS}/docviewer"
PDFS: Final = f"{DOWNLOADS}/pdfs"
# Every directory a district sees, parents first.
TREE: Final[tuple[str, ...]] = (UPLOAD, UPLOAD_PROCESSED, DOWNLOADS, BACKUPS, DOCVIEWER, PDFS)

# Names a client gives a file while it is still being written (WinSCP, lftp, browsers, ...):
# such a file is never part of a complete epoch.
TEMPORARY_SUFFIXES: Final[tuple[str, ...]] = (
    ".filepart", ".part", ".partial", ".tmp", ".crdownload")

# Where the pod mounts what the operator provides.
DATA_MOUNT: Final = "/data"
HOST_KEYS_DIR: Final = "/etc/sftpd/host-keys"
AUTHORIZED_KEYS_DIR: Final = "/etc/sftpd/authorized-keys"
AUTHORIZED_KEYS_FILE: Final = "authorized_keys"
# Host key file per key type, inside HOST_KEYS_DIR (private keys, OpenSSH format).
HOST_KEY_FILES: Final = {"ssh-ed25519": "ssh_host_ed25519_key", "ssh-rsa": "ssh_host_rsa_key"}
# The next host key per key type during a rotation, in the same Secret volume: present only
# while one is in flight (the server announces it as a reserved key).
NEXT_HOST_KEY_FILES: Final = {key_type: f"next_{name}"
                              for key_type, name in HOST_KEY_FILES.items()}
# spec.integration.sif: the zone credentials (keys username and password for HTTP basic, or
# tls.crt and tls.key for a client certificate) and the zone's CA (key ca.crt).
SIF_AUTH_DIR: Final = "/etc/sftpd/sif-auth"
SIF_CA_DIR: Final = "/etc/sftpd/sif-ca"
SIF_CA_FILE: Final = "ca.crt"
TERMINATION_LOG: Final = "/dev/termination-log"

SSH_PORT: Final = 2222
METRICS_PORT: Final = 9090
RUN_AS_USER: Final = 10001

# The environment variable holding the district database's libpq URL (libpq's own name).
DATABASE_URL_ENV: Final = "DATABASE_URL"


def host_key_paths() -> tuple[str, ...]:
    """The host key files the server reads, in the order it offers them."""
    return tuple(f"{HOST_KEYS_DIR}/{name}" for name in HOST_KEY_FILES.values())


def next_host_key_paths() -> tuple[str, ...]:
    """The next host key files (a rotation's), announced after the current ones."""
    return tuple(f"{HOST_KEYS_DIR}/{name}" for name in NEXT_HOST_KEY_FILES.values())


def authorized_keys_path() -> str:
    return f"{AUTHORIZED_KEYS_DIR}/{AUTHORIZED_KEYS_FILE}"

"""`kubectl district keygen`: a new Ed25519 key pair for a district, public half ready to send."""

from __future__ import annotations

import argparse
import getpass
import os
import socket
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from district_operator import keys

from kubectl_district.errors import EXIT_OK, EXIT_USAGE, PluginError

DEFAULT_FILE = "district_sftp_ed25519"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_FILE),
                        help=f"private key file; the public key goes to FILE.pub "
                             f"(default ./{DEFAULT_FILE})")
    parser.add_argument("--comment", default=None,
                        help="comment in the public key, e.g. it@lincoln.k12.example "
                             "(default user@host)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def _write_private(path: Path, text: str, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    # 0600 from the first byte: the private key is never readable by others, not even briefly.
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def run(args: argparse.Namespace) -> int:
    private_path: Path = args.out
    public_path = private_path.with_name(private_path.name + ".pub")
    if not args.force:
        existing = [p for p in (private_path, public_path) if p.exists()]
        if existing:
            raise PluginError(f"{existing[0]} already exists: not overwriting a key",
                              "choose another --out, or pass --force to replace it "
                              "(a replaced key no longer logs in)", EXIT_USAGE)
    comment = args.comment or f"{getpass.getuser()}@{socket.gethostname()}"
    if any(c.isspace() for c in comment):
        raise PluginError("--comment must not contain spaces", exit_code=EXIT_USAGE)
    key = ed25519.Ed25519PrivateKey.generate()
    private_text = key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.OpenSSH,
                                     serialization.NoEncryption()).decode()
    public_line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    public_line = f"{public_line} {comment}"
    # The same check the operator applies: what we hand out is what it accepts.
    accepted = keys.parse_authorized_key(public_line)
    try:
        _write_private(private_path, private_text, args.force)
    except FileExistsError:
        raise PluginError(f"{private_path} already exists: not overwriting a key",
                          exit_code=EXIT_USAGE) from None
    public_path.write_text(public_line + "\n")
    print(f"Private key: {private_path}  (keep it on the machine that uploads; never send it)")
    print(f"Public key:  {public_path}  ({accepted.fingerprint})")
    print()
    print("Send this public key line to your SFTP administrator:")
    print()
    print(public_line)
    print()
    print("Administrators install it with:")
    print(f"  kubectl district keys add DISTRICT --key {public_path}")
    return EXIT_OK

"""SSH keys: validate the district's public keys, generate and describe the server's host keys."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from district_contract.keyoptions import judge_options, split_options

from district_operator import names

# Below this an RSA key is forgeable in practice; OpenSSH itself refuses RSA keys under 1024
# and recommends 3072.
MIN_RSA_BITS = 2048
RSA_HOST_KEY_BITS = 3072
SUPPORTED_KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})


@dataclass(frozen=True)
class AuthorizedKey:
    """One accepted public key, normalized to `[options ]type base64 [comment]`."""

    key_type: str
    line: str
    fingerprint: str
    options: str = ""
    comment: str | None = None


@dataclass(frozen=True)
class RejectedKey:
    """A key line that cannot be used, with where it came from and why."""

    source: str
    reason: str


@dataclass(frozen=True)
class KeyCheck:
    accepted: tuple[AuthorizedKey, ...]
    rejected: tuple[RejectedKey, ...]

    def authorized_keys_file(self) -> str:
        """The authorized_keys content the server reads: one accepted key per line."""
        return "".join(key.line + "\n" for key in self.accepted)


@dataclass(frozen=True)
class HostKey:
    """A host key's public half, as districts see it."""

    key_type: str
    public_line: str
    fingerprint: str


def fingerprint(blob: bytes) -> str:
    """The SHA-256 fingerprint exactly as `ssh-keygen -lf` prints it."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def parse_authorized_key(line: str, allow_options: bool = False) -> AuthorizedKey:
    """Parse one OpenSSH public key line; raise ValueError saying what is wrong with it.

    With allow_options (authorized_keys lines from a Secret), the options the server honours
    (district_contract.keyoptions: from=, expiry-time=, restrict, no-*, the read-only
    command="internal-sftp -R") are kept in the line and any other option refuses the key,
    naming it: the server would skip such a line too. Without it (a District's
    spec.authorizedKeys, a .pub file) no option is accepted.
    """
    text = line.strip()
    if not text:
        raise ValueError("empty line")
    if "PRIVATE KEY" in text:
        raise ValueError("this is a private key, not a public key")
    options, text = split_options(text)
    if options:
        if not allow_options:
            raise ValueError(
                f"authorized_keys options ({options[:60]}) are not accepted here: give only the "
                "key type, the key data and a comment (options such as from=... are not "
                "accepted either; source addresses belong in spec.allowedSourceRanges)")
        judge_options(options)
    if not text:
        raise ValueError("the key type and key data are missing")
    fields = text.split(None, 2)
    key_type = fields[0]
    if key_type not in SUPPORTED_KEY_TYPES:
        raise ValueError(f"key type {key_type[:40]!r} is not supported "
                         "(options such as from=... are not accepted either)")
    if len(fields) < 2:
        raise ValueError("the base64 key data is missing")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise ValueError("the key data is damaged: not base64") from None
    # The key data names its own type (an SSH string); read it to say what a mismatch is.
    length = int.from_bytes(blob[:4], "big")
    data_type = blob[4:4 + length].decode("ascii", errors="replace")
    if len(blob) < 4 + length or not data_type:
        raise ValueError("the key data is damaged: too short")
    if data_type != key_type:
        raise ValueError(f"the line says {key_type} but the key data is {data_type[:40]}")
    # cryptography rather than asyncssh: the operator would carry asyncssh (15 MB) for this only.
    try:
        key = serialization.load_ssh_public_key(f"{key_type} {fields[1]}".encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"the key data is damaged: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA key of {key.key_size} bits is too weak: use at least "
                         f"{MIN_RSA_BITS} bits, or better an ssh-ed25519 key")
    comment = fields[2].strip() if len(fields) > 2 else None
    normalized = " ".join(([options] if options else []) + fields[:2]
                          + ([comment] if comment else []))
    return AuthorizedKey(key_type=key_type, line=normalized, fingerprint=fingerprint(blob),
                         options=options, comment=comment)


def check_keys(sources: list[tuple[str, str]]) -> KeyCheck:
    """Validate (source, line) pairs; keep good keys once each, report every bad one.

    Options the server honours are accepted (spec.authorizedKeys cannot carry any: the CRD
    refuses them at admission); a line with any other option is reported and left out.
    """
    accepted: list[AuthorizedKey] = []
    rejected: list[RejectedKey] = []
    seen: set[str] = set()
    for source, line in sources:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            key = parse_authorized_key(line, allow_options=True)
        except ValueError as exc:
            rejected.append(RejectedKey(source=source, reason=str(exc)))
            continue
        # The same key from spec and Secret once; with different options (from= one place,
        # read-only from another) each line counts, as the server reads them in order.
        identity = f"{key.fingerprint} {key.options}"
        if identity not in seen:
            seen.add(identity)
            accepted.append(key)
    return KeyCheck(accepted=tuple(accepted), rejected=tuple(rejected))


def generate_host_keys() -> dict[str, str]:
    """New Ed25519 and RSA-3072 host keys: {file name: OpenSSH private key, name.pub: public}."""
    files: dict[str, str] = {}
    generated: dict[str, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey] = {
        "ssh-ed25519": ed25519.Ed25519PrivateKey.generate(),
        "ssh-rsa": rsa.generate_private_key(public_exponent=65537, key_size=RSA_HOST_KEY_BITS),
    }
    for key_type, key in generated.items():
        file_name = names.HOST_KEY_FILES[key_type]
        files[file_name] = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption()).decode()
        files[file_name + ".pub"] = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return files


def describe_host_keys(files: Mapping[str, str],
                       file_names: Mapping[str, str] = names.HOST_KEY_FILES
                       ) -> tuple[HostKey, ...]:
    """The public halves of the host keys in a host-key Secret's files, in a stable order
    (the current keys by default; a rotation's next keys with names.NEXT_HOST_KEY_FILES)."""
    described: list[HostKey] = []
    for key_type, file_name in file_names.items():
        private = files.get(file_name)
        if private is None:
            continue
        # Only the public half is wanted, which the key file carries: the RSA consistency check
        # a full load runs costs 0.14 s of CPU (as much as generating the key), on every
        # reconcile of every District.
        key = serialization.load_ssh_private_key(private.encode(), password=None,
                                                 unsafe_skip_rsa_key_validation=True)
        public_line = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        blob = base64.b64decode(public_line.split()[1])
        described.append(HostKey(key_type=key_type, public_line=public_line,
                                 fingerprint=fingerprint(blob)))
    return tuple(described)


def known_hosts(host: str, port: int, host_keys: tuple[HostKey, ...]) -> str:
    """known_hosts lines for host:port, in the form OpenSSH writes them."""
    where = host if port == 22 else f"[{host}]:{port}"
    return "".join(f"{where} {key.public_line}\n" for key in host_keys)


def generate_gateway_key() -> dict[str, str]:
    """A new Ed25519 key pair for the gateway's logins to district servers:
    {names.GATEWAY_PRIVATE_KEY_FILE: OpenSSH private key, its name + ".pub": public line}."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return {names.GATEWAY_PRIVATE_KEY_FILE: private,
            names.GATEWAY_PUBLIC_KEY_FILE: public + " district-sftp-gateway\n"}

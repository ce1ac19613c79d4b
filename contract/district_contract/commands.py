"""The `sftpd` subcommands, the environment variable of each option, the exit codes, the formats."""

from __future__ import annotations

import re
from typing import Final

# Subcommands of the data plane's one entry point (the image's ENTRYPOINT is `sftpd`).
SERVE: Final = "serve"
PROCESS_EPOCHS: Final = "process-epochs"
RETENTION: Final = "retention"
BACKUP: Final = "backup"
DOCVIEWER: Final = "docviewer"
PDFS: Final = "pdfs"
SIF_PULL: Final = "sif-pull"  # spec.integration.mode pull: a SIF 2.x pull-mode agent
GATEWAY: Final = "gateway"  # the shared SSH gateway (spec.service.mode shared)
# The viewer side: decode and check a URL token.
DOCVIEWER_TOKEN: Final = "docviewer-token"  # noqa: S105 (a command name)

# Exit codes of every command, the operator's and the plugin's included.
EXIT_OK: Final = 0  # the run did what was asked (an idle run included)
EXIT_FAILED: Final = 1  # the run failed; a job's result line says why
EXIT_USAGE: Final = 2  # bad options or environment: nothing was attempted
EXIT_CODES_HELP: Final = (
    "exit codes: 0 success, 1 the run failed (the result says why), 2 bad usage")

# Options the operator sets, by their long option name (without the leading dashes). Each is
# also read from its environment variable, env_var(option).
ROOT: Final = "root"
LOGIN: Final = "login"
PORT: Final = "port"
METRICS_PORT: Final = "metrics-port"
HOST_KEY: Final = "host-key"
# sftpd serve: host keys being rolled in (spec.hostKeys.rotate): announced, never used for the
# key exchange; a file that is absent (no rotation in flight) is no error.
NEXT_HOST_KEY: Final = "next-host-key"
AUTHORIZED_KEYS: Final = "authorized-keys"
ALLOWED_SOURCE: Final = "allowed-source"
RESULT_FILE: Final = "result-file"
SETTLE_SECONDS: Final = "settle-seconds"
FORMATS: Final = "formats"
PROCESSED_DAYS: Final = "processed-days"
KEEP_BACKUPS: Final = "keep-backups"
DISTRICT: Final = "district"
# sftpd docviewer (spec.downloads.docviewer)
FORMS: Final = "forms"
BASE_URL: Final = "base-url"
TOKEN_KEY_FILE: Final = "token-key-file"  # noqa: S105 (an option name)
TOKEN_TTL: Final = "token-ttl"  # noqa: S105 (an option name)
KEEP: Final = "keep"
TIMEZONE: Final = "timezone"
# sftpd pdfs (spec.downloads.pdfs; also FORMS and TIMEZONE)
STUDENTS: Final = "students"
KEEP_DAYS: Final = "keep-days"
# sftpd serve: read-only directories under /downloads/ (spec.downloads.directories)
DOWNLOAD_DIRECTORIES: Final = "download-directories"
# sftpd process-epochs: the district's domain, which prior-system archives must name (the
# District's login: SameGoal names each district's account by its domain)
DISTRICT_DOMAIN: Final = "district-domain"
# sftpd sif-pull (spec.integration.sif)
ZONE_URL: Final = "zone-url"
SOURCE_ID: Final = "source-id"
OBJECTS: Final = "objects"
MAX_BUFFER_SIZE: Final = "max-buffer-size"
SIF_AUTH_DIR: Final = "auth-dir"  # a mounted Secret: username+password, or tls.crt+tls.key
SIF_CA_FILE: Final = "ca-file"  # the zone's CA bundle (PEM)
# sftpd serve behind the shared gateway, and sftpd gateway (docs/gateway.md)
PROXY_FROM: Final = "proxy-from"  # the gateway's addresses: they must send a PROXY v2 header
GATEWAY_KEY: Final = "gateway-key"  # serve: the gateway's public key; gateway: its private key
ROUTES: Final = "routes"  # sftpd gateway: the directory of routing shards

# Import formats the epochs job knows, by the name `processing.formats` uses.
FORMAT_ONEROSTER: Final = "oneroster"
FORMAT_GENERIC_CSV: Final = "generic-csv"  # SameGoal's Generic CSV API
# SameGoal's bulk PDF import layout, <district domain>/students/<student id>/*.pdf
FORMAT_PRIOR_SYSTEM_PDFS: Final = "prior-system-pdfs"
FORMATS_KNOWN: Final[tuple[str, ...]] = (FORMAT_ONEROSTER, FORMAT_GENERIC_CSV,
                                         FORMAT_PRIOR_SYSTEM_PDFS)

ENV_PREFIX: Final = "SFTPD_"

# The login (spec.login, `sftpd serve --login`), as the District CRD's rule has it: SameGoal
# names each district's account by its domain (applegrove.org), so dots are allowed. A domain's
# characters plus '_' (safe in every client command line and URL): lowercase letters, digits,
# '.', '-', '_'; a letter or digit first; no '.' last; no '..'; at most 253 characters.
LOGIN_MAX: Final = 253
_LOGIN_PATTERN: Final = re.compile(r"[a-z0-9]([-a-z0-9._]*[-a-z0-9_])?")
LOGIN_RULE: Final = ("lowercase letters, digits, ., - and _, starting with a letter or digit, "
                     f"not ending with . and without .. (at most {LOGIN_MAX} characters; for "
                     "example applegrove.org)")


def valid_login(login: str) -> bool:
    return (len(login) <= LOGIN_MAX and _LOGIN_PATTERN.fullmatch(login) is not None
            and ".." not in login)


def env_var(option: str) -> str:
    """The environment variable that sets `--option` of any sftpd subcommand."""
    return ENV_PREFIX + option.upper().replace("-", "_")


def separated(value: str) -> list[str]:
    """A list option's environment value: items separated by commas or whitespace."""
    return [item for item in value.replace(",", " ").split() if item]

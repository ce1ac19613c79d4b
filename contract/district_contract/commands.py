"""The `sftpd` subcommands, the environment variable of each option, the exit codes, the formats."""

from __future__ import annotations

from typing import Final

# Subcommands of the data plane's one entry point (the image's ENTRYPOINT is `sftpd`).
SERVE: Final = "serve"
PROCESS_EPOCHS: Final = "process-epochs"
RETENTION: Final = "retention"
BACKUP: Final = "backup"

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
AUTHORIZED_KEYS: Final = "authorized-keys"
ALLOWED_SOURCE: Final = "allowed-source"
RESULT_FILE: Final = "result-file"
SETTLE_SECONDS: Final = "settle-seconds"
FORMATS: Final = "formats"
PROCESSED_DAYS: Final = "processed-days"
KEEP_BACKUPS: Final = "keep-backups"
DISTRICT: Final = "district"

# Import formats the epochs job knows, by the name `processing.formats` uses.
FORMAT_ONEROSTER: Final = "oneroster"
FORMAT_GENERIC_CSV: Final = "generic-csv"
FORMATS_KNOWN: Final[tuple[str, ...]] = (FORMAT_ONEROSTER, FORMAT_GENERIC_CSV)

ENV_PREFIX: Final = "SFTPD_"


def env_var(option: str) -> str:
    """The environment variable that sets `--option` of any sftpd subcommand."""
    return ENV_PREFIX + option.upper().replace("-", "_")


def separated(value: str) -> list[str]:
    """A list option's environment value: items separated by commas or whitespace."""
    return [item for item in value.replace(",", " ").split() if item]

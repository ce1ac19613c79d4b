"""The `sftpd` command: one entry point for the SFTP server and each job that runs beside it."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from district_contract import commands, results
from district_contract.results import JobKind, Outcome

from sftpd.options import CommandParser, UsageError, report_usage

# Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`;
# they are imported only when chosen so `sftpd serve` never loads psycopg and the jobs never
# load asyncssh.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    commands.SERVE: ("sftpd.server.command", "run the district's SFTP server"),
    commands.PROCESS_EPOCHS: ("sftpd.epochs.command", "process complete upload epochs"),
    commands.RETENTION: ("sftpd.retention", "delete processed epochs and backups past retention"),
    commands.BACKUP: ("sftpd.backup", "export a PostgreSQL backup into downloads/backups"),
    commands.DOCVIEWER: ("sftpd.downloads.docviewer",
                         "publish documents.csv into downloads/docviewer"),
    commands.PDFS: ("sftpd.downloads.pdfs", "extract chosen documents' PDFs into downloads/pdfs"),
    commands.DOCVIEWER_TOKEN: ("sftpd.downloads.token_command",
                               "decode and check a docviewer URL token; make a token key"),
    commands.SIF_PULL: ("sftpd.sif.command",
                        "pull the SIF zone's objects into upload/ as one Generic CSV epoch"),
    commands.GATEWAY: ("sftpd.gateway.command",
                       "route each district's login to its own server (one shared address)"),
}
# The jobs that leave a result, which says InvalidArguments when they were used wrongly.
RESULT_KINDS: dict[str, JobKind] = {commands.PROCESS_EPOCHS: JobKind.EPOCHS,
                                    commands.RETENTION: JobKind.RETENTION,
                                    commands.BACKUP: JobKind.BACKUP,
                                    commands.DOCVIEWER: JobKind.DOCVIEWER,
                                    commands.PDFS: JobKind.PDFS,
                                    commands.SIF_PULL: JobKind.PULL}


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = CommandParser(prog="sftpd", description=__doc__, epilog=commands.EXIT_CODES_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module_name).add_arguments(sp)
    return parser


def _result_file(args: argparse.Namespace | None, argv: Sequence[str]) -> Path | None:
    """Where the refused job's result goes: its --result-file, however far parsing got."""
    if args is not None:
        given = getattr(args, "result_file", None)
        return None if given is None else Path(given)
    scan = CommandParser(add_help=False)
    scan.add_argument("--" + commands.RESULT_FILE)
    with suppress(UsageError):
        found = scan.parse_known_args(list(argv))[0].result_file
        if found:
            return Path(found)
    from_env = os.environ.get(commands.env_var(commands.RESULT_FILE))
    return Path(from_env) if from_env else None


def refuse(command: str | None, message: str, args: argparse.Namespace | None,
           argv: Sequence[str]) -> int:
    """Bad usage: say why on stderr and, for a job, in a Failed result; exit EXIT_USAGE."""
    report_usage(command or "", message)
    kind = RESULT_KINDS.get(command or "")
    path = _result_file(args, argv) if kind is not None else None
    if kind is not None and path is not None:
        result = results.RESULT_TYPES[kind](outcome=Outcome.FAILED,
                                            reason=results.INVALID_ARGUMENTS, message=message)
        with suppress(OSError):  # stderr has said it already
            results.write(path, result)
    return commands.EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in args_list if a in SUBCOMMANDS), None)
    if selected == commands.SERVE:
        from sftpd.server.lean import leave_out_unused  # before the server imports asyncssh
        leave_out_unused()
    args: argparse.Namespace | None = None
    try:
        args = build_parser(selected).parse_args(args_list)
        module = importlib.import_module(SUBCOMMANDS[args.command][0])
        code: int = module.run(args)
    except UsageError as exc:
        return refuse(selected, str(exc), args, args_list)
    return code


if __name__ == "__main__":
    sys.exit(main())

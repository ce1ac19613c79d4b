"""The `sftpd` command: one entry point for the SFTP server and each job that runs beside it."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`;
# they are imported only when chosen so `sftpd serve` never loads psycopg and the jobs never
# load asyncssh.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("sftpd.server.command", "run the district's SFTP server"),
    "process-epochs": ("sftpd.epochs.command", "process complete upload epochs"),
    "retention": ("sftpd.retention", "delete processed epochs and backups past retention"),
    "backup": ("sftpd.backup", "export a PostgreSQL backup into downloads/backups"),
    "docviewer": ("sftpd.downloads.docviewer", "publish documents.csv into downloads/docviewer"),
    "pdfs": ("sftpd.downloads.pdfs", "extract chosen documents' PDFs into downloads/pdfs"),
    "docviewer-token": ("sftpd.downloads.token_command",
                        "decode and check a docviewer URL token; make a token key"),
}


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sftpd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module_name).add_arguments(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in args_list if a in SUBCOMMANDS), None)
    args = build_parser(selected).parse_args(args_list)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    code: int = module.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""`sftpd docviewer-token`: the viewer side's tools: decode and check a token, make a key."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet
from district_contract import commands

from sftpd.backup.events import utc_iso
from sftpd.downloads.tokens import TokenKeyError, TokenRefused, decode_token, read_keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("decode: exit 0 and a JSON line {documentId, expiresAt} when the token "
                     "opens a document; 1 and {refused, message} when it must not (invalid or "
                     "expired); 2 for bad usage")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    decode = actions.add_parser("decode", help="check a URL's token and name its document")
    decode.add_argument("token", help="the token (the URL's token= value)")
    key_file = os.environ.get(commands.env_var(commands.TOKEN_KEY_FILE))
    decode.add_argument("--token-key-file", type=Path, default=key_file,
                        required=key_file is None,
                        help="the Fernet key file the tokens were made with (env "
                             f"{commands.env_var(commands.TOKEN_KEY_FILE)})")
    decode.add_argument("--now", help="ISO 8601 time with a zone to check expiry at (tests)")
    actions.add_parser("generate-key", help="print a new Fernet key (a key file's line)")


def run(args: argparse.Namespace) -> int:
    if args.action == "generate-key":
        print(Fernet.generate_key().decode())
        return commands.EXIT_OK
    try:
        keys = read_keys(args.token_key_file)
        now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
        if now.tzinfo is None:
            raise ValueError(f"--now {args.now!r} needs a time zone")
    except (TokenKeyError, ValueError) as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return commands.EXIT_USAGE
    try:
        token = decode_token(keys, args.token, now)
    except TokenRefused as exc:
        print(json.dumps({"refused": exc.reason, "message": str(exc)}))
        return commands.EXIT_FAILED
    print(json.dumps({"documentId": token.document_id,
                      "expiresAt": utc_iso(token.expires_at)}))
    return commands.EXIT_OK

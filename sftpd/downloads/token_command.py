"""`sftpd docviewer-token`: the viewer side's tools: decode and check a token, make a key."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from district_contract import commands

from sftpd import options
from sftpd.downloads.tokens import (
    TokenKeyError,
    TokenRefused,
    aware_time,
    decode_token,
    generate_key,
    read_keys,
)
from sftpd.events import utc_iso


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (f"{commands.EXIT_CODES_HELP}. decode: exit 0 and a JSON line "
                     "{documentId, expiresAt} when the token opens a document; 1 and "
                     "{refused, message} when it must not (invalid or expired)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    decode = actions.add_parser("decode", help="check a URL's token and name its document")
    decode.add_argument("token", help="the token (the URL's token= value)")
    opt = options.prepare(decode)
    opt.path(commands.TOKEN_KEY_FILE, "the key file the tokens were made with",
             required=True)
    opt.custom("now", "ISO 8601 time with a zone to check expiry at (tests)", aware_time,
               metavar="TIME")
    options.prepare(actions.add_parser("generate-key",
                                       help="print a new random key (a key file's line)"))


def run(args: argparse.Namespace) -> int:
    if args.action == "generate-key":
        print(generate_key())
        return commands.EXIT_OK
    now: datetime = args.now or datetime.now(UTC)
    try:
        keys = read_keys(args.token_key_file)
    except TokenKeyError as exc:
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

"""`kubectl district keys list|add|remove`: spec.authorizedKeys, or a patch for Git."""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from district_operator import api, keys, names
from district_operator.model import District

from kubectl_district import output
from kubectl_district.errors import EXIT_OK, EXIT_USAGE, PluginError
from kubectl_district.session import Session
from kubectl_district.specpatch import patch_spec_field

# The CRD's maxItems for spec.authorizedKeys.
MAX_KEYS = 64


def add_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", parents=[common], help="the keys allowed to log in")
    listing.add_argument("district")
    output.add_output_argument(listing)
    add = sub.add_parser("add", parents=[common], help="allow a public key to log in")
    add.add_argument("district")
    add.add_argument("--key", required=True, metavar="FILE|-",
                     help="the public key file (.pub), or - to read it from stdin")
    remove = sub.add_parser("remove", parents=[common], help="stop a key from logging in")
    remove.add_argument("district")
    remove.add_argument("fingerprint", help="SHA256:... as `keys list` shows it")
    for action in (add, remove):
        action.add_argument("--print-patch", action="store_true",
                            help="print the change as YAML for a GitOps repository instead of "
                                 "writing it (for `kubectl patch --type merge --patch-file` or "
                                 "`kubectl apply --server-side -f`)")


# ---- reading key input ---------------------------------------------------------------------

def read_key_input(source: str) -> tuple[keys.AuthorizedKey, ...]:
    """The public keys in a .pub / authorized_keys text; refuses the whole input on any bad line."""
    where = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PluginError(f"cannot read {where}: {exc}", exit_code=EXIT_USAGE) from None
    if "PRIVATE KEY" in text:
        raise PluginError(
            f"{where} holds a private key: only the public key may be installed",
            "give the .pub file next to it (for example "
            f"{'KEY' if source == '-' else source}.pub); the private key stays with the district",
            EXIT_USAGE)
    found: list[keys.AuthorizedKey] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            found.append(keys.parse_authorized_key(line))
        except ValueError as exc:
            raise PluginError(
                f"{where} line {number} is not a usable public key: {exc}",
                "expected one OpenSSH public key per line, as in a .pub file: "
                "`ssh-ed25519 AAAA... comment`; nothing was changed", EXIT_USAGE) from None
    if not found:
        raise PluginError(f"no public key found in {where}", exit_code=EXIT_USAGE)
    return tuple(found)


def normalize_fingerprint(text: str) -> str:
    value = text.strip()
    return value if value.startswith("SHA256:") else f"SHA256:{value}"


# ---- listing -------------------------------------------------------------------------------

def _secret_lines(session: Session, district: District
                  ) -> tuple[list[tuple[str, str]], str | None]:
    ref = district.authorized_keys_secret
    if ref is None:
        return [], None
    try:
        secret = session.kube.get("Secret", district.namespace, ref.name)
    except api.ApiError as exc:
        return [], f"Secret {ref.name} cannot be read: {exc.message}"
    if secret is None:
        return [], f"Secret {ref.name} does not exist"
    raw = (secret.get("data") or {}).get(ref.key)
    if raw is None:
        return [], f"Secret {ref.name} has no key {ref.key!r}"
    text = base64.b64decode(raw).decode("utf-8", errors="replace")
    return [(f"Secret {ref.name} line {n}", line)
            for n, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")], None


def describe(source: str, line: str) -> dict[str, Any]:
    try:
        key = keys.parse_authorized_key(line, allow_options=True)
    except ValueError as exc:
        return {"source": source, "type": line.split()[0][:20] if line.split() else "",
                "fingerprint": None, "comment": None, "valid": False, "problem": str(exc)}
    return {"source": source, "type": key.key_type, "fingerprint": key.fingerprint,
            "comment": key.comment, "valid": True, "problem": None}


def list_keys(session: Session, district: District) -> tuple[list[dict[str, Any]], str | None]:
    sources = [(f"spec.authorizedKeys[{i}]", line)
               for i, line in enumerate(district.authorized_keys)]
    secret_sources, problem = _secret_lines(session, district)
    return [describe(s, line) for s, line in sources + secret_sources], problem


def _print_list(entries: list[dict[str, Any]], problem: str | None, fmt: str) -> None:
    if fmt != "table":
        output.dump(entries, fmt)
        return
    if entries:
        sys.stdout.write(output.table(
            ["SOURCE", "TYPE", "FINGERPRINT", "COMMENT"],
            [[e["source"], e["type"], e["fingerprint"] or f"INVALID: {e['problem']}",
              e["comment"] or ""] for e in entries]))
    else:
        print("no keys: nobody can log in")
    if problem:
        print(f"warning: {problem}", file=sys.stderr)


# ---- changing ------------------------------------------------------------------------------

def patch_document(district: District, key_lines: list[str], note: str) -> str:
    """A YAML document that is both a merge patch and a partial object `kubectl apply` takes."""
    document = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": district.name, "namespace": district.namespace},
        "spec": {"authorizedKeys": key_lines},
    }
    header = (f"# {note}\n"
              f"# kubectl patch district {district.name} -n {district.namespace} "
              "--type merge --patch-file FILE\n"
              "#     or: kubectl apply -f FILE\n"
              "# or, in a GitOps repository: replace spec.authorizedKeys with this list\n")
    return header + yaml.safe_dump(document, sort_keys=False, width=100000)


def _new_list(district: District, action: str, added: tuple[keys.AuthorizedKey, ...],
              fingerprint: str | None) -> tuple[list[str], str]:
    current = list(district.authorized_keys)
    installed = {describe("", line)["fingerprint"]: line for line in current}
    if action == "add":
        fresh = [k for k in added if k.fingerprint not in installed]
        if not fresh:
            return current, "already installed: " + ", ".join(k.fingerprint for k in added)
        lines = current + [k.line for k in fresh]
        if len(lines) > MAX_KEYS:
            raise PluginError(f"spec.authorizedKeys would hold {len(lines)} keys; the District "
                              f"allows at most {MAX_KEYS}",
                              "remove keys that are no longer used, or keep the keys in a Secret "
                              "named by spec.authorizedKeysSecretRef", EXIT_USAGE)
        return lines, "added " + ", ".join(f"{k.fingerprint}" for k in fresh)
    assert fingerprint is not None
    if fingerprint not in installed:
        hint = "`kubectl district keys list " + district.name + "` shows the fingerprints"
        if district.authorized_keys_secret is not None:
            hint += (f"; keys from Secret {district.authorized_keys_secret.name} are removed "
                     "by editing that Secret")
        raise PluginError(f"no key with fingerprint {fingerprint} in spec.authorizedKeys of "
                          f"District {district.name!r}", hint)
    lines = [line for line in current if describe("", line)["fingerprint"] != fingerprint]
    if not lines and district.authorized_keys_secret is None and not district.suspend:
        raise PluginError(
            f"{fingerprint} is the District's last key: removing it would leave nobody able to "
            "log in", "add the replacement key first (`keys add`), then remove this one; or "
            "suspend the District", EXIT_USAGE)
    return lines, f"removed {fingerprint}"


def _write(session: Session, name: str, action: str, added: tuple[keys.AuthorizedKey, ...],
           fingerprint: str | None) -> str:
    """Patch spec.authorizedKeys; no key added elsewhere meanwhile is lost."""
    def change(body: Mapping[str, Any], district: District) -> tuple[Any, str]:
        lines, note = _new_list(district, action, added, fingerprint)
        return (None if lines == list(district.authorized_keys) else lines), note
    return patch_spec_field(session, name, "authorizedKeys", change)


def run(args: argparse.Namespace, session: Session) -> int:
    if args.keys_action == "list":
        _, district = session.district(args.district)
        entries, problem = list_keys(session, district)
        _print_list(entries, problem, args.output)
        return EXIT_OK
    added: tuple[keys.AuthorizedKey, ...] = ()
    fingerprint = None
    if args.keys_action == "add":
        added = read_key_input(args.key)
    else:
        fingerprint = normalize_fingerprint(args.fingerprint)
    if args.print_patch:
        _, district = session.district(args.district)
        lines, note = _new_list(district, args.keys_action, added, fingerprint)
        sys.stdout.write(patch_document(district, lines, f"kubectl district keys "
                                        f"{args.keys_action} {district.name}: {note}"))
        return EXIT_OK
    note = _write(session, args.district, args.keys_action, added, fingerprint)
    print(f"District {args.district}: {note}")
    if not note.startswith("already"):
        print("the operator rolls the change out to the server within a minute; check with "
              f"`kubectl district verify {args.district} --identity KEY`")
    return EXIT_OK

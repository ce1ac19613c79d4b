"""`kubectl district hostkeys rotate`: raise spec.hostKeys.rotate (and set the overlap)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

import yaml
from district_operator import names
from district_operator.model import District, overlap_seconds

from kubectl_district.errors import EXIT_OK, EXIT_USAGE, PluginError
from kubectl_district.session import Session
from kubectl_district.specpatch import patch_spec_field


def add_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="hostkeys_action", required=True, metavar="ACTION")
    rotate = sub.add_parser("rotate", parents=[common],
                            help="start a host key rotation: new keys announced for the "
                                 "overlap, then used in place of the old ones")
    rotate.add_argument("district")
    rotate.add_argument("--overlap", metavar="DURATION",
                        help="how long the new keys are announced before they take over: a "
                             "whole number and s, m, h or d (default: the District's "
                             "spec.hostKeys.overlap, 30d unless set)")
    rotate.add_argument("--accept-new-keys", action="store_true",
                        help="the host-key Secret is lost and there is no copy to restore: "
                             "make new keys now (every client will refuse the server until "
                             "given the new known_hosts lines)")
    rotate.add_argument("--print-patch", action="store_true",
                        help="print the change as YAML for a GitOps repository instead of "
                             "writing it")


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _check(body: Mapping[str, Any], district: District, accept_new_keys: bool) -> None:
    """Refuse what would not do what the user means: a rotation on top of one in flight, or
    new keys in place of lost ones without saying so."""
    status = body.get("status") or {}
    lost = _condition(status, "HostKeysReady").get("reason") == "HostKeysSecretMissing"
    if lost and not accept_new_keys:
        raise PluginError(
            f"the host-key Secret {names.host_keys_secret(district.name)} of District "
            f"{district.name!r} is missing: a rotation would replace the lost keys at once, "
            "and every district's client would refuse the server",
            "restore the Secret from your copy (docs/operations.md, lost host keys); only if "
            "there is none, run this again with --accept-new-keys", EXIT_USAGE)
    if not lost and accept_new_keys:
        raise PluginError("--accept-new-keys is only for a District whose host-key Secret is "
                          "missing; this one has its keys", exit_code=EXIT_USAGE)
    if lost:
        return  # a rotation the lost Secret was carrying is lost with it
    rotating = _condition(status, "HostKeysRotating")
    if rotating.get("status") == "True":
        raise PluginError(
            f"a host key rotation of District {district.name!r} is in flight: "
            f"{rotating.get('message', '')}",
            "wait until it completes; to end it sooner, shorten the overlap: `kubectl patch "
            f"district {district.name} -n {district.namespace} --type merge -p "
            "'{\"spec\":{\"hostKeys\":{\"overlap\":\"1h\"}}}'`", EXIT_USAGE)


def _wanted(district: District, overlap: str | None) -> dict[str, Any]:
    wanted: dict[str, Any] = {"rotate": district.host_keys.rotate + 1}
    if overlap is not None:
        wanted["overlap"] = overlap
    return wanted


def _write(session: Session, name: str, overlap: str | None, accept_new_keys: bool
           ) -> dict[str, Any]:
    def change(body: Mapping[str, Any], district: District) -> tuple[Any, dict[str, Any]]:
        _check(body, district, accept_new_keys)
        wanted = _wanted(district, overlap)
        # Two rotations asked at once never become one: the patch is conditional.
        return wanted, {**{"overlap": district.host_keys.overlap}, **wanted}
    return patch_spec_field(session, name, "hostKeys", change)


def run(args: argparse.Namespace, session: Session) -> int:
    if args.overlap is not None:
        try:
            overlap_seconds(args.overlap)
        except ValueError as exc:
            raise PluginError(f"--overlap: {exc}", exit_code=EXIT_USAGE) from None
    if args.print_patch:
        body, district = session.district(args.district)
        _check(body, district, args.accept_new_keys)
        document = {"apiVersion": names.API_VERSION, "kind": names.KIND,
                    "metadata": {"name": district.name, "namespace": district.namespace},
                    "spec": {"hostKeys": _wanted(district, args.overlap)}}
        sys.stdout.write(f"# kubectl district hostkeys rotate {district.name}\n"
                         f"# kubectl patch district {district.name} -n {district.namespace} "
                         "--type merge --patch-file FILE\n"
                         + yaml.safe_dump(document, sort_keys=False))
        return EXIT_OK
    done = _write(session, args.district, args.overlap, args.accept_new_keys)
    if args.accept_new_keys:
        print(f"District {args.district}: new host keys requested in place of the lost ones "
              f"(spec.hostKeys.rotate {done['rotate']}); give every client the new lines of "
              f"`kubectl district connect-info {args.district}`")
    else:
        print(f"District {args.district}: host key rotation {done['rotate']} requested; the "
              f"next keys are announced to clients for {done['overlap']}, then replace the "
              f"current ones. `kubectl district status {args.district}` shows them; clients "
              "without OpenSSH UpdateHostKeys (WinSCP, PuTTY, pinned fingerprints) need the "
              f"new fingerprints from `kubectl district connect-info {args.district}` "
              "before then")
    return EXIT_OK

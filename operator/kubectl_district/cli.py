"""`kubectl-district`: the plugin's command line, dispatch, and the one place errors are printed."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import urllib3
from district_operator import api

from kubectl_district import (
    authorized,
    connectinfo,
    hostkeys,
    jobs,
    keygen,
    overview,
    session,
    verify,
)
from kubectl_district.errors import EXIT_FAILED, EXIT_USAGE, PluginError
from kubectl_district.session import Session

Runner = Callable[[argparse.Namespace, Session], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl district",
        description="Set up, verify and look after District SFTP accounts.",
        epilog="docs/kubectl-district.md describes every command, with examples.")
    session.add_arguments(parser)
    # Subcommands repeat the connection options (defaults suppressed), so that both
    # `kubectl district -n x status d` and `kubectl district status d -n x` work.
    common = argparse.ArgumentParser(add_help=False)
    session.add_arguments(common, suppress_defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen.add_arguments(sub.add_parser(
        "keygen", help="make an Ed25519 key pair for a district (public half ready to send)"))
    keys_parser = sub.add_parser("keys", parents=[common],
                                 help="list, add or remove the keys that may log in")
    authorized.add_arguments(keys_parser, common)
    keys_parser.set_defaults(runner=authorized.run)
    host_keys = sub.add_parser("hostkeys", parents=[common],
                               help="rotate the server's host keys without breaking clients")
    hostkeys.add_arguments(host_keys, common)
    host_keys.set_defaults(runner=hostkeys.run)
    info = sub.add_parser("connect-info", parents=[common],
                          help="endpoint, host keys and ready-to-paste client commands")
    connectinfo.add_arguments(info)
    info.set_defaults(runner=connectinfo.run)
    check = sub.add_parser("verify", parents=[common],
                           help="connect as the district would and report each step")
    verify.add_arguments(check)
    check.set_defaults(runner=verify.run)
    state = sub.add_parser("status", parents=[common],
                           help="conditions, endpoint, last epoch and backup, uploads for staff")
    overview.add_status_arguments(state)
    state.set_defaults(runner=overview.run_status)
    listing = sub.add_parser("list", parents=[common], help="every District in a table")
    overview.add_list_arguments(listing)
    listing.set_defaults(runner=overview.run_list)
    epochs = sub.add_parser("epochs", parents=[common],
                            help="process an epoch now, or mark it processed")
    jobs.add_epochs_arguments(epochs, common)
    epochs.set_defaults(runner=jobs.run_epochs)
    backup = sub.add_parser("backup", parents=[common], help="take a database backup now")
    jobs.add_backup_arguments(backup)
    backup.set_defaults(runner=jobs.run_backup)
    pull = sub.add_parser("pull", parents=[common],
                          help="run a SIF pull now (spec.integration.mode pull)")
    jobs.add_pull_arguments(pull)
    pull.set_defaults(runner=jobs.run_pull)
    return parser


def _report(error: PluginError) -> int:
    print(f"error: {error.message}", file=sys.stderr)
    if error.hint:
        print(f"hint: {error.hint}", file=sys.stderr)
    return error.exit_code


def _api_error(exc: api.ApiError) -> PluginError:
    hint = None
    if exc.status == 403:
        hint = ("your Kubernetes user lacks the permission: `kubectl auth can-i --list` shows "
                "what it may do")
    elif exc.status == 404 and "districts" in exc.message:
        hint = "the District CRD is not installed: `kubectl apply --server-side -f " \
               "crds/district.yaml`"
    return PluginError(f"the API server refused the request: {exc.message} "
                       f"(HTTP {exc.status}{' ' + exc.reason if exc.reason else ''})", hint)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "keygen":
            return keygen.run(args)
        connection = Session.open(args)
        try:
            runner: Runner = args.runner
            return runner(args, connection)
        finally:
            connection.close()
    except PluginError as error:
        return _report(error)
    except api.ApiError as exc:
        return _report(_api_error(exc))
    except BrokenPipeError:
        # The reader (`| head`) has gone: stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except (urllib3.exceptions.HTTPError, ConnectionError) as exc:
        return _report(PluginError(f"cannot reach the Kubernetes API server: {exc}",
                                   "check the cluster address in the kubeconfig and --context"))
    except KeyboardInterrupt:
        return EXIT_USAGE + 128


if __name__ == "__main__":
    sys.exit(main())

"""`kubectl district status` and `list`: a District's health, and every District at a glance."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from district_operator import names
from district_operator.model import parse_district

from kubectl_district import output
from kubectl_district.errors import EXIT_OK
from kubectl_district.session import Session, published


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district")
    output.add_output_argument(parser)


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-A", "--all-namespaces", action="store_true",
                        help="Districts in every namespace")
    output.add_output_argument(parser)


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _endpoint(status: Mapping[str, Any]) -> str | None:
    where = status.get("endpoint")
    return f"{where['host']}:{where['port']}" if where else None


def summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """What `status -o json|yaml` prints: the District's health in one flat object."""
    meta = body["metadata"]
    status = dict(body.get("status") or {})
    district = parse_district(body)
    ready = _condition(status, "Ready")
    return {
        "name": meta["name"],
        "namespace": meta.get("namespace"),
        "login": district.login,
        "suspended": district.suspend,
        "ready": ready.get("status", "Unknown"),
        "readyReason": ready.get("reason"),
        "endpoint": status.get("endpoint"),
        "hostKeys": status.get("hostKeys") or [],
        "nextHostKeys": status.get("nextHostKeys") or [],
        "hostKeyRotation": status.get("hostKeyRotation"),
        "generation": meta.get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "conditions": status.get("conditions") or [],
        "lastEpoch": status.get("lastEpoch"),
        "lastBackup": status.get("lastBackup"),
        "lastRetention": status.get("lastRetention"),
        "lastDocviewer": status.get("lastDocviewer"),
        "lastPdfs": status.get("lastPdfs"),
        "integration": district.integration.mode,
        "lastPull": status.get("lastPull"),
        "uploadsNeedingAttention": status.get("uploadsNeedingAttention") or [],
    }


def _download_lines(facts: Mapping[str, Any]) -> list[str]:
    """The download jobs' last runs, for the Districts that have had one."""
    lines = []
    for label, key, what in (("Docviewer:", "lastDocviewer", "rows"),
                             ("PDFs:", "lastPdfs", "documents")):
        run = facts.get(key)
        if not run:
            continue
        published = f"{run['epoch']}  {run.get(what, 0)} {what}  {output.size(run.get('bytes'))}" \
            if run.get("epoch") else "nothing published"
        lines.append(f"{label:<14}{published}; last run {run.get('outcome')} "
                     f"{run.get('completedAt')} ({output.age(run.get('completedAt'))} ago)")
    return lines


def _next_host_keys(facts: Mapping[str, Any]) -> list[str]:
    """The rotation in flight: the next keys and when they replace the current ones."""
    upcoming = facts["nextHostKeys"]
    if not upcoming:
        return []
    rotation = facts["hostKeyRotation"] or {}
    return ["Next keys:    " + ", ".join(f"{k['type']} {k['fingerprint']}" for k in upcoming)
            + f"  (rotation {rotation.get('rotation')}: announced since "
              f"{rotation.get('startedAt')}, in use from {rotation.get('promoteAt')})"]


def _pull_line(pull: Mapping[str, Any]) -> str:
    """One line for status.lastPull: the epoch it published, or why it failed."""
    if not pull:
        return "none yet"
    what = pull.get("epoch") or pull.get("reason") or pull.get("message") or "-"
    return (f"{pull.get('outcome')}  {what}  completed {pull.get('completedAt')} "
            f"({output.age(pull.get('completedAt'))} ago)")


def _print_status(facts: Mapping[str, Any]) -> None:
    name = facts["name"]
    epoch = facts["lastEpoch"] or {}
    backup = facts["lastBackup"] or {}
    lines = [
        f"District:     {name} (namespace {facts['namespace']})"
        + ("  SUSPENDED" if facts["suspended"] else ""),
        f"Ready:        {facts['ready']}"
        + (f" ({facts['readyReason']})" if facts["readyReason"] else ""),
        f"Endpoint:     {_endpoint(facts) or 'not published yet'}  login {facts['login']}"
        + ("  (through the shared SSH gateway)"
           if (facts["endpoint"] or {}).get("mode") == "shared" else ""),
        "Host keys:    " + (", ".join(f"{k['type']} {k['fingerprint']}"
                                      for k in facts["hostKeys"]) or "-"),
        *_next_host_keys(facts),
        "Last epoch:   " + (f"{epoch.get('name')}  {epoch.get('outcome')}  "
                            f"{epoch.get('format') or '-'}  processed "
                            f"{epoch.get('processedAt')} ({output.age(epoch.get('processedAt'))}"
                            " ago)" if epoch else "none yet"),
        "Last backup:  " + (f"{backup.get('file')}  {output.size(backup.get('bytes'))}  "
                            f"completed {backup.get('completedAt')} "
                            f"({output.age(backup.get('completedAt'))} ago)"
                            if backup else "none yet"),
    ]
    if facts["integration"] == "pull" or facts["lastPull"]:
        lines.append("Last pull:    " + _pull_line(facts["lastPull"] or {}))
    lines += _download_lines(facts)
    if facts["observedGeneration"] != facts["generation"]:
        lines.append(f"note: the status describes generation {facts['observedGeneration']}; the "
                     f"operator has not caught up with generation {facts['generation']} yet")
    waiting = facts["uploadsNeedingAttention"]
    lines.append(f"Uploads needing staff: {len(waiting) or 'none'}")
    for epoch_name in waiting:
        lines.append(f"  /upload/{epoch_name}")
    if waiting:
        lines.append(f"  process one with `kubectl district epochs {name} process EPOCH --format "
                     f"FORMAT`, or set it aside with `kubectl district epochs {name} "
                     "mark-processed EPOCH`")
    lines.append("")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.write(output.table(
        ["CONDITION", "STATUS", "REASON", "SINCE", "MESSAGE"],
        [[c.get("type"), c.get("status"), c.get("reason"),
          output.age(c.get("lastTransitionTime")), c.get("message")]
         for c in facts["conditions"]]))


def run_status(args: argparse.Namespace, session: Session) -> int:
    body, district = session.district(args.district)
    published(body, district.name, "conditions")
    facts = summary(body)
    if args.output == "table":
        _print_status(facts)
    else:
        output.dump(facts, args.output)
    return EXIT_OK


def _row(body: Mapping[str, Any], all_namespaces: bool) -> list[Any]:
    facts = summary(body)
    ready = facts["ready"] if facts["ready"] == "True" or not facts["readyReason"] else \
        f"{facts['ready']} ({facts['readyReason']})"
    if facts["suspended"]:
        ready = "Suspended"
    if not facts["conditions"]:
        ready = "no status yet"
    epoch = facts["lastEpoch"] or {}
    backup = facts["lastBackup"] or {}
    row = [facts["name"], ready, _endpoint(facts) or "-",
           f"{epoch.get('outcome')} {output.age(epoch.get('processedAt'))}" if epoch else "-",
           output.age(backup.get("completedAt")) if backup else "-",
           len(facts["uploadsNeedingAttention"]) or "-",
           output.age(body["metadata"].get("creationTimestamp"))]
    return [facts["namespace"], *row] if all_namespaces else row


def run_list(args: argparse.Namespace, session: Session) -> int:
    namespace = None if args.all_namespaces else session.namespace
    bodies = session.kube.list(names.KIND, namespace)
    bodies.sort(key=lambda b: (b["metadata"].get("namespace", ""), b["metadata"]["name"]))
    if args.output != "table":
        output.dump([summary(b) for b in bodies], args.output)
        return EXIT_OK
    if not bodies:
        where = "any namespace" if args.all_namespaces else f"namespace {session.namespace!r}"
        print(f"No Districts in {where}.", file=sys.stderr)
        return EXIT_OK
    headers = ["NAME", "READY", "ENDPOINT", "LAST EPOCH", "LAST BACKUP", "NEEDS STAFF", "AGE"]
    if args.all_namespaces:
        headers.insert(0, "NAMESPACE")
    sys.stdout.write(output.table(headers, [_row(b, args.all_namespaces) for b in bodies]))
    return EXIT_OK

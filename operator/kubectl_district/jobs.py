"""`kubectl district epochs ... | backup | pull`: run a job now, follow it, report its result."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from district_contract import commands, layout, results
from district_contract.results import BackupResult, EpochsResult, Outcome, PullResult
from district_operator import api, names, status
from district_operator.model import District

from kubectl_district import output
from kubectl_district.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    PluginError,
)
from kubectl_district.session import Session

# What `kubectl create job --from=cronjob/...` writes on the Job it makes.
ANNOTATION_INSTANTIATE = "cronjob.kubernetes.io/instantiate"
POLL_SECONDS = 1.0
EXIT_INTERRUPTED = 130


def add_epochs_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("district")
    sub = parser.add_subparsers(dest="epochs_action", required=True, metavar="ACTION")
    process = sub.add_parser("process", parents=[common],
                             help="process one epoch in /upload now, without waiting for it "
                                  "to settle")
    process.add_argument("epoch", help="the epoch's directory name in /upload")
    process.add_argument("--format", dest="format_name", metavar="NAME",
                         help="process it as this format, one of "
                              f"{', '.join(commands.FORMATS_KNOWN)} (needed for an upload the "
                              "processor did not recognize); default: recognize it")
    mark = sub.add_parser("mark-processed", parents=[common],
                          help="move an epoch to /upload-processed without importing it")
    mark.add_argument("epoch", help="the epoch's directory name in /upload")
    for action in (process, mark):
        add_follow_arguments(action)


def add_backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district")
    add_follow_arguments(parser)


def add_pull_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district")
    add_follow_arguments(parser)


def add_follow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="stop following after this long (the Job keeps running); "
                             "default: until the Job ends")
    output.add_output_argument(parser)


def _check_epoch_name(name: str) -> None:
    if not name or "/" in name or name.startswith(".") or len(name) > 255:
        raise PluginError(f"{name!r} is not an epoch name: give the name of one directory in "
                          "/upload (no '/', not starting with '.')", exit_code=EXIT_USAGE)


def _check_format(name: str) -> None:
    known = list(commands.FORMATS_KNOWN)  # the formats the job's image knows
    if name not in known:
        raise PluginError(f"unknown format {name!r}", f"known formats: {', '.join(known)}",
                          EXIT_USAGE)


def job_from_cronjob(cronjob: Mapping[str, Any], extra_args: Sequence[str]) -> dict[str, Any]:
    """A Job made from the CronJob's template, as `kubectl create job --from` makes it."""
    template = cronjob["spec"]["jobTemplate"]
    meta = cronjob["metadata"]
    spec = dict(template["spec"])
    pod_template = dict(spec["template"])
    pod_spec = dict(pod_template["spec"])
    containers = [dict(c) for c in pod_spec["containers"]]
    containers[0]["args"] = [*containers[0].get("args", []), *extra_args]
    pod_spec["containers"] = containers
    pod_template["spec"] = pod_spec
    spec["template"] = pod_template
    template_meta = template.get("metadata") or {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            # Room for the API's 5 random characters within the 63 a Job name may have.
            "generateName": f"{meta['name']}-manual-",
            "namespace": meta["namespace"],
            "labels": dict(template_meta.get("labels") or {}),
            "annotations": {**(template_meta.get("annotations") or {}),
                            ANNOTATION_INSTANTIATE: "manual"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                 "name": meta["name"], "uid": meta["uid"],
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": spec,
    }


# ---- following -----------------------------------------------------------------------------

def finished(job: Mapping[str, Any]) -> str | None:
    """"Complete" or "Failed" once the job controller has decided, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def describe_progress(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> str:
    """One line saying where the Job is: waiting for a pod, scheduling, running, retrying."""
    if not pods:
        return "waiting for the job controller to start a pod"
    attempts = int((job.get("spec") or {}).get("backoffLimit", 6)) + 1
    pod = pods[-1]
    name = pod["metadata"]["name"]
    attempt = f" (attempt {len(pods)} of {attempts})" if len(pods) > 1 else ""
    pod_status = pod.get("status") or {}
    phase = pod_status.get("phase", "Pending")
    if phase == "Pending":
        for container in pod_status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                text = f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
                return f"pod {name}{attempt}: {text}"
        scheduled: Mapping[str, Any] = next((c for c in pod_status.get("conditions") or []
                          if c.get("type") == "PodScheduled"), {})
        if scheduled.get("status") == "False" and scheduled.get("message"):
            return f"pod {name}{attempt} not scheduled: {scheduled['message']}"
        if not (pod.get("spec") or {}).get("nodeName"):
            return f"pod {name}{attempt} waiting to be scheduled"
        return f"pod {name}{attempt} starting on {pod['spec']['nodeName']}"
    if phase == "Running":
        return f"pod {name}{attempt} running on {(pod.get('spec') or {}).get('nodeName')}"
    return f"pod {name}{attempt} {phase.lower()}"


class Progress:
    """Progress on stderr: one redrawn line on a terminal, one line per change otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self.spinner = itertools.cycle("|/-\\")
        self.last = ""
        self.started = time.monotonic()

    def show(self, text: str) -> None:
        elapsed = f"{time.monotonic() - self.started:4.0f}s"
        if self.interactive:
            self.stream.write(f"\r\033[K{next(self.spinner)} {elapsed} {text}")
            self.stream.flush()
        elif text != self.last:
            self.stream.write(f"{elapsed} {text}\n")
            self.stream.flush()
        self.last = text

    def done(self) -> None:
        if self.interactive:
            self.stream.write("\r\033[K")
            self.stream.flush()


def job_pods(session: Session, job_name: str) -> list[dict[str, Any]]:
    pods = session.kube.list("Pod", session.namespace, f"{names.LABEL_JOB_NAME}={job_name}")
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
    return pods


def follow(session: Session, job_name: str, timeout: float | None,
           progress: Progress, sleep: Callable[[float], None] = time.sleep
           ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll the Job until the job controller marks it Complete or Failed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = session.kube.get("Job", session.namespace, job_name)
        if job is None:
            raise PluginError(f"Job {job_name} was deleted while it was being followed")
        pods = job_pods(session, job_name)
        if finished(job):
            progress.done()
            return job, pods
        progress.show(describe_progress(job, pods))
        if deadline is not None and time.monotonic() >= deadline:
            progress.done()
            raise PluginError(
                f"Job {job_name} has not finished after {timeout:g}s; it keeps running in the "
                f"cluster ({progress.last})",
                f"follow it with `kubectl get job {job_name} -n {session.namespace} -w`; its "
                "result lands in `kubectl district status`", EXIT_TIMEOUT)
        sleep(POLL_SECONDS)


def job_result(job_kind: str, job: Mapping[str, Any],
               pods: Sequence[Mapping[str, Any]]) -> status.JobReport:
    """The last pod's termination message, read the way the operator reads it."""
    message, ended = status.last_termination(pods)
    fallback = ended or "the job ended without a result"
    if message is None:
        reason = next((c.get("message") for c in (job.get("status") or {}).get("conditions")
                       or [] if c.get("type") == "Failed" and c.get("message")), None)
        fallback = reason or fallback
    return status.parse_termination_message(job_kind, message, finished(job) == "Complete",
                                            fallback)


# ---- reporting -----------------------------------------------------------------------------

def _print_report(report: status.JobReport, job_name: str, district: District) -> None:
    result = report.result
    # The jobs' own messages usually start with the outcome already.
    said = report.message if report.message.startswith(report.outcome) else \
        f"{report.outcome}: {report.message}".rstrip(": ")
    print(f"Job {job_name}: {said}")
    if isinstance(result, EpochsResult):
        if result.processed:
            sys.stdout.write(output.table(
                ["EPOCH", "OUTCOME", "FORMAT", "ROWS", "ERRORS"],
                [[p.name, p.outcome, p.format or "-", p.rows, p.errors]
                 for p in result.processed]))
        for failed in (p for p in result.processed if p.outcome == Outcome.FAILED):
            print(f"why {failed.name} failed: /upload-processed/{failed.name}/"
                  "processing.log (file and line of each error)")
        for epoch in result.unrecognized:
            print(f"not recognized, waiting for staff: /upload/{epoch}")
        for epoch in result.pending:
            print(f"not complete yet: {epoch}")
    elif isinstance(result, BackupResult) and result.file:
        print(f"Backup: /{layout.BACKUPS}/{result.file}  {output.size(result.bytes)}  "
              f"sha256 {result.sha256}")
        print(f"Kept {result.kept} backup(s); pruned: {', '.join(result.pruned) or 'none'}")
    elif isinstance(result, PullResult):
        _print_pull(result)
    if report.failed:
        print(f"hint: `kubectl logs job/{job_name} -n {district.namespace}` shows the job's log",
              file=sys.stderr)


def _print_pull(result: PullResult) -> None:
    if result.failed and result.reason:
        print(f"Reason: {result.reason}")
    print(f"Zone: {result.zone_url or '-'}")
    if result.objects:
        rows = [list(item.partition("=")[::2]) for item in result.objects]
        sys.stdout.write(output.table(["OBJECT", "COUNT"], rows))
    print(f"Messages acknowledged: {result.messages}, packets reassembled: {result.packets}")
    if result.epoch:
        print(f"Epoch: /{layout.UPLOAD}/{result.epoch} (the epochs job imports it)")
    else:
        print("No epoch published")


def run_job(session: Session, district_name: str, job_kind: str, extra_args: Sequence[str],
            args: argparse.Namespace) -> int:
    _, district = session.district(district_name)
    cronjob_name = names.cronjob(district.name, job_kind)
    cronjob = session.kube.get("CronJob", session.namespace, cronjob_name)
    if cronjob is None:
        hint = "the operator creates it when it reconciles the District (`kubectl district " \
               f"status {district.name}`)"
        if job_kind == names.JOB_BACKUP and district.backups.database is None:
            hint = "backups need spec.backups.databaseSecretRef: the District names no database"
        if job_kind == names.JOB_PULL and district.integration.pull is None:
            hint = "pulls need spec.integration.mode: pull with spec.integration.sif: the " \
                   "District is in push mode"
        raise PluginError(f"CronJob {cronjob_name} not found", hint)
    if district.suspend:
        print(f"warning: District {district.name} is suspended; its scheduled jobs are paused, "
              "this one runs because you asked for it", file=sys.stderr)
    try:
        job = session.kube.create(job_from_cronjob(cronjob, extra_args))
    except api.ApiError as exc:
        raise PluginError(f"cannot create the Job: {exc.message}") from None
    job_name = job["metadata"]["name"]
    print(f"job.batch/{job_name} created from cronjob/{cronjob_name}", file=sys.stderr)
    progress = Progress(sys.stderr)
    try:
        job, pods = follow(session, job_name, args.timeout, progress)
    except KeyboardInterrupt:
        progress.done()
        print(f"stopped following; Job {job_name} keeps running", file=sys.stderr)
        return EXIT_INTERRUPTED
    report = job_result(job_kind, job, pods)
    if args.output == "table":
        _print_report(report, job_name, district)
    else:
        # The result as the job wrote it (camelCase fields), empty when it left none.
        wire = json.loads(results.encode(report.result)) if report.result is not None else {}
        output.dump({"job": job_name, "namespace": session.namespace, "kind": job_kind,
                     "outcome": str(report.outcome), "message": report.message,
                     "result": wire}, args.output)
    return EXIT_FAILED if report.failed else EXIT_OK


def run_epochs(args: argparse.Namespace, session: Session) -> int:
    _check_epoch_name(args.epoch)
    if args.epochs_action == "process":
        extra = ["--epoch", args.epoch]
        if args.format_name:
            _check_format(args.format_name)
            extra += ["--format", args.format_name]
    else:
        extra = ["--mark-processed", args.epoch]
    return run_job(session, args.district, names.JOB_EPOCHS, extra, args)


def run_backup(args: argparse.Namespace, session: Session) -> int:
    return run_job(session, args.district, names.JOB_BACKUP, [], args)


def run_pull(args: argparse.Namespace, session: Session) -> int:
    return run_job(session, args.district, names.JOB_PULL, [], args)

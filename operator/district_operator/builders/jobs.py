"""The CronJobs beside the server: epoch processing, retention, backups, the SIF pull and the
downloads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from district_contract import commands
from district_contract.commands import env_var

from district_operator import names
from district_operator.builders.common import (
    BuildInputs,
    container_security_context,
    data_mounts,
    data_volumes,
    env,
    image_pull_secrets,
    metadata,
    pod_security_context,
)
from district_operator.builders.pull import pull_settings, pull_volumes
from district_operator.model import District, Docviewer, SecretKeyRef

HISTORY_LIMIT = 3
# A missed run is not worth starting more than this late; the next one catches up.
STARTING_DEADLINE_SECONDS = 300
ACTIVE_DEADLINE_SECONDS = {names.JOB_EPOCHS: 3600, names.JOB_RETENTION: 3600,
                           names.JOB_BACKUP: 6 * 3600, names.JOB_PULL: 3 * 3600,
                           names.JOB_DOCVIEWER: 3600, names.JOB_PDFS: 6 * 3600}
# The docviewer's token keys: private, like the host keys (readable through fsGroup).
TOKEN_KEY_MODE = 0o400


def _job_settings(district: District, job: str) -> tuple[str, dict[str, str], SecretKeyRef | None]:
    if job == names.JOB_EPOCHS:
        return (district.processing.schedule,
                {env_var(commands.SETTLE_SECONDS): str(district.processing.settle_seconds),
                 env_var(commands.FORMATS): ",".join(district.processing.formats),
                 # Prior-system archives must name the district's domain, which is its login.
                 env_var(commands.DISTRICT_DOMAIN): district.login},
                district.processing.database)
    if job == names.JOB_RETENTION:
        return (district.retention.schedule,
                {env_var(commands.PROCESSED_DAYS): str(district.retention.processed_days)},
                None)
    if job == names.JOB_BACKUP:
        return (district.backups.schedule,
                {env_var(commands.DISTRICT): district.name,
                 env_var(commands.KEEP_BACKUPS): str(district.backups.keep)},
                district.backups.database)
    sif = district.integration.pull
    if job == names.JOB_PULL and sif is not None:
        return sif.schedule, pull_settings(sif), None
    if job in names.DOWNLOAD_JOBS:
        return _download_settings(district, job)
    raise ValueError(f"unknown job {job!r}")


# ---- spec.downloads: docviewer and pdfs -----------------------------------------------------

def _download_settings(district: District, job: str
                       ) -> tuple[str, dict[str, str], SecretKeyRef | None]:
    """Both read the documents from the district's database, the one uploads go to."""
    downloads = district.downloads
    if job == names.JOB_DOCVIEWER and downloads.docviewer is not None:
        docviewer = downloads.docviewer
        return (docviewer.schedule,
                {env_var(commands.FORMS): ",".join(docviewer.forms),
                 env_var(commands.BASE_URL): docviewer.base_url,
                 env_var(commands.TOKEN_TTL): docviewer.token_ttl,
                 env_var(commands.KEEP): str(docviewer.keep)},
                district.processing.database)
    if job == names.JOB_PDFS and downloads.pdfs is not None:
        pdfs = downloads.pdfs
        settings = {env_var(commands.FORMS): ",".join(pdfs.forms),
                    env_var(commands.KEEP_DAYS): str(pdfs.keep_days)}
        if pdfs.students:
            settings[env_var(commands.STUDENTS)] = ",".join(pdfs.students)
        return pdfs.schedule, settings, district.processing.database
    raise ValueError(f"job {job!r} is not enabled in spec.downloads")


def enabled_download_jobs(district: District) -> list[str]:
    """The download jobs the District turns on; they need the district's database."""
    if district.processing.database is None:
        return []
    downloads = district.downloads
    return [job for job, block in ((names.JOB_DOCVIEWER, downloads.docviewer),
                                   (names.JOB_PDFS, downloads.pdfs)) if block is not None]


@dataclass(frozen=True)
class SecretFiles:
    """Secret files a job reads besides the volume: pod volumes, their mounts, the arguments
    naming the files."""

    volumes: tuple[dict[str, Any], ...] = ()
    mounts: tuple[dict[str, Any], ...] = ()
    args: tuple[str, ...] = ()


def _token_key(docviewer: Docviewer) -> SecretFiles:
    """The docviewer's token key Secret: only its key, as one read-only file."""
    ref = docviewer.token_secret
    return SecretFiles(
        volumes=({"name": names.VOLUME_DOCVIEWER_TOKEN,
                  "secret": {"secretName": ref.name, "defaultMode": TOKEN_KEY_MODE,
                             "items": [{"key": ref.key, "path": names.DOCVIEWER_TOKEN_FILE}]}},),
        mounts=({"name": names.VOLUME_DOCVIEWER_TOKEN, "mountPath": names.DOCVIEWER_TOKEN_DIR,
                 "readOnly": True},),
        args=("--" + commands.TOKEN_KEY_FILE,
              f"{names.DOCVIEWER_TOKEN_DIR}/{names.DOCVIEWER_TOKEN_FILE}"))


def _secret_files(district: District, job: str) -> SecretFiles:
    if job == names.JOB_DOCVIEWER and district.downloads.docviewer is not None:
        return _token_key(district.downloads.docviewer)
    return SecretFiles()


# ---- every job ------------------------------------------------------------------------------

def enabled_jobs(district: District) -> tuple[str, ...]:
    """Backups need a database to back up, the pull integration.mode pull, downloads what
    spec.downloads turns on; the others always run."""
    jobs = [names.JOB_EPOCHS, names.JOB_RETENTION]
    if district.backups.database is not None:
        jobs.append(names.JOB_BACKUP)
    if district.integration.pull is not None:
        jobs.append(names.JOB_PULL)
    jobs += enabled_download_jobs(district)
    return tuple(jobs)


def _server_affinity(district: District) -> dict[str, Any]:
    return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": names.server_selector(district.name)},
        "topologyKey": "kubernetes.io/hostname",
    }]}}


def cronjob(district: District, inputs: BuildInputs, job: str) -> dict[str, Any]:
    schedule, settings, database = _job_settings(district, job)
    container_env = env({env_var(commands.ROOT): names.DATA_MOUNT, **settings})
    if database is not None:
        container_env.insert(0, {"name": names.DATABASE_URL_ENV, "valueFrom": {
            "secretKeyRef": {"name": database.name, "key": database.key}}})
    files = _secret_files(district, job)
    container: dict[str, Any] = {
        "name": job,
        "image": inputs.image,
        "imagePullPolicy": inputs.image_pull_policy,
        "args": [names.JOB_COMMANDS[job], "--" + commands.ROOT, names.DATA_MOUNT,
                 "--" + commands.RESULT_FILE, names.TERMINATION_LOG, *files.args],
        "env": container_env,
        "securityContext": container_security_context(),
        "terminationMessagePath": names.TERMINATION_LOG,
        # The result line is the file's content; logs stand in only if it was never written.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [*data_mounts(), *files.mounts],
    }
    resources = inputs.job_resources.manifest()
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        **image_pull_secrets(inputs),
        "volumes": [*data_volumes(district), *files.volumes],
    }
    if district.storage.pins_jobs_to_server_node:
        pod_spec["affinity"] = _server_affinity(district)
    sif = district.integration.pull
    if job == names.JOB_PULL and sif is not None:
        volumes, mounts = pull_volumes(sif)
        pod_spec["volumes"] = [*pod_spec["volumes"], *volumes]
        container["volumeMounts"] = [*container["volumeMounts"], *mounts]
    job_labels = names.labels(district.name, job)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(district, names.cronjob(district.name, job), job),
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",
            "suspend": district.suspend,
            "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
            "successfulJobsHistoryLimit": HISTORY_LIMIT,
            "failedJobsHistoryLimit": HISTORY_LIMIT,
            "jobTemplate": {
                "metadata": {"labels": job_labels},
                "spec": {
                    "backoffLimit": 1,
                    "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS[job],
                    "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
                },
            },
        },
    }


def cronjobs(district: District, inputs: BuildInputs) -> dict[str, dict[str, Any]]:
    """The enabled CronJobs by job name."""
    return {job: cronjob(district, inputs, job) for job in enabled_jobs(district)}

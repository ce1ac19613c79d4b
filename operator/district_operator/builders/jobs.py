"""The CronJobs beside the server: epoch processing, retention, backups and the SIF pull."""

from __future__ import annotations

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
from district_operator.model import District, SecretKeyRef

HISTORY_LIMIT = 3
# A missed run is not worth starting more than this late; the next one catches up.
STARTING_DEADLINE_SECONDS = 300
ACTIVE_DEADLINE_SECONDS = {names.JOB_EPOCHS: 3600, names.JOB_RETENTION: 3600,
                           names.JOB_BACKUP: 6 * 3600, names.JOB_PULL: 3 * 3600}


def _job_settings(district: District, job: str) -> tuple[str, dict[str, str], SecretKeyRef | None]:
    if job == names.JOB_EPOCHS:
        return (district.processing.schedule,
                {env_var(commands.SETTLE_SECONDS): str(district.processing.settle_seconds),
                 env_var(commands.FORMATS): ",".join(district.processing.formats)},
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
    raise ValueError(f"unknown job {job!r}")


def enabled_jobs(district: District) -> tuple[str, ...]:
    """Backups need a database to back up, the pull integration.mode pull; the others always run."""
    jobs = [names.JOB_EPOCHS, names.JOB_RETENTION]
    if district.backups.database is not None:
        jobs.append(names.JOB_BACKUP)
    if district.integration.pull is not None:
        jobs.append(names.JOB_PULL)
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
    container: dict[str, Any] = {
        "name": job,
        "image": inputs.image,
        "imagePullPolicy": inputs.image_pull_policy,
        "args": [names.JOB_COMMANDS[job], "--" + commands.ROOT, names.DATA_MOUNT,
                 "--" + commands.RESULT_FILE, names.TERMINATION_LOG],
        "env": container_env,
        "securityContext": container_security_context(),
        "terminationMessagePath": names.TERMINATION_LOG,
        # The result line is the file's content; logs stand in only if it was never written.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": data_mounts(),
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
        "volumes": data_volumes(district),
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

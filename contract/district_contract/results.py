"""A job's result: one typed value per job, one encoder (for jobs), one parser (for readers).

A job writes its result as one line of JSON to its container's termination message; the
kubelet hands that to the API, where the operator (and `kubectl district`) read it back. Field
names on the wire are the camelCase of the attribute names here; a result that does not fit the
kubelet's 4096 bytes is shortened (longest lists first) and says `truncated`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Final, get_type_hints

# Kubernetes keeps the first 4096 bytes of a termination message; stay well below that.
MAX_RESULT_BYTES: Final = 3800
# The reason of a run refused for bad options or environment (it exits EXIT_USAGE).
INVALID_ARGUMENTS: Final = "InvalidArguments"


class Outcome(StrEnum):
    """How a run ended, the same words for every job."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    NEEDS_ATTENTION = "NeedsAttention"  # epochs: something waits for staff
    NOTHING_TO_DO = "NothingToDo"  # epochs: no complete epoch was waiting


class JobKind(StrEnum):
    """The jobs that report a result; each value is also the job's name in object names."""

    EPOCHS = "epochs"
    RETENTION = "retention"
    BACKUP = "backup"
    DOCVIEWER = "docviewer"
    PDFS = "pdfs"
    PULL = "pull"


class ResultError(ValueError):
    """A termination message that is not a job result of this contract."""


@dataclass(frozen=True)
class ProcessedEpoch:
    """One epoch an epochs run finished (imported, failed or marked processed by staff)."""

    name: str
    outcome: str
    format: str | None = None
    processed_at: str | None = None
    rows: int = 0
    errors: int = 0


@dataclass(frozen=True)
class _Result:
    kind: ClassVar[JobKind]
    outcome: Outcome
    message: str = ""
    # A short CamelCase reason when the run failed before doing its work.
    reason: str = ""
    truncated: bool = False

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED


@dataclass(frozen=True)
class EpochsResult(_Result):
    kind: ClassVar[JobKind] = JobKind.EPOCHS
    processed: tuple[ProcessedEpoch, ...] = ()
    unrecognized: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetentionResult(_Result):
    kind: ClassVar[JobKind] = JobKind.RETENTION
    deleted: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    dry_run: bool = False
    now: str = ""
    processed_days: int = 0


@dataclass(frozen=True)
class BackupResult(_Result):
    kind: ClassVar[JobKind] = JobKind.BACKUP
    file: str = ""
    bytes: int = 0
    sha256: str = ""
    completed_at: str = ""
    kept: int = 0
    pruned: tuple[str, ...] = ()
    server_major: int = 0
    pg_dump_major: int = 0


@dataclass(frozen=True)
class DocviewerResult(_Result):
    """One docviewer export: the epoch it published under downloads/docviewer, and pruning."""

    kind: ClassVar[JobKind] = JobKind.DOCVIEWER
    epoch: str = ""  # the published directory's name, YYYYMMDD-HHMMSS (UTC)
    rows: int = 0  # documents listed in its documents.csv
    bytes: int = 0  # size of its documents.csv
    today: str = ""  # the date (YYYY-MM-DD) documents had to be active on
    forms: tuple[str, ...] = ()
    token_expires_at: str = ""  # when this epoch's URL tokens stop being accepted
    completed_at: str = ""
    kept: int = 0  # complete epochs left after pruning, this one included
    pruned: tuple[str, ...] = ()


@dataclass(frozen=True)
class PdfsResult(_Result):
    """One PDF extraction: the epoch it published under downloads/pdfs, and pruning."""

    kind: ClassVar[JobKind] = JobKind.PDFS
    epoch: str = ""  # the published directory's name, YYYYMMDD-HHMMSS (UTC); "" if none
    documents: int = 0  # PDFs written (and listed in its index.csv)
    bytes: int = 0  # their total size
    today: str = ""
    forms: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # "<document id>: <why>" for each chosen document not written
    completed_at: str = ""
    keep_days: int = 0
    pruned: tuple[str, ...] = ()


@dataclass(frozen=True)
class PullResult(_Result):
    """One SIF pull: the epoch it published under upload/, and what the zone delivered."""

    kind: ClassVar[JobKind] = JobKind.PULL
    epoch: str = ""  # the published epoch's name, YYYYMMDD-HHMMSS (UTC); "" if none
    zone_url: str = ""
    objects: tuple[str, ...] = ()  # "<SIF object name>=<count>" for each object requested
    messages: int = 0  # SIF_GetMessage deliveries acknowledged
    packets: int = 0  # response packets reassembled
    completed_at: str = ""


JobResult = (EpochsResult | RetentionResult | BackupResult | DocviewerResult | PdfsResult
             | PullResult)
RESULT_TYPES: Final[dict[JobKind, type[JobResult]]] = {
    cls.kind: cls for cls in (EpochsResult, RetentionResult, BackupResult, DocviewerResult,
                              PdfsResult, PullResult)}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _to_wire(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_camel(f.name): _to_wire(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None}
    if isinstance(value, tuple | list):
        return [_to_wire(item) for item in value]
    if isinstance(value, StrEnum):
        return str(value)
    return value


def _dumps(wire: Mapping[str, Any]) -> str:
    return json.dumps(wire, separators=(",", ":"), sort_keys=True, ensure_ascii=True)


def encode(result: JobResult) -> str:
    """The result as one line of JSON, shortened (and marked truncated) until it fits."""
    wire: dict[str, Any] = {"kind": str(result.kind), **_to_wire(result)}
    line = _dumps(wire)
    while len(line.encode()) > MAX_RESULT_BYTES:
        lists = [k for k, v in wire.items() if isinstance(v, list) and v]
        wire["truncated"] = True
        if not lists:
            wire = {k: wire[k] for k in ("kind", "outcome", "reason", "truncated") if k in wire}
            wire["message"] = result.message[:1000]
            line = _dumps(wire)
            break
        longest = max(lists, key=lambda k: len(_dumps({k: wire[k]})))
        wire[longest] = wire[longest][: len(wire[longest]) // 2]
        line = _dumps(wire)
    return line


def _field_value(owner: str, name: str, hint: Any, raw: Any) -> Any:
    text = str(hint)
    if hint is bool:
        if not isinstance(raw, bool):
            raise ResultError(f"{owner}.{name}: expected true or false, got {raw!r}")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ResultError(f"{owner}.{name}: expected an integer, got {raw!r}")
        return raw
    if hint is str or text == "str | None":
        if not isinstance(raw, str):
            raise ResultError(f"{owner}.{name}: expected text, got {raw!r}")
        return raw
    if hint is Outcome:
        try:
            return Outcome(raw)
        except ValueError:
            raise ResultError(f"{owner}.{name}: unknown outcome {raw!r}") from None
    if text.startswith("tuple["):
        if not isinstance(raw, list):
            raise ResultError(f"{owner}.{name}: expected a list, got {raw!r}")
        if "ProcessedEpoch" in text:
            return tuple(_from_wire(ProcessedEpoch, item, f"{owner}.{name}") for item in raw)
        return tuple(_field_value(owner, name, str, item) for item in raw)
    raise ResultError(f"{owner}.{name}: no reader for {text}")  # a contract bug, not input


def _from_wire(cls: type[Any], wire: Any, owner: str) -> Any:
    if not isinstance(wire, dict):
        raise ResultError(f"{owner}: expected an object, got {wire!r}")
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = _camel(f.name)
        if key in wire and wire[key] is not None:
            values[f.name] = _field_value(owner, f.name, hints[f.name], wire[key])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ResultError(f"{owner}: missing {key!r}")
    return cls(**values)


def parse(line: str) -> JobResult:
    """Read a job's result line back; ResultError names what is wrong with anything else.

    Unknown fields are ignored (a newer job may add some); known ones must have their type.
    """
    try:
        wire = json.loads(line)
    except ValueError as exc:
        raise ResultError(f"not JSON: {exc}") from None
    if not isinstance(wire, dict):
        raise ResultError("not a JSON object")
    try:
        kind = JobKind(str(wire.get("kind")))
    except ValueError:
        raise ResultError(f"unknown job kind {wire.get('kind')!r}") from None
    result: JobResult = _from_wire(RESULT_TYPES[kind], wire, str(kind))
    return result


def write(path: Path | None, result: JobResult) -> str:
    """Write the result line to path and return it.

    In a pod the path is the termination message file the kubelet bind-mounted into a
    root-owned /dev: the job can write it in place but not create a file beside it, so an
    existing file is written in place (one short line); a new one through a renamed temporary.
    """
    line = encode(result)
    if path is None:
        return line
    if path.exists():
        path.write_text(line + "\n")
        return line
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(line + "\n")
    tmp.replace(path)
    return line


__all__ = ["INVALID_ARGUMENTS", "MAX_RESULT_BYTES", "BackupResult", "DocviewerResult",
           "EpochsResult", "JobKind", "JobResult", "Outcome", "PdfsResult", "ProcessedEpoch",
           "PullResult", "ResultError", "RetentionResult", "encode", "parse", "write"]

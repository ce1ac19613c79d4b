"""The typed District: parsed once from the API object, defaults filled as the CRD declares them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from district_contract import commands, layout

AccessMode = Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]
ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]
# dedicated: the District's own Service is how districts reach it; shared: through the gateway
# (docs/gateway.md), its Service only the gateway's way in. None: the operator's default.
ServiceMode = Literal["dedicated", "shared"]
DeletionPolicy = Literal["Retain", "Delete"]
IntegrationMode = Literal["push", "pull"]


class InvalidDistrictError(ValueError):
    """The District object does not have the shape the CRD promises (never from an API server)."""


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class Storage:
    size: str = "10Gi"
    storage_class_name: str | None = None
    access_mode: AccessMode = "ReadWriteOnce"

    @property
    def pins_jobs_to_server_node(self) -> bool:
        """Jobs must run beside the server when only one node may mount the volume."""
        return self.access_mode != "ReadWriteMany"


@dataclass(frozen=True)
class ServiceSpec:
    type: ServiceType = "LoadBalancer"
    port: int = 22
    annotations: Mapping[str, str] = field(default_factory=dict)
    mode: ServiceMode | None = None  # as written; OperatorConfig.service_mode fills it in


@dataclass(frozen=True)
class Processing:
    schedule: str = "*/10 * * * *"
    settle_seconds: int = 300
    formats: tuple[str, ...] = ("oneroster", "generic-csv")
    database: SecretKeyRef | None = None
    # spec.processing.expectEvery in seconds; None: no upload is expected (no overdue alert).
    expect_every_seconds: int | None = None


@dataclass(frozen=True)
class Retention:
    processed_days: int = 30
    schedule: str = "17 3 * * *"


@dataclass(frozen=True)
class Backups:
    schedule: str = "0 2 * * *"
    keep: int = 14
    database: SecretKeyRef | None = None


# ---- spec.downloads (docviewer, pdfs, state directories) ----------------------------------

@dataclass(frozen=True)
class Docviewer:
    """The nightly document viewer export (`sftpd docviewer`)."""

    forms: tuple[str, ...]
    base_url: str
    token_secret: SecretKeyRef
    schedule: str = "30 1 * * *"
    token_ttl: str = "7d"  # noqa: S105 (a duration)
    keep: int = 7


@dataclass(frozen=True)
class Pdfs:
    """Scheduled PDF extraction (`sftpd pdfs`)."""

    schedule: str
    forms: tuple[str, ...]
    students: tuple[str, ...] = ()
    keep_days: int = 2


@dataclass(frozen=True)
class Downloads:
    """What the jobs write under /downloads/ besides backups; None where not enabled."""

    docviewer: Docviewer | None = None
    pdfs: Pdfs | None = None
    directories: tuple[str, ...] = ()


# spec.hostKeys.overlap: a whole number and a unit (the CRD's rule; at most 365 days).
_OVERLAP_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_OVERLAP_SECONDS = 365 * 86400


def overlap_seconds(text: str) -> int:
    """`30d`, `12h`, `90m`, `45s` -> seconds; ValueError for anything else."""
    number, unit = text[:-1], text[-1:]
    if unit not in _OVERLAP_UNITS or not number.isdigit() or len(number) > 6:
        raise ValueError(f"{text[:20]!r} is not a duration such as 30d, 12h, 90m or 45s")
    seconds = int(number) * _OVERLAP_UNITS[unit]
    if not 0 < seconds <= MAX_OVERLAP_SECONDS:
        raise ValueError(f"{text!r} is not between 1s and 365d")
    return seconds


@dataclass(frozen=True)
class HostKeysSpec:
    """spec.hostKeys: raising `rotate` starts a rotation whose next keys are announced for
    `overlap_seconds` before they replace the current ones."""

    rotate: int = 0
    overlap: str = "30d"

    @property
    def overlap_seconds(self) -> int:
        return overlap_seconds(self.overlap)


# The SIF objects a pull requests unless the District names others (the CRD's default).
# Not StaffPersonal: SIF staff carry no roles, so its users.csv has Roles blank, and importing
# that would empty the roles staff gave those users by hand (docs/sif-pull.md).
SIF_OBJECTS_DEFAULT: tuple[str, ...] = (
    "StudentPersonal", "SchoolInfo", "StudentSchoolEnrollment",
    "StudentContactPersonal", "StudentContactRelationship")


@dataclass(frozen=True)
class SifPull:
    """spec.integration.sif: the zone a pull-mode SIF agent requests the district's data from."""

    zone_url: str
    source_id: str
    auth_secret: str  # the Secret's name: username+password, or tls.crt+tls.key
    ca: SecretKeyRef | None = None
    schedule: str = "0 4 * * *"
    objects: tuple[str, ...] = SIF_OBJECTS_DEFAULT
    max_buffer_size: int = 10_000_000


@dataclass(frozen=True)
class Integration:
    """spec.integration: push (uploads over SFTP only) or pull (a scheduled SIF pull too)."""

    mode: IntegrationMode = "push"
    sif: SifPull | None = None

    @property
    def pull(self) -> SifPull | None:
        """The SIF settings when the District pulls, else None."""
        return self.sif if self.mode == "pull" else None


@dataclass(frozen=True)
class District:
    """One District as the operator reasons about it."""

    name: str
    namespace: str
    uid: str
    generation: int
    login: str
    authorized_keys: tuple[str, ...] = ()
    authorized_keys_secret: SecretKeyRef | None = None
    allowed_source_ranges: tuple[str, ...] = ()
    storage: Storage = Storage()
    service: ServiceSpec = ServiceSpec()
    processing: Processing = Processing()
    retention: Retention = Retention()
    backups: Backups = Backups()
    downloads: Downloads = Downloads()
    integration: Integration = Integration()
    webhook_secret: SecretKeyRef | None = None
    host_keys: HostKeysSpec = HostKeysSpec()
    suspend: bool = False
    deletion_policy: DeletionPolicy = "Retain"
    # metadata.creationTimestamp: where "no upload for expectEvery" counts from before any.
    created_at: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def referenced_secrets(self) -> frozenset[str]:
        """The Secrets of its namespace it names and the operator reads (authorized keys,
        databases, webhook, docviewer token, SIF credentials and CA): a change to one is
        reconciled at once, not at the next resync."""
        docviewer = self.downloads.docviewer
        pull = self.integration.pull
        refs = (self.authorized_keys_secret, self.processing.database, self.backups.database,
                self.webhook_secret, docviewer.token_secret if docviewer else None,
                pull.ca if pull else None)
        named = {ref.name for ref in refs if ref is not None}
        if pull is not None:
            named.add(pull.auth_secret)
        return frozenset(named)


def _dict(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidDistrictError(f"{where} must be an object, not {type(value).__name__}")
    return value


def _ref(value: Any, where: str, default_key: str) -> SecretKeyRef | None:
    if value is None:
        return None
    ref = _dict(value, where)
    name = ref.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidDistrictError(f"{where}.name must name a Secret")
    return SecretKeyRef(name=name, key=str(ref.get("key") or default_key))


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidDistrictError(f"{where} must be a list of strings")
    return tuple(value)


def _enabled(block: Mapping[str, Any]) -> bool:
    return bool(block) and bool(block.get("enabled", True))


def _required_strings(block: Mapping[str, Any], field_name: str, where: str) -> tuple[str, ...]:
    values = _strings(block.get(field_name), f"{where}.{field_name}")
    if not values:
        raise InvalidDistrictError(f"{where}.{field_name} names nothing")
    return values


def _docviewer(block: Mapping[str, Any]) -> Docviewer | None:
    where = "spec.downloads.docviewer"
    if not _enabled(block):
        return None
    token_secret = _ref(block.get("tokenSecretRef"), f"{where}.tokenSecretRef",
                        layout.DOCVIEWER_TOKEN_FILE)
    base_url = block.get("baseURL")
    if token_secret is None or not isinstance(base_url, str) or not base_url:
        raise InvalidDistrictError(f"{where} needs baseURL and tokenSecretRef")
    return Docviewer(forms=_required_strings(block, "forms", where), base_url=base_url,
                     token_secret=token_secret,
                     schedule=str(block.get("schedule") or Docviewer.schedule),
                     token_ttl=str(block.get("tokenTTL") or Docviewer.token_ttl),
                     keep=int(block.get("keep", Docviewer.keep)))


def _pdfs(block: Mapping[str, Any]) -> Pdfs | None:
    where = "spec.downloads.pdfs"
    if not _enabled(block):
        return None
    schedule = block.get("schedule")
    if not isinstance(schedule, str) or not schedule:
        raise InvalidDistrictError(f"{where}.schedule is missing")
    return Pdfs(schedule=schedule, forms=_required_strings(block, "forms", where),
                students=_strings(block.get("students"), f"{where}.students"),
                keep_days=int(block.get("keepDays", Pdfs.keep_days)))


def _downloads(value: Any) -> Downloads:
    downloads = _dict(value, "spec.downloads")
    return Downloads(
        docviewer=_docviewer(_dict(downloads.get("docviewer"), "spec.downloads.docviewer")),
        pdfs=_pdfs(_dict(downloads.get("pdfs"), "spec.downloads.pdfs")),
        directories=_strings(downloads.get("directories"), "spec.downloads.directories"))


def _host_keys_spec(host_keys: Mapping[str, Any]) -> HostKeysSpec:
    rotate = host_keys.get("rotate", 0)
    if not isinstance(rotate, int) or isinstance(rotate, bool) or rotate < 0:
        raise InvalidDistrictError("spec.hostKeys.rotate must be a whole number, 0 or more")
    overlap = str(host_keys.get("overlap") or HostKeysSpec.overlap)
    try:
        overlap_seconds(overlap)
    except ValueError as exc:
        raise InvalidDistrictError(f"spec.hostKeys.overlap: {exc}") from None
    return HostKeysSpec(rotate=rotate, overlap=overlap)


# spec.processing.expectEvery as the CRD's pattern admits it: Go duration units h, m, s.
_DURATION = re.compile(r"(?:([0-9]{1,4})h)?(?:([0-9]{1,6})m)?(?:([0-9]{1,8})s)?")
EXPECT_EVERY_MIN_SECONDS = 3600
EXPECT_EVERY_MAX_SECONDS = 744 * 3600


def _expect_every(value: Any) -> int | None:
    """expectEvery in seconds, bounded as the CRD's rule bounds it (the API server checks it
    first; this refuses what reached us some other way)."""
    if value is None:
        return None
    match = _DURATION.fullmatch(value) if isinstance(value, str) and value else None
    if match is None:
        raise InvalidDistrictError(f"spec.processing.expectEvery {value!r} is not a duration "
                                   "such as 26h or 90m")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not EXPECT_EVERY_MIN_SECONDS <= total <= EXPECT_EVERY_MAX_SECONDS:
        raise InvalidDistrictError(f"spec.processing.expectEvery {value!r} is out of range: "
                                   "1h to 744h (31 days)")
    return total
def _integration(value: Any) -> Integration:
    integration = _dict(value, "spec.integration")
    mode = integration.get("mode") or "push"
    if mode not in ("push", "pull"):
        raise InvalidDistrictError(f"spec.integration.mode {mode!r} is neither push nor pull")
    if integration.get("sif") is None:
        if mode == "pull":
            raise InvalidDistrictError("spec.integration.mode pull needs spec.integration.sif")
        return Integration()
    sif = _dict(integration.get("sif"), "spec.integration.sif")
    auth = _ref(sif.get("authSecretRef"), "spec.integration.sif.authSecretRef", "")
    zone_url, source_id = sif.get("zoneURL"), sif.get("sourceId")
    if auth is None or not isinstance(zone_url, str) or not isinstance(source_id, str):
        raise InvalidDistrictError("spec.integration.sif needs zoneURL, sourceId and "
                                   "authSecretRef")
    objects = sif.get("objects")
    return Integration(mode="pull" if mode == "pull" else "push", sif=SifPull(
        zone_url=zone_url,
        source_id=source_id,
        auth_secret=auth.name,
        ca=_ref(sif.get("caSecretRef"), "spec.integration.sif.caSecretRef", "ca.crt"),
        schedule=str(sif.get("schedule") or "0 4 * * *"),
        objects=SIF_OBJECTS_DEFAULT if objects is None
        else _strings(objects, "spec.integration.sif.objects"),
        max_buffer_size=int(sif.get("maxBufferSize") or 10_000_000),
    ))


def _service_mode(value: Any) -> ServiceMode | None:
    if value is None or value == "":
        return None
    if value not in ("dedicated", "shared"):
        raise InvalidDistrictError(f"spec.service.mode {value!r} is not dedicated or shared")
    return "shared" if value == "shared" else "dedicated"


def parse_district(body: Mapping[str, Any]) -> District:
    """Build the typed District from an API object (a kopf Body or a plain dict)."""
    metadata = _dict(body.get("metadata"), "metadata")
    spec = _dict(body.get("spec"), "spec")
    name = str(metadata.get("name") or "")
    if not name:
        raise InvalidDistrictError("metadata.name is missing")
    storage = _dict(spec.get("storage"), "spec.storage")
    service = _dict(spec.get("service"), "spec.service")
    processing = _dict(spec.get("processing"), "spec.processing")
    retention = _dict(spec.get("retention"), "spec.retention")
    backups = _dict(spec.get("backups"), "spec.backups")
    notifications = _dict(spec.get("notifications"), "spec.notifications")
    formats = processing.get("formats")
    host_keys = _host_keys_spec(_dict(spec.get("hostKeys"), "spec.hostKeys"))
    login = str(spec.get("login") or name)
    if not commands.valid_login(login):
        raise InvalidDistrictError(f"login {login!r} is not a valid user name: use "
                                   f"{commands.LOGIN_RULE}")
    format_names = Processing.formats if formats is None else _strings(formats,
                                                                   "spec.processing.formats")
    unknown = [f for f in format_names if f not in commands.FORMATS_KNOWN]
    if unknown:
        known = ", ".join(commands.FORMATS_KNOWN)
        raise InvalidDistrictError(f"spec.processing.formats: unknown format(s) "
                                   f"{', '.join(unknown)} (known: {known})")
    return District(
        name=name,
        namespace=str(metadata.get("namespace") or "default"),
        uid=str(metadata.get("uid") or ""),
        generation=int(metadata.get("generation") or 0),
        login=login,
        authorized_keys=_strings(spec.get("authorizedKeys"), "spec.authorizedKeys"),
        authorized_keys_secret=_ref(spec.get("authorizedKeysSecretRef"),
                                    "spec.authorizedKeysSecretRef", "authorized_keys"),
        allowed_source_ranges=_strings(spec.get("allowedSourceRanges"),
                                       "spec.allowedSourceRanges"),
        storage=Storage(
            size=str(storage.get("size") or "10Gi"),
            storage_class_name=storage.get("storageClassName"),
            access_mode=storage.get("accessMode") or "ReadWriteOnce",
        ),
        service=ServiceSpec(
            type=service.get("type") or "LoadBalancer",
            port=int(service.get("port") or 22),
            annotations=dict(_dict(service.get("annotations"), "spec.service.annotations")),
            mode=_service_mode(service.get("mode")),
        ),
        processing=Processing(
            schedule=str(processing.get("schedule") or "*/10 * * * *"),
            settle_seconds=int(processing.get("settleSeconds", 300)),
            formats=format_names,
            database=_ref(processing.get("databaseSecretRef"),
                          "spec.processing.databaseSecretRef", "uri"),
            expect_every_seconds=_expect_every(processing.get("expectEvery")),
        ),
        retention=Retention(
            processed_days=int(retention.get("processedDays", 30)),
            schedule=str(retention.get("schedule") or "17 3 * * *"),
        ),
        backups=Backups(
            schedule=str(backups.get("schedule") or "0 2 * * *"),
            keep=int(backups.get("keep", 14)),
            database=_ref(backups.get("databaseSecretRef"), "spec.backups.databaseSecretRef",
                          "uri"),
        ),
        downloads=_downloads(spec.get("downloads")),
        integration=_integration(spec.get("integration")),
        webhook_secret=_ref(notifications.get("webhookSecretRef"),
                            "spec.notifications.webhookSecretRef", "url"),
        host_keys=host_keys,
        suspend=bool(spec.get("suspend", False)),
        deletion_policy="Delete" if spec.get("deletionPolicy") == "Delete" else "Retain",
        created_at=str(metadata.get("creationTimestamp") or ""),
    )

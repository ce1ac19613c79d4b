"""The shared gateway as the operator keeps it: its two Secrets (created once, host keys
rotated like a District's) and its Service's address, read for shared-mode Districts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from district_operator import api, keys, names, rotation, rotationstep, secretrefs, status
from district_operator.builders.gatewaysecrets import gateway_host_keys_secret, gateway_key_secret
from district_operator.config import GatewayConfig

log = logging.getLogger(__name__)

# How often the gateway's Service and Secrets are read (three GETs): the operator's watches
# cover the Districts' namespaces only, and the gateway's may be another.
POLL_SECONDS = 2.0


class GatewayState:
    """The gateway's Secrets and Service as last read; `refresh` takes a rotation step when one
    is due and says whether anything a District shows changed. Safe from many threads."""

    def __init__(self, kube: api.Kube, gateway: GatewayConfig | None,
                 clock: status.Clock = status.utc_now) -> None:
        self.kube = kube
        self.gateway = gateway
        self.clock = clock
        self._lock = threading.Lock()
        self._seen = status.GatewaySeen(installed=gateway is not None)
        self._public_key = ""
        self._had_host_keys = False
        self._loaded = False
        self._load_tried = False
        self._refreshing = threading.Lock()  # one reader and writer of the Secrets at a time

    @property
    def seen(self) -> status.GatewaySeen:
        with self._lock:
            return self._seen

    @property
    def public_key(self) -> str:
        """The gateway's public key line (gateway_key.pub), "" while unknown."""
        with self._lock:
            return self._public_key

    def load(self) -> None:
        """Read the gateway once, if nothing has read it yet (a District's first reconcile may
        come before the poller's first round). A failure (the API down, or no RBAC in the
        gateway's namespace) is logged and left to the poller: the District is built without
        the gateway's key meanwhile rather than not at all."""
        if self.gateway is None or self._loaded or self._load_tried:
            return
        self._load_tried = True
        try:
            self.refresh()
        except api.ApiError as exc:
            log.warning("reading the gateway's Secrets and Service failed: %s", exc)

    def refresh(self) -> tuple[bool, bool]:
        """Read (creating or rotating as needed) the gateway's Secrets and Service: whether
        what Districts show changed, and whether the gateway's public key changed."""
        with self._refreshing:
            return self._refresh()

    def _refresh(self) -> tuple[bool, bool]:
        gateway = self.gateway
        if gateway is None:
            return False, False
        public_key = self._key_pair(gateway)
        held = self._host_keys(gateway)
        service = self.kube.get("Service", gateway.namespace,
                                names.gateway_service(gateway.name))
        seen = status.GatewaySeen(
            installed=True, endpoint=status.gateway_endpoint(service),
            host_keys=keys.describe_host_keys(held.files),
            next_host_keys=keys.describe_host_keys(held.files, names.NEXT_HOST_KEY_FILES),
            rotation=rotation.state(held, gateway.host_keys))
        with self._lock:
            changed = seen != self._seen
            key_changed = public_key != self._public_key
            self._seen, self._public_key = seen, public_key
            self._loaded = True
        return changed, key_changed

    def _key_pair(self, gateway: GatewayConfig) -> str:
        name = names.gateway_key_secret(gateway.name)
        secret, created = self._secret(gateway.namespace, name, lambda: gateway_key_secret(
            gateway.namespace, gateway.name, keys.generate_gateway_key()))
        if created:
            log.info("gateway %s/%s: key pair created in Secret %s", gateway.namespace,
                     gateway.name, name)
        public = (secretrefs.decode(secret, names.GATEWAY_PUBLIC_KEY_FILE) or "").strip()
        try:
            keys.parse_authorized_key(public)
        except ValueError as exc:
            # Never regenerated over: a hand-edited Secret is the administrator's to repair.
            log.warning("gateway Secret %s/%s: %s is not a public key (%s): shared-mode "
                        "servers get none", gateway.namespace, name,
                        names.GATEWAY_PUBLIC_KEY_FILE, exc)
            return ""
        return public

    def _secret(self, namespace: str, name: str, manifest: Callable[[], dict[str, Any]]
                ) -> tuple[dict[str, Any], bool]:
        """The Secret, created from `manifest()` (keys generated only then) when it is not
        there; whether this call created it. Never written over: another operator replica
        that was first wins, and its Secret is read."""
        secret = self.kube.get("Secret", namespace, name)
        if secret is not None:
            return secret, False
        try:
            return self.kube.create(manifest()), True
        except api.AlreadyExistsError:
            secret = self.kube.get("Secret", namespace, name)
            if secret is None:
                raise
            return secret, False

    def _host_keys(self, gateway: GatewayConfig) -> rotation.HostKeySecret:
        name = names.gateway_host_keys_secret(gateway.name)
        secret, created = self._secret(gateway.namespace, name, lambda: gateway_host_keys_secret(
            gateway.namespace, gateway.name, keys.generate_host_keys(),
            rotation.initial_annotations(gateway.host_keys)))
        if created and self._had_host_keys:
            log.warning("gateway host-key Secret %s/%s was gone: new host keys were generated, "
                        "and every district's client must be given the new known_hosts lines",
                        gateway.namespace, name)
        self._had_host_keys = True
        secret, held = rotationstep.take_due_step(
            self.kube, gateway.namespace, name, secret, gateway.host_keys, self.clock(),
            f"gateway {gateway.namespace}/{gateway.name}")
        return held


class GatewayPoller:
    """Refreshes the GatewayState every POLL_SECONDS in a thread and, on a change, calls
    `changed(key_changed)` (the reconciler then updates every shared-mode District)."""

    def __init__(self, state: GatewayState, changed: Callable[[bool], None],
                 interval: float = POLL_SECONDS) -> None:
        self.state = state
        self.changed = changed
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)

    def start(self) -> None:
        if self.state.gateway is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def poll_once(self) -> None:
        changed, key_changed = self.state.refresh()
        if changed or key_changed:
            self.changed(key_changed)

    def _run(self) -> None:
        said = ""  # the last failure logged: one line per new failure, not one every round
        while True:
            try:
                self.poll_once()
                said = ""
            except api.ApiError as exc:  # an API outage, a missing grant: the next round retries
                if str(exc) != said:
                    said = str(exc)
                    log.warning("reading the gateway's Secrets and Service failed (retried "
                                "every %gs): %s", self.interval, exc)
            except Exception:
                log.exception("reading the gateway's Secrets and Service failed")
            if self._stop.wait(self.interval):
                return


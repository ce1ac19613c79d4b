"""The periodic resync: re-check every District for drift and changed Secrets, finalizer-free."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from district_operator import api, names

log = logging.getLogger(__name__)

# kopf's own timers would do this, but each one puts a finalizer on its object: with the
# operator down, nobody could delete a District. This loop needs none.


class Resyncer:
    """Every `interval` seconds, list the Districts and reconcile each one (reads first)."""

    def __init__(self, kube: api.Kube, namespaces: tuple[str, ...], interval: float,
                 reconcile: Callable[[Mapping[str, Any]], None], workers: int) -> None:
        self.kube = kube
        self.namespaces: tuple[str | None, ...] = namespaces or (None,)
        self.interval = interval
        self.reconcile = reconcile
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resync")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.resync_once()
            except Exception:  # the loop must survive an API outage; the next round retries
                log.exception("resync round failed")

    def resync_once(self) -> int:
        bodies = [body for namespace in self.namespaces
                  for body in self.kube.list(names.KIND, namespace)
                  if not body["metadata"].get("deletionTimestamp")]
        futures = [self._pool.submit(self._one, body) for body in bodies]
        wait(futures)
        return len(bodies)

    def _one(self, body: Mapping[str, Any]) -> None:
        try:
            self.reconcile(body)
        except Exception:
            meta = body.get("metadata", {})
            log.exception("resync of %s/%s failed", meta.get("namespace"), meta.get("name"))

"""Webhook notifications: posted from a background thread, retried with backoff, never blocking."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from district_operator import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notification:
    url: str
    payload: Mapping[str, Any]


class Notifier:
    """Queue notifications and deliver them one by one; a dead webhook only delays other posts."""

    def __init__(self, attempts: int = 5, backoff_seconds: float = 2.0,
                 timeout_seconds: float = 10.0) -> None:
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self._queue: queue.Queue[Notification | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()

    def submit(self, url: str, payload: Mapping[str, Any]) -> None:
        if not url.startswith(("http://", "https://")):
            log.warning("webhook URL %r is not http(s); notification dropped", url[:80])
            metrics.NOTIFICATIONS.labels("invalid").inc()
            return
        self._queue.put(Notification(url, dict(payload)))

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self._deliver(item)

    def _post(self, item: Notification) -> None:
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in submit()
            item.url, data=json.dumps(item.payload).encode(), method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "district-sftp"})
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
            response.read()

    def _deliver(self, item: Notification) -> None:
        delay = self.backoff_seconds
        for attempt in range(1, self.attempts + 1):
            try:
                self._post(item)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                log.warning("webhook post failed (attempt %d/%d): %s", attempt, self.attempts,
                            exc)
                if attempt == self.attempts:
                    metrics.NOTIFICATIONS.labels("failed").inc()
                    return
                time.sleep(delay)
                delay *= 2
            else:
                metrics.NOTIFICATIONS.labels("delivered").inc()
                return

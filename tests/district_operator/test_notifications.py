"""Webhook posts against a real local HTTP server: delivered once, retried, never blocking."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from district_operator.notifications import Notifier


class Hook:
    """A local webhook receiver that fails the first `failures` posts with HTTP 503."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.attempts += 1
                if hook.attempts <= hook.failures:
                    self.send_response(503)
                else:
                    hook.received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook(failures=2)
    yield h
    h.server.shutdown()


def test_post_is_retried_with_backoff_and_delivered_once(hook: Hook) -> None:
    notifier = Notifier(attempts=4, backoff_seconds=0.05)
    started = time.monotonic()
    notifier.submit(hook.url, {"event": "JobFailed", "district": "lincoln"})
    assert time.monotonic() - started < 0.05  # submit never waits for the network
    hook.wait(1)
    time.sleep(0.3)
    notifier.close()
    assert hook.received == [{"event": "JobFailed", "district": "lincoln"}]
    assert hook.attempts == 3


def test_a_dead_webhook_gives_up_after_the_attempts() -> None:
    dead = Hook(failures=100)
    notifier = Notifier(attempts=3, backoff_seconds=0.01)
    notifier.submit(dead.url, {"event": "x"})
    deadline = time.monotonic() + 5
    while dead.attempts < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    notifier.close()
    dead.server.shutdown()
    assert dead.attempts == 3 and dead.received == []


def test_non_http_url_is_refused() -> None:
    notifier = Notifier(attempts=1)
    notifier.submit("file:///etc/passwd", {"event": "x"})
    notifier.close()

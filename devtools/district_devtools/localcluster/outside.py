"""A client outside the cluster for the real node: a network namespace with its own address.

Dev tooling, never shipped; a stand-in for a district's machine on the internet. Clients run on
this machine itself reach a load balancer address through kube-proxy's rules for locally made
traffic, which masquerade them: the gateway then sees the node bridge's address
(`realnode.GATEWAY`), whatever the Service's externalTrafficPolicy. A packet that arrives from
outside the node keeps its source with `externalTrafficPolicy: Local`, as behind a cloud load
balancer that keeps client addresses. This namespace is such an outside: a veth pair to the
host, the client at `CLIENT` (TEST-NET-2, documentation addresses), the host at `HOST` as its
default route; the host forwards to the pods as it would from a NIC.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

NAMESPACE = "dsftp-outside"
HOST_LINK = "dsftpo0"
CLIENT_LINK = "dsftpo1"
HOST = "198.51.100.1"
CLIENT = "198.51.100.2"
PREFIX = 30
CLONE_NEWNET = 0x40000000


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


class OutsideClient:
    """The namespace, made by start() and removed by stop() (a leftover is removed at start)."""

    def __init__(self) -> None:
        self.address = CLIENT
        self.forwarding_before: str | None = None

    def start(self) -> OutsideClient:
        self.stop()
        _ip("netns", "add", NAMESPACE)
        _ip("link", "add", HOST_LINK, "type", "veth", "peer", "name", CLIENT_LINK)
        _ip("link", "set", CLIENT_LINK, "netns", NAMESPACE)
        _ip("addr", "add", f"{HOST}/{PREFIX}", "dev", HOST_LINK)
        _ip("link", "set", HOST_LINK, "up")
        for argv in (("addr", "add", f"{CLIENT}/{PREFIX}", "dev", CLIENT_LINK),
                     ("link", "set", CLIENT_LINK, "up"), ("link", "set", "lo", "up"),
                     ("route", "add", "default", "via", HOST)):
            _ip("netns", "exec", NAMESPACE, "ip", *argv)
        knob = Path("/proc/sys/net/ipv4/ip_forward")
        self.forwarding_before = knob.read_text().strip()
        knob.write_text("1")  # the node sets it too; put back at stop
        return self

    def stop(self) -> None:
        _ip("link", "del", HOST_LINK, check=False)  # the pair goes with it
        _ip("netns", "del", NAMESPACE, check=False)
        if self.forwarding_before is not None:
            Path("/proc/sys/net/ipv4/ip_forward").write_text(self.forwarding_before)
            self.forwarding_before = None

    def command(self, argv: Sequence[str]) -> list[str]:
        """argv run inside the namespace (for subprocess)."""
        return ["ip", "netns", "exec", NAMESPACE, *argv]

    def connect(self, host: str, port: int, timeout: float = 10) -> socket.socket:
        """A TCP connection made from inside the namespace (for in-process clients such as
        paramiko): a thread joins the namespace, connects, and hands the socket over."""
        result: list[socket.socket | BaseException] = []

        def dial() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(f"/var/run/netns/{NAMESPACE}") as ns:
                    if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                result.append(socket.create_connection((host, port), timeout=timeout))
            except BaseException as exc:  # handed to the caller
                result.append(exc)

        # setns changes only the calling thread's namespace; this thread ends right after.
        thread = threading.Thread(target=dial, daemon=True)
        thread.start()
        thread.join(timeout + 5)
        if not result:
            raise TimeoutError(f"no connection to {host}:{port} from {NAMESPACE}")
        outcome = result[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@contextlib.contextmanager
def outside_client() -> Iterator[OutsideClient]:
    if os.geteuid() != 0:
        raise PermissionError("a network namespace needs root")
    client = OutsideClient().start()
    try:
        yield client
    finally:
        client.stop()

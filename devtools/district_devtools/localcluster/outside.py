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
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

HOST_LINK = "dsftpo0"
CLIENT_LINK = "dsftpo1"
HOST = "198.51.100.1"
CLIENT = "198.51.100.2"
PREFIX = 30
CLONE_NEWNET = 0x40000000


def _run(*argv: str, check: bool = True) -> None:
    subprocess.run(list(argv), check=check, capture_output=True)


class OutsideClient:
    """The namespace, held by a sleeping process of its own rather than a mount (`ip netns add`
    would make /run/netns a shared bind mount, which hides the node's CNI namespaces from its
    clean-up): started by start(), gone with that process at stop(), its veth pair with it."""

    def __init__(self) -> None:
        self.address = CLIENT
        self.holder: subprocess.Popen[bytes] | None = None
        self.forwarding_before: str | None = None

    @property
    def netns(self) -> str:
        assert self.holder is not None, "not started"
        return f"/proc/{self.holder.pid}/ns/net"

    def start(self) -> OutsideClient:
        _run("ip", "link", "del", HOST_LINK, check=False)  # a leftover of an earlier run
        self.holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"],
                                       stdin=subprocess.DEVNULL)
        try:
            # unshare execs sleep once the namespace is made: wait until it is not ours.
            own = Path("/proc/self/ns/net").readlink()
            deadline = time.monotonic() + 10
            while Path(self.netns).readlink() == own:
                if time.monotonic() > deadline or self.holder.poll() is not None:
                    raise RuntimeError("unshare --net did not make a network namespace")
                time.sleep(0.02)
            _run("ip", "link", "add", HOST_LINK, "type", "veth", "peer", "name", CLIENT_LINK)
            _run("ip", "link", "set", CLIENT_LINK, "netns", str(self.holder.pid))
            _run("ip", "addr", "add", f"{HOST}/{PREFIX}", "dev", HOST_LINK)
            _run("ip", "link", "set", HOST_LINK, "up")
            for argv in (("addr", "add", f"{CLIENT}/{PREFIX}", "dev", CLIENT_LINK),
                         ("link", "set", CLIENT_LINK, "up"), ("link", "set", "lo", "up"),
                         ("route", "add", "default", "via", HOST)):
                _run(*self.command(["ip", *argv]))
            knob = Path("/proc/sys/net/ipv4/ip_forward")
            self.forwarding_before = knob.read_text().strip()
            knob.write_text("1")  # the node sets it too; put back at stop
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        _run("ip", "link", "del", HOST_LINK, check=False)  # the pair goes with it
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
            self.holder = None
        if self.forwarding_before is not None:
            Path("/proc/sys/net/ipv4/ip_forward").write_text(self.forwarding_before)
            self.forwarding_before = None

    def command(self, argv: Sequence[str]) -> list[str]:
        """argv run inside the namespace (for subprocess)."""
        return ["nsenter", f"--net={self.netns}", "--", *argv]

    def connect(self, host: str, port: int, timeout: float = 10) -> socket.socket:
        """A TCP connection made from inside the namespace (for in-process clients such as
        paramiko): a thread joins the namespace, connects, and hands the socket over."""
        result: list[socket.socket | BaseException] = []
        netns = self.netns

        def dial() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(netns) as ns:
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
            raise TimeoutError(f"no connection to {host}:{port} from the outside namespace")
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

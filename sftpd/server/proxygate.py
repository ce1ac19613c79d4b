"""The listener in front of asyncssh that takes a PROXY v2 header from trusted gateways only.

asyncssh.listen() hands its per-connection protocol factory to a `tunnel` object's
create_server() when one is given; ProxyListener is such an object, listening on TCP itself and
putting a ProxyGate in front of each connection. From a source outside --proxy-from the gate
hands the transport to asyncssh at once (a PROXY header is then just bad SSH). From a proxy
source it first reads one bounded header within a timeout and drops the connection without
one; the header's client goes to the connection as the extra info `proxied`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, cast

from sftpd.server import proxyheader
from sftpd.server.access import IPNetwork, canonical_address, is_allowed

PROXIED: str = "proxied"  # the extra info name of the ProxiedClient on an SSH connection


class _SSHProtocol(Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def set_extra_info(self, **kwargs: Any) -> None: ...


Refused = Callable[[str, str, str], None]  # reason, source address, detail


class ProxyGate(asyncio.Protocol):
    """One accepted connection until asyncssh takes it over."""

    def __init__(self, factory: Callable[[], _SSHProtocol], sources: tuple[IPNetwork, ...],
                 timeout: float, refused: Refused) -> None:
        self._factory = factory
        self._sources = sources
        self._timeout = timeout
        self._refused = refused
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None
        self._source = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("?", 0)
        self._source = canonical_address(str(peer[0]))
        if not is_allowed(self._source, self._sources):
            self._hand_over(None, b"")
            return
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            parsed = proxyheader.parse(self._buffer[:proxyheader.MAX_HEADER], self._source)
        except proxyheader.ProxyHeaderError as exc:
            self._drop("proxy_header_invalid", str(exc))
            return
        if parsed is None:
            if len(self._buffer) >= proxyheader.MAX_HEADER:
                self._drop("proxy_header_invalid", "header too long")
            return
        client, length = parsed
        self._hand_over(client, self._buffer[length:])

    def eof_received(self) -> bool:
        if not self._buffer:
            # Connected and closed without a byte: a TCP health check (the kubelet's readiness
            # probe comes from the node, whose address is often inside the pod range given as
            # --proxy-from), not a gateway that lost its header; closed without a log line.
            self._cancel_timer()
            if self._transport is not None:
                self._transport.close()
            return False
        self._drop("proxy_header_missing", "closed before a PROXY header")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()

    def _timed_out(self) -> None:
        self._drop("proxy_header_missing", f"no PROXY header within {self._timeout:g}s")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drop(self, reason: str, detail: str) -> None:
        self._cancel_timer()
        if self._transport is not None and not self._transport.is_closing():
            self._refused(reason, self._source, detail)
            self._transport.abort()

    def _hand_over(self, client: proxyheader.ProxiedClient | None, rest: bytes) -> None:
        self._cancel_timer()
        assert self._transport is not None
        inner = self._factory()
        if client is not None:
            inner.set_extra_info(**{PROXIED: client})
        self._transport.set_protocol(inner)  # type: ignore[arg-type]
        inner.connection_made(self._transport)
        if rest:
            inner.data_received(rest)


class ProxyListener:
    """What asyncssh.listen(tunnel=...) calls to listen: TCP with a ProxyGate per connection."""

    def __init__(self, sources: tuple[IPNetwork, ...], timeout: float, refused: Refused) -> None:
        self.sources = sources
        self.timeout = timeout
        self.refused = refused

    async def create_server(self, session_factory: Callable[[str, int], _SSHProtocol],
                            listen_host: str | list[str], listen_port: int) -> asyncio.Server:
        def gate() -> ProxyGate:
            return ProxyGate(lambda: session_factory("", 0), self.sources, self.timeout,
                             self.refused)

        loop = asyncio.get_running_loop()
        return await loop.create_server(gate, listen_host or None, listen_port,
                                        reuse_address=True)

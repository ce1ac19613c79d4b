"""Who may connect: the login name, the source-address allow-list and the ban after repeated
failed logins."""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from district_contract import commands

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOGIN_MAX = commands.LOGIN_MAX


def check_login(login: str) -> str:
    """The login, or ValueError saying what a valid one looks like (the contract's rule, which
    the District CRD and the operator apply too)."""
    if not commands.valid_login(login):
        raise ValueError(f"--login {login[:LOGIN_MAX + 1]!r} is not a valid user name: use "
                         f"{commands.LOGIN_RULE}")
    return login


def shown_user(username: str) -> str:
    """A client's user name as logged: a hostile client may send tens of kilobytes."""
    return username if len(username) <= LOGIN_MAX else username[:LOGIN_MAX] + "..."


def parse_networks(cidrs: Iterable[str], option: str = commands.ALLOWED_SOURCE,
                   ) -> tuple[IPNetwork, ...]:
    """Parse CIDRs (a bare address is a /32 or /128); raises ValueError naming the bad entry."""
    networks: list[IPNetwork] = []
    for text in cidrs:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"--{option} {text!r} is not an address or CIDR: {exc}") from exc
    return tuple(networks)


def _normalize(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    parsed = ipaddress.ip_address(address.split("%", 1)[0])
    # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; judge them as IPv4.
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def canonical_address(address: str) -> str:
    """The address as limits count it: an IPv4-mapped IPv6 address as IPv4, a scope dropped."""
    try:
        return str(_normalize(address))
    except ValueError:
        return address


def is_allowed(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    """True when no allow-list is configured or the address falls inside one of its networks."""
    if not networks:
        return True
    try:
        parsed = _normalize(address)
    except ValueError:
        return False
    return any(parsed.version == net.version and parsed in net for net in networks)


@dataclass
class BanList:
    """Bans a source address for `ban_seconds` once it fails `max_failures` logins in `window`."""

    max_failures: int
    window_seconds: float
    ban_seconds: float
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _banned_until: dict[str, float] = field(default_factory=dict)

    def is_banned(self, address: str) -> bool:
        until = self._banned_until.get(address)
        if until is None:
            return False
        if self.clock() >= until:
            del self._banned_until[address]
            return False
        return True

    def record_failure(self, address: str) -> bool:
        """Count one failed login; True when this failure starts a ban."""
        if self.max_failures <= 0:
            return False
        now = self.clock()
        recent = self._failures.setdefault(address, deque())
        recent.append(now)
        while recent and recent[0] < now - self.window_seconds:
            recent.popleft()
        if len(recent) >= self.max_failures:
            del self._failures[address]
            self._banned_until[address] = now + self.ban_seconds
            return True
        return False

    def record_success(self, address: str) -> None:
        self._failures.pop(address, None)

    def prune(self) -> None:
        """Forget expired bans and stale failure counts so the tables cannot grow forever."""
        now = self.clock()
        for address in [a for a, until in self._banned_until.items() if until <= now]:
            del self._banned_until[address]
        for address in [a for a, q in self._failures.items() if q[-1] < now - self.window_seconds]:
            del self._failures[address]

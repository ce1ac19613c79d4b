"""A District's rules at the gateway: its keys with their options, its allow-list, suspension,
and the bans, counted per login and real client address."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import asyncssh

from sftpd.events import EventLog
from sftpd.gateway.routes import Clash, Route, RouteTable
from sftpd.server.access import BanList, is_allowed
from sftpd.server.keys import KeyRules

KEY_CACHE = 4096  # Districts whose judged keys are kept between logins
UNKNOWN = "*"  # the login under which failures with unknown logins are counted


@dataclass(frozen=True)
class Decision:
    """A key's verdict for a login from an address: its route, or why not."""

    route: Route | None
    reason: str = ""
    read_only: bool = False


class GatewayRules:
    """Judges a client's login, key and address against the routing table."""

    def __init__(self, table: RouteTable, bans: BanList, log: EventLog) -> None:
        self.table = table
        self.bans = bans
        self.log = log
        self._keys: OrderedDict[tuple[str, tuple[str, ...]], KeyRules] = OrderedDict()

    def ban_key(self, login: str, address: str) -> str:
        route = self.table.lookup(login)
        return f"{login if isinstance(route, Route) else UNKNOWN} {address}"

    def is_banned(self, login: str, address: str) -> bool:
        return self.bans.is_banned(self.ban_key(login, address))

    def decide(self, login: str, key: asyncssh.SSHKey, address: str) -> Decision:
        route = self.table.lookup(login)
        if route is None:
            return Decision(None, "unknown_user")
        if isinstance(route, Clash):
            return Decision(None, "login_clash")
        if route.suspended:
            return Decision(None, "suspended")
        if not is_allowed(address, route.allowed_sources):
            return Decision(None, "source_not_allowed")
        verdict = self._rules(route).verdict(key, address)
        if verdict.options is None:
            return Decision(None, verdict.reason)
        return Decision(route, read_only=verdict.options.read_only)

    def _rules(self, route: Route) -> KeyRules:
        """The route's keys, judged once per set of key lines (as sftpd serve judges them)."""
        cache_key = (route.login, route.authorized_keys)
        rules = self._keys.get(cache_key)
        if rules is None:
            rules = KeyRules(self.log, f"routes:{route.district}")
            rules.load(route.authorized_keys)
            self._keys[cache_key] = rules
            if len(self._keys) > KEY_CACHE:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(cache_key)
        return rules

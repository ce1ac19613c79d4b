"""Which mode a District is built in: its own spec.service.mode, else the operator's default;
and what shared mode is given of the gateway (no API calls are made for either)."""

from __future__ import annotations

from typing import Any

from district_operator import builders
from district_operator.config import GatewayConfig
from district_operator.gatewaystate import GatewayState
from district_operator.reconciler import Reconciler
from district_operator.watchcache import WatchCache

from tests.district_operator.builders.test_builders import INPUTS, district


def reconciler(**kwargs: Any) -> Reconciler:
    return Reconciler(None, INPUTS, WatchCache(), **kwargs)  # type: ignore[arg-type]


def test_a_district_without_a_mode_takes_the_operators_default() -> None:
    dedicated, shared = reconciler(), reconciler(service_mode="shared")
    assert dedicated._shared(district()) is None
    assert shared._shared(district()) == builders.SharedMode()  # shared, no gateway given
    # The District's own mode wins either way.
    assert shared._shared(district(service={"mode": "dedicated"})) is None
    assert dedicated._shared(district(service={"mode": "shared"})) == builders.SharedMode()


def test_shared_mode_is_given_the_gateway_it_was_configured_with() -> None:
    state = GatewayState(None, GatewayConfig(  # type: ignore[arg-type]
        namespace="gw-ns", name="gw", proxy_from=("10.244.0.0/16",)))
    state._loaded = True  # as after the poller's first round (no API here)
    state._public_key = "ssh-ed25519 AAAA gateway"
    built = reconciler(gateway=state)._shared(district(service={"mode": "shared"}))
    assert built == builders.SharedMode(gateway_namespace="gw-ns", gateway_name="gw",
                                        proxy_from=("10.244.0.0/16",),
                                        gateway_public_key="ssh-ed25519 AAAA gateway")


class Forbidden:
    """An API client whose every read is refused, as without RBAC in the gateway's namespace
    (a stand-in: the test cluster's client is an administrator)."""

    calls = 0

    def get(self, kind: str, namespace: str, name: str) -> None:
        Forbidden.calls += 1
        from district_operator import api
        raise api.ApiError(403, "Forbidden", f"secrets {name!r} is forbidden")


def test_a_gateway_that_cannot_be_read_does_not_stop_shared_districts() -> None:
    state = GatewayState(Forbidden(), GatewayConfig(  # type: ignore[arg-type]
        namespace="gw-ns", name="gw", proxy_from=("10.244.0.0/16",)))
    r = reconciler(gateway=state)
    built = r._shared(district(service={"mode": "shared"}))
    assert built == builders.SharedMode(gateway_namespace="gw-ns", gateway_name="gw",
                                        proxy_from=("10.244.0.0/16",), gateway_public_key="")
    # Tried once; later reconciles leave the retries to the poller.
    r._shared(district(service={"mode": "shared"}))
    assert Forbidden.calls == 1

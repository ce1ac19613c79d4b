"""The gateway's routing data computed purely: entries, shards, clashes, full shards."""

from __future__ import annotations

from district_contract import routes
from district_operator import keys, routing
from district_operator.conditions import Reason
from district_operator.model import parse_district

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINzdmVxOZfojVuZlP43haO0MLMrCWjfq6GUob3Hg22Ly"
       " it@lincoln.k12.example")


def entry(name: str, namespace: str = "districts", login: str | None = None,
          keys_: tuple[str, ...] = (), backend: str = "10.0.0.1:22") -> routes.RouteEntry:
    return routes.RouteEntry(login=login or f"{name}.k12.example", namespace=namespace,
                             name=name, backend=backend, authorized_keys=keys_)


def test_backend_prefers_the_cluster_ip_and_brackets_ipv6() -> None:
    d = parse_district({"metadata": {"name": "lincoln", "namespace": "ns"},
                        "spec": {"service": {"port": 2022}}})
    assert routing.backend(d, "10.96.0.7") == "10.96.0.7:2022"
    assert routing.backend(d, "fd00::7") == "[fd00::7]:2022"
    # headless or not yet known: the Service's DNS name
    assert routing.backend(d, "None") == "lincoln-sftp.ns.svc:2022"
    assert routing.backend(d, None) == "lincoln-sftp.ns.svc:2022"
    assert routing.backend(d, "not-an-address") == "lincoln-sftp.ns.svc:2022"


def test_entry_carries_keys_with_options_allow_list_suspension_and_both_host_key_sets() -> None:
    d = parse_district({"metadata": {"name": "lincoln", "namespace": "ns"},
                        "spec": {"login": "lincoln.k12.example", "suspend": True,
                                 "allowedSourceRanges": ["203.0.113.0/24"]}})
    check = keys.check_keys([("s", 'from="198.51.100.0/24" ' + KEY)])
    current = keys.HostKey("ssh-ed25519", "ssh-ed25519 AAAAcurrent", "SHA256:a")
    following = keys.HostKey("ssh-ed25519", "ssh-ed25519 AAAAnext", "SHA256:b")
    made = routing.route_entry(d, check.accepted, (current, following, current), "10.0.0.9")
    assert made.login == "lincoln.k12.example"
    assert made.authorized_keys == ('from="198.51.100.0/24" ' + KEY,)
    assert made.allowed_sources == ("203.0.113.0/24",)
    assert made.suspended is True
    assert made.host_keys == ("ssh-ed25519 AAAAcurrent", "ssh-ed25519 AAAAnext")
    assert made.backend == "10.0.0.9:22"
    assert routing.entry_problem(made) is None


def test_an_entry_the_gateway_would_refuse_is_named() -> None:
    too_many = entry("big", keys_=tuple(f"{KEY} {n}" for n in range(routes.MAX_KEYS + 1)))
    problem = routing.entry_problem(too_many)
    assert problem is not None and "authorizedKeys" in problem


def same_shard_logins(count: int) -> list[str]:
    """`count` logins filed in one shard (that of d0000.k12.example)."""
    shard = routes.shard_of("d0000.k12.example")
    found, n = [], 0
    while len(found) < count:
        login = f"d{n:04d}.k12.example"
        if routes.shard_of(login) == shard:
            found.append(login)
        n += 1
    return found


def test_shard_decodes_to_its_claims_sorted_and_all_published() -> None:
    # names in the opposite order of the logins: the file is sorted by login
    logins = same_shard_logins(6)
    mine = [routing.Claim(entry(f"z{99 - n:02d}", login=login))
            for n, login in enumerate(logins)]
    shard = routes.shard_of(logins[0])
    plan = routing.plan_shard(shard, reversed(mine))
    decoded = routes.decode(plan.data)
    assert [e.login for e in decoded] == logins
    assert decoded == [c.entry for c in mine]
    assert {v.reason for v in plan.verdicts.values()} == {Reason.PUBLISHED}
    # the same claims in any order: the same bytes (a restart writes nothing)
    assert routing.plan_shard(shard, mine).data == plan.data


def test_a_login_clash_publishes_both_and_marks_both_naming_the_other() -> None:
    a = routing.Claim(entry("a", "north", login="same.example"))
    b = routing.Claim(entry("b", "south", login="same.example"))
    shard = routes.shard_of("same.example")
    plans = routing.plan_shard(shard, [a, b])
    assert len(routes.decode(plans.data)) == 2  # the gateway sees the clash and refuses it
    assert plans.verdicts[("north", "a")].reason is Reason.LOGIN_CLASH
    assert "south/b" in plans.verdicts[("north", "a")].message
    assert plans.verdicts[("south", "b")].reason is Reason.LOGIN_CLASH
    assert "north/a" in plans.verdicts[("south", "b")].message
    assert not plans.verdicts[("north", "a")].routed
    # one of them gone: the other is published
    alone = routing.plan_shard(shard, [b])
    assert alone.verdicts[("south", "b")].reason is Reason.PUBLISHED


def test_a_full_shard_keeps_the_oldest_and_leaves_out_the_rest() -> None:
    # Fat entries (many long key lines) in one shard until it passes 1 MiB.
    fat = tuple(f"{KEY} {'c' * 3000} {n}" for n in range(100))
    logins = same_shard_logins(6)
    shard = routes.shard_of(logins[0])
    claims = [routing.Claim(entry(f"d{n}", login=login, keys_=fat),
                            created_at=f"2026-01-{n + 1:02d}T00:00:00Z")
              for n, login in enumerate(logins)]
    plan = routing.plan_shard(shard, reversed(claims))
    assert len(plan.data) <= routes.MAX_SHARD_BYTES
    kept = {(e.namespace, e.name) for e in routes.decode(plan.data)}
    full = {k for k, v in plan.verdicts.items() if v.reason is Reason.SHARD_FULL}
    assert full and kept and not kept & full
    assert kept | full == {c.key for c in claims}
    # the oldest keep their place
    ordered = [c.key for c in claims]
    assert set(ordered[:len(kept)]) == kept
    assert "1048576" in plan.verdicts[ordered[-1]].message


def test_claims_read_back_from_a_shard_give_the_same_bytes() -> None:
    mine = [routing.Claim(entry(f"d{n}", login=login))
            for n, login in enumerate(same_shard_logins(5))]
    shard = routes.shard_of(mine[0].entry.login)
    data = routing.plan_shard(shard, mine).data
    again = routing.claims_of_shard_data(data, {})
    assert routing.plan_shard(shard, again).data == data


def test_configmap_names_labels_and_shard_parsing() -> None:
    made = routing.configmap("gw", "gateway-ns", 7, b"{}")
    assert made["metadata"]["name"] == "gw-routes-007"
    assert made["data"] == {"routes-007.json": "{}"}
    assert made["metadata"]["labels"]["app.kubernetes.io/component"] == "routes"
    assert routing.shard_of_configmap("gw", "gw-routes-007") == 7
    assert routing.shard_of_configmap("gw", "gw-routes-7") is None
    assert routing.shard_of_configmap("gw", "other-routes-007") is None
    assert routing.configmap_data(made, 7) == b"{}"
    assert routing.revision({1: b"a"}) != routing.revision({1: b"b"})


def test_routed_in_the_status_dedicated_by_default_and_false_makes_ready_not_routed() -> None:
    from district_operator import status
    from district_operator.conditions import ConditionType

    from tests.district_operator.test_status import NOW, conditions, district, healthy

    st = status.compute_status(district(), healthy(), {}, NOW)
    assert conditions(st)["Routed"] == ("True", "Dedicated")
    assert conditions(st)["Ready"] == ("True", "Ready")
    observed = healthy()
    d = district(login="lincoln.k12.example", service={"mode": "shared"})
    clash = routing.Verdict(Reason.LOGIN_CLASH, "login 'x' is also claimed by District n/o")
    observed.routed = status.Condition(ConditionType.ROUTED, "False", clash.reason,
                                       clash.message)
    st = status.compute_status(d, observed, {}, NOW)
    assert conditions(st)["Routed"] == ("False", "LoginClash")
    assert conditions(st)["Ready"] == ("False", "NotRouted")
    # the first status of a District already in a clash: a Warning Event is due
    changes = status.transitions([], st["conditions"])
    assert [(c.reason, c.warning) for c in changes if c.type == "Routed"] == [("LoginClash", True)]
    # pending (Unknown) does not make the District unready
    observed.routed = status.Condition(ConditionType.ROUTED, "Unknown", Reason.PUBLISHING, "")
    st = status.compute_status(d, observed, {}, NOW)
    assert conditions(st)["Ready"] == ("True", "Ready")
    gone = routing.gateway_not_installed(d)
    assert "--gateway-namespace" in gone.message and not gone.routed


def test_publishing_then_published_is_no_event_but_a_clash_ended_is() -> None:
    from district_operator import status

    def routed(reason: str, state: str) -> dict[str, str]:
        return {"type": "Routed", "status": state, "reason": reason, "message": ""}

    assert status.transitions([routed("Publishing", "Unknown")],
                              [routed("Published", "True")]) == []
    ended = status.transitions([routed("LoginClash", "False")], [routed("Published", "True")])
    assert [(c.reason, c.warning) for c in ended] == [("Published", False)]

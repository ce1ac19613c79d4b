"""The routing data: the contract's shard format and its bounds, and the gateway's table of a
directory of shards (reread on change, bad shards refused, clashes refused)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from district_contract import routes

from sftpd.events import EventLog
from sftpd.gateway.metrics import SHARDS_REFUSED_NOW
from sftpd.gateway.routes import Clash, Route, RouteTable

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl d@x"


def entry(login: str, **changes: object) -> routes.RouteEntry:
    fields: dict[str, object] = {"login": login, "namespace": "ns", "name": login.split(".")[0],
                                 "backend": "10.0.0.1:22", "authorized_keys": (ED25519,)}
    fields.update(changes)
    return routes.RouteEntry(**fields)  # type: ignore[arg-type]


def test_shard_of_is_fixed() -> None:
    # The operator files each login where the gateway looks for it: the function is the format.
    assert routes.shard_of("applegrove.org") == routes.shard_of("applegrove.org", 256)
    assert routes.shard_of("applegrove.org", 256) == \
        int.from_bytes(__import__("hashlib").sha256(b"applegrove.org").digest()[:4], "big") % 256


def test_round_trip_and_misfiled_entries() -> None:
    e = entry("applegrove.org", allowed_sources=("203.0.113.0/24",), suspended=True,
              host_keys=(ED25519,))
    shard = routes.shard_of(e.login, 8)
    assert routes.decode(routes.encode([e], shard, 8)) == [e]
    with pytest.raises(routes.RoutesError, match="belongs in shard"):
        routes.encode([e], (shard + 1) % 8, 8)
    document = json.loads(routes.encode([e], shard, 8))
    document["shard"] = (shard + 1) % 8
    with pytest.raises(routes.RoutesError, match=r"entry 0 \('applegrove.org'\): filed in"):
        routes.decode(json.dumps(document).encode())


@pytest.mark.parametrize("change,message", [
    ({"authorizedKeys": ["x" * (routes.MAX_KEY_LINE + 1)]}, "authorizedKeys"),
    ({"authorizedKeys": [ED25519] * (routes.MAX_KEYS + 1)}, "authorizedKeys"),
    ({"suspended": "yes"}, "suspended"),
    ({"login": ""}, "login"),
    ({"backend": 22}, "backend"),
    ({"allowedSources": "10.0.0.0/8"}, "allowedSources"),
])
def test_bounds_name_the_entry(change: dict[str, object], message: str) -> None:
    e = entry("lincoln.example")
    shard = routes.shard_of(e.login, 1)
    document = json.loads(routes.encode([e], shard, 1))
    document["entries"][0].update(change)
    with pytest.raises(routes.RoutesError, match=f"entry 0.*{message}"):
        routes.decode(json.dumps(document).encode())


def test_whole_file_bounds() -> None:
    with pytest.raises(routes.RoutesError, match="bytes"):
        routes.decode(b" " * (routes.MAX_SHARD_BYTES + 1))
    with pytest.raises(routes.RoutesError, match="not JSON"):
        routes.decode(b"{")
    with pytest.raises(routes.RoutesError, match="routing data"):
        routes.decode(b'{"format": "something else"}')
    with pytest.raises(routes.RoutesError, match="shard"):
        routes.decode(json.dumps({"format": routes.FORMAT, "shard": 3, "shards": 2,
                                  "entries": []}).encode())


def test_13000_districts_fit_the_configmap_limit() -> None:
    """The size math of docs/gateway.md: 13,000 Districts with two ed25519 keys and one RSA
    3072 key each, two allow-list ranges and two host keys, in SHARDS shards."""
    rsa = "ssh-rsa " + "A" * 544 + " it@district"  # an RSA 3072 public key line's length
    shards: dict[int, list[routes.RouteEntry]] = {}
    for n in range(13000):
        e = entry(f"district{n:05d}.k12.example", authorized_keys=(ED25519, ED25519, rsa),
                  allowed_sources=("203.0.113.0/24", "2001:db8::/48"),
                  host_keys=(ED25519, rsa), backend=f"d{n}-sftp.district{n:05d}.svc:22")
        shards.setdefault(routes.shard_of(e.login), []).append(e)
    sizes = [len(routes.encode(entries, shard)) for shard, entries in shards.items()]
    assert len(shards) == routes.SHARDS
    assert max(sizes) < routes.MAX_SHARD_BYTES // 2, max(sizes)


def publish(directory: Path, entries: list[routes.RouteEntry], shards: int = 4) -> None:
    by: dict[int, list[routes.RouteEntry]] = {}
    for e in entries:
        by.setdefault(routes.shard_of(e.login, shards), []).append(e)
    for shard in range(shards):
        path = directory / routes.shard_file(shard)
        path.write_bytes(routes.encode(by.get(shard, []), shard, shards))
        os.utime(path, ns=(path.stat().st_mtime_ns + 1_000_000,) * 2)  # a new mtime each time


def table(directory: Path) -> tuple[RouteTable, io.StringIO]:
    out = io.StringIO()
    return RouteTable(directory, EventLog(out)), out


def test_table_follows_changes_and_keeps_good_data(tmp_path: Path) -> None:
    publish(tmp_path, [entry("a.example"), entry("b.example")])
    t, log = table(tmp_path)
    assert t.refresh()
    assert isinstance(t.lookup("a.example"), Route) and t.size == 2
    assert not t.refresh()  # nothing changed, nothing reread
    shard = tmp_path / routes.shard_file(routes.shard_of("a.example", 4))
    shard.write_text('{"format": "district-sftp/routes/v1", "shard": 0, "shards": 4, "entries": 7}')
    assert not t.refresh()
    assert isinstance(t.lookup("a.example"), Route)  # the last good data stays
    refused = [json.loads(line) for line in log.getvalue().splitlines()
               if '"routes.shard_refused"' in line]
    assert refused[-1]["file"] == shard.name and refused[-1]["kept"] >= 1
    assert SHARDS_REFUSED_NOW.value() == 1  # in force until the file changes
    assert not t.refresh() and SHARDS_REFUSED_NOW.value() == 1
    publish(tmp_path, [entry("b.example")])
    assert t.refresh()
    assert t.lookup("a.example") is None
    assert SHARDS_REFUSED_NOW.value() == 0


def test_a_refused_shard_that_goes_away_is_no_longer_counted(tmp_path: Path) -> None:
    publish(tmp_path, [entry("a.example")])
    shard = tmp_path / routes.shard_file(routes.shard_of("a.example", 4))
    shard.write_text("not json")
    t, _ = table(tmp_path)
    t.refresh()
    assert SHARDS_REFUSED_NOW.value() == 1
    shard.unlink()
    t.refresh()
    assert SHARDS_REFUSED_NOW.value() == 0


def test_a_login_twice_is_a_clash(tmp_path: Path) -> None:
    publish(tmp_path, [entry("a.example"), entry("a.example", namespace="other")])
    t, log = table(tmp_path)
    t.refresh()
    found = t.lookup("a.example")
    assert isinstance(found, Clash)
    assert found.districts == ("ns/a", "other/a")
    assert '"routes.login_clash"' in log.getvalue()


def test_configmap_volume_swap_is_seen(tmp_path: Path) -> None:
    """A ConfigMap volume: each name links into ..data, which the kubelet swaps atomically."""
    def version(name: str, entries: list[routes.RouteEntry]) -> None:
        d = tmp_path / name
        d.mkdir()
        publish(d, entries, shards=1)
        (tmp_path / "..data_tmp").symlink_to(name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

    version("..v1", [entry("a.example")])
    (tmp_path / routes.shard_file(0)).symlink_to(f"..data/{routes.shard_file(0)}")
    t, _ = table(tmp_path)
    t.refresh()
    assert t.lookup("b.example") is None
    version("..v2", [entry("a.example"), entry("b.example")])
    assert t.refresh()
    assert isinstance(t.lookup("b.example"), Route)

"""`kubectl district keygen` and `keys list|add|remove` against the real API server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from district_operator import api, names

from tests.kubectl_district.conftest import (
    create_district,
    fingerprint_of,
    plugin,
    public_line,
    ssh_keygen,
)

pytestmark = pytest.mark.cluster
# The Districts here live where no operator writes their status: every resourceVersion change
# seen is the plugin's own.


def spec_keys(kube: api.Kube, namespace: str, name: str) -> list[str]:
    body = kube.get(names.KIND, namespace, name)
    assert body is not None
    return list(body["spec"].get("authorizedKeys") or [])


def version(kube: api.Kube, namespace: str, name: str) -> str:
    body = kube.get(names.KIND, namespace, name)
    assert body is not None
    return str(body["metadata"]["resourceVersion"])


def test_keygen_writes_a_pair_that_ssh_and_the_district_accept(tmp_path: Path) -> None:
    key = tmp_path / "lincoln_key"
    made = plugin("keygen", "--out", str(key), "--comment", "it@lincoln.k12.example")
    assert made.returncode == 0, made.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    public = public_line(key)
    assert public.startswith("ssh-ed25519 ") and public.endswith(" it@lincoln.k12.example")
    # OpenSSH reads the private key and derives the same public key from it.
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True,
                             text=True, check=True).stdout.split()[:2]
    assert derived == public.split()[:2]
    assert public in made.stdout and fingerprint_of(key) in made.stdout
    assert f"keys add DISTRICT --key {key}.pub" in made.stdout

    before = key.read_bytes()
    again = plugin("keygen", "--out", str(key))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert key.read_bytes() == before


def test_keys_add_list_remove(crd: Any, kube: api.Kube, unwatched: str,
                              client_keys: list[Path], tmp_path: Path) -> None:
    first, second, third = client_keys[:3]
    create_district(crd, unwatched, "adams", authorizedKeys=[public_line(first)])

    added = plugin("keys", "add", "adams", "-n", unwatched, "--key", f"{second}.pub")
    assert added.returncode == 0, added.stderr
    assert f"added {fingerprint_of(second)}" in added.stdout
    piped = plugin("-n", unwatched, "keys", "add", "adams", "--key", "-",
                   input=Path(f"{third}.pub").read_text())
    assert piped.returncode == 0, piped.stderr
    assert spec_keys(kube, unwatched, "adams") == [public_line(k) for k in (first, second, third)]
    body = kube.get(names.KIND, unwatched, "adams")
    assert body is not None
    assert any(f["manager"] == "kubectl-district" for f in body["metadata"]["managedFields"])

    unchanged = version(kube, unwatched, "adams")
    repeat = plugin("keys", "add", "adams", "-n", unwatched, "--key", f"{second}.pub")
    assert repeat.returncode == 0 and "already installed" in repeat.stdout
    assert version(kube, unwatched, "adams") == unchanged

    listed = plugin("keys", "list", "adams", "-n", unwatched)
    assert listed.returncode == 0, listed.stderr
    for n, key in enumerate((first, second, third)):
        assert f"spec.authorizedKeys[{n}]" in listed.stdout
        assert fingerprint_of(key) in listed.stdout
    as_json = json.loads(plugin("keys", "list", "adams", "-n", unwatched, "-o", "json").stdout)
    assert [e["fingerprint"] for e in as_json] == [fingerprint_of(k)
                                                   for k in (first, second, third)]

    removed = plugin("keys", "remove", "adams", fingerprint_of(second), "-n", unwatched)
    assert removed.returncode == 0, removed.stderr
    assert spec_keys(kube, unwatched, "adams") == [public_line(first), public_line(third)]

    unknown = plugin("keys", "remove", "adams", fingerprint_of(second), "-n", unwatched)
    assert unknown.returncode == 1
    assert f"no key with fingerprint {fingerprint_of(second)}" in unknown.stderr
    plugin("keys", "remove", "adams", fingerprint_of(third), "-n", unwatched)
    last = plugin("keys", "remove", "adams", fingerprint_of(first), "-n", unwatched)
    assert last.returncode == 2 and "last key" in last.stderr
    assert spec_keys(kube, unwatched, "adams") == [public_line(first)]

    # The namespace may come from a kubeconfig context instead of -n.
    config = tmp_path / "kubeconfig"
    config.write_text(Path(crd.kubeconfig).read_text())
    current = crd.kubectl("--kubeconfig", str(config), "config", "view", "--minify", "-o",
                          "jsonpath={.contexts[0].context.cluster} {.contexts[0].context.user}"
                          ).stdout.split()
    crd.kubectl("--kubeconfig", str(config), "config", "set-context", "keys-admin",
                f"--cluster={current[0]}", f"--user={current[1]}", f"--namespace={unwatched}")
    by_context = plugin("--kubeconfig", str(config), "--context", "keys-admin",
                        "keys", "list", "adams")
    assert by_context.returncode == 0 and fingerprint_of(first) in by_context.stdout

    missing = plugin("keys", "list", "nobody", "-n", unwatched)
    assert missing.returncode == 1
    assert f"District 'nobody' not found in namespace '{unwatched}'" in missing.stderr


def test_malformed_key_input_is_refused_and_nothing_changes(
        crd: Any, kube: api.Kube, unwatched: str, client_keys: list[Path],
        tmp_path: Path) -> None:
    create_district(crd, unwatched, "buchanan", authorizedKeys=[public_line(client_keys[0])])
    weak = ssh_keygen(tmp_path / "weak", "rsa", 1024)
    good = public_line(client_keys[1])
    cases = {
        "private key": (client_keys[1].read_text(), "holds a private key"),
        "garbage": ("hello there\n", "key type 'hello' is not supported"),
        "damaged": (good[:40] + "!!" + good[42:], "damaged"),
        "options": (f'from="10.0.0.1" {good}', "options such as from=... are not accepted"),
        "weak RSA": (public_line(weak), "RSA key of 1024 bits is too weak"),
        "second line bad": (f"{good}\nssh-ed25519\n", "line 2"),
        "empty": ("\n# only a comment\n", "no public key found"),
    }
    before = version(kube, unwatched, "buchanan")
    for what, (text, message) in cases.items():
        result = plugin("keys", "add", "buchanan", "-n", unwatched, "--key", "-", input=text)
        assert result.returncode == 2, what
        assert message in result.stderr, (what, result.stderr)
        assert "Traceback" not in result.stderr
    assert version(kube, unwatched, "buchanan") == before


@pytest.mark.parametrize("how", ["patch", "apply"])
def test_print_patch_applies_cleanly_with_kubectl(crd: Any, kube: api.Kube, unwatched: str,
                                                  client_keys: list[Path], tmp_path: Path,
                                                  how: str) -> None:
    name = f"carter-{how}"
    first, second = client_keys[:2]
    create_district(crd, unwatched, name, authorizedKeys=[public_line(first)])
    before = version(kube, unwatched, name)

    printed = plugin("keys", "add", name, "-n", unwatched, "--key", f"{second}.pub",
                     "--print-patch")
    assert printed.returncode == 0, printed.stderr
    assert version(kube, unwatched, name) == before, "--print-patch must not write"
    document = yaml.safe_load(printed.stdout)
    assert document["spec"] == {"authorizedKeys": [public_line(first), public_line(second)]}
    if how == "patch":
        crd.kubectl("-n", unwatched, "patch", "district", name, "--type", "merge",
                    "-p", printed.stdout)
    else:
        patch_file = tmp_path / "keys.yaml"
        patch_file.write_text(printed.stdout)
        crd.kubectl("apply", "-f", str(patch_file))
    assert spec_keys(kube, unwatched, name) == [public_line(first), public_line(second)]

    removal = plugin("keys", "remove", name, fingerprint_of(first), "-n", unwatched,
                     "--print-patch")
    assert removal.returncode == 0, removal.stderr
    crd.kubectl("-n", unwatched, "patch", "district", name, "--type", "merge",
                "-p", removal.stdout)
    assert spec_keys(kube, unwatched, name) == [public_line(second)]

"""The asyncssh internals sftpd patches: present in the pinned asyncssh, and the server refuses
to start, saying what moved, when one is not where the patches expect it."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from sftpd.server import batching, internals, limits, quickack, signatures
from tests.sftpd.server.conftest import LOGIN, Keys, free_port

PATCHED = batching.PATCHED + quickack.PATCHED + signatures.PATCHED + limits.PATCHED
PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def _defining_class(owner: type, name: str) -> type:
    return next(cls for cls in owner.__mro__ if name in vars(cls))


def test_the_installed_asyncssh_is_in_the_pinned_range_and_has_every_internal() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in dependencies if Requirement(d).name == "asyncssh"]
    installed = importlib.metadata.version("asyncssh")
    assert pin.specifier.contains(installed), (
        f"asyncssh {installed} is outside {pin.specifier}: check the patches in "
        "sftpd/server/batching.py and quickack.py against it, then move the pin")
    assert pin.specifier.contains("2.24.1") and not pin.specifier.contains("2.25.0")
    internals.require(PATCHED)  # raises, naming what moved, if anything did


@pytest.mark.parametrize("internal", [i for i in PATCHED if i.parameters is not None],
                         ids=lambda i: i.name)
def test_a_method_that_is_gone_is_named(monkeypatch: pytest.MonkeyPatch,
                                        internal: internals.Internal) -> None:
    monkeypatch.delattr(_defining_class(internal.owner, internal.name), internal.name)
    with pytest.raises(RuntimeError, match=rf"\.{internal.name} is gone \({internal.used_by}\)"):
        internals.require(PATCHED)


@pytest.mark.parametrize("internal", [i for i in PATCHED if i.parameters is not None],
                         ids=lambda i: i.name)
def test_a_method_with_other_parameters_is_named(monkeypatch: pytest.MonkeyPatch,
                                                 internal: internals.Internal) -> None:
    def moved(self: Any, data: bytes, *, flush: bool = False) -> None:
        raise AssertionError("never called")

    monkeypatch.setattr(_defining_class(internal.owner, internal.name), internal.name, moved)
    with pytest.raises(RuntimeError, match=rf"\.{internal.name} takes \(self, data, flush\)"):
        internals.require(PATCHED)


@pytest.mark.parametrize("internal", [i for i in PATCHED if i.parameters is None],
                         ids=lambda i: i.name)
def test_an_attribute_no_longer_set_is_named(monkeypatch: pytest.MonkeyPatch,
                                             internal: internals.Internal) -> None:
    # An asyncssh whose constructors no longer set the attribute: every __init__ in the
    # class's bases (only the checker looks at them here; nothing is constructed).
    for cls in internal.owner.__mro__:
        code = getattr(vars(cls).get("__init__"), "__code__", None)
        if code is not None and internal.name in code.co_names:
            def bare_init(self: Any, *args: Any, **kwargs: Any) -> None:
                raise AssertionError("never called")

            monkeypatch.setattr(cls, "__init__", bare_init)
    with pytest.raises(RuntimeError, match=rf"\.{internal.name} is no longer set by __init__"):
        internals.require(PATCHED)


def test_the_server_refuses_to_start_on_a_moved_internal(keys: Keys, tmp_path: Path) -> None:
    # A real `sftpd serve` process on an asyncssh whose SSHConnection lost _recv_data.
    port = free_port()
    argv = ["serve", "--root", str(tmp_path), "--login", LOGIN,
            "--host-key", str(keys.host_ed25519), "--authorized-keys", str(keys.authorized_keys),
            "--port", str(port), "--bind", "127.0.0.1", "--metrics-port", "0"]
    script = ("import sys, asyncssh.connection as c; del c.SSHConnection._recv_data; "
              "from sftpd import cli; sys.exit(cli.main(sys.argv[1:]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTPD_")}
    try:
        done = subprocess.run([sys.executable, "-c", script, *argv], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("sftpd serve started (and kept serving) on an asyncssh it cannot patch")
    assert done.returncode == 1, done.stderr
    assert "is not the version sftpd's patches were made for" in done.stderr
    assert "SSHServerConnection._recv_data is gone (ack_promptly)" in done.stderr
    assert '"event":"server.start_failed"' in done.stdout and "_recv_data is gone" in done.stdout
    with socket.socket() as probe:  # nothing listens: it did not start half-patched
        assert probe.connect_ex(("127.0.0.1", port)) != 0

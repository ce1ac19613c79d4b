"""The operator's configuration from flags and environment (district_operator/config.py)."""

from __future__ import annotations

import os

import pytest
from district_operator import cli, config


def parse(monkeypatch: pytest.MonkeyPatch, *argv: str, **env: str) -> config.OperatorConfig:
    for name in [n for n in os.environ if n.startswith(config.ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(config.ENV_PREFIX + name, value)
    return config.from_args(cli.build_parser().parse_args(["run", "-n", "districts", *argv]))


def test_pull_secrets_from_flags_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(monkeypatch).inputs.image_pull_secrets == ()
    flags = parse(monkeypatch, "--image-pull-secret", "regcred",
                  "--image-pull-secret", "mirror.example")
    assert flags.inputs.image_pull_secrets == ("regcred", "mirror.example")
    env = parse(monkeypatch, IMAGE_PULL_SECRETS=" regcred, mirror ,")
    assert env.inputs.image_pull_secrets == ("regcred", "mirror")
    # A flag wins over the environment, as for every other setting.
    both = parse(monkeypatch, "--image-pull-secret", "flag", IMAGE_PULL_SECRETS="env")
    assert both.inputs.image_pull_secrets == ("flag",)


def test_bad_pull_secret_names_are_refused_at_start(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as flag:
        parse(monkeypatch, "--image-pull-secret", "RegCred")
    assert flag.value.code == 2
    assert "'RegCred' is not a Secret name" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="IMAGE_PULL_SECRETS: 'reg_cred' is not a Secret name"):
        parse(monkeypatch, IMAGE_PULL_SECRETS="reg_cred")


def test_kopf_reaches_the_api_server_at_the_address_the_kubelet_gives() -> None:
    """kopf's in-cluster default is kubernetes.default.svc, which needs cluster DNS; the
    operator uses KUBERNETES_SERVICE_HOST/PORT as the kubernetes client does (on the real node
    there is no DNS, and the operator's Job watch failed without this)."""
    from district_operator.handlers import in_cluster_server

    assert in_cluster_server({"KUBERNETES_SERVICE_HOST": "10.0.0.1",
                              "KUBERNETES_SERVICE_PORT": "443"}) == "https://10.0.0.1:443"
    assert in_cluster_server({"KUBERNETES_SERVICE_HOST": "fd00::1",
                              "KUBERNETES_SERVICE_PORT": "443"}) == "https://[fd00::1]:443"
    assert in_cluster_server({}) is None


def test_gateway_rotation_settings_are_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = ("--gateway-namespace", "gw-ns", "--gateway-proxy-from", "10.244.0.0/16")
    settings = parse(monkeypatch, *gateway, GATEWAY_HOST_KEYS_ROTATE="3",
                     GATEWAY_HOST_KEYS_OVERLAP="12h").gateway
    assert settings is not None
    assert (settings.host_keys.rotate, settings.host_keys.overlap_seconds) == (3, 12 * 3600)
    unset = parse(monkeypatch, *gateway).gateway
    assert unset is not None and unset.host_keys.rotate == 0
    with pytest.raises(SystemExit, match="--gateway-host-keys-rotate 'next' is not a whole"):
        parse(monkeypatch, *gateway, "--gateway-host-keys-rotate", "next")
    with pytest.raises(SystemExit, match="--gateway-host-keys-overlap: '2w' is not a duration"):
        parse(monkeypatch, *gateway, "--gateway-host-keys-overlap", "2w")

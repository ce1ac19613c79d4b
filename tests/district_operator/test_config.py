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

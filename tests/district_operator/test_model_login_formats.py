"""The operator's model of spec.login and spec.processing.formats: domain logins, the names the
CRD and the server agree on, and the formats the CRD, the model and the processor share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from district_contract.commands import FORMATS_KNOWN as FORMAT_NAMES
from district_contract.commands import LOGIN_MAX, valid_login
from district_operator import builders
from district_operator.model import InvalidDistrictError, parse_district
from kubectl_district import jobs
from kubectl_district.errors import PluginError

from sftpd.formats import registered_formats
from sftpd.server.access import check_login
from tests.district_operator.builders.test_builders import INPUTS

REPO = Path(__file__).resolve().parents[2]
VALID = ["applegrove.org", "lincoln", "lincoln_sis-2", "4cd.k12.ca.us", "a", "x-",
         "a" * LOGIN_MAX]
INVALID = [".applegrove.org", "applegrove..org", "applegrove.org.", "AppleGrove.org",
           "-applegrove", "_lincoln", "apple grove", "apple/grove", "apple@grove",
           "a" * (LOGIN_MAX + 1), "applegrove.org\n", "appl\u00e9grove.org"]


def body(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "applegrove", "namespace": "districts"},
            "spec": {"authorizedKeys": ["ssh-ed25519 AAAA"], **spec}}


def test_a_domain_login_reaches_the_server_and_its_commands() -> None:
    district = parse_district(body(login="applegrove.org"))
    assert district.login == "applegrove.org"
    server = builders.desired_children(district, INPUTS, "")
    deployment = next(c for c in server if c["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SFTPD_LOGIN"] == "applegrove.org"


@pytest.mark.parametrize("login", INVALID)
def test_an_invalid_login_is_refused_by_model_and_server(login: str) -> None:
    with pytest.raises(InvalidDistrictError, match="is not a valid user name"):
        parse_district(body(login=login))
    with pytest.raises(ValueError, match="is not a valid user name"):
        check_login(login)


@pytest.mark.parametrize("login", VALID)
def test_a_valid_login_is_taken_by_model_and_server(login: str) -> None:
    assert valid_login(login) and check_login(login) == login


def test_generic_csv_is_a_format_a_district_may_list() -> None:
    district = parse_district(body(processing={"formats": ["oneroster", "generic-csv"]}))
    assert district.processing.formats == ("oneroster", "generic-csv")
    epochs = builders.cronjobs(parse_district(body(processing={
        "formats": ["generic-csv"], "databaseSecretRef": {"name": "db"}})), INPUTS)["epochs"]
    env = {e["name"]: e.get("value") for e in
           epochs["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SFTPD_FORMATS"] == "generic-csv"
    with pytest.raises(InvalidDistrictError, match="unknown format"):
        parse_district(body(processing={"formats": ["csv"]}))


def test_the_crd_model_and_processor_agree_on_format_names() -> None:
    for path in (REPO / "crds" / "district.yaml",
                 REPO / "charts" / "district-sftp" / "files" / "crds" / "district.yaml"):
        (version,) = yaml.safe_load(path.read_text())["spec"]["versions"]
        formats = (version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                   ["processing"]["properties"]["formats"])
        assert tuple(formats["items"]["enum"]) == FORMAT_NAMES
    # Every format the processor registers can be chosen on a District (generic-csv is
    # registered by sftpd/formats/generic_csv).
    assert set(registered_formats()) <= set(FORMAT_NAMES)


def test_kubectl_district_epochs_process_takes_generic_csv() -> None:
    jobs._check_format("generic-csv")
    jobs._check_format("oneroster")
    with pytest.raises(PluginError, match="unknown format 'csv2'"):
        jobs._check_format("csv2")

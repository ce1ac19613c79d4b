"""The District CRD's documentation and full example stay in step with the CRD itself."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "district.yaml"
REFERENCE = REPO / "docs" / "district-reference.md"
FULL_EXAMPLE = REPO / "examples" / "district-full.yaml"


def schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def fields(node: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field below `node` as (dotted path, schema); list items of objects add `[]`."""
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}.{name}"
        yield path, child
        yield from fields(child, path)
        if child.get("type") == "array":
            yield from fields(child["items"], f"{path}[]")


def api_fields() -> dict[str, dict[str, Any]]:
    root = schema()["properties"]
    return {path: node for part in ("spec", "status")
            for path, node in fields(root[part], part)}


def documented_rows() -> dict[str, list[str]]:
    """The reference's table rows whose first cell is a backticked spec or status path."""
    rows: dict[str, list[str]] = {}
    for line in REFERENCE.read_text().splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`((?:spec|status)\.[^`]+)`", cells[0])
        if match:
            rows[match.group(1)] = cells[1:]
    return rows


def test_every_field_of_the_crd_is_documented() -> None:
    missing = sorted(set(api_fields()) - set(documented_rows()))
    assert not missing, f"fields of crds/district.yaml missing from {REFERENCE.name}: {missing}"


def test_the_reference_documents_no_field_the_crd_lacks() -> None:
    stale = sorted(set(documented_rows()) - set(api_fields()))
    assert not stale, f"{REFERENCE.name} documents fields the CRD does not have: {stale}"


def rendered(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@pytest.mark.parametrize("path", sorted(p for p in api_fields() if p.startswith("spec.")))
def test_documented_defaults_match_the_crd(path: str) -> None:
    node = api_fields()[path]
    default_cell = documented_rows()[path][1]
    if "default" in node:
        assert default_cell == f"`{rendered(node['default'])}`"
    else:
        assert not re.fullmatch(r"`[^`]*`", default_cell), (
            f"the reference gives {path} the default {default_cell}, the CRD none")


def test_every_field_has_a_description() -> None:
    undocumented = sorted(path for path, node in api_fields().items()
                          if not node.get("description", "").strip())
    assert not undocumented


def test_the_full_example_sets_every_spec_field() -> None:
    (district,) = [doc for doc in yaml.safe_load_all(FULL_EXAMPLE.read_text())
                   if doc["kind"] == "District"]

    def present(path: str) -> bool:
        value: Any = district
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        return True

    unset = sorted(p for p in api_fields() if p.startswith("spec.") and not present(p))
    assert not unset, f"{FULL_EXAMPLE.name} leaves out {unset}"


def test_the_full_example_includes_every_secret_it_refers_to() -> None:
    docs = list(yaml.safe_load_all(FULL_EXAMPLE.read_text()))
    secrets = {doc["metadata"]["name"]: doc["stringData"]
               for doc in docs if doc["kind"] == "Secret"}
    (district,) = [doc for doc in docs if doc["kind"] == "District"]
    spec = district["spec"]
    refs = [spec["authorizedKeysSecretRef"], spec["processing"]["databaseSecretRef"],
            spec["backups"]["databaseSecretRef"], spec["notifications"]["webhookSecretRef"]]
    for ref in refs:
        assert ref["key"] in secrets.get(ref["name"], {}), ref
    sif = spec["integration"]["sif"]
    assert sif["caSecretRef"]["key"] in secrets.get(sif["caSecretRef"]["name"], {})
    assert {"username", "password"} <= set(secrets.get(sif["authSecretRef"]["name"], {}))

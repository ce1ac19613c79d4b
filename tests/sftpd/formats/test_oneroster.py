"""The OneRoster format without a database: recognition, manifest and header checks."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from sftpd.formats import Format, registered_formats
from sftpd.formats.oneroster import OneRosterFormat
from sftpd.formats.oneroster.source import header_problems

DATA = Path(__file__).resolve().parents[2] / "data" / "oneroster"
FORMAT: Format = OneRosterFormat()


def copy_set(tmp_path: Path, dataset: str, name: str = "epoch") -> Path:
    return Path(shutil.copytree(DATA / dataset, tmp_path / name))


def zip_set(epoch: Path, dataset: str, prefix: str = "") -> Path:
    epoch.mkdir()
    with zipfile.ZipFile(epoch / "roster.zip", "w") as archive:
        for path in sorted((DATA / dataset).iterdir()):
            archive.write(path, prefix + path.name)
    return epoch


def test_registry_offers_oneroster() -> None:
    assert list(registered_formats()) == ["oneroster", "generic-csv", "prior-system-pdfs"]


def test_recognizes_loose_nested_and_zipped_sets(tmp_path: Path) -> None:
    loose = FORMAT.recognize(copy_set(tmp_path, "v1.1-bulk", "loose"))
    assert loose is not None and loose.format == "oneroster"
    assert loose.description == "OneRoster 1.1 CSV (bulk; loose CSV files)"
    nested = tmp_path / "nested"
    nested.mkdir()
    shutil.copytree(DATA / "v1.2-delta", nested / "export-2026-09-02")
    found = FORMAT.recognize(nested)
    assert found is not None and found.description == "OneRoster 1.2 CSV (delta; loose CSV files)"
    zipped = FORMAT.recognize(zip_set(tmp_path / "zipped", "v1.2-bulk", "out/"))
    assert zipped is not None
    assert zipped.description == "OneRoster 1.2 CSV (bulk; zipped in roster.zip)"
    validation = FORMAT.validate(tmp_path / "zipped")
    assert validation.errors == [] and validation.warnings == []


def test_does_not_claim_other_uploads(tmp_path: Path) -> None:
    assert FORMAT.recognize(copy_set(tmp_path, "unrecognized")) is None
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.csv").write_text("propertyName,value\nexport.version,3\n")
    assert FORMAT.recognize(other) is None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "roster.zip").write_bytes(b"PK\x03\x04 not really a zip")
    assert FORMAT.recognize(broken) is None
    two = copy_set(tmp_path, "v1.1-bulk", "two")
    (two / "extra.zip").write_bytes(b"")
    (two / "manifest.csv").unlink()
    assert FORMAT.recognize(two) is None


def test_manifest_problems_are_errors_or_warnings(tmp_path: Path) -> None:
    epoch = copy_set(tmp_path, "v1.1-bulk")
    manifest = epoch / "manifest.csv"
    text = manifest.read_text()
    text = text.replace("file.courses,bulk", "file.courses,full")
    text = text.replace("file.lineItems,absent", "file.lineItems,bulk")
    text = text.replace("file.demographics,bulk", "file.demographics,absent")
    manifest.write_text(text)
    (epoch / "enrollments.csv").unlink()
    (epoch / "notes.txt").write_text("hello")

    validation = FORMAT.validate(epoch)

    assert [p.describe() for p in validation.errors] == [
        "manifest.csv: file.courses is 'full', expected one of bulk, delta, absent",
        "manifest.csv: file.enrollments is 'bulk' but enrollments.csv is missing",
    ]
    assert [p.describe() for p in validation.warnings] == [
        "manifest.csv: file.lineItems is 'bulk' but lineItems.csv is not imported (gradebook "
        "and resources files are not part of rostering); the file is ignored",
        "manifest.csv: courses.csv is present but the manifest does not list it as bulk or "
        "delta; the file is ignored",
        "manifest.csv: demographics.csv is present but the manifest does not list it as bulk "
        "or delta; the file is ignored",
        "epoch: notes.txt is not part of OneRoster; ignored",
    ]


def test_unsupported_version_and_bad_manifest_header(tmp_path: Path) -> None:
    epoch = copy_set(tmp_path, "v1.1-bulk")
    manifest = epoch / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("oneroster.version,1.1",
                                                     "oneroster.version,1.0")
                        .replace("propertyName,value", "property,value"))
    validation = FORMAT.validate(epoch)
    assert [p.describe() for p in validation.errors] == [
        "manifest.csv line 1: header must be 'propertyName,value', found 'property,value'",
        "manifest.csv: oneroster.version '1.0' is not supported (expected one of 1.1, 1.2)",
    ]


def test_empty_file_bom_and_extension_columns(tmp_path: Path) -> None:
    epoch = copy_set(tmp_path, "v1.1-bulk")
    (epoch / "demographics.csv").write_bytes(b"")
    orgs = epoch / "orgs.csv"
    lines = orgs.read_text().splitlines()
    orgs.write_bytes(b"\xef\xbb\xbf" + "\n".join(
        [lines[0] + ",metadata.stateId"] + [line + ",X1" for line in lines[1:]]).encode()
        + b"\n")
    validation = FORMAT.validate(epoch)
    assert [p.describe() for p in validation.errors] == [
        "demographics.csv line 1: the file is empty; a header line is required"]


@pytest.mark.parametrize(("found", "problems"), [
    ("sourcedId,status,dateLastModified,name", []),
    ("sourcedId,status,dateLastModified,name,metadata.x", []),
    ("sourcedId,Status,dateLastModified,name",
     ["column 'Status' must be spelled 'status' (column names are case-sensitive)"]),
    ("sourcedId,status,name", ["required column 'dateLastModified' is missing"]),
    ("sourcedId,status,dateLastModified,name,extra",
     ["unknown column 'extra' (extensions must be named 'metadata.<name>' and come after the "
      "specification's columns)"]),
    ("sourcedId,dateLastModified,status,name",
     ["columns are out of order; the specification's order is: sourcedId,status,"
      "dateLastModified,name (then any metadata.* columns)"]),
])
def test_header_problems(found: str, problems: list[str]) -> None:
    expected = ["sourcedId", "status", "dateLastModified", "name"]
    assert header_problems(found.split(","), expected) == problems

"""The accountability data of the grounds: processing activities, and who may see which request.

Read as a specification: every ground of the shipped table is accounted for; the criminal
investigation grounds (and whatever the prosecutor claims) stay out of a data subject's
inzage answer under UAVG art. 41 lid 1 onder d; a broken file is refused naming file and field.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from legal_bases.accountability import (
    DEFAULT_ACCOUNTABILITY_FILE,
    Accountability,
    AccountabilityError,
    SubjectAccess,
    UnaccountedGroundError,
    load_accountability,
)
from legal_bases.errors import DisclosureError, TableError
from legal_bases.table import DEFAULT_GROUNDS_DIR, GroundTable, load_table

CRIMINAL = {"sv-126nc", "sv-126nd", "sv-126nf"}
UAVG = "https://wetten.overheid.nl/BWBR0040940/2021-07-01#Artikel41"


def raw_entries() -> dict[str, dict[str, object]]:
    """The file's ground entries as plain YAML, read without the code under test."""
    document = yaml.safe_load(DEFAULT_ACCOUNTABILITY_FILE.read_text("utf-8"))
    entries: dict[str, dict[str, object]] = document["grounds"]
    return entries


# -- the shipped data -----------------------------------------------------------------------------

def test_every_ground_of_the_shipped_table_has_an_entry() -> None:
    shipped = {p.stem for p in DEFAULT_GROUNDS_DIR.glob("*.yaml")}
    assert len(shipped) == 13
    assert shipped - set(raw_entries()) == set()
    accountability = load_accountability()
    assert accountability.missing(load_table()) == []
    accountability.check_covers(load_table())


def test_each_ground_names_its_processing_activity_by_an_https_uri() -> None:
    accountability = load_accountability()
    for ground_id, entry in raw_entries().items():
        uri = accountability.of(ground_id).processing_activity_id
        assert uri == entry["processing_activity_id"]
        assert uri.startswith("https://")
        assert " " not in uri


def test_the_criminal_investigation_grounds_are_restricted_under_uavg_41_1_d() -> None:
    accountability = load_accountability()
    for ground_id in raw_entries():
        entry = accountability.of(ground_id)
        if ground_id in CRIMINAL:
            assert entry.subject_access is SubjectAccess.RESTRICTED
            assert entry.restriction is not None
            assert (entry.restriction.law, entry.restriction.article,
                    entry.restriction.paragraph) == (
                "Uitvoeringswet Algemene verordening gegevensbescherming", "41", "1 onder d")
            assert entry.restriction.url == UAVG
        else:
            assert entry.subject_access is SubjectAccess.OPEN
            assert entry.restriction is None


def test_the_file_is_read_once() -> None:
    assert load_accountability() is load_accountability()
    assert load_accountability() is load_accountability(DEFAULT_ACCOUNTABILITY_FILE)


# -- the rule: which requests stay out of the subject's answer -------------------------------

@pytest.mark.parametrize(("body", "ground", "restricted"), [
    ("openbaar_ministerie", "sv-126nc", True),
    ("openbaar_ministerie", "sv-126nf", True),
    ("openbaar_ministerie", "wro-99", True),  # made up: still reveals an investigation
    ("openbaar_ministerie", None, True),  # an invalid request that named no ground
    ("openbaar_ministerie", "awr-55", True),  # another body's ground
    ("gemeente", "sv-126nd", True),  # claims a restricted ground
    ("gemeente", "wro-99", False),  # a municipality has open grounds
    ("onderwijsinstelling", "wro-99", False),
    ("uwv", "awr-55", False),  # not entitled, but nothing to hide
    ("belastingdienst", "awr-55", False),
    ("belastingdienst", None, False),
])
def test_a_request_is_restricted_by_its_ground_or_by_its_body(
        shipped_table: GroundTable, body: str, ground: str | None, restricted: bool) -> None:
    citation = load_accountability().restriction_for(ground_id=ground, body=body,
                                                     table=shipped_table)
    assert (citation is not None) is restricted
    if citation is not None:
        assert citation.short == ("Uitvoeringswet Algemene verordening gegevensbescherming "
                                  "art. 41 lid 1 onder d")


# -- coverage and errors ---------------------------------------------------------------------------

def table_with_extra_ground(folder: Path) -> GroundTable:
    shutil.copytree(DEFAULT_GROUNDS_DIR, folder)
    text = (folder / "wro-20.yaml").read_text("utf-8").replace("id: wro-20", "id: wro-99")
    (folder / "wro-99.yaml").write_text(text, "utf-8")
    return load_table(folder)


def test_a_ground_without_an_entry_is_refused_naming_it(tmp_path: Path) -> None:
    table = table_with_extra_ground(tmp_path / "grounds")
    accountability = load_accountability()
    assert accountability.missing(table) == ["wro-99"]
    with pytest.raises(AccountabilityError) as caught:
        accountability.check_covers(table)
    [problem] = caught.value.problems
    assert (problem.file, problem.field) == (str(DEFAULT_ACCOUNTABILITY_FILE), "grounds.wro-99")
    assert isinstance(caught.value, TableError)
    # the body rule cannot classify onderwijsinstelling without it: it fails, never guesses
    with pytest.raises(UnaccountedGroundError, match="wro-99"):
        accountability.restriction_for(ground_id="x", body="onderwijsinstelling", table=table)
    with pytest.raises(UnaccountedGroundError):
        accountability.of("wro-99")


#: A valid shared retention term and default, so that a case breaks only what it means to.
HEAD = ("retention_terms:\n  test: &test_term\n    years: 1\n    counted_from: final_decision\n"
        "    source: {law: AVG, article: '5', url: "
        "'https://eur-lex.europa.eu/legal-content/NL/TXT/?uri=CELEX:32016R0679'}\n"
        "default_retention: *test_term\n")
RETENTION = "    retention: *test_term\n"


def write(tmp_path: Path, grounds: str, head: str = HEAD) -> Path:
    path = tmp_path / "accountability.yaml"
    path.write_text(head + "grounds:\n" + grounds, "utf-8")
    return path


def problems_of(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(AccountabilityError) as caught:
        load_accountability(path)
    assert isinstance(caught.value, DisclosureError)
    assert all(p.file == str(path) for p in caught.value.problems)
    assert str(path) in str(caught.value)
    return [(p.field, p.message) for p in caught.value.problems]


OPEN = ("    processing_activity_id: https://register.example/va/1\n"
        "    subject_access: open\n" + RETENTION)


@pytest.mark.parametrize(("grounds", "field", "message"), [
    ("  awr-55:\n    processing_activity_id: https://register.example/va/1\n"
     "    subject_access: restricted\n" + RETENTION,
     "grounds.awr-55.restriction", "is required when subject_access is restricted"),
    ("  awr-55:\n" + OPEN + "    restriction:\n      law: UAVG\n      article: '41'\n"
     "      url: https://wetten.overheid.nl/BWBR0040940/2021-07-01#Artikel41\n",
     "grounds.awr-55.restriction", "must be absent when subject_access is open"),
    ("  awr-55:\n    processing_activity_id: https://register.example/va/1\n"
     "    subject_access: hidden\n" + RETENTION, "grounds.awr-55.subject_access", "must be one of"),
    ("  awr-55:\n    processing_activity_id: http://register.example/va/1\n"
     "    subject_access: open\n" + RETENTION, "grounds.awr-55.processing_activity_id",
     "does not have the required format"),
    ("  awr-55:\n    subject_access: open\n" + RETENTION, "grounds.awr-55.processing_activity_id",
     "is required"),
    ("  awr-55:\n" + OPEN + "    register: x\n", "grounds.awr-55.register",
     "is not a field of this document"),
    ("  awr-55:\n" + OPEN + "  awr-55:\n" + OPEN, "grounds.awr-55", "is listed twice"),
])
def test_a_broken_entry_is_refused_naming_file_and_field(
        tmp_path: Path, grounds: str, field: str, message: str) -> None:
    found = problems_of(write(tmp_path, grounds))
    assert any(f == field and message in m for f, m in found), found


def test_a_restriction_must_cite_a_dated_text_of_the_law(tmp_path: Path) -> None:
    grounds = ("  sv-126nc:\n    processing_activity_id: https://register.example/va/1\n"
               "    subject_access: restricted\n    restriction:\n      law: UAVG\n"
               "      article: '41'\n      url: https://example.org/uavg\n" + RETENTION)
    assert [f for f, _ in problems_of(write(tmp_path, grounds))] == [
        "grounds.sv-126nc.restriction.url"]


def test_a_file_that_is_not_yaml_or_not_there_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "accountability.yaml"
    path.write_text("grounds: [unclosed\n", "utf-8")
    [(field, message)] = problems_of(path)
    assert field == "(file)"
    assert message.startswith("is not valid YAML")
    [(field, message)] = problems_of(tmp_path / "absent.yaml")
    assert field == "(file)"
    assert message.startswith("cannot be read")


def test_a_valid_file_of_its_own_loads(tmp_path: Path) -> None:
    loaded = load_accountability(write(tmp_path, "  awr-55:\n" + OPEN))
    assert isinstance(loaded, Accountability)
    assert loaded.of("awr-55").processing_activity_id == "https://register.example/va/1"
    assert loaded.source == str(tmp_path / "accountability.yaml")

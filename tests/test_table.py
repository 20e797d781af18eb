"""The shipped table of grounds, its citations, its hash and snapshot, and the loader's lint.

The per-ground expectations below restate DESIGN.md section 7 (the starter table) independently of
the YAML files, so a ground file that drifts from the design fails here.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from legal_bases.assessment import assess
from legal_bases.errors import Problem, TableError
from legal_bases.request import read_request
from legal_bases.table import DEFAULT_GROUNDS_DIR, GroundTable, load_table, table_from_snapshot
from legal_bases.validator import load_yaml
from legal_bases.vocabulary import Body

# -- DESIGN.md section 7, restated ---------------------------------------------------------------

BASIC = ("personalia", "identificerende_nummers", "opleidingsgegevens")
FINANCIAL = (*BASIC, "financiele_gegevens")


def ground(body: str, purposes: tuple[str, ...], categories: tuple[str, ...], *,
           special: tuple[str, ...] = (), case_reference: bool = False,
           authorisations: tuple[str, ...] = (), single_subject: bool = False,
           review: str = "never", pseudonymise: bool = False,
           cites: tuple[str, str]) -> dict[str, Any]:
    return {"requesters": {body}, "purposes": set(purposes), "categories": set(categories),
            "special_categories": set(special), "case_reference_required": case_reference,
            "authorisations_required": set(authorisations), "single_subject": single_subject,
            "review": review, "pseudonymise": pseudonymise, "cites": cites}


DESIGN_TABLE: dict[str, dict[str, Any]] = {
    "awr-55": ground("belastingdienst", ("belastingheffing",), FINANCIAL, case_reference=True,
                     cites=("BWBR0002320", "55")),
    "awir-38": ground("toeslagen", ("toeslagen",), FINANCIAL, cites=("BWBR0018472", "38")),
    "suwi-54-svb": ground("svb", ("kinderbijslag", "verzekerdenadministratie"), BASIC,
                          cites=("BWBR0013060", "54")),
    "suwi-54-uwv": ground("uwv", ("werk_en_inkomen",), BASIC, cites=("BWBR0013060", "54")),
    "participatiewet-64": ground("gemeente", ("bijstand",), FINANCIAL,
                                 cites=("BWBR0015703", "64")),
    "wro-21": ground("gemeente", ("leerplicht",), BASIC, special=("gezondheid",),
                     cites=("BWBR0042012", "21")),
    "sv-126nc": ground("openbaar_ministerie", ("strafrechtelijk_onderzoek",),
                       ("personalia", "identificerende_nummers"), case_reference=True,
                       single_subject=True, cites=("BWBR0001903", "126nc")),
    "sv-126nd": ground("openbaar_ministerie", ("strafrechtelijk_onderzoek",),
                       (*FINANCIAL, "contacthistorie", "accountgegevens", "technische_gegevens"),
                       case_reference=True, single_subject=True, review="always",
                       cites=("BWBR0001903", "126nd")),
    "sv-126nf": ground("openbaar_ministerie", ("strafrechtelijk_onderzoek",), (),
                       special=("gezondheid", "nationaliteit", "strafrechtelijke_gegevens"),
                       case_reference=True, authorisations=("rc_machtiging",),
                       single_subject=True, review="always", cites=("BWBR0001903", "126nf")),
    "cbs-33": ground("cbs", ("statistiek",), BASIC, special=("gezondheid",),
                     cites=("BWBR0015926", "33")),
    "wro-19": ground("inspectie_onderwijs", ("onderwijstoezicht",), ("opleidingsgegevens",),
                     special=("gezondheid",), pseudonymise=True, cites=("BWBR0042012", "19")),
    "wro-23": ground("onderzoeksinstelling", ("onderzoek",), ("opleidingsgegevens",),
                     authorisations=("ministeriele_aanwijzing",), pseudonymise=True,
                     cites=("BWBR0042012", "23")),
    "wro-20": ground("onderwijsinstelling", ("onderwijsadministratie",), BASIC,
                     cites=("BWBR0042012", "20")),
}

#: The current texts read (legal-reference.md section 0); everything else is an older text.
CURRENT_TEXT_DATES = {"BWBR0042012": "2026-01-01", "BWBR0015703": "2025-02-04",
                      "BWBR0001903": "2025-01-01"}
WETTEN_URL = re.compile(
    r"^https://wetten\.overheid\.nl/(?P<bwb>BWBR[0-9]{7})/(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"#Artikel(?P<article>[0-9a-z.:]+)$")


@pytest.fixture(scope="module")
def shipped() -> GroundTable:
    return load_table()


def raw_ground(ground_id: str) -> dict[str, Any]:
    document: dict[str, Any] = load_yaml((DEFAULT_GROUNDS_DIR / f"{ground_id}.yaml").read_text())
    return document


# -- the shipped table ---------------------------------------------------------------------------

def test_the_shipped_table_has_exactly_the_grounds_of_the_design(shipped: GroundTable) -> None:
    assert set(shipped.grounds) == set(DESIGN_TABLE)
    assert {p.stem for p in DEFAULT_GROUNDS_DIR.glob("*.yaml")} == set(DESIGN_TABLE)


@pytest.mark.parametrize("ground_id", sorted(DESIGN_TABLE))
def test_each_shipped_ground_encodes_its_row_of_the_design(shipped: GroundTable,
                                                            ground_id: str) -> None:
    want = DESIGN_TABLE[ground_id]
    loaded = shipped.grounds[ground_id]
    (version,) = loaded.versions
    assert (version.valid_from, version.valid_until) == (date(2020, 8, 1), None)
    assert (version.auto_limit, version.response_days) == (1000, 28)
    got = {
        "requesters": {b.value for b in loaded.requesters},
        "purposes": {p.value for p in loaded.purposes},
        "categories": {c.value for c in version.categories},
        "special_categories": {c.value for c in version.special_categories},
        "case_reference_required": version.case_reference_required,
        "authorisations_required": {a.value for a in version.authorisations_required},
        "single_subject": version.single_subject,
        "review": version.review.value,
        "pseudonymise": version.pseudonymise,
        "cites": (loaded.citation.bwb_id, loaded.citation.article),
    }
    assert got == want


@pytest.mark.parametrize("ground_id", sorted(DESIGN_TABLE))
def test_each_citation_is_a_dated_wetten_overheid_url_of_its_own_article(
        shipped: GroundTable, ground_id: str) -> None:
    citation = shipped.grounds[ground_id].citation
    match = WETTEN_URL.match(citation.url)
    assert match, citation.url
    assert match["bwb"] == citation.bwb_id
    assert match["article"] == citation.article
    date.fromisoformat(match["date"])
    assert citation.law
    assert citation.paragraph
    assert citation.explanation
    assert shipped.grounds[ground_id].title


@pytest.mark.parametrize("ground_id", sorted(DESIGN_TABLE))
def test_a_citation_of_an_older_text_says_so(shipped: GroundTable, ground_id: str) -> None:
    """Texts not read in a current version are flagged as the 2017 text, and as unsure."""
    citation = shipped.grounds[ground_id].citation
    url_date = WETTEN_URL.match(citation.url)["date"]  # type: ignore[index]
    raw = raw_ground(ground_id)
    said = " ".join([raw["legal_basis"].get("explanation", "")]
                    + [v.get("note", "") for v in raw["versions"]])
    if CURRENT_TEXT_DATES.get(citation.bwb_id or "") == url_date:
        assert "Current text" in said
    else:
        assert "2017" in said
        assert "UNSURE" in said


# -- hash --------------------------------------------------------------------------------------

def copy_of_shipped(tmp_path: Path) -> Path:
    folder = tmp_path / "grounds"
    shutil.copytree(DEFAULT_GROUNDS_DIR, folder)
    return folder


def edit(folder: Path, ground_id: str, change: Callable[[dict[str, Any]], object]) -> None:
    path = folder / f"{ground_id}.yaml"
    document = load_yaml(path.read_text("utf-8"))
    change(document)
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), "utf-8")


def test_the_table_hash_is_stable_across_loads_and_folders(tmp_path: Path) -> None:
    first, second = load_table(), load_table()
    assert first.hash == second.hash
    assert first.snapshot == second.snapshot
    assert re.fullmatch(r"[0-9a-f]{64}", first.hash)
    assert load_table(copy_of_shipped(tmp_path)).hash == first.hash


def test_the_table_hash_changes_when_a_ground_file_changes(tmp_path: Path) -> None:
    original = load_table()
    folder = copy_of_shipped(tmp_path)
    edit(folder, "cbs-33", lambda d: d["versions"][0].update(auto_limit=5000))
    changed = load_table(folder)
    assert changed.hash != original.hash
    # The edited ground gets a new version id; the others keep theirs.
    assert changed.grounds["cbs-33"].versions[0].id != original.grounds["cbs-33"].versions[0].id
    assert changed.grounds["wro-20"].versions[0].id == original.grounds["wro-20"].versions[0].id


def test_editing_only_a_citation_also_changes_the_hash(tmp_path: Path) -> None:
    folder = copy_of_shipped(tmp_path)
    edit(folder, "wro-20", lambda d: d["legal_basis"].update(paragraph="1 en 4"))
    assert load_table(folder).hash != load_table().hash


def test_the_order_of_listed_slugs_does_not_change_the_hash(tmp_path: Path) -> None:
    folder = copy_of_shipped(tmp_path)
    edit(folder, "awr-55", lambda d: d["versions"][0]["categories"].reverse())
    assert load_table(folder).hash == load_table().hash


# -- snapshot ----------------------------------------------------------------------------------

def test_a_table_rebuilt_from_its_snapshot_has_the_same_hash_versions_and_decisions(
        shipped: GroundTable) -> None:
    rebuilt = table_from_snapshot(shipped.snapshot)
    assert rebuilt.hash == shipped.hash
    assert rebuilt.snapshot == shipped.snapshot
    assert ({v.id for g in rebuilt for v in g.versions}
            == {v.id for g in shipped for v in g.versions})
    request = read_request({"reference": "R-1", "legal_basis": "wro-21", "purpose": "leerplicht",
                            "subjects": [{"bsn": "111222333"}],
                            "categories": ["personalia", "gezondheid", "contacthistorie"]},
                           received_on=date(2026, 11, 28))
    assert assess(request, Body.GEMEENTE, rebuilt) == assess(request, Body.GEMEENTE, shipped)


def _snapshot_data(table: GroundTable) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(table.snapshot)
    return data


def _grounds_by_id(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["id"]: g for g in data["grounds"]}


def test_a_snapshot_that_is_not_in_canonical_form_is_refused(shipped: GroundTable) -> None:
    pretty = json.dumps(_snapshot_data(shipped), indent=2, ensure_ascii=False)
    with pytest.raises(TableError, match="canonical"):
        table_from_snapshot(pretty)


def test_a_snapshot_tampered_into_an_invalid_ground_is_refused(shipped: GroundTable) -> None:
    data = _snapshot_data(shipped)
    _grounds_by_id(data)["participatiewet-64"]["versions"][0]["categories"].append("gezondheid")
    with pytest.raises(TableError) as raised:
        table_from_snapshot(json.dumps(data, sort_keys=True, separators=(",", ":")))
    assert any(p.field.startswith("versions.0.categories") for p in raised.value.problems)


def test_a_snapshot_tampered_in_canonical_form_does_not_pass_for_the_recorded_table(
        shipped: GroundTable) -> None:
    data = _snapshot_data(shipped)
    _grounds_by_id(data)["cbs-33"]["versions"][0]["auto_limit"] = 100_000
    tampered = table_from_snapshot(json.dumps(data, sort_keys=True, separators=(",", ":"),
                                              ensure_ascii=False))
    assert tampered.hash != shipped.hash


@pytest.mark.parametrize("snapshot", ["not json", "[]", '{"format":2,"grounds":[]}'])
def test_a_snapshot_that_is_not_a_table_is_refused(snapshot: str) -> None:
    with pytest.raises(TableError):
        table_from_snapshot(snapshot)


def test_a_snapshot_with_two_grounds_of_one_id_is_refused(shipped: GroundTable) -> None:
    data = _snapshot_data(shipped)
    data["grounds"].append(_grounds_by_id(data)["wro-20"])
    with pytest.raises(TableError) as raised:
        table_from_snapshot(json.dumps(data, sort_keys=True, separators=(",", ":")))
    assert any(p.field == "id" and "also the id" in p.message for p in raised.value.problems)


# -- lint: a broken table names the file and the field ------------------------------------------

def problems_loading(folder: Path) -> tuple[Problem, ...]:
    with pytest.raises(TableError) as raised:
        load_table(folder)
    assert str(raised.value).startswith("the table of grounds has")
    return raised.value.problems


def assert_names(problems: tuple[Problem, ...], file: str, field: str,
                 message: str = "") -> None:
    hits = [p for p in problems
            if Path(p.file).name == file and p.field == field and message in p.message]
    assert hits, f"no problem naming {file} / {field} / {message!r} in: {list(map(str, problems))}"


def _set_version(**values: Any) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["versions"][0].update(values)


def _two_versions(first_until: str | None, second_from: str) -> Callable[[dict[str, Any]], object]:
    def change(document: dict[str, Any]) -> None:
        first = document["versions"][0]
        first["valid_until"] = first_until
        document["versions"].append({**first, "valid_from": second_from, "valid_until": None})
    return change


LINT_CASES = {
    "a month 13 in valid_from": (_set_version(valid_from="2020-13-01"),
                                 "versions.0.valid_from", "not a date"),
    "a date not written as YYYY-MM-DD": (_set_version(valid_from="1-8-2020"),
                                         "versions.0.valid_from", "YYYY-MM-DD"),
    "a malformed valid_until": (_set_version(valid_until="2024-02-30"),
                                "versions.0.valid_until", "not a date"),
    "valid_until before valid_from": (_set_version(valid_until="2020-07-31"),
                                      "versions.0.valid_until", "before valid_from"),
    "a version overlapping an open-ended one": (_two_versions(None, "2024-01-01"),
                                                "versions.1.valid_from", "overlaps"),
    "versions overlapping by one day": (_two_versions("2024-01-01", "2024-01-01"),
                                        "versions.1.valid_from", "overlaps"),
    "an unknown body": (lambda d: d.update(requesters=["school"]), "requesters.0",
                        "not a known body"),
    "an unknown purpose": (lambda d: d.update(purposes=["administratie"]), "purposes.0",
                           "not a known purpose"),
    "an unknown category": (_set_version(categories=["personalia", "religie"]),
                            "versions.0.categories.1", "'religie'"),
    "an unknown authorisation kind": (_set_version(authorisations_required=["volmacht"]),
                                      "versions.0.authorisations_required.0", "'volmacht'"),
    "a special category listed under categories": (
        _set_version(categories=["personalia", "gezondheid"]), "versions.0.categories.1",
        "list it under special_categories"),
    "an ordinary category listed under special_categories": (
        _set_version(special_categories=["personalia"]), "versions.0.special_categories.0",
        "list it under categories"),
    "a category listed twice": (_set_version(categories=["personalia", "personalia"]),
                                "versions.0.categories", "listed twice"),
    "a version releasing nothing": (_set_version(categories=[], special_categories=[]),
                                    "versions.0.categories", "at least one category"),
    "a missing title": (lambda d: d.pop("title"), "title", "required"),
    "a missing legal_basis": (lambda d: d.pop("legal_basis"), "legal_basis", "required"),
    "a missing version field": (lambda d: d["versions"][0].pop("categories"),
                                "versions.0.categories", "required"),
    "a citation url outside wetten.overheid.nl": (
        lambda d: d["legal_basis"].update(url="https://example.org/awr#Artikel20"),
        "legal_basis.url", "format"),
    "an id that does not match the file name": (lambda d: d.update(id="wro-20a"), "id",
                                                "must match the file name"),
}


@pytest.mark.parametrize(("change", "field", "message"), LINT_CASES.values(),
                         ids=LINT_CASES.keys())
def test_a_broken_ground_file_is_refused_naming_file_and_field(
        tmp_path: Path, change: Callable[[dict[str, Any]], object], field: str,
        message: str) -> None:
    folder = copy_of_shipped(tmp_path)
    edit(folder, "wro-20", change)
    assert_names(problems_loading(folder), "wro-20.yaml", field, message)


def test_invalid_yaml_is_refused_naming_the_file(tmp_path: Path) -> None:
    folder = copy_of_shipped(tmp_path)
    (folder / "wro-20.yaml").write_text("id: wro-20\ntitle: [unclosed\n", "utf-8")
    assert_names(problems_loading(folder), "wro-20.yaml", "(file)", "not valid YAML")


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    folder = copy_of_shipped(tmp_path)
    (folder / "wro-20.yaml").write_text("- just\n- a list\n", "utf-8")
    assert_names(problems_loading(folder), "wro-20.yaml", "(file)", "must be a mapping")


def test_two_files_with_the_same_id_are_refused(tmp_path: Path) -> None:
    folder = copy_of_shipped(tmp_path)
    shutil.copy(folder / "wro-20.yaml", folder / "wro-20-copy.yaml")
    problems = problems_loading(folder)
    # Whichever file is read second is named, with the first one in the message.
    duplicates = [p for p in problems if p.field == "id" and "is also the id in" in p.message]
    assert len(duplicates) == 1
    assert {Path(duplicates[0].file).name, Path(duplicates[0].message.split()[-1]).name} == {
        "wro-20.yaml", "wro-20-copy.yaml"}
    assert_names(problems, "wro-20-copy.yaml", "id", "must match the file name")


def test_every_broken_file_is_reported_at_once(tmp_path: Path) -> None:
    folder = copy_of_shipped(tmp_path)
    edit(folder, "wro-20", _set_version(valid_from="2020-13-01"))
    edit(folder, "cbs-33", lambda d: d.update(requesters=["statistiekbureau"]))
    problems = problems_loading(folder)
    assert_names(problems, "wro-20.yaml", "versions.0.valid_from")
    assert_names(problems, "cbs-33.yaml", "requesters.0")


def test_a_folder_without_ground_files_is_refused(tmp_path: Path) -> None:
    assert problems_loading(tmp_path)[0].field == "(folder)"
    assert problems_loading(tmp_path / "missing")[0].field == "(folder)"


def test_the_versioned_test_table_is_itself_a_valid_table() -> None:
    table = load_table(Path(__file__).parent / "specs" / "tables" / "versioned")
    assert set(table.grounds) == {"test-amended", "test-repealed"}
    assert [(v.valid_from, v.valid_until) for v in table.grounds["test-amended"].versions] == [
        (date(2020, 1, 1), date(2023, 12, 31)), (date(2024, 1, 1), None)]
    assert [(v.valid_from, v.valid_until) for v in table.grounds["test-repealed"].versions] == [
        (date(2020, 1, 1), date(2022, 6, 30))]


def test_a_snapshot_that_does_not_hash_to_the_recorded_hash_is_refused() -> None:
    table = load_table()
    altered = table.snapshot.replace('"auto_limit":1000', '"auto_limit":1001', 1)
    assert table_from_snapshot(altered).hash != table.hash  # valid and canonical, so it loads
    with pytest.raises(TableError) as caught:
        table_from_snapshot(altered, expected_hash=table.hash)
    assert f"not to the recorded {table.hash}" in str(caught.value)
    assert table_from_snapshot(table.snapshot, expected_hash=table.hash).hash == table.hash

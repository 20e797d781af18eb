"""Retention terms as data: how long the personal data held about a request are kept.

Read as a specification: every ground of the shipped table has a term, and so does a request
under no known ground; a ground that may release diploma data keeps its requests at least 20
years from delivery (WRO art. 33); a term ends on a calendar date (29 February + 1 year is
28 February); a term that is missing or malformed is refused naming file and field, by the
loader and by ``disclosure grounds check``.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml

from cli.main import main
from legal_bases.accountability import (
    DEFAULT_ACCOUNTABILITY_FILE,
    Accountability,
    AccountabilityError,
    CountedFrom,
    RetentionTerm,
    RetentionUnit,
    load_accountability,
)
from legal_bases.citation import Citation
from legal_bases.table import DEFAULT_GROUNDS_DIR, GroundTable
from legal_bases.vocabulary import Category

WRO_33 = "https://wetten.overheid.nl/BWBR0042012/2026-01-01#Artikel33"
SOURCE = Citation(law="Archiefwet 1995", article="5", paragraph="1", bwb_id="BWBR0007376",
                  url="https://wetten.overheid.nl/BWBR0007376/2017-05-10#Artikel5")


def term(amount: int, unit: RetentionUnit,
         counted_from: CountedFrom = CountedFrom.FINAL_DECISION) -> RetentionTerm:
    return RetentionTerm(amount=amount, unit=unit, counted_from=counted_from, source=SOURCE)


# -- the shipped data -----------------------------------------------------------------------------

def test_every_ground_of_the_shipped_table_has_its_own_retention_term(
        shipped_table: GroundTable) -> None:
    raw = yaml.safe_load(DEFAULT_ACCOUNTABILITY_FILE.read_text("utf-8"))
    accountability = load_accountability()
    assert set(shipped_table.grounds) <= set(raw["grounds"])
    for ground_id in shipped_table.grounds:
        written = raw["grounds"][ground_id]["retention"]
        assert len({"years", "months", "days"} & set(written)) == 1, ground_id
        retention = accountability.retention_for(ground_id)
        assert retention is accountability.of(ground_id).retention
        assert retention.counted_from.value == written["counted_from"]
        assert retention.source.url.startswith("https://")


def test_a_request_under_no_known_ground_gets_the_default_term() -> None:
    accountability = load_accountability()
    default = accountability.default_retention
    assert default is not None
    for claimed in (None, "", "wro-99"):  # none claimed (invalid), or a made-up ground
        assert accountability.retention_for(claimed) is default
    # such a request is refused, so nothing is delivered: it counts from its final decision
    assert default.counted_from is CountedFrom.FINAL_DECISION
    assert default.describe() == ("1 year from the final decision (Algemene verordening "
                                  "gegevensbescherming art. 5 lid 1 onder e)")


def test_a_ground_that_may_release_diploma_data_keeps_its_requests_20_years_from_delivery(
        shipped_table: GroundTable) -> None:
    # Diplomagegevens from the register are opleidingsgegevens in the table's vocabulary.
    accountability = load_accountability()
    diploma_grounds = sorted(g.id for g in shipped_table
                             if any(Category.OPLEIDINGSGEGEVENS in v.categories
                                    for v in g.versions))
    assert diploma_grounds  # the rule is not vacuous
    for ground_id in diploma_grounds:
        retention = accountability.retention_for(ground_id)
        assert retention.counted_from is CountedFrom.DELIVERY, ground_id
        for delivered in (date(2026, 1, 1), date(2028, 2, 29), date(2026, 12, 31)):
            twenty = delivered.replace(year=delivered.year + 20,
                                       day=28 if delivered.day == 29 else delivered.day)
            assert retention.ends(delivered) >= twenty, ground_id
        assert retention.source.url == WRO_33


def test_the_criminal_grounds_that_release_no_diploma_data_have_a_shorter_placeholder() -> None:
    accountability = load_accountability()
    for ground_id in ("sv-126nc", "sv-126nf"):
        assert accountability.retention_for(ground_id).describe() == (
            "7 years from the last delivery (Archiefwet 1995 art. 5 lid 1)")


def test_every_shipped_term_says_why_and_that_it_is_a_placeholder() -> None:
    accountability = load_accountability()
    terms = [e.retention for e in accountability.grounds.values()]
    assert accountability.default_retention is not None
    for retention in [*terms, accountability.default_retention]:
        assert retention.note is not None
        assert retention.note.startswith("PLACEHOLDER")
    header = DEFAULT_ACCOUNTABILITY_FILE.read_text("utf-8").split("\ncitations:")[0]
    assert "PLACEHOLDERS" in header
    assert "never delivered" in header  # delivery falls back to the final decision


# -- the arithmetic ---------------------------------------------------------------------------

@pytest.mark.parametrize(("amount", "unit", "start", "end"), [
    (1, RetentionUnit.YEARS, date(2024, 2, 29), date(2025, 2, 28)),  # no 29 Feb in 2025
    (4, RetentionUnit.YEARS, date(2024, 2, 29), date(2028, 2, 29)),  # a leap year again
    (20, RetentionUnit.YEARS, date(2026, 1, 1), date(2046, 1, 1)),
    (7, RetentionUnit.YEARS, date(2026, 12, 31), date(2033, 12, 31)),
    (1, RetentionUnit.MONTHS, date(2025, 1, 31), date(2025, 2, 28)),  # clamped to month's end
    (1, RetentionUnit.MONTHS, date(2024, 1, 31), date(2024, 2, 29)),
    (3, RetentionUnit.MONTHS, date(2025, 11, 30), date(2026, 2, 28)),  # across the year's end
    (13, RetentionUnit.MONTHS, date(2025, 12, 31), date(2027, 1, 31)),
    (12, RetentionUnit.MONTHS, date(2024, 2, 29), date(2025, 2, 28)),  # = 1 year
    (1, RetentionUnit.MONTHS, date(2025, 4, 15), date(2025, 5, 15)),
    (30, RetentionUnit.DAYS, date(2025, 12, 15), date(2026, 1, 14)),
    (1, RetentionUnit.DAYS, date(2024, 2, 28), date(2024, 2, 29)),
    (365, RetentionUnit.DAYS, date(2024, 2, 29), date(2025, 2, 28)),
])
def test_a_term_ends_on_a_calendar_date(amount: int, unit: RetentionUnit, start: date,
                                        end: date) -> None:
    assert term(amount, unit).ends(start) == end


def test_a_delivery_term_counts_from_the_last_delivery_or_else_the_final_decision() -> None:
    decided, delivered = date(2026, 3, 2), date(2026, 4, 20)
    by_delivery = term(20, RetentionUnit.YEARS, CountedFrom.DELIVERY)
    assert by_delivery.start(final_decision=decided, last_delivery=delivered) == delivered
    assert by_delivery.start(final_decision=decided, last_delivery=None) == decided
    by_decision = term(1, RetentionUnit.YEARS)
    assert by_decision.start(final_decision=decided, last_delivery=delivered) == decided


def test_a_term_describes_itself_with_its_source() -> None:
    assert term(7, RetentionUnit.YEARS).describe() == (
        "7 years from the final decision (Archiefwet 1995 art. 5 lid 1)")
    assert term(1, RetentionUnit.MONTHS, CountedFrom.DELIVERY).describe() == (
        "1 month from the last delivery (Archiefwet 1995 art. 5 lid 1)")
    assert term(90, RetentionUnit.DAYS).describe().startswith("90 days from the final decision")


@pytest.mark.parametrize("amount", [0, -1, True])
def test_a_term_in_code_needs_a_positive_whole_number(amount: int) -> None:
    with pytest.raises(ValueError, match="positive whole number"):
        term(amount, RetentionUnit.DAYS)


def test_an_accountability_built_without_a_default_refuses_rather_than_guesses() -> None:
    full = load_accountability()
    partial = Accountability(grounds=MappingProxyType(dict(full.grounds)), source="partial.yaml")
    assert partial.retention_for("awr-55") is full.retention_for("awr-55")
    with pytest.raises(AccountabilityError, match=r"partial\.yaml: default_retention: is required"):
        partial.retention_for(None)


# -- refusals -----------------------------------------------------------------------------------

SOURCE_YAML = ("    source: {law: Archiefwet 1995, article: '5', "
               "url: 'https://wetten.overheid.nl/BWBR0007376/2017-05-10#Artikel5'}\n")
DEFAULT = "default_retention:\n  years: 1\n  counted_from: final_decision\n" + SOURCE_YAML[2:]
ENTRY = ("  awr-55:\n    processing_activity_id: https://register.example/va/1\n"
         "    subject_access: open\n")


def retention(*lines: str, source: bool = True) -> str:
    """A retention mapping of awr-55 made of ``lines`` (and a valid source unless told not)."""
    body = "".join(f"      {line}\n" for line in lines)
    return "    retention:\n" + body + (("  " + SOURCE_YAML) if source else "")


def problems_of(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    path = tmp_path / "accountability.yaml"
    path.write_text(text, "utf-8")
    with pytest.raises(AccountabilityError) as caught:
        load_accountability(path)
    assert all(p.file == str(path) for p in caught.value.problems)
    for p in caught.value.problems:
        assert f"{path}: {p.field}: {p.message}" in str(caught.value)
    return [(p.field, p.message) for p in caught.value.problems]


def test_a_file_with_valid_terms_loads(tmp_path: Path) -> None:
    path = tmp_path / "accountability.yaml"
    path.write_text(DEFAULT + "grounds:\n" + ENTRY
                    + retention("months: 18", "counted_from: delivery", "note: why"), "utf-8")
    loaded = load_accountability(path)
    own = loaded.retention_for("awr-55")
    assert (own.amount, own.unit, own.counted_from, own.note) == (
        18, RetentionUnit.MONTHS, CountedFrom.DELIVERY, "why")
    assert own.source.short == "Archiefwet 1995 art. 5"
    assert loaded.retention_for(None).describe() == (
        "1 year from the final decision (Archiefwet 1995 art. 5)")


@pytest.mark.parametrize(("entry", "field", "message"), [
    pytest.param("", "grounds.awr-55.retention", "is required", id="no retention"),
    pytest.param(retention("counted_from: delivery"), "grounds.awr-55.retention",
                 "needs exactly one of years, months, days (found none)", id="no unit"),
    pytest.param(retention("years: 1", "months: 6", "counted_from: delivery"),
                 "grounds.awr-55.retention",
                 "needs exactly one of years, months, days (found years, months)",
                 id="two units"),
    pytest.param(retention("years: 0", "counted_from: delivery"), "grounds.awr-55.retention.years",
                 "must be at least 1", id="zero years"),
    pytest.param(retention("days: -30", "counted_from: delivery"), "grounds.awr-55.retention.days",
                 "must be at least 1", id="negative days"),
    pytest.param(retention("months: true", "counted_from: delivery"),
                 "grounds.awr-55.retention.months", "must be of type integer", id="boolean"),
    pytest.param(retention("years: 5 years", "counted_from: delivery"),
                 "grounds.awr-55.retention.years", "must be of type integer", id="text"),
    pytest.param(retention("years: 1000", "counted_from: delivery"),
                 "grounds.awr-55.retention.years", "must be at most 100", id="a millennium"),
    pytest.param(retention("years: 1", "counted_from: receipt"),
                 "grounds.awr-55.retention.counted_from", "must be one of", id="unknown event"),
    pytest.param(retention("years: 1"), "grounds.awr-55.retention.counted_from", "is required",
                 id="no event"),
    pytest.param(retention("years: 1", "counted_from: delivery", source=False),
                 "grounds.awr-55.retention.source", "is required", id="no source"),
    pytest.param(retention("years: 1", "counted_from: delivery", "source: {law: Archiefwet 1995,"
                           " article: '5', url: 'https://example.org/archiefwet'}", source=False),
                 "grounds.awr-55.retention.source.url", "does not have the required format",
                 id="undated source"),
    pytest.param(retention("weeks: 6", "counted_from: delivery"),
                 "grounds.awr-55.retention.weeks", "is not a field of this document",
                 id="unknown unit"),
    pytest.param(retention("years: 1", "counted_from: delivery", "note: ''"),
                 "grounds.awr-55.retention.note", "must not be empty", id="empty note"),
])
def test_a_broken_ground_term_is_refused_naming_the_field(
        tmp_path: Path, entry: str, field: str, message: str) -> None:
    found = problems_of(tmp_path, DEFAULT + "grounds:\n" + ENTRY + entry)
    assert any(f == field and message in m for f, m in found), found


def test_the_unit_rule_is_reported_with_the_schemas_problems(tmp_path: Path) -> None:
    text = (DEFAULT + "grounds:\n" + ENTRY + retention("years: 1", "days: 2", "counted_from: x")
            + ENTRY.replace("awr-55", "awir-38"))
    assert sorted(problems_of(tmp_path, text)) == [
        ("grounds.awir-38.retention", "is required"),
        ("grounds.awr-55.retention",
         "needs exactly one of years, months, days (found years, days)"),
        ("grounds.awr-55.retention.counted_from", "must be one of ['final_decision', 'delivery']"),
    ]


@pytest.mark.parametrize(("head", "field", "message"), [
    pytest.param("", "default_retention", "is required", id="no default"),
    pytest.param(DEFAULT.replace("years: 1", "years: 1\n  days: 1"), "default_retention",
                 "needs exactly one of years, months, days (found years, days)", id="two units"),
    pytest.param(DEFAULT.replace("final_decision", "submission"),
                 "default_retention.counted_from", "must be one of", id="unknown event"),
    pytest.param(DEFAULT.replace("  source:", "  sauce:"), "default_retention.source",
                 "is required", id="no source"),
    pytest.param(DEFAULT + "retention_terms:\n  shared:\n    months: 0\n"
                 "    counted_from: delivery\n" + SOURCE_YAML,
                 "retention_terms.shared.months", "must be at least 1", id="shared term"),
])
def test_a_broken_default_or_shared_term_is_refused_naming_the_field(
        tmp_path: Path, head: str, field: str, message: str) -> None:
    found = problems_of(tmp_path, head + "grounds:\n" + ENTRY
                        + retention("years: 1", "counted_from: delivery"))
    assert any(f == field and message in m for f, m in found), found


# -- the command line ---------------------------------------------------------------------------

def shipped_copies(tmp_path: Path) -> tuple[Path, Path]:
    grounds = tmp_path / "grounds"
    shutil.copytree(DEFAULT_GROUNDS_DIR, grounds)
    accounts = tmp_path / "accountability.yaml"
    shutil.copyfile(DEFAULT_ACCOUNTABILITY_FILE, accounts)
    return grounds, accounts


def without_retention_of(path: Path, ground_id: str) -> None:
    """Remove one ground's ``retention`` from a copy of an accountability file."""
    document = yaml.safe_load(path.read_text("utf-8"))
    del document["grounds"][ground_id]["retention"]
    path.write_text(yaml.safe_dump(document, allow_unicode=True), "utf-8")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_grounds_check_passes_the_shipped_copies(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    grounds, accounts = shipped_copies(tmp_path)
    code, out, err = run(capsys, "grounds", "check", str(grounds), "--accountability",
                         str(accounts))
    assert (code, err) == (0, "")
    assert f"OK ({grounds})" in out
    assert f"retention term, and the default retention: OK ({accounts})" in out


def test_grounds_check_refuses_a_ground_without_a_retention_term(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    grounds, accounts = shipped_copies(tmp_path)
    without_retention_of(accounts, "wro-20")
    code, out, err = run(capsys, "grounds", "check", str(grounds), "--accountability",
                         str(accounts))
    assert code == 1
    assert "OK" not in out
    assert f"{accounts}: grounds.wro-20.retention: is required\n" in err
    assert err.endswith(f"\n1 problem(s) in {accounts}\n")


def test_grounds_check_refuses_a_ground_the_accountability_file_lacks(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    grounds, accounts = shipped_copies(tmp_path)
    text = (grounds / "wro-20.yaml").read_text("utf-8").replace("id: wro-20", "id: wro-99")
    (grounds / "wro-99.yaml").write_text(text, "utf-8")
    code, _, err = run(capsys, "grounds", "check", "--grounds", str(grounds),
                       "--accountability", str(accounts))
    assert code == 1
    assert f"{accounts}: grounds.wro-99: has no entry" in err


def test_grounds_check_reports_table_and_accountability_problems_together(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    grounds, accounts = shipped_copies(tmp_path)
    broken = grounds / "participatiewet-64.yaml"
    broken.write_text(broken.read_text("utf-8").replace("[gemeente]", "[gemeentee]"), "utf-8")
    without_retention_of(accounts, "sv-126nc")
    code, _, err = run(capsys, "grounds", "check", str(grounds), "--accountability",
                       str(accounts))
    assert code == 1
    assert f"{broken}: requesters.0: 'gemeentee' is not a known body" in err
    assert f"{accounts}: grounds.sv-126nc.retention: is required" in err
    assert err.endswith(f"\n2 problem(s) in {grounds} and {accounts}\n")

"""``disclosure logboek export`` held to the text of the Logius standard, and read as a person.

The standard's fields and values are vendored in
``connectors/schemas/logboek-dataverwerkingen-1.0.0.yaml`` (Logboek dataverwerkingen 1.0.0,
with the repository and commit it was read from); every exported line is checked against that
file, not against the exporter's own constants. The export is run as the README's audit block
runs it (``--out logboek.jsonl`` in the working directory) on a small synthetic history, and its
summary line, its file and its spans are counted against the ledger's own tables.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import TEST_CHAIN_KEY_RING, ledger_on
from sqlalchemy import Engine, text

from cli.main import main
from legal_bases.table import GroundTable
from records.pseudonym import Pseudonymizer
from records.synthetic_history import write_history

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text("utf-8")
STANDARD_FILE = ROOT / "connectors" / "schemas" / "logboek-dataverwerkingen-1.0.0.yaml"
STANDARD: dict[str, Any] = yaml.safe_load(STANDARD_FILE.read_text("utf-8"))
KEY = bytes.fromhex("9d" * 32)
#: 2026 in Dutch calendar days, as instants (CET: UTC+1 at both ends).
YEAR = (datetime(2025, 12, 31, 23, tzinfo=UTC), datetime(2026, 12, 31, 23, tzinfo=UTC))
BYTES_AS_HEX = {"16 byte": re.compile(r"^[0-9a-f]{32}$"), "8 byte": re.compile(r"^[0-9a-f]{16}$")}


def readme_export() -> list[str]:
    """The README's ``logboek export`` line of the audit block, as argv after the program."""
    [line] = [line for line in README.splitlines() if "disclosure logboek export" in line]
    argv = shlex.split(line.split("#")[0])
    return argv[argv.index("logboek"):]


def logboek_paragraph() -> str:
    start = README.index("**Logboek Dataverwerkingen.**")
    return " ".join(README[start:README.index("\n\n", start)].split())


@dataclass
class History:
    engine: Engine
    url: str


@pytest.fixture(scope="module")
def history(request: pytest.FixtureRequest, shipped_table: GroundTable,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    with ledger_on("sqlite", request, tmp_path_factory.mktemp("logboek-standard")) as engine:
        write_history(engine=engine, pseudonymizer=Pseudonymizer(KEY),
                      tables=[(datetime(2020, 8, 1, tzinfo=UTC), shipped_table)], requests=120,
                      seed=23, start=datetime(2025, 12, 25, tzinfo=UTC),
                      end=datetime(2026, 12, 31, 22, tzinfo=UTC), persons=50)
        yield History(engine, engine.url.render_as_string(hide_password=False))


@pytest.fixture
def exported(history: History, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    """The README's export run in a fresh working directory: the folder and standard error."""
    for name in ("DISCLOSURE_GROUNDS_DIR", "DISCLOSURE_PARTNERS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISCLOSURE_DATABASE_URL", history.url)
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", TEST_CHAIN_KEY_RING)
    monkeypatch.setenv("DISCLOSURE_PSEUDONYM_KEY", KEY.hex())
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "var"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    capsys.readouterr()
    assert main(readme_export()) == 0
    return work, capsys.readouterr().err


def lines_of(work: Path) -> list[dict[str, Any]]:
    out = readme_export()[readme_export().index("--out") + 1]
    return [json.loads(line) for line in (work / out).read_text("utf-8").splitlines()]


# -- the standard's fields and values ------------------------------------------------------------

def test_the_vendored_standard_says_where_it_was_read() -> None:
    assert STANDARD["version"] == "1.0.0"
    source = STANDARD["source"]
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    assert source["repository"].startswith("Logius-standaarden/")
    assert set(STANDARD["fields"]) >= {"trace_id", "span_id", "status", "attributes"}


def test_every_exported_line_has_the_standards_fields_and_values(
        exported: tuple[Path, str]) -> None:
    lines = lines_of(exported[0])
    assert len(lines) > 50
    fields: dict[str, dict[str, Any]] = STANDARD["fields"]
    required = {name for name, spec in fields.items() if spec["required"]}
    superseded = set(STANDARD["superseded"]["fields"])
    attributes = STANDARD["attributes"]
    namespace = attributes["namespace"]
    allowed_dpl = {*attributes["core"], *attributes["core_when_called"],
                   *(a for ext in attributes["adopted_extensions"] for a in ext["attributes"])}
    for line in lines:
        assert required <= set(line) <= set(fields), sorted(line)
        assert not superseded & set(line)
        for name, value in line.items():
            kind = fields[name]["type"]
            if kind in BYTES_AS_HEX:
                assert BYTES_AS_HEX[kind].match(value), (name, value)
                assert value.strip("0"), (name, value)  # W3C: never all zeros
            elif kind == "uint64":
                assert isinstance(value, int), (name, value)
                assert 0 <= value < 2 ** 64, (name, value)
            elif kind == "string":
                assert isinstance(value, str), (name, value)
                assert value.strip(), (name, value)
            elif kind == "object":
                assert isinstance(value, dict), name
        assert line["status"] in STANDARD["status"]
        assert line["start_time"] <= line["end_time"]
        assert set(line.get("resource", {})) <= set(STANDARD["resource_fields"])
        names = set(line["attributes"])
        # no attribute in the standard's namespace that the standard does not define
        assert {n for n in names if n.startswith(namespace)} <= allowed_dpl, sorted(names)
        assert not names & set(attributes["error"])  # those go with status Error only
        # every line names its processing activity, as a URI
        activity = urlsplit(line["attributes"]["dpl.core.processing_activity_id"])
        assert activity.scheme, activity
        assert activity.netloc or activity.path, activity
        # a subject is named with its kind, and a line names at most one
        has_subject = "dpl.core.data_subject_id" in names
        assert has_subject == ("dpl.core.data_subject_id_type" in names)
        assert isinstance(line["attributes"].get("dpl.core.data_subject_id", ""), str)
    # several subjects of one disclosure: each its own child span of the disclosure's span
    parents = {line["span_id"]: line for line in lines if "parent_span_id" not in line}
    children = [line for line in lines if "parent_span_id" in line]
    assert children
    for child in children:
        assert child["parent_span_id"] in parents
        assert child["trace_id"] == parents[child["parent_span_id"]]["trace_id"]
        assert "dpl.core.data_subject_id" in child["attributes"]
    assert all("dpl.core.data_subject_id" not in p["attributes"] for p in parents.values())


def test_the_readme_says_which_version_of_the_standard_the_export_follows() -> None:
    said = logboek_paragraph()
    assert f"**{STANDARD['version']}**" in said
    assert STANDARD["source"]["commit"][:8] in said
    assert STANDARD["source"]["repository"] in said
    assert str(STANDARD_FILE.relative_to(ROOT)) in said
    # every `dpl.` name the README gives is one the standard defines
    named = set(re.findall(r"`(dpl\.[a-z_.]+)`", said))
    assert named
    assert named <= {*STANDARD["attributes"]["core"], *STANDARD["attributes"]["core_when_called"]}
    # and its status values are the standard's
    assert {"`Unset`", "`Ok`", "`Error`"} <= set(re.findall(r"`[A-Z][a-z]+`", said))


# -- the export read as a person reads it --------------------------------------------------------

def test_the_exports_counts_add_up_and_are_the_ledgers(
        history: History, exported: tuple[Path, str]) -> None:
    work, err = exported
    out = readme_export()[readme_export().index("--out") + 1]
    assert sorted(p.name for p in work.iterdir()) == [out]  # the README's file, nothing beside
    lines = lines_of(work)
    # "N line(s): D disclosure(s), S data-subject line(s), delivered FROM – TO, in FILE"
    match = re.search(r"^(\d+) line\(s\): (\d+) disclosure\(s\), (\d+) data-subject line\(s\), "
                      r"delivered (\S+) – (\S+), in (\S+)$", err, re.M)
    assert match, err
    total, disclosures, subject_lines = (int(match[i]) for i in (1, 2, 3))
    assert (match[4], match[5], match[6]) == ("2026-01-01", "2026-12-31", out)
    parents = [line for line in lines if "parent_span_id" not in line]
    children = [line for line in lines if "parent_span_id" in line]
    assert total == len(lines) == disclosures + subject_lines
    assert (disclosures, subject_lines) == (len(parents), len(children))

    with history.engine.connect() as db:
        deliveries = db.execute(text(
            "select d.id, d.request_id, r.subject_count from deliveries d "
            "join requests r on r.id = d.request_id "
            "where d.delivered_at >= :lo and d.delivered_at < :hi"),
            {"lo": YEAR[0], "hi": YEAR[1]}).all()
        subjects = dict(db.execute(text(
            "select request_id, count(*) from request_subjects group by request_id")).all())
        outside = db.execute(text(
            "select count(*) from deliveries where delivered_at < :lo or delivered_at >= :hi"),
            {"lo": YEAR[0], "hi": YEAR[1]}).scalar_one()
    assert outside > 0  # the history runs past both ends of 2026: the period must cut
    assert disclosures == len(deliveries)
    assert sorted(p["attributes"]["nl.duo.delivery_id"] for p in parents) == sorted(
        d.id for d in deliveries)
    assert subject_lines == sum(subjects[d.request_id] for d in deliveries)
    per_parent = Counter(c["parent_span_id"] for c in children)
    for parent in parents:
        request_id = parent["attributes"]["nl.duo.request_id"]
        [count] = [d.subject_count for d in deliveries if d.request_id == request_id]
        assert per_parent[parent["span_id"]] == count == subjects[request_id]

"""The ``disclosure`` command line as a person uses it: decide, grounds list/show/check."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from legal_bases.table import DEFAULT_GROUNDS_DIR

EXAMPLES = Path(__file__).parents[1] / "examples" / "requests"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def decide(capsys: pytest.CaptureFixture[str], body: str, path: Path) -> dict[str, object]:
    code, out, _ = run(capsys, "decide", "--body", body, "--received-on", "2026-11-28", str(path))
    assert code == 0
    decision: dict[str, object] = json.loads(out)
    return decision


@pytest.mark.parametrize(("body", "example", "outcome", "first_reason"), [
    ("belastingdienst", "belastingdienst/awr55-studiefinanciering.json", "approved",
     "ground_applies"),
    ("toeslagen", "toeslagen/awir38-invalid-bsn.json", "rejected", "invalid_request"),
    ("uwv", "uwv/claims-tax-ground.json", "rejected", "requester_not_entitled"),
    ("gemeente", "gemeente-utrecht/bijstand-with-health.json", "partially_approved",
     "ground_applies"),
    ("gemeente", "gemeente-utrecht/leerplicht-health.json", "needs_review", "ground_applies"),
    ("openbaar_ministerie", "om-midden-nederland/126nc-without-vordering.json", "rejected",
     "missing_case_reference"),
    ("openbaar_ministerie", "om-midden-nederland/126nd-financial.json", "needs_review",
     "ground_applies"),
])
def test_decide_gives_the_policys_answer_for_the_examples(
        capsys: pytest.CaptureFixture[str], body: str, example: str, outcome: str,
        first_reason: str) -> None:
    decision = decide(capsys, body, EXAMPLES / example)
    assert decision["outcome"] == outcome
    reasons = decision["reasons"]
    assert isinstance(reasons, list)
    assert reasons[0]["code"] == first_reason
    assert all(r["citation"]["url"].startswith("https://") for r in reasons)
    assert str(decision["table_hash"]).isalnum()


def test_decide_explains_an_invalid_request_field_by_field(
        capsys: pytest.CaptureFixture[str]) -> None:
    decision = decide(capsys, "toeslagen", EXAMPLES / "toeslagen/awir38-invalid-bsn.json")
    assert decision["errors"] == [{"path": "subjects.0.bsn", "code": "invalid_bsn",
                                   "message": "fails the elfproef (check digit)"}]


def test_decide_review_shows_the_proposal_and_releases_nothing_yet(
        capsys: pytest.CaptureFixture[str]) -> None:
    decision = decide(capsys, "gemeente", EXAMPLES / "gemeente-utrecht/leerplicht-health.json")
    assert decision["released"] == []
    assert decision["proposal"] == {"released": ["gezondheid", "opleidingsgegevens",
                                                 "personalia"], "withheld": []}
    assert [t["code"] for t in decision["review_triggers"]] == ["special_category"]


def test_decide_reads_standard_input(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"reference": "X-1", "legal_basis": "sv-126nc", "purpose": "strafrechtelijk_onderzoek",
            "subjects": [{"bsn": "111222333"}], "categories": ["personalia"],
            "case_reference": "V-1"}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(body)))
    code, out, _ = run(capsys, "decide", "--body", "openbaar_ministerie", "-")
    assert code == 0
    assert json.loads(out)["outcome"] == "approved"


@pytest.mark.parametrize(("argv", "message"), [
    (["decide", "--body", "gemeente", "/no/such/file.json"], "cannot read /no/such/file.json"),
    (["decide", "--body", "gemeente", "--grounds", "/no/such/dir", str(EXAMPLES / "cbs" /
                                                                      "statistiek-cohort.json")],
     "is not a folder of ground files"),
    (["grounds", "show", "no-such-ground"], "no ground 'no-such-ground'"),
])
def test_usage_errors_exit_2_with_a_message(capsys: pytest.CaptureFixture[str], argv: list[str],
                                            message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert message in err


def test_decide_refuses_text_that_is_not_json(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    bad = tmp_path / "req.json"
    bad.write_text('{"reference": "X-1",\n  "subjects": [}')
    code, _, err = run(capsys, "decide", "--body", "gemeente", str(bad))
    assert code == 2
    assert "is not JSON" in err
    assert "line 2" in err


def test_decide_unknown_body_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["decide", "--body", "interpol", "-"])
    assert exit_.value.code == 2
    assert "invalid choice: 'interpol'" in capsys.readouterr().err


def test_grounds_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "grounds", "list", "--on", "2026-11-28")
    assert code == 0
    assert "participatiewet-64" in out
    assert "table hash" in out
    code, out, _ = run(capsys, "grounds", "show", "participatiewet-64", "--json")
    shown = json.loads(out)
    assert shown["requesters"] == ["gemeente"]
    assert shown["versions"][0]["id"].startswith("participatiewet-64@2020-08-01#")
    code, _, err = run(capsys, "grounds", "show", "participatiewet-64", "--on", "2019-01-01")
    assert code == 1
    assert "no version in force on 2019-01-01" in err


def test_grounds_check_points_at_the_broken_file_and_field(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    table = tmp_path / "grounds"
    shutil.copytree(DEFAULT_GROUNDS_DIR, table)
    code, out, _ = run(capsys, "grounds", "check", str(table))
    assert code == 0
    assert "OK" in out
    broken = table / "participatiewet-64.yaml"
    broken.write_text(broken.read_text().replace("[gemeente]", "[gemeentee]"))
    code, _, err = run(capsys, "grounds", "check", str(table))
    assert code == 1
    assert f"{broken}: requesters.0: 'gemeentee' is not a known body" in err


def test_the_installed_console_script_runs() -> None:
    script = Path(sys.executable).parent / "disclosure"
    result = subprocess.run([str(script), "grounds", "check"], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout

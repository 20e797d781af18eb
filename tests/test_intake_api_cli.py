"""``disclosure partners add|rotate-key|revoke|list`` and ``disclosure api``, as operators use them.

The commands run through their own argparse registration (``cli.api.register``), against
a data folder and a partner file of the test's own; the keys they print are then used over
HTTP against the API served from the same settings.
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path

import pytest
import requests
from sqlmodel import Session

from cli import api, api_server, partners
from legal_bases.errors import DisclosureError
from records.api_keys import KEY_ISSUED, KEY_REVOKED, verify_key
from records.db import open_ledger
from records.settings import load_settings

ROOT = Path(__file__).parents[1]
KEY = re.compile(r"dk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
TAX = {"reference": "CLI-1", "legal_basis": "awr-55", "purpose": "belastingheffing",
       "case_reference": "FIN/1", "subjects": [{"bsn": "111222333"}],
       "categories": ["personalia"]}


@pytest.fixture
def partners_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "partners.yaml"
    shutil.copyfile(ROOT / "examples" / "partners.yaml", path)
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("DISCLOSURE_PARTNERS_FILE", str(path))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="disclosure")
    commands = parser.add_subparsers(dest="command", required=True)
    api.register(commands)
    partners.register(commands)
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except DisclosureError as exc:  # as cli.main.main answers it
        print(f"disclosure: {exc}")
        code = 1
    return code, capsys.readouterr().out


def key_in(output: str) -> str:
    found: list[str] = KEY.findall(output)
    assert len(found) == 1, output
    return found[0]


def partner_of(key: str) -> str | None:
    engine = open_ledger(load_settings())
    try:
        with Session(engine) as session:
            return verify_key(connection=session, key=key).partner_id
    finally:
        engine.dispose()


def test_partners_add_appends_the_partner_and_shows_its_first_key_once(
        capsys: pytest.CaptureFixture[str], partners_file: Path) -> None:
    before = partners_file.read_text()
    code, out = run(capsys, "partners", "add", "gemeente-amersfoort", "--name",
                    "Gemeente Amersfoort", "--body", "gemeente", "--oin",
                    "00000099000000009000", "--actor", "operator:alice")
    assert code == 0, out
    key = key_in(out)
    assert "shown once" in out
    text = partners_file.read_text()
    assert text.startswith(before)  # comments and entries kept as they were
    assert "id: gemeente-amersfoort" in text
    assert key not in text
    assert partner_of(key) == "gemeente-amersfoort"
    engine = open_ledger(load_settings())
    with engine.connect() as connection:
        events = connection.exec_driver_sql("SELECT kind, actor FROM audit_events").all()
    engine.dispose()
    assert [tuple(e) for e in events] == [(KEY_ISSUED, "operator:alice")]


@pytest.mark.parametrize(("argv", "message"), [
    (["--oin", "00000099000000001000"], "duplicate oin"),
    (["--oin", "123"], "must be 20 characters"),
])
def test_partners_add_refuses_what_would_not_load_and_writes_nothing(
        capsys: pytest.CaptureFixture[str], partners_file: Path, argv: list[str],
        message: str) -> None:
    before = partners_file.read_text()
    code, out = run(capsys, "partners", "add", "dubbel", "--name", "Dubbel", "--body",
                    "gemeente", *argv)
    assert code == 1
    assert message in out
    assert partners_file.read_text() == before
    assert not KEY.search(out)


def test_partners_add_needs_a_partner_file_of_its_own(
        capsys: pytest.CaptureFixture[str], partners_file: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISCLOSURE_PARTNERS_FILE")
    code, out = run(capsys, "partners", "add", "x", "--name", "X", "--body", "gemeente",
                    "--oin", "00000099000000009000")
    assert code == 1
    assert "DISCLOSURE_PARTNERS_FILE" in out


def test_rotate_keeps_the_old_key_working_until_it_is_revoked(
        capsys: pytest.CaptureFixture[str], partners_file: Path) -> None:
    old = key_in(run(capsys, "partners", "rotate-key", "belastingdienst")[1])
    new = key_in(run(capsys, "partners", "rotate-key", "belastingdienst")[1])
    assert partner_of(old) == partner_of(new) == "belastingdienst"
    old_id = old.split("_")[1]
    code, out = run(capsys, "partners", "revoke", "belastingdienst", "--key-id", old_id,
                    "--reason", "rotated")
    assert code == 0
    assert old_id in out
    assert partner_of(old) is None
    assert partner_of(new) == "belastingdienst"
    code, out = run(capsys, "partners", "list")
    assert code == 0
    assert new.split("_")[1] in out
    assert old_id not in out.split("\n\n")[0]
    assert run(capsys, "partners", "revoke", "belastingdienst")[0] == 1  # which keys?
    assert run(capsys, "partners", "revoke", "belastingdienst", "--all")[0] == 0
    assert partner_of(new) is None
    engine = open_ledger(load_settings())
    with engine.connect() as connection:
        kinds = [r[0] for r in connection.exec_driver_sql(
            "SELECT kind FROM audit_events ORDER BY seq")]
    engine.dispose()
    assert kinds == [KEY_ISSUED, KEY_ISSUED, KEY_REVOKED, KEY_REVOKED]


def test_rotate_key_for_an_unknown_partner_is_refused(capsys: pytest.CaptureFixture[str],
                                                       partners_file: Path) -> None:
    code, out = run(capsys, "partners", "rotate-key", "nobody")
    assert code == 1
    assert "no partner 'nobody'" in out


def test_an_operator_issues_a_key_and_a_partner_submits_with_it(
        capsys: pytest.CaptureFixture[str], partners_file: Path) -> None:
    key = key_in(run(capsys, "partners", "rotate-key", "belastingdienst")[1])
    with api_server.api_server(load_settings(), port=0, nudge=lambda: None) as url:
        answer = requests.post(f"{url}/v1/requests", json=TAX, timeout=10,
                               headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 202, answer.text
        # a partner added while the API runs can submit within a second or so
        added = key_in(run(capsys, "partners", "add", "gemeente-amersfoort", "--name",
                           "Gemeente Amersfoort", "--body", "gemeente", "--oin",
                           "00000099000000009000")[1])
        body = {"reference": "AMF-1", "legal_basis": "participatiewet-64",
                "purpose": "bijstand", "subjects": [{"bsn": "111222333"}],
                "categories": ["personalia"]}
        deadline = time.monotonic() + 5
        while True:
            answer = requests.post(f"{url}/v1/requests", json=body, timeout=10,
                                   headers={"Authorization": f"Bearer {added}"})
            if answer.status_code != 401 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert answer.status_code == 202, answer.text


def test_the_api_command_refuses_half_a_tls_configuration(
        capsys: pytest.CaptureFixture[str], partners_file: Path, tmp_path: Path) -> None:
    code, out = run(capsys, "api", "--tls-cert", str(tmp_path / "cert.pem"))
    assert code == 1
    assert "--tls-cert and --tls-key go together" in out

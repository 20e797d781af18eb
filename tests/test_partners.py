"""The partner configuration: loading the bundled file, naming every problem of a broken one."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.destinations import FileDrop, HttpsDestination
from connectors.errors import DestinationConfigError, PartnerConfigError, UnknownPartnerError
from connectors.partners import (
    FileDropDelivery,
    HttpsDelivery,
    PartnerDirectory,
    destination_for,
    load_partners,
)
from legal_bases.errors import DisclosureError
from legal_bases.vocabulary import Body

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "partners.yaml"
HASH = "sha256$" + "ab" * 32


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "partners.yaml"
    path.write_text(text, "utf-8")
    return path


def _problems(path: Path) -> dict[str, str]:
    with pytest.raises(PartnerConfigError) as caught:
        load_partners(path)
    assert isinstance(caught.value, DisclosureError)
    assert all(p.file == str(path) for p in caught.value.problems)
    return {p.field: p.message for p in caught.value.problems}


def test_the_bundled_partners_load_with_file_drop_delivery(tmp_path: Path) -> None:
    partners = load_partners(EXAMPLES)
    assert isinstance(partners, PartnerDirectory)
    assert len(partners) == 8
    assert "gemeente-utrecht" in partners
    utrecht = partners.by_id("gemeente-utrecht")
    assert utrecht.body is Body.GEMEENTE
    assert partners.by_oin(utrecht.oin) is utrecht
    assert all(isinstance(p.delivery, FileDropDelivery) for p in partners)
    assert {p.body for p in partners} >= {Body.BELASTINGDIENST, Body.OPENBAAR_MINISTERIE}
    destination = destination_for(utrecht, drop_root=tmp_path)
    assert isinstance(destination, FileDrop)
    assert destination.folder == tmp_path / "gemeente-utrecht"


def test_an_unknown_partner_is_a_named_error() -> None:
    partners = load_partners(EXAMPLES)
    with pytest.raises(UnknownPartnerError):
        partners.by_id("nobody")
    with pytest.raises(UnknownPartnerError):
        partners.by_oin("00000099000000999999")
    assert partners.get("nobody") is None


def test_a_broken_file_names_file_and_field_of_every_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, """
- id: belastingdienst
  name: Belastingdienst
  body: fiscus
  oin: "00000099000000001000"
- id: toeslagen
  name: Dienst Toeslagen
  body: toeslagen
  oin: "12345"
- id: cbs
  name: CBS
  body: cbs
  oin: "00000099000000007000"
  delivery:
    kind: https
- id: belastingdienst
  name: Belastingdienst again
  body: belastingdienst
  oin: "00000099000000001001"
""")
    problems = _problems(path)
    assert set(problems) == {"0.body", "1.oin", "2.delivery.url", "3.id"}
    assert "fiscus" in problems["0.body"]
    assert "20 characters" in problems["1.oin"]
    assert "https" in problems["2.delivery.url"]
    assert "duplicate id 'belastingdienst'" in problems["3.id"]
    assert "partner 'toeslagen'" in problems["1.oin"]


def test_more_problems_are_named_too(tmp_path: Path) -> None:
    path = _write(tmp_path, """
- id: Not_A_Slug
  name: ""
  body: cbs
  oin: "00000099000000007000"
  colour: blue
- id: uwv
  name: UWV
  body: uwv
  oin: "00000099000000007000"
  api_keys: ["plain-key"]
  delivery:
    kind: https
    url: http://uwv.example/in
- id: svb
  name: SVB
  body: svb
  oin: "00000099000000003000"
  delivery: {kind: file_drop, url: "https://svb.example/in"}
- id: inspectie
  name: Inspectie
  body: inspectie_onderwijs
  oin: "0000009900000000800a"
- just a string
""")
    problems = _problems(path)
    assert set(problems) == {"0.id", "0.name", "0.colour", "1.oin", "1.api_keys.0",
                             "1.delivery.url", "2.delivery.url", "3.oin", "4"}
    assert "duplicate oin" in problems["1.oin"]
    assert "https://" in problems["1.delivery.url"]
    assert "only to kind https" in problems["2.delivery.url"]


@pytest.mark.parametrize(("text", "message"), [
    ("{id: cbs}", "list of partners"),
    ("- id: [unclosed", "not valid YAML"),
    ("", "list of partners"),
])
def test_a_file_that_is_not_a_partner_list_is_named(tmp_path: Path, text: str,
                                                    message: str) -> None:
    path = _write(tmp_path, text)
    problems = _problems(path)
    assert list(problems) == ["(file)"]
    assert message in problems["(file)"]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    problems = _problems(tmp_path / "absent.yaml")
    assert "cannot be read" in problems["(file)"]


def test_an_https_partner_gets_an_https_destination_with_its_certificates(
        tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("client.pem", "client.key", "ca.pem"):
        (certs / name).write_text("-----BEGIN PLACEHOLDER-----\n", "ascii")
    path = _write(tmp_path, f"""
- id: cbs
  name: Centraal Bureau voor de Statistiek
  body: cbs
  oin: "00000099000000007000"
  api_keys: ["{HASH}"]
  delivery:
    kind: https
    url: https://levering.cbs.example/duo
    client_cert: certs/client.pem
    client_key: certs/client.key
    verify: certs/ca.pem
""")
    partner = load_partners(path).by_id("cbs")
    assert isinstance(partner.delivery, HttpsDelivery)
    assert partner.delivery.client_cert == certs / "client.pem"
    assert partner.api_key_hashes == (HASH,)
    assert HASH not in repr(partner)
    destination = destination_for(partner, drop_root=tmp_path / "drop")
    assert isinstance(destination, HttpsDestination)
    assert destination.cert == (str(certs / "client.pem"), str(certs / "client.key"))
    assert destination.verify == str(certs / "ca.pem")
    destination.close()


def test_a_missing_certificate_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = _write(tmp_path, """
- id: cbs
  name: CBS
  body: cbs
  oin: "00000099000000007000"
  delivery: {kind: https, url: "https://levering.cbs.example/duo", client_cert: nope.pem}
""")
    partner = load_partners(path).by_id("cbs")
    with pytest.raises(DestinationConfigError):
        destination_for(partner, drop_root=tmp_path)

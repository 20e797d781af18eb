"""Keyed pseudonyms of subjects, and where their key comes from."""

from __future__ import annotations

import hashlib
import hmac
import stat
import time
from pathlib import Path

import pytest

from legal_bases.errors import DisclosureError
from legal_bases.request import Subject
from legal_bases.vocabulary import SubjectIdType
from records.data_keys import DataKey
from records.data_keys import subjects_digest as keyed_digest
from records.errors import PseudonymKeyError
from records.pseudonym import Pseudonymizer, subjects_digest
from records.settings import load_settings

KEY = bytes(range(32))


@pytest.fixture(autouse=True)
def _no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DISCLOSURE_PSEUDONYM_KEY", "DISCLOSURE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_a_pseudonym_is_the_hmac_sha256_of_the_id_type_and_number() -> None:
    expected = hmac.new(KEY, b"bsn:111222333", hashlib.sha256).hexdigest()
    assert Pseudonymizer(KEY).subject("bsn", "111222333") == expected


def test_the_same_subject_always_gets_the_same_pseudonym() -> None:
    one, two = Pseudonymizer(KEY), Pseudonymizer(KEY)
    assert one.subject("bsn", "123456782") == two.subject("bsn", "123456782")
    assert one.subject("bsn", "123456782") == one.subject("bsn", "123456782")


def test_the_pseudonym_depends_on_the_key_the_number_and_the_kind_of_number() -> None:
    base = Pseudonymizer(KEY).subject("bsn", "111222333")
    assert Pseudonymizer(bytes(32)).subject("bsn", "111222333") != base
    assert Pseudonymizer(KEY).subject("bsn", "123456782") != base
    assert Pseudonymizer(KEY).subject("onderwijsnummer", "111222333") != base


def test_a_parsed_subject_is_pseudonymised_by_its_type_and_number() -> None:
    subject = Subject(SubjectIdType.ONDERWIJSNUMMER, "101234567")
    pseudonymizer = Pseudonymizer(KEY)
    assert pseudonymizer.of(subject) == pseudonymizer.subject("onderwijsnummer", "101234567")


def test_a_pseudonym_is_64_hex_digits_and_does_not_contain_the_number() -> None:
    pseudonym = Pseudonymizer(KEY).subject("bsn", "111222333")
    assert len(pseudonym) == 64
    assert set(pseudonym) <= set("0123456789abcdef")
    assert "111222333" not in pseudonym


def test_a_key_shorter_than_32_bytes_is_refused() -> None:
    with pytest.raises(PseudonymKeyError, match="32 bytes"):
        Pseudonymizer(b"short")
    assert issubclass(PseudonymKeyError, DisclosureError)


def test_the_key_does_not_show_in_the_repr() -> None:
    assert KEY.hex() not in repr(Pseudonymizer(KEY))


def test_100000_subjects_are_pseudonymised_in_well_under_a_second() -> None:
    pseudonymizer = Pseudonymizer(KEY)
    numbers = [f"{n:09d}" for n in range(100_000)]
    started = time.perf_counter()
    pseudonyms = [pseudonymizer.subject("bsn", n) for n in numbers]
    elapsed = time.perf_counter() - started
    assert len(set(pseudonyms)) == 100_000
    assert elapsed < 2.0, f"took {elapsed:.2f} s"


def test_the_subjects_digest_does_not_depend_on_order() -> None:
    assert subjects_digest(["b", "a", "c"]) == subjects_digest(["c", "b", "a"])
    assert subjects_digest(["a", "b"]) != subjects_digest(["a", "b", "c"])


def test_the_keyed_subjects_digest_does_not_depend_on_order_but_on_the_data_key() -> None:
    """What a request_received event holds since 0.8.0: the digest under the request's data key
    (records/data_keys.py), which confirms no guessed subject once that key is shredded."""
    key, other = DataKey("r-1", bytes(32)), DataKey("r-1", bytes(range(32)))
    assert keyed_digest(key, ["b", "a", "c"]) == keyed_digest(key, ["c", "b", "a"])
    assert keyed_digest(key, ["a", "b"]) != keyed_digest(key, ["a", "b", "c"])
    assert keyed_digest(key, ["a", "b"]) != keyed_digest(other, ["a", "b"])
    assert keyed_digest(key, ["a", "b"]) != subjects_digest(["a", "b"])


# --- the key's source -------------------------------------------------------------------------

def test_without_a_configured_key_a_private_key_file_is_made_once_and_then_reused(
        tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data" / "deeper")
    key = settings.pseudonym_key_bytes()
    key_file = tmp_path / "data" / "deeper" / "pseudonym.key"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key) == 32
    assert bytes.fromhex(key_file.read_text().strip()) == key
    assert load_settings(data_dir=tmp_path / "data" / "deeper").pseudonym_key_bytes() == key
    assert [p.name for p in key_file.parent.iterdir()] == ["pseudonym.key"]  # no stray temp file


def test_two_data_folders_get_different_keys(tmp_path: Path) -> None:
    one = load_settings(data_dir=tmp_path / "one").pseudonym_key_bytes()
    two = load_settings(data_dir=tmp_path / "two").pseudonym_key_bytes()
    assert one != two


def test_a_configured_key_is_used_and_no_key_file_is_made(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, pseudonym_key=KEY.hex())
    assert settings.pseudonym_key_bytes() == KEY
    assert not (tmp_path / "pseudonym.key").exists()
    assert KEY.hex() not in repr(settings)
    pseudonymizer = Pseudonymizer.from_settings(settings)
    assert pseudonymizer.subject("bsn", "111222333") == Pseudonymizer(KEY).subject(
        "bsn", "111222333")


def test_the_key_can_come_from_the_environment(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCLOSURE_PSEUDONYM_KEY", KEY.hex())
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "env-data"))
    settings = load_settings()
    assert settings.data_dir == tmp_path / "env-data"
    assert settings.pseudonym_key_bytes() == KEY


@pytest.mark.parametrize("bad", ["not hex at all", "abcd", "zz" * 32])
def test_a_malformed_or_short_configured_key_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(PseudonymKeyError):
        load_settings(data_dir=tmp_path, pseudonym_key=bad).pseudonym_key_bytes()


def test_a_damaged_key_file_is_refused_rather_than_replaced(tmp_path: Path) -> None:
    (tmp_path / "pseudonym.key").write_text("garbage\n")
    with pytest.raises(PseudonymKeyError, match=r"pseudonym\.key"):
        load_settings(data_dir=tmp_path).pseudonym_key_bytes()
    assert (tmp_path / "pseudonym.key").read_text() == "garbage\n"


def test_recipient_codes_differ_per_recipient_and_from_the_audit_pseudonym() -> None:
    pseudonyms = Pseudonymizer(bytes(range(32)))
    subject = Subject(SubjectIdType.BSN, "111222333")
    inspectie = pseudonyms.for_recipient("inspectie")
    research = pseudonyms.for_recipient("onderzoek-nl")
    assert inspectie(subject) == inspectie(Subject(SubjectIdType.BSN, "111222333"))
    assert len(inspectie(subject)) == 32
    assert inspectie(subject) != research(subject)
    assert inspectie(subject) not in pseudonyms.of(subject)
    assert inspectie(subject) != inspectie(Subject(SubjectIdType.BSN, "123456782"))

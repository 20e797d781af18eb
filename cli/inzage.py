"""``disclosure inzage``: answer a data subject's request under AVG art. 15.

``disclosure inzage --bsn N`` (or ``--onderwijsnummer N``, or both for one person; ``-`` reads
the number from standard input, which keeps it out of the shell history) finds every request
that named the person (by their pseudonym: :mod:`records.inzage`) and writes, into ``--out DIR``
(default ``<data_dir>/inzage``, beside the ledger, not the current folder: the files are
personal data and belong with the other personal data the engine keeps):

* for the data subject: ``inzage-<day>-<ref>.md``, ``.html`` (self-contained, printable: the
  browser's print makes the PDF) and ``.json`` — per disclosure to whom (partner and body), when,
  which categories, under which ground (law, article, link) and for what purpose; refused
  requests and requests still being decided each in their own list. The three files are
  rendered from one document (:mod:`flows.audit.inzage_render`), so they say the same. The
  person's number appears masked only.
* for the privacy officer only: ``inzage-<day>-<ref>-restricted-privacy-officer.md`` and
  ``.json`` — the requests kept out of the subject's files under UAVG art. 41 (criminal
  investigations), each with the citation of its restriction, so the officer can weigh
  UAVG art. 41 lid 2. Written every time, saying "none" when there are none.

``<ref>`` is the start of the person's pseudonym, never their number. Standard output gives the
file paths and counts, and the masked number only; the log gets counts only. Each answer is put
on the record (audit event ``inzage_answered``); an answer that cannot be recorded is not given.

An inzage concerns one person. Given both a BSN and an onderwijsnummer, the command answers only
when the source register records them as one person's (one register entry whose
``identificerende_nummers`` hold both, :func:`identity_problem`); otherwise — two persons, only
one of the numbers known, neither — it refuses (exit 2) and writes and records nothing: the
privacy officer must establish who is asking first, then ask with that person's number(s). A
register that cannot be read is exit 1, again with nothing written.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import make_url
from sqlmodel import Session

from cli.arguments import UsageError
from connectors.errors import RegisterError
from connectors.partners import load_partners
from connectors.register import SqlRegister, make_register_engine
from flows.audit.inzage_render import ID_TYPE_LABELS, answer_files
from flows.logs import get_logger
from flows.runtime import open_ledger, partners_file
from legal_bases.accountability import Accountability, load_accountability
from legal_bases.errors import DisclosureError
from legal_bases.identifiers import bsn_problem, onderwijsnummer_problem
from legal_bases.request import Subject
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Category, SubjectIdType
from records.inzage import find_requests, record_inzage
from records.models import ACTOR_LENGTH
from records.pseudonym import Pseudonymizer
from records.retention import shredded_so_far
from records.settings import Settings, load_settings


class InzageError(DisclosureError):
    """Raised when an inzage answer cannot be written (its folder or files)."""


@dataclass(frozen=True)
class Written:
    """Where an answer went and what it holds."""

    subject_files: tuple[Path, ...]
    officer_files: tuple[Path, ...]
    counts: Mapping[str, int]
    restricted: int


def answer(*, session: Session, subjects: Sequence[Subject], pseudonymizer: Pseudonymizer,
           out_dir: Path, partner_names: Mapping[str, str], prepared_at: datetime,
           table: GroundTable, accountability: Accountability) -> Written:
    """Find the person's requests and write the subject's and the privacy officer's files."""
    pseudonyms = [pseudonymizer.of(s) for s in subjects]
    entries = find_requests(session=session, pseudonyms=pseudonyms, table=table,
                            accountability=accountability)
    files = answer_files(entries, subjects, partner_names, prepared_at, pseudonyms[0],
                         shredded=shredded_so_far(session=session).to_dict())
    _make_private_dir(out_dir)
    for name, text in (*files.subject, *files.officer):
        _write_private(out_dir / name, text)
    return Written(subject_files=tuple(out_dir / name for name, _ in files.subject),
                   officer_files=tuple(out_dir / name for name, _ in files.officer),
                   counts=files.counts, restricted=files.restricted)


def _make_private_dir(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InzageError(f"cannot create the folder {folder}: {exc.strerror}") from exc


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read: these files are personal data."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise InzageError(f"cannot write {path}: {exc.strerror}") from exc


def _subjects(args: argparse.Namespace) -> list[Subject]:
    given = [(SubjectIdType.BSN, args.bsn, bsn_problem),
             (SubjectIdType.ONDERWIJSNUMMER, args.onderwijsnummer, onderwijsnummer_problem)]
    if all(number is None for _, number, _ in given):
        raise UsageError("inzage needs --bsn or --onderwijsnummer (or both, for one person)")
    if args.bsn == "-" and args.onderwijsnummer == "-":
        raise UsageError("only one of --bsn and --onderwijsnummer can be read from standard "
                         "input")
    subjects = []
    for id_type, option, problem_of in given:
        if option is None:
            continue
        number = (sys.stdin.readline() if option == "-" else option).strip()
        problem = problem_of(number)
        if problem is not None:
            # The message names the option and the problem, never the number given.
            raise UsageError(f"--{id_type.value} is not a valid "
                             f"{ID_TYPE_LABELS[id_type.value]}: {problem}")
        subjects.append(Subject(id_type, number))
    return subjects


def identity_problem(subjects: Sequence[Subject],
                     records: Sequence[Mapping[str, Any]]) -> str | None:
    """Why ``subjects`` (a BSN and an onderwijsnummer) cannot be taken as one person's, or None.

    ``records`` are the register's entries of those numbers (a fetch of
    ``identificerende_nummers``): they are one person's only when one entry is found and it
    records both numbers as that person's. Two entries are two persons. The reason names the
    kinds of number, never a number.
    """
    wanted = {s.id_type.value: s.number for s in subjects}
    labels = [ID_TYPE_LABELS[t] for t in wanted]
    if not records:
        return f"the register knows neither the {labels[0]} nor the {labels[1]}"
    if len(records) > 1:
        return (f"the register holds the {labels[0]} and the {labels[1]} as two different "
                "persons")
    [record] = records
    numbers = record.get(Category.IDENTIFICERENDE_NUMMERS.value) or {}
    if all(numbers.get(t) == n for t, n in wanted.items()):
        return None
    known = next(iter(record["subject"]))
    other = next(t for t in wanted if t != known)
    return (f"the register knows the {ID_TYPE_LABELS[known]}, but not the "
            f"{ID_TYPE_LABELS[other]} given as the same person's")


def _check_one_person(settings: Settings, subjects: Sequence[Subject]) -> None:
    """Refuse (:class:`UsageError`) unless the register records ``subjects`` as one person's;
    :class:`InzageError` if the register cannot be read. Reads the register's identifiers only."""
    url = make_url(settings.resolved_register_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        raise InzageError("cannot check that the BSN and the onderwijsnummer are one person's: "
                          f"the register {url.database or '(in memory)'} does not exist; set "
                          "DISCLOSURE_REGISTER_URL")
    engine = make_register_engine(url.render_as_string(hide_password=False))
    try:
        found = SqlRegister(engine).fetch(subjects=subjects,
                                          categories=[Category.IDENTIFICERENDE_NUMMERS],
                                          pseudonymise=None)
    except RegisterError as exc:
        raise InzageError("cannot check that the BSN and the onderwijsnummer are one "
                          f"person's: {exc}") from None
    finally:
        engine.dispose()
    problem = identity_problem(subjects, found.records)
    if problem is not None:
        raise UsageError(f"an inzage concerns one person, but {problem}: establish who the "
                         "data subject is first, then ask with that person's number(s). "
                         "Nothing was written or recorded.")


def cmd_inzage(args: argparse.Namespace) -> int:
    subjects = _subjects(args)
    settings = load_settings()
    if len(subjects) > 1:
        _check_one_person(settings, subjects)
    out_dir = args.out if args.out is not None else settings.data_dir / "inzage"
    partners = {p.id: p.name for p in load_partners(partners_file(settings))}
    engine = open_ledger(settings)
    pseudonymizer = Pseudonymizer.from_settings(settings)
    now = datetime.now(UTC)
    try:
        with Session(engine) as session, session.begin():
            written = answer(session=session, subjects=subjects, pseudonymizer=pseudonymizer,
                             out_dir=out_dir, partner_names=partners, prepared_at=now,
                             table=settings.ground_table(), accountability=load_accountability())
            try:  # fail closed: an answer that is not on the record is not given
                seq = record_inzage(
                    session=session, pseudonyms=[pseudonymizer.of(s) for s in subjects],
                    counts={**written.counts, "restricted": written.restricted},
                    actor=args.requested_by, answered_at=now)
            except Exception:
                for path in (*written.subject_files, *written.officer_files):
                    path.unlink(missing_ok=True)
                raise
    finally:
        engine.dispose()
    counts = written.counts
    get_logger("inzage").info("inzage_answered", disclosures=counts["disclosures"],
                              refused=counts["refused"], pending=counts["pending"],
                              restricted=written.restricted)
    person = ", ".join(f"{ID_TYPE_LABELS[s.id_type.value]} {s.masked}" for s in subjects)
    lines = [f"Inzage for {person}: {counts['disclosures']} disclosure(s), "
             f"{counts['refused']} refused, {counts['pending']} still being decided; "
             f"{written.restricted} restricted request(s) for the privacy officer.",
             "For the data subject (the HTML file prints to PDF from a browser):",
             *(f"  {p}" for p in written.subject_files),
             "For the privacy officer only (UAVG art. 41; never send to the data subject):",
             *(f"  {p}" for p in written.officer_files),
             f"On the record as audit event {seq} (inzage_answered, by {args.requested_by})."]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _actor(text: str) -> str:
    if not 0 < len(text.strip()) <= ACTOR_LENGTH:
        raise argparse.ArgumentTypeError(f"must be 1 to {ACTOR_LENGTH} characters")
    return text.strip()


def register(sub: Any) -> None:
    """Add ``inzage`` to the ``disclosure`` command line."""
    parser = sub.add_parser(
        "inzage", help="answer a data subject's access request (AVG art. 15)",
        description="Write a person's inzage answer (Markdown, printable HTML, JSON) and a "
                    "separate file for the privacy officer with the requests kept from them "
                    "under UAVG art. 41. Give --bsn, --onderwijsnummer or both (one person: "
                    "both only when the source register records them as one person's, "
                    "else exit 2); '-' reads the number from standard input.")
    parser.add_argument("--bsn", default=None, metavar="N", help="the person's BSN (or -)")
    parser.add_argument("--onderwijsnummer", default=None, metavar="N",
                        help="the person's onderwijsnummer (or -)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder for the files (default: <data_dir>/inzage; "
                             "DISCLOSURE_DATA_DIR sets data_dir)")
    parser.add_argument("--requested-by", default=getpass.getuser(), type=_actor, metavar="WHO",
                        help="who answers (recorded with the look-up; default: the login name)")
    parser.set_defaults(handler=cmd_inzage)

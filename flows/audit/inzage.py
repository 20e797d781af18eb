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
  rendered from one document, so they say the same. The person's number appears masked only.
* for the privacy officer only: ``inzage-<day>-<ref>-restricted-privacy-officer.md`` and
  ``.json`` — the requests kept out of the subject's files under UAVG art. 41 (criminal
  investigations), each with the citation of its restriction, so the officer can weigh
  UAVG art. 41 lid 2. Written every time, saying "none" when there are none.

``<ref>`` is the start of the person's pseudonym, never their number. Standard output gives the
file paths and counts, and the masked number only; the log gets counts only.
"""

from __future__ import annotations

import argparse
import getpass
import html
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session

from connectors.partners import load_partners
from flows.logs import get_logger
from flows.runtime import open_ledger, partners_file
from legal_bases.accountability import Accountability, load_accountability
from legal_bases.citation import Citation
from legal_bases.errors import DisclosureError
from legal_bases.identifiers import bsn_problem, mask, onderwijsnummer_problem
from legal_bases.request import Subject
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Category, Outcome, ReasonCode, SubjectIdType
from records.inzage import EntryKind, InzageEntry, find_requests, record_inzage
from records.ledger import RECEIPT_TIMEZONE
from records.models import ACTOR_LENGTH
from records.pseudonym import Pseudonymizer
from records.settings import load_settings

DOCUMENT_FORMAT = 1
CONTROLLER = ("Dienst Uitvoering Onderwijs (DUO), on behalf of the Minister of Education, "
              "Culture and Science (OCW)")
#: Characters of the pseudonym in the file names: enough to tell two people's files apart.
_REF_CHARS = 12

ID_TYPE_LABELS = {SubjectIdType.BSN.value: "BSN",
                  SubjectIdType.ONDERWIJSNUMMER.value: "onderwijsnummer"}
BODY_LABELS = {
    "belastingdienst": "Belastingdienst (tax administration)",
    "toeslagen": "Dienst Toeslagen (benefits agency)",
    "svb": "Sociale Verzekeringsbank (SVB)",
    "uwv": "UWV (employee insurance agency)",
    "gemeente": "a municipality (gemeente)",
    "openbaar_ministerie": "Openbaar Ministerie (public prosecutor)",
    "cbs": "Centraal Bureau voor de Statistiek (CBS)",
    "inspectie_onderwijs": "Inspectie van het Onderwijs (education inspectorate)",
    "onderwijsinstelling": "an educational institution",
    "onderzoeksinstelling": "a designated research institution",
}
#: DESIGN.md section 4: what each category holds.
CATEGORY_LABELS: dict[str, str] = {
    Category.PERSONALIA: "name, address, place of residence, phone, e-mail",
    Category.OPLEIDINGSGEGEVENS: "school or institution, programme, enrolment, diplomas",
    Category.FINANCIELE_GEGEVENS: "grants and their amounts, income, bank account number",
    Category.IDENTIFICERENDE_NUMMERS: "BSN, onderwijsnummer",
    Category.CONTACTHISTORIE: "your contacts with DUO (e-mail, calls)",
    Category.ACCOUNTGEGEVENS: "your Mijn DUO account data",
    Category.TECHNISCHE_GEGEVENS: "IP address and similar technical data",
    Category.NATIONALITEIT: "nationality (a special category)",
    Category.GEZONDHEID: "health data (a special category)",
    Category.STRAFRECHTELIJKE_GEGEVENS: "criminal-record data (a special category)",
}
REASON_LABELS: dict[str, str] = {
    ReasonCode.GROUND_APPLIES: "the legal ground applies",
    ReasonCode.INVALID_REQUEST: "the request was not valid",
    ReasonCode.UNKNOWN_GROUND: "the request cited a legal ground DUO does not know",
    ReasonCode.GROUND_NOT_IN_FORCE: "the legal ground was not in force on the date concerned",
    ReasonCode.REQUESTER_NOT_ENTITLED: "the organisation is not entitled under that legal ground",
    ReasonCode.PURPOSE_NOT_COVERED: "the legal ground does not cover the purpose given",
    ReasonCode.MISSING_CASE_REFERENCE: "the request lacked the case reference the law requires",
    ReasonCode.MISSING_AUTHORISATION: "the request lacked an authorisation the law requires",
    ReasonCode.BULK_NOT_ALLOWED: "the legal ground allows requests about one person only",
    ReasonCode.SPECIAL_CATEGORY_NOT_ALLOWED: "the legal ground does not allow special "
                                             "categories of data",
    ReasonCode.CATEGORY_NOT_COVERED: "the legal ground does not cover some of the data asked for",
    ReasonCode.NOTHING_TO_RELEASE: "nothing that was asked for may be given",
    ReasonCode.WITHHELD_BY_REVIEWER: "a legal reviewer withheld data",
    ReasonCode.REJECTED_BY_REVIEWER: "a legal reviewer refused the request",
}
#: UAVG art. 41 lid 2 onder a-h, paraphrased: what applying a restriction must take into account
#: (the same list as AVG art. 23(2); legal-reference.md section 1).
WEIGHING = (
    "the purposes of the processing or the categories of processing",
    "the categories of personal data",
    "the scope of the restriction",
    "the safeguards against abuse or unlawful access or transfer",
    "the controller or categories of controllers",
    "the retention periods and the applicable safeguards",
    "the risks to the rights and freedoms of the data subject",
    "the data subject's right to be informed of the restriction, unless that may be "
    "prejudicial to its purpose",
)


class InzageError(DisclosureError):
    """Raised when an inzage answer cannot be written (its folder or files)."""


@dataclass(frozen=True)
class Written:
    """Where an answer went and what it holds."""

    subject_files: tuple[Path, ...]
    officer_files: tuple[Path, ...]
    counts: Mapping[str, int]
    restricted: int


# -- the documents (one dict each; Markdown and HTML are rendered from it) ----------------------

def _local(at: datetime) -> str:
    """A timestamp in Dutch time, ISO 8601 with its offset, to the second."""
    return at.astimezone(RECEIPT_TIMEZONE).isoformat(timespec="seconds")


def _citation(citation: Citation | None) -> dict[str, Any] | None:
    if citation is None:
        return None
    return {"law": citation.law, "article": citation.article, "paragraph": citation.paragraph,
            "text": citation.short, "url": citation.url}


def entry_dict(entry: InzageEntry, partner_names: Mapping[str, str], *,
               for_officer: bool = False) -> dict[str, Any]:
    """One request as the documents show it (the officer's adds the internal references)."""
    decision, ground = entry.decision, entry.ground
    out: dict[str, Any] = {
        "request_id": entry.request_id,
        "received_on": entry.received_at.astimezone(RECEIPT_TIMEZONE).date().isoformat(),
        "recipient": {
            "partner_id": entry.partner_id,
            "name": partner_names.get(entry.partner_id, entry.partner_id),
            "body": entry.requester_body,
            "body_name": BODY_LABELS.get(entry.requester_body, entry.requester_body),
        },
        "purpose": entry.purpose,
        "ground": {
            "id": ground.ground_id if ground else entry.claimed_ground,
            "title": ground.title if ground else None,
            "version": ground.version_id if ground else None,
            "citation": _citation(ground.citation if ground else None),
        },
        "outcome": decision.outcome if decision else None,
        "categories_released": list(decision.released) if decision else [],
        "categories_withheld": list(decision.withheld) if decision else [],
        "reasons": [c for c in decision.reason_codes if c != ReasonCode.GROUND_APPLIES]
                   if decision else [],
        "decided_at": _local(decision.decided_at) if decision else None,
        "decided_by": (None if decision is None
                       else "legal_reviewer" if decision.by_reviewer else "engine"),
        "delivered_at": [_local(d.delivered_at) for d in entry.deliveries],
        "identifiers_named": [ID_TYPE_LABELS.get(t, t) for t in entry.id_types],
        "pseudonymised": bool(ground and ground.pseudonymise),
    }
    if for_officer:
        out |= {"reference": entry.reference,
                "state": entry.state,
                "kind": entry.kind.value,
                "decided_by_ids": decision.decided_by if decision else None,
                "restriction": _citation(entry.restriction)}
    return out


def subject_document(entries: Sequence[InzageEntry], subjects: Sequence[Subject],
                     partner_names: Mapping[str, str], prepared_at: datetime) -> dict[str, Any]:
    """The data subject's answer: their requests, none of the restricted ones."""
    shown = [e for e in entries if not e.restricted]
    lists = {kind: [entry_dict(e, partner_names) for e in shown if e.kind is kind]
             for kind in EntryKind}
    return {
        "document": "inzage",
        "format": DOCUMENT_FORMAT,
        "controller": CONTROLLER,
        "prepared_at": _local(prepared_at),
        "subject": _subject_ids(subjects),
        "counts": {"disclosures": len(lists[EntryKind.DISCLOSURE]),
                   "refused": len(lists[EntryKind.REFUSED]),
                   "pending": len(lists[EntryKind.PENDING])},
        "disclosures": lists[EntryKind.DISCLOSURE],
        "refused": lists[EntryKind.REFUSED],
        "pending": lists[EntryKind.PENDING],
    }


def officer_document(entries: Sequence[InzageEntry], subjects: Sequence[Subject],
                     partner_names: Mapping[str, str], prepared_at: datetime,
                     subject_files: Sequence[str]) -> dict[str, Any]:
    """The privacy officer's list of the requests kept out of the subject's answer."""
    restricted = [entry_dict(e, partner_names, for_officer=True)
                  for e in entries if e.restricted]
    return {
        "document": "inzage-restricted-privacy-officer",
        "format": DOCUMENT_FORMAT,
        "confidential": True,
        "prepared_at": _local(prepared_at),
        "subject": _subject_ids(subjects),
        "subject_answer_files": list(subject_files),
        "weighing_uavg_41_lid_2": list(WEIGHING),
        "count": len(restricted),
        "restricted": restricted,
    }


def _subject_ids(subjects: Sequence[Subject]) -> list[dict[str, str]]:
    return [{"type": ID_TYPE_LABELS[s.id_type.value], "number_masked": mask(s.number)}
            for s in subjects]


# -- rendering: a few block kinds, each rendered to Markdown and to HTML ------------------------

@dataclass(frozen=True)
class _Heading:
    level: int
    text: str


@dataclass(frozen=True)
class _Para:
    text: str


@dataclass(frozen=True)
class _Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class _Fields:
    rows: tuple[tuple[str, str, str | None], ...]  # label, value, link (url) or None


_Block = _Heading | _Para | _Bullets | _Fields


def _when(iso: str | None) -> str:
    """``2026-03-04T13:01:02+01:00`` as people read it: ``2026-03-04 13:01``."""
    return iso[:16].replace("T", " ") if iso else "—"


def _categories(values: Iterable[str]) -> str:
    return ", ".join(values) or "none"


def _ground_line(entry: Mapping[str, Any]) -> tuple[str, str | None]:
    ground = entry["ground"]
    citation = ground["citation"]
    if citation is None:
        return f"{ground['id'] or 'none given'} (not a ground DUO applies)", None
    return f"{citation['text']} ({ground['id']}: {ground['title']})", citation["url"]


def _entry_rows(entry: Mapping[str, Any], *, for_officer: bool) -> _Fields:
    recipient = entry["recipient"]
    ground, url = _ground_line(entry)
    delivered = ", ".join(_when(at) for at in entry["delivered_at"])
    decided_by = {"engine": "automatically, by DUO's rules engine",
                  "legal_reviewer": "by a legal reviewer of DUO",
                  None: "not yet decided"}[entry["decided_by"]]
    rows: list[tuple[str, str, str | None]] = [
        ("Recipient", f"{recipient['name']} — {recipient['body_name']}", None),
        ("Received on", entry["received_on"], None),
        ("Purpose", entry["purpose"] or "—", None),
        ("Legal ground", ground, url),
        ("Ground version", entry["ground"]["version"] or "—", None),
        ("Categories given", _categories(entry["categories_released"]), None),
        ("Categories withheld", _categories(entry["categories_withheld"]), None),
        ("Decision", f"{entry['outcome']}, {_when(entry['decided_at'])}, {decided_by}"
         if entry["outcome"] not in (None, Outcome.NEEDS_REVIEW.value) else
         f"waiting for a legal reviewer since {_when(entry['decided_at'])}", None),
    ]
    if entry["reasons"]:
        rows.append(("Why", "; ".join(REASON_LABELS.get(c, c) for c in entry["reasons"]),
                     None))
    rows.append(("Delivered", delivered or "not delivered", None))
    rows.append(("Identifier named" if for_officer else "Your identifier in the request",
                 ", ".join(entry["identifiers_named"]), None))
    if entry["pseudonymised"]:
        rows.append(("Pseudonymised", "yes: the recipient got a code instead of your number",
                     None))
    if for_officer:
        restriction = entry["restriction"]
        rows += [("Partner reference", entry["reference"] or "—", None),
                 ("Decided by", entry["decided_by_ids"] or "—", None),
                 ("State", entry["state"] or "—", None),
                 ("Restricted under", restriction["text"], restriction["url"])]
    rows.append(("Request id", entry["request_id"], None))
    return _Fields(tuple(rows))


def _entry_title(number: int, entry: Mapping[str, Any]) -> str:
    return f"{number}. {entry['recipient']['name']}, {entry['received_on']}"


def _subject_blocks(doc: Mapping[str, Any]) -> list[_Block]:
    ids = ", ".join(f"{s['type']} {s['number_masked']}" for s in doc["subject"])
    counts = doc["counts"]
    blocks: list[_Block] = [
        _Heading(1, "Inzage: requests for your personal data received by DUO"),
        _Para("This is DUO's answer to your request under article 15 of the General Data "
              "Protection Regulation (AVG): which organisations asked DUO for data about you, "
              "what DUO gave them, when, under which legal ground and for what purpose."),
        _Fields((("Person", ids, None), ("Controller", doc["controller"], None),
                 ("Prepared on", _when(doc["prepared_at"]), None))),
        _Heading(2, "Summary"),
    ]
    if not (counts["disclosures"] or counts["refused"] or counts["pending"]):
        blocks.append(_Para("DUO's disclosure records hold no request from another "
                             "organisation that named you. No data about you were given to "
                             "another organisation through them."))
    blocks.append(_Bullets((
        f"Disclosures (data given, or about to be given, to another organisation): "
        f"{counts['disclosures']}",
        f"Requests refused (nothing given): {counts['refused']}",
        f"Requests still being decided: {counts['pending']}")))
    sections = (
        ("disclosures", "Disclosures",
         "Each organisation below received, or is about to receive, the categories of data "
         "named."),
        ("refused", "Refused requests",
         "These organisations asked for data about you; DUO gave them nothing."),
        ("pending", "Requests still being decided",
         "A legal reviewer of DUO has not yet decided these requests; nothing has been given."),
    )
    for key, title, intro in sections:
        blocks.append(_Heading(2, f"{title} ({len(doc[key])})"))
        if not doc[key]:
            blocks.append(_Para("None."))
            continue
        blocks.append(_Para(intro))
        for number, entry in enumerate(doc[key], start=1):
            blocks += [_Heading(3, _entry_title(number, entry)),
                       _entry_rows(entry, for_officer=False)]
    used = sorted({c for key, _, _ in sections for e in doc[key]
                   for c in (*e["categories_released"], *e["categories_withheld"])})
    if used:
        blocks.append(_Heading(2, "What the categories mean"))
        blocks.append(_Bullets(tuple(f"{c}: {CATEGORY_LABELS.get(c, c)}"
                                     for c in used)))
    blocks += [
        _Heading(2, "Your rights"),
        _Para("The data came from DUO's own records. You may ask DUO to correct or erase data "
              "(AVG art. 16 and 17), to restrict their processing (art. 18), or object to it "
              "(art. 21), and you may complain to the Autoriteit Persoonsgegevens. How long DUO "
              "keeps data is set out in DUO's privacy statement. Quote the request id when you "
              "ask DUO about a request."),
    ]
    return blocks


def _officer_blocks(doc: Mapping[str, Any]) -> list[_Block]:
    ids = ", ".join(f"{s['type']} {s['number_masked']}" for s in doc["subject"])
    blocks: list[_Block] = [
        _Heading(1, "Inzage: restricted requests — for the privacy officer only"),
        _Para("CONFIDENTIAL. Do not send this file to the data subject. It lists the requests "
              "about this person that were kept out of their inzage answer because a "
              "restriction under UAVG art. 41 applies (prevention, investigation and "
              "prosecution of criminal offences). Weigh, per request, whether the restriction "
              "is still necessary and proportionate (UAVG art. 41 lid 2)."),
        _Fields((("Person", ids, None), ("Prepared on", _when(doc["prepared_at"]), None),
                 ("Subject's answer", ", ".join(doc["subject_answer_files"]), None))),
        _Heading(2, "To weigh (UAVG art. 41 lid 2)"),
        _Bullets(tuple(doc["weighing_uavg_41_lid_2"])),
        _Heading(2, f"Restricted requests ({doc['count']})"),
    ]
    if not doc["restricted"]:
        blocks.append(_Para("None: every request about this person is in their answer."))
    for number, entry in enumerate(doc["restricted"], start=1):
        blocks += [_Heading(3, _entry_title(number, entry) + f" ({entry['kind']})"),
                   _entry_rows(entry, for_officer=True)]
    return blocks


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[_Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, _Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, _Para):
            out.append(block.text)
        elif isinstance(block, _Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        else:
            lines = ["| | |", "|---|---|"]
            for label, value, url in block.rows:
                shown = f"[{_md_cell(value)}]({url})" if url else _md_cell(value)
                lines.append(f"| {_md_cell(label)} | {shown} |")
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: Georgia, "Times New Roman", serif; max-width: 46em; margin: 2em auto;
       padding: 0 1em; color: #111; line-height: 1.45; }
h1 { font-size: 1.5em; border-bottom: 2px solid #154273; padding-bottom: .3em; }
h2 { font-size: 1.2em; color: #154273; margin-top: 1.6em; }
h3 { font-size: 1.05em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; width: 100%; margin: .4em 0 1em; }
th, td { text-align: left; vertical-align: top; padding: .25em .5em;
         border-bottom: 1px solid #ccc; }
th { width: 14em; font-weight: normal; color: #444; }
a { color: #154273; }
@page { size: A4; margin: 18mm; }
@media print { body { margin: 0; max-width: none; } h2, h3 { break-after: avoid; }
               table { break-inside: avoid; } a { color: #111; }
               a[href]::after { content: " <" attr(href) ">"; font-size: .85em; } }
"""


def to_html(blocks: Sequence[_Block], *, title: str) -> str:
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    for block in blocks:
        if isinstance(block, _Heading):
            out.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, _Para):
            out.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, _Bullets):
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>")
        else:
            rows = []
            for label, value, url in block.rows:
                shown = (f'<a href="{esc(url, quote=True)}">{esc(value)}</a>' if url
                         else esc(value))
                rows.append(f"<tr><th>{esc(label)}</th><td>{shown}</td></tr>")
            out.append("<table>" + "".join(rows) + "</table>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# -- the command ----------------------------------------------------------------------------------

def answer(*, session: Session, subjects: Sequence[Subject], pseudonymizer: Pseudonymizer,
           out_dir: Path, partner_names: Mapping[str, str], prepared_at: datetime,
           table: GroundTable, accountability: Accountability) -> Written:
    """Find the person's requests and write the subject's and the privacy officer's files."""
    pseudonyms = [pseudonymizer.of(s) for s in subjects]
    entries = find_requests(session=session, pseudonyms=pseudonyms, table=table,
                            accountability=accountability)
    day = prepared_at.astimezone(RECEIPT_TIMEZONE).date().isoformat()
    stem = f"inzage-{day}-{pseudonyms[0][:_REF_CHARS]}"
    subject_doc = subject_document(entries, subjects, partner_names, prepared_at)
    subject_files = tuple(out_dir / f"{stem}.{ext}" for ext in ("md", "html", "json"))
    officer_doc = officer_document(entries, subjects, partner_names, prepared_at,
                                   [p.name for p in subject_files])
    officer_files = tuple(out_dir / f"{stem}-restricted-privacy-officer.{ext}"
                          for ext in ("md", "json"))
    blocks = _subject_blocks(subject_doc)
    officer_blocks = _officer_blocks(officer_doc)
    _make_private_dir(out_dir)
    contents = (
        (subject_files[0], to_markdown(blocks)),
        (subject_files[1], to_html(blocks, title="Inzage — DUO")),
        (subject_files[2], _json(subject_doc)),
        (officer_files[0], to_markdown(officer_blocks)),
        (officer_files[1], _json(officer_doc)),
    )
    for path, text in contents:
        _write_private(path, text)
    return Written(subject_files=subject_files, officer_files=officer_files,
                   counts=subject_doc["counts"], restricted=officer_doc["count"])


def _json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


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


def _usage(message: str) -> DisclosureError:
    # cli.main imports this module to register the command, so its UsageError (exit status 2)
    # can only be imported once the command runs.
    from cli.arguments import UsageError  # noqa: PLC0415

    return UsageError(message)


def _subjects(args: argparse.Namespace) -> list[Subject]:
    given = [(SubjectIdType.BSN, args.bsn, bsn_problem),
             (SubjectIdType.ONDERWIJSNUMMER, args.onderwijsnummer, onderwijsnummer_problem)]
    if all(number is None for _, number, _ in given):
        raise _usage("inzage needs --bsn or --onderwijsnummer (or both, for one person)")
    if args.bsn == "-" and args.onderwijsnummer == "-":
        raise _usage("only one of --bsn and --onderwijsnummer can be read from standard input")
    subjects = []
    for id_type, option, problem_of in given:
        if option is None:
            continue
        number = (sys.stdin.readline() if option == "-" else option).strip()
        problem = problem_of(number)
        if problem is not None:
            # The message names the option and the problem, never the number given.
            raise _usage(f"--{id_type.value} is not a valid {ID_TYPE_LABELS[id_type.value]}: "
                         f"{problem}")
        subjects.append(Subject(id_type, number))
    return subjects


def cmd_inzage(args: argparse.Namespace) -> int:
    subjects = _subjects(args)
    settings = load_settings()
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
                    "under UAVG art. 41. Give --bsn, --onderwijsnummer or both (one person); "
                    "'-' reads the number from standard input.")
    parser.add_argument("--bsn", default=None, metavar="N", help="the person's BSN (or -)")
    parser.add_argument("--onderwijsnummer", default=None, metavar="N",
                        help="the person's onderwijsnummer (or -)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder for the files (default: <data_dir>/inzage; "
                             "DISCLOSURE_DATA_DIR sets data_dir)")
    parser.add_argument("--requested-by", default=getpass.getuser(), type=_actor, metavar="WHO",
                        help="who answers (recorded with the look-up; default: the login name)")
    parser.set_defaults(handler=cmd_inzage)

"""What an inzage answer says, for the data subject and for the privacy officer.

Pure functions of the facts :func:`records.inzage.find_requests` found (no I/O, no Prefect): the
subject's document and the privacy officer's (one dict each, which is also their JSON), rendered
to Markdown and to self-contained printable HTML from a few block kinds, so every file of one
answer says the same. :func:`answer_files` names and renders the five files of one answer;
``disclosure inzage`` (:mod:`cli.inzage`) finds the facts, writes the files and records the
answer. The person's number appears masked only; the file names carry the start of their
pseudonym, never their number.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from legal_bases.citation import Citation
from legal_bases.identifiers import mask
from legal_bases.request import Subject
from legal_bases.vocabulary import Category, Outcome, ReasonCode, SubjectIdType
from records.inzage import EntryKind, InzageEntry
from records.ledger import RECEIPT_TIMEZONE

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
                     partner_names: Mapping[str, str], prepared_at: datetime,
                     shredded: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The data subject's answer: their requests, none of the restricted ones; ``shredded`` is
    what was removed under retention (:meth:`records.retention.ShreddedSoFar.to_dict`)."""
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
        "removed_under_retention": dict(shredded or {"requests_shredded": 0, "first": None,
                                                     "last": None}),
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


def _retention_text(removed: Mapping[str, Any]) -> str:
    """What the answer cannot show: requests whose retention term ended."""
    text = ("DUO keeps the personal data of these records only for the retention term of each "
            "legal ground; when it ends, the data of the request are destroyed and it can no "
            "longer be linked to anyone. ")
    count = removed.get("requests_shredded") or 0
    if not count:
        return text + "No request has been removed this way so far."
    first, last = removed.get("first"), removed.get("last")
    when = f"on {first}" if first == last else f"between {first} and {last}"
    return text + (f"{count} request(s) were removed this way, {when}; whether any of them "
                   "named you can no longer be known, so they are not in this answer.")


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
    blocks.append(_Para(_retention_text(doc["removed_under_retention"])))
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


def to_json(document: Mapping[str, Any]) -> str:
    """A document as its JSON file holds it."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# -- one answer's files ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AnswerFiles:
    """The files of one answer, by name and text, and what they hold."""

    subject: tuple[tuple[str, str], ...]  # (file name, text): .md, .html, .json
    officer: tuple[tuple[str, str], ...]  # (file name, text): .md, .json
    counts: Mapping[str, int]
    restricted: int


def answer_files(entries: Sequence[InzageEntry], subjects: Sequence[Subject],
                 partner_names: Mapping[str, str], prepared_at: datetime,
                 pseudonym: str, *, shredded: Mapping[str, Any] | None = None) -> AnswerFiles:
    """The subject's and the privacy officer's files of one answer.

    ``pseudonym`` is the person's first: the file names carry its start, never their number.
    """
    day = prepared_at.astimezone(RECEIPT_TIMEZONE).date().isoformat()
    stem = f"inzage-{day}-{pseudonym[:_REF_CHARS]}"
    subject_doc = subject_document(entries, subjects, partner_names, prepared_at, shredded)
    subject_names = tuple(f"{stem}.{ext}" for ext in ("md", "html", "json"))
    officer_doc = officer_document(entries, subjects, partner_names, prepared_at,
                                   list(subject_names))
    officer_names = tuple(f"{stem}-restricted-privacy-officer.{ext}" for ext in ("md", "json"))
    blocks = _subject_blocks(subject_doc)
    officer_blocks = _officer_blocks(officer_doc)
    return AnswerFiles(
        subject=tuple(zip(subject_names, (to_markdown(blocks),
                                          to_html(blocks, title="Inzage — DUO"),
                                          to_json(subject_doc)), strict=True)),
        officer=tuple(zip(officer_names, (to_markdown(officer_blocks), to_json(officer_doc)),
                          strict=True)),
        counts=subject_doc["counts"], restricted=officer_doc["count"])

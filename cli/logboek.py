"""``disclosure logboek export``: the disclosures as Logboek Dataverwerkingen records.

``disclosure logboek export --from DATE --to DATE [--out FILE]`` writes JSON Lines (one record
a line; keys sorted, so the same ledger gives the same bytes) to standard output or to FILE.
The period is of delivery days (Dutch calendar days, both ends included): a disclosure is when
the data left DUO, which is what a processing log records. What each line holds:
:mod:`records.logboek`; how it is written: :mod:`flows.audit.logboek_render`. With ``--out`` the
file appears only once complete (written beside it, then renamed), and a summary goes to
standard error; on standard output only the records go.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from sqlmodel import Session

from cli.arguments import UsageError, date_argument
from flows.audit.logboek_render import json_line
from flows.logs import get_logger
from flows.runtime import open_ledger
from legal_bases.accountability import load_accountability
from legal_bases.errors import DisclosureError
from records.logboek import logboek_records, service_resource
from records.settings import load_settings


class LogboekExportError(DisclosureError):
    """Raised when the export file cannot be written."""


def write_lines(records: Iterable[dict[str, Any]], out: TextIO) -> tuple[int, int]:
    """Write records as JSON Lines; return (lines, lines with a data subject)."""
    lines = subjects = 0
    for record in records:
        out.write(json_line(record))
        lines += 1
        subjects += "dpl.core.data_subject_id" in record["attributes"]
    return lines, subjects


def cmd_export(args: argparse.Namespace) -> int:
    if args.to < args.start:
        raise UsageError(f"--to {args.to.isoformat()} is before --from {args.start.isoformat()}")
    settings = load_settings()
    table, accountability = settings.ground_table(), load_accountability()
    engine = open_ledger(settings)
    try:
        with Session(engine) as session:
            records = logboek_records(session=session, start=args.start, end=args.to,
                                      table=table, accountability=accountability,
                                      resource=service_resource())
            if args.out is None:
                try:
                    lines, subjects = write_lines(records, sys.stdout)
                    sys.stdout.flush()
                except BrokenPipeError:
                    # The reader stopped early (`| head`): the export is incomplete, say so
                    # once, and let Python not complain again when it flushes at exit.
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                    sys.stderr.write("disclosure: the reader closed the output; the export "
                                     "is incomplete\n")
                    return 1
            else:
                lines, subjects = _to_file(records, args.out)
    finally:
        engine.dispose()
    get_logger("logboek").info("logboek_exported", start=args.start.isoformat(),
                               end=args.to.isoformat(), lines=lines, subject_lines=subjects,
                               disclosures=lines - subjects)
    if args.out is not None:
        sys.stderr.write(f"{lines} line(s): {lines - subjects} disclosure(s), {subjects} "
                         f"data-subject line(s), delivered {args.start.isoformat()} – "
                         f"{args.to.isoformat()}, in {args.out}\n")
    return 0


def _to_file(records: Iterable[dict[str, Any]], path: Path) -> tuple[int, int]:
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as out:
            counts = write_lines(records, out)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise LogboekExportError(f"cannot write {path}: {exc.strerror}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return counts


def register(sub: Any) -> None:
    """Add ``logboek export`` to the ``disclosure`` command line."""
    logboek = sub.add_parser("logboek", help="the disclosures as Logboek Dataverwerkingen records")
    lsub = logboek.add_subparsers(dest="logboek_command", required=True, metavar="ACTION")
    export = lsub.add_parser(
        "export", help="export the disclosures delivered in a period as JSON Lines",
        description="One line per disclosure (subject-less parent span) and one per data "
                    "subject of it (child span), for deliveries made on Dutch calendar days "
                    "from --from through --to. Same ledger, same bytes.")
    export.add_argument("--from", dest="start", type=date_argument, required=True,
                        metavar="DATE", help="first delivery day (YYYY-MM-DD)")
    export.add_argument("--to", type=date_argument, required=True, metavar="DATE",
                        help="last delivery day, included (YYYY-MM-DD)")
    export.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="write to FILE instead of standard output")
    export.set_defaults(handler=cmd_export)

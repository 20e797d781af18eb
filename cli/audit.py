"""``disclosure audit verify|checkpoint|rotate-key``: check the record, anchor its head, rotate
the chain key."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy import make_url
from sqlmodel import Session

from flows.audit.verification import check_record, verify_and_checkpoint
from flows.runtime import open_ledger
from records.chain import record_rotation
from records.chain_keys import new_key_entry
from records.settings import load_settings
from records.verification_report import PROBLEM_CODES, RecordCounts, RecordReport


def _anchor(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` as given to ``--expect-head``: a sequence number and a sha256 in hex."""
    seq, _, digest = text.strip().partition(":")
    seq, digest = seq.strip(), digest.strip().lower()
    if not (seq.isascii() and seq.isdigit()) or int(seq) < 1 or len(digest) != 64 or any(
            c not in "0123456789abcdef" for c in digest):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not SEQ:HASH (a sequence number from 1 and 64 hex digits), as "
            "`disclosure audit verify` printed it")
    return int(seq), digest


def _checked_line(counts: RecordCounts) -> str:
    return (f"{counts.audit_events} audit events (hash chain), {counts.table_snapshots} table "
            f"snapshot(s), {counts.requests} requests with {counts.request_subjects} subjects, "
            f"{counts.decisions} decisions, {counts.deliveries} deliveries, "
            f"{counts.review_answers} review answers, {counts.request_status} request_status "
            "rows")


def _print_record_report(report: RecordReport, where: str) -> None:
    print(f"Verified the record in {where}")
    print(f"  checked     {_checked_line(report.counts)}")
    if report.expected_head is not None:
        seq, digest = report.expected_head
        print(f"  anchor      seq {seq} {digest}: "
              f"{'still in the chain, unchanged' if report.anchor_ok else 'NOT FOUND AS ANCHORED'}")
    head = f"seq {report.head_seq} {report.head_hash}" if report.head_seq else (
        f"(no events) {report.head_hash}")
    print(f"  chain head  {head}")
    print(f"  checkpoints {report.checkpoints} signed checkpoint(s) of earlier heads checked "
          "(the nightly verify-record run and `disclosure audit checkpoint` write them)")
    if report.head_seq:
        print("              write this down outside the database; next time run\n"
              f"              disclosure audit verify --expect-head "
              f"{report.head_seq}:{report.head_hash}\n"
              "              to prove that no event up to it was cut off or rewritten")
    if report.ok:
        extra = f" ({report.warnings} warning(s) below)" if report.warnings else ""
        print(f"\nRecord intact{extra}.")
    else:
        first = report.first_break
        link = (f"; the chain first breaks at seq {first.seq} ({first.code})"
                if first is not None else "; the hash chain itself is unbroken")
        print(f"\nRecord BROKEN: {report.breaks} problem(s){link}.")
    for problem in report.problems:
        label = "warning" if problem.warning else "BROKEN "
        print(f"  {label} {problem.code:<28} {problem.where}: {problem.detail}")
    if report.problems_left_out:
        print(f"  … and {report.problems_left_out} more not listed (every one is counted)")
    found = sorted({p.code for p in report.problems})
    if found:
        print("\nWhat the codes mean:")
        for code in found:
            print(f"  {code:<28} {PROBLEM_CODES.get(code, '')}")


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine = open_ledger(settings)
    try:
        report = check_record(engine, settings, expect_head=args.expect_head)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        where = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
        _print_record_report(report, where)
    return 0 if report.ok else 1


def cmd_audit_checkpoint(_args: argparse.Namespace) -> int:
    report, written = verify_and_checkpoint(load_settings())
    if written is None:
        why = "the record is broken (run `disclosure audit verify`)" if not report.ok else (
            "the chain is empty")
        print(f"disclosure: no checkpoint written: {why}")
        return 1
    checkpoint, path = written
    print(f"Checkpoint of the chain head written to {path}")
    print(f"  head   seq {checkpoint.seq} {checkpoint.hash} (sealed with key "
          f"{checkpoint.key_id})")
    print("  every `disclosure audit verify` now checks that the chain still holds it; keep a "
          "copy elsewhere too")
    return 0


def cmd_audit_rotate_key(_args: argparse.Namespace) -> int:
    settings = load_settings()
    entry = new_key_entry()
    key_id = entry.partition(":")[0]
    if settings.chain_key is not None or settings.chain_key_block:
        where = ("DISCLOSURE_CHAIN_KEY" if settings.chain_key is not None
                 else f"the Prefect Secret block {settings.chain_key_block}")
        print(f"The key ring is in {where}; this command changes nothing there. To rotate:\n"
              f"  1. add this entry at the END of {where}, keeping every earlier one:\n"
              f"       {entry}\n"
              "  2. restart the workers, the API and `disclosure serve`; the next event they "
              f"record is the rotation to {key_id},\n"
              "     sealed with the new key and handed over by the old one.")
        return 0
    path = settings.chain_key_file
    settings.chain_keys()  # the ring exists (made on first use) and reads
    with path.open("a", encoding="ascii") as handle:
        handle.write(entry + "\n")
    engine = open_ledger(settings)
    try:
        with Session(engine) as session, session.begin():
            rotated = record_rotation(session=session)
    finally:
        engine.dispose()
    print(f"New chain key {key_id} added to {path} (the earlier keys stay, to verify the events "
          "they sealed).")
    print("The rotation is on the chain (chain_key_rotated, handed over by the old key)."
          if rotated else "The chain is empty: its first event will be sealed with the new key.")
    print("Restart whatever runs with the old key ring (disclosure serve, the API, workers).")
    return 0


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="check the record")
    asub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = asub.add_parser(
        "verify", help="verify the whole record: the hash chain, the table snapshots and every "
                       "row against its event; exit 1 if anything is broken",
        description="Walk the audit hash chain, check every stored table snapshot, and hold "
                    "every request, subject, decision, delivery and review answer against the "
                    "audit event that recorded it. Prints the chain head to write down outside "
                    "the database. Exit status 0: intact; 1: broken (request_status "
                    "disagreements are warnings only).")
    verify.add_argument("--expect-head", type=_anchor, default=None, metavar="SEQ:HASH",
                        help="a chain head written down earlier: the chain must still hold that "
                             "event with that hash (catches a cut-off or rewritten tail)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=cmd_audit_verify)
    asub.add_parser(
        "checkpoint", help="verify the record, then write a signed checkpoint of its head to the "
                           "checkpoint folder (outside the ledger); exit 1 if broken",
        description="What the nightly verify-record run does: verify the whole record and, if "
                    "it is intact, seal its chain head with the chain key and write it to "
                    "DISCLOSURE_CHECKPOINT_DIR. Every later `audit verify` checks that the chain "
                    "still holds every checkpoint there.").set_defaults(
        handler=cmd_audit_checkpoint)
    asub.add_parser(
        "rotate-key", help="add a new chain key; the rotation is put on the chain",
        description="With the key file (the embedded default) a new key is added to it and the "
                    "rotation recorded at once; with DISCLOSURE_CHAIN_KEY or a Prefect Secret "
                    "block, a new entry is printed, to add there.").set_defaults(
        handler=cmd_audit_rotate_key)

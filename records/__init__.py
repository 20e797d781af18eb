"""The memory of the disclosure engine: the ledger (system of record).

Every request received, every decision and delivery, and an append-only hash chain of audit
events that accounts for them, in one SQL database (SQLite embedded, PostgreSQL at scale). The
record tables are append-only, enforced by database triggers; a correction is a new row.
``request_status`` is the one mutable table: a work-queue projection of the audit events, not
part of the record.

Imports point one way: ``records`` uses ``legal_bases``, never Prefect.
"""

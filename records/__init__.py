"""The memory of the disclosure engine: the ledger (system of record).

Every request received, every decision and delivery, and an append-only hash chain of audit
events that accounts for them, in one SQL database (SQLite embedded, PostgreSQL at scale). The
record tables are append-only, enforced by database triggers; a correction is a new row.
``request_status`` is the one mutable table: a work-queue projection of the audit events, not
part of the record.

Imports point one way: ``records`` uses ``legal_bases``, never Prefect.

Tables modelled beside their logic (legal review, API keys) register themselves in the shared
metadata when their module is imported; importing them here makes ``records.models.metadata``
the whole ledger, whichever module of the package is imported first.
"""

from records import api_keys as _api_keys  # noqa: F401
from records import data_keys as _data_keys  # noqa: F401
from records import legacy_sealing as _legacy_sealing  # noqa: F401
from records import reviews as _reviews  # noqa: F401

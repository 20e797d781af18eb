"""The drop-off flow ``collect-dropoffs``: take in the files partners left in their folders.

Every request in every file is recorded (valid or not); each file goes to ``processed/`` or
``rejected/`` with a report beside it; then the dispatcher is nudged.
"""

from __future__ import annotations

import structlog
from prefect import flow
from prefect.runtime import flow_run

from flows.pipeline.tasks import list_drop_files, take_in
from flows.runtime import runtime
from flows.starts import nudge_dispatcher
from legal_bases import limits


@flow(name="collect-dropoffs", persist_result=False,
      description="Record the request files partners dropped off, file them away with a "
                  "report, and nudge the dispatcher.")
def collect_dropoffs(nudge: bool = True) -> dict[str, int]:
    """Take in every waiting drop file; returns counts."""
    run_id = str(flow_run.id) if flow_run.id else None
    structlog.contextvars.bind_contextvars(flow_run_id=run_id)
    runtime()
    totals = {"files": 0, "valid": 0, "invalid": 0, "not_filed": 0}
    files = list_drop_files()
    for start in range(0, len(files), limits.DROPOFF_FILES_PER_TASK):
        taken = take_in(files[start:start + limits.DROPOFF_FILES_PER_TASK], run_id)
        for key in totals:
            totals[key] += taken[key]
        if nudge and start == 0 and len(files) > limits.DROPOFF_FILES_PER_TASK:
            nudge_dispatcher()  # the dispatcher starts on these while the rest is taken in
    if nudge and (totals["valid"] or totals["invalid"]):
        # A run of its own, so that no dispatcher that is just finishing misses the last files.
        nudge_dispatcher(key=f"dropoff-{run_id}")
    structlog.contextvars.unbind_contextvars("flow_run_id")
    return totals

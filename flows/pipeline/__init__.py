"""The pipeline: the flows that take requests in, decide them and deliver, and their steps.

The steps are plain functions of a :class:`~flows.runtime.Runtime` (``take_in``, ``decide``,
``deliver``, ``review_runs``, ``deadlines``); the Prefect tasks (:mod:`flows.pipeline.tasks`)
wrap them and hand each other request ids and counts, never personal data. Every step starts
from what the ledger recorded, so a run that crashed and runs again carries on: a request
decided is not decided again, a decision delivered is not delivered again.
"""

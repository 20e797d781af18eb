"""The flow ``notify-escalation``: what the escalation automation runs.

Its deployment has a trigger on the event ``disclosure.review.escalated`` (see
:func:`flows.deployments.runner_deployments` and ``prefect.yaml``): for each escalated review it
posts the request id and deadline to ``DISCLOSURE_ESCALATION_WEBHOOK_URL`` (the legal
department's channel), or, without one, writes a warning to the run's log.
"""

from __future__ import annotations

import requests
from prefect import flow, task
from prefect.cache_policies import NONE

from flows.logs import get_logger
from flows.runtime import runtime

#: Seconds for the webhook to answer (connect, read).
WEBHOOK_TIMEOUT_S = (5, 15)


@task(name="post-escalation", retries=3, retry_delay_seconds=[5, 30, 120], persist_result=False,
      cache_policy=NONE)
def post_escalation(url: str, request_id: str) -> int:
    """POST the escalation to the webhook; returns its status code."""
    answer = requests.post(url, json={"event": "disclosure.review.escalated",
                                      "request_id": request_id}, timeout=WEBHOOK_TIMEOUT_S)
    answer.raise_for_status()
    return answer.status_code


@flow(name="notify-escalation", persist_result=False,
      description="Tell the legal department that a review ran past its deadline.")
def notify_escalation(request_id: str) -> str:
    """Notify about one escalated review; returns the channel used."""
    url = runtime().settings.escalation_webhook_url
    if url:
        post_escalation(url, request_id)
        get_logger("notify").info("escalation_notified", request_id=request_id, channel="webhook")
        return "webhook"
    get_logger("notify").warning("escalation_notified", request_id=request_id, channel="log")
    return "log"

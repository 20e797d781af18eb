"""prefect.yaml and the served deployments name the same flows, and every entrypoint imports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import yaml

from flows import events
from flows.deployments import runner_deployments
from flows.starts import (
    DEPLOYMENT,
    DISPATCHER,
    DROPOFF,
    NOTIFY,
    REPLAY,
    REPORT,
    REVIEW,
    VERIFY,
)
from legal_bases import limits

ROOT = Path(__file__).parents[1]
#: The nightly retention run (flows/retention.py); flows.starts has no name for it, as nothing
#: starts it by name.
RETENTION = f"apply-retention/{DEPLOYMENT}"


def prefect_yaml() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return loaded


def test_every_entrypoint_in_prefect_yaml_imports_a_flow() -> None:
    names = set()
    for deployment in prefect_yaml()["deployments"]:  # type: ignore[attr-defined]
        path, _, attribute = deployment["entrypoint"].partition(":")
        spec = importlib.util.spec_from_file_location(f"entry_{attribute}", ROOT / path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # as Prefect's loader does: decorators look it up
        spec.loader.exec_module(module)
        flow = getattr(module, attribute)
        names.add(f"{flow.name}/{deployment['name']}")
    assert names == {DISPATCHER, DROPOFF, REVIEW, NOTIFY, REPLAY, REPORT, VERIFY,
                     RETENTION}


def test_served_deployments_match_prefect_yaml_and_the_limits() -> None:
    served = {f"{d.flow_name}/{d.name}": d for d in runner_deployments()}
    assert set(served) == {DISPATCHER, DROPOFF, REVIEW, NOTIFY, REPLAY, REPORT, VERIFY,
                           RETENTION}
    assert {d.name for d in served.values()} == {DEPLOYMENT}
    intervals = {d["entrypoint"]: d.get("schedules", [{}])[0].get("interval")
                 for d in prefect_yaml()["deployments"]}  # type: ignore[attr-defined]
    assert intervals == {
        "flows/pipeline/dispatcher.py:process_requests": limits.DISPATCH_SWEEP_SECONDS,
        "flows/pipeline/dropoff.py:collect_dropoffs": limits.DROPOFF_SWEEP_SECONDS,
        "flows/review/flow.py:review_request": None,
        "flows/review/notify.py:notify_escalation": None,
        "flows/audit/replay.py:replay_decisions": None,
        "flows/audit/report.py:transparency_report": None,
        "flows/audit/verification.py:verify_record_flow": None,
        "flows/retention.py:apply_retention": None,
    }
    notify_yaml = next(d for d in prefect_yaml()["deployments"]  # type: ignore[attr-defined]
                       if d["entrypoint"].startswith("flows/review/notify.py"))
    assert notify_yaml["triggers"][0]["expect"] == [events.REVIEW_ESCALATED]
    (trigger,) = served[NOTIFY].triggers
    assert trigger.expect == {events.REVIEW_ESCALATED}
    served_intervals = {name: d.schedules[0].schedule.interval.total_seconds()
                        for name, d in served.items()
                        if d.schedules and hasattr(d.schedules[0].schedule, "interval")}
    assert served_intervals == {DISPATCHER: limits.DISPATCH_SWEEP_SECONDS,
                                DROPOFF: limits.DROPOFF_SWEEP_SECONDS}


def test_the_record_is_verified_every_night_at_the_time_in_the_limits() -> None:
    served = {f"{d.flow_name}/{d.name}": d for d in runner_deployments()}
    [schedule] = served[VERIFY].schedules
    assert schedule.schedule.cron == limits.VERIFY_CRON
    assert schedule.schedule.timezone == "Europe/Amsterdam"
    verify_yaml = next(d for d in prefect_yaml()["deployments"]  # type: ignore[attr-defined]
                       if d["entrypoint"].startswith("flows/audit/verification.py"))
    assert verify_yaml["schedules"] == [{"cron": limits.VERIFY_CRON,
                                         "timezone": "Europe/Amsterdam"}]


def test_retention_is_applied_every_night_at_the_time_in_the_limits() -> None:
    served = {f"{d.flow_name}/{d.name}": d for d in runner_deployments()}
    [schedule] = served[RETENTION].schedules
    assert schedule.schedule.cron == limits.RETENTION_CRON
    assert schedule.schedule.timezone == "Europe/Amsterdam"
    retention_yaml = next(d for d in prefect_yaml()["deployments"]  # type: ignore[attr-defined]
                          if d["entrypoint"].startswith("flows/retention.py"))
    assert retention_yaml["schedules"] == [{"cron": limits.RETENTION_CRON,
                                            "timezone": "Europe/Amsterdam"}]

"""Markdown artifacts that stand for something current (the review queue, a review's case).

Prefect keeps every version of a keyed artifact and shows the latest; :func:`publish_markdown`
writes nothing when the text is unchanged, and, given the run that owns the latest version,
updates that version in place: a review run's Artifacts tab then holds one card, always
current, instead of one stale card per answer.
"""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from prefect.artifacts import Artifact, create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate


def publish_markdown(key: str, markdown: str, *, description: str,
                     owner_run_id: str | None = None) -> bool:
    """Make ``markdown`` the latest version of the artifact ``key``; False if it already was.

    If the latest version was written by the flow run ``owner_run_id``, it is updated in
    place; otherwise a new version is written (inside a run, attached to that run)."""
    latest = cast(Any, Artifact.get(key))
    if latest is not None and latest.data == markdown:
        return False
    if latest is not None and owner_run_id and str(latest.flow_run_id) == owner_run_id:
        with get_client(sync_client=True) as client:
            client.update_artifact(UUID(str(latest.id)),
                                   ArtifactUpdate(data=markdown, description=description))
        return True
    create_markdown_artifact(key=key, markdown=markdown, description=description)
    return True

"""Placeholder: filled in by the audit work of issue #6."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add this module's commands to the ``disclosure`` command line."""

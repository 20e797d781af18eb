"""``disclosure report``."""

from flows.audit.report import register

__all__ = ["register"]

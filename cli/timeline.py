"""``disclosure timeline``."""

from flows.audit.timeline import register

__all__ = ["register"]

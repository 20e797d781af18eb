"""``disclosure inzage``."""

from flows.audit.inzage import register

__all__ = ["register"]

"""``disclosure logboek``."""

from flows.audit.logboek import register

__all__ = ["register"]

"""``disclosure replay``."""

from flows.audit.replay import register

__all__ = ["register"]

"""The project's one exception root and the errors of the law layer.

Every exception the disclosure engine raises on purpose derives from :class:`DisclosureError`, so
a caller can catch the whole family at one boundary (the CLI, a flow, the intake API).
"""

from __future__ import annotations

from dataclasses import dataclass


class DisclosureError(Exception):
    """Raised when the disclosure engine refuses or fails to do something it was asked to do."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration file (a ground, a partner): where, and what."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


class TableError(DisclosureError):
    """Raised when a table of grounds cannot be loaded; lists every problem with file and field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"the table of grounds has {len(self.problems)} problem(s):\n{lines}")


class UnknownGroundError(DisclosureError):
    """Raised when a ground id is not in the table."""

    def __init__(self, ground_id: str) -> None:
        self.ground_id = ground_id
        super().__init__(f"no ground with id {ground_id!r} in the table")


class GroundNotInForceError(DisclosureError):
    """Raised when a ground has no version in force on the date asked for."""

    def __init__(self, ground_id: str, on: object) -> None:
        self.ground_id = ground_id
        self.on = on
        super().__init__(f"ground {ground_id!r} has no version in force on {on}")


@dataclass(frozen=True, slots=True)
class FieldError:
    """One machine-readable problem with a submitted request: field path, code and message."""

    path: str
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "message": self.message}


class InvalidRequestError(DisclosureError):
    """Raised when a submitted request breaks the request format; lists every field error."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = tuple(errors)
        summary = "; ".join(f"{e.path or '(request)'}: {e.message}" for e in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(f"invalid request: {summary}{more}")

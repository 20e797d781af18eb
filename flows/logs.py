"""structlog, configured once for the whole process at its entry point.

JSON lines when stderr is not a terminal, a readable console on one. Context (request id, flow
run id) travels in contextvars. The last processor before rendering masks every BSN-shaped
number (nine digits standing alone) in every value: the first line of defence is not logging
personal data at all, this is the last.

Output goes through the stdlib logger ``disclosure`` so that Prefect can ship it to the run's
logs in the UI (``PREFECT_LOGGING_EXTRA_LOGGERS=disclosure``).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LOGGER_NAME = "disclosure"
_NINE_DIGITS = re.compile(r"(?<![0-9A-Za-z])[0-9]{9}(?![0-9A-Za-z])")
MASK = "*********"


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return _NINE_DIGITS.sub(MASK, value) if len(value) >= 9 else value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return MASK if 100_000_000 <= abs(value) <= 999_999_999 else value
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_mask(v) for v in value]
    if value is None or isinstance(value, float):
        return value
    return _mask(str(value))


def mask_identifiers(_logger: object, _method: str,
                     event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace every BSN-shaped number in the event by asterisks."""
    for key, value in event_dict.items():
        event_dict[key] = _mask(value)
    return event_dict


def processors(*, json: bool) -> list[Any]:
    """The processor chain, ending in the renderer; shared by the configuration and the tests."""
    renderer: Any = (structlog.processors.JSONRenderer(sort_keys=True) if json
                     else structlog.dev.ConsoleRenderer(colors=False))
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        mask_identifiers,
        renderer,
    ]


class _BoundLogger(structlog.stdlib.BoundLogger):
    """A stdlib-backed structlog logger whose ``exception`` hands the stdlib no exception object.

    structlog renders (and masks) the traceback into the event; were the stdlib record to carry
    ``exc_info`` as well, every handler, Prefect's API handler among them, would print the
    original, unmasked traceback beside it.
    """

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._proxy_to_logger("error", event, *args, **kw)


class _RenderedOnly(logging.Formatter):
    """Writes the line structlog rendered, and nothing the stdlib would add (an unmasked trace)."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def configure_logging(*, level: int | str = "INFO", json: bool | None = None,
                      stream: TextIO | None = None) -> None:
    """Configure structlog and the ``disclosure`` stdlib logger; call once, at the entry point."""
    out = stream if stream is not None else sys.stderr
    as_json = json if json is not None else not out.isatty()
    handler = logging.StreamHandler(out)
    handler.setFormatter(_RenderedOnly())
    std = logging.getLogger(LOGGER_NAME)
    # Replace our own stream handler if configured before; keep others (Prefect attaches its
    # API log handler here when PREFECT_LOGGING_EXTRA_LOGGERS names "disclosure").
    std.handlers[:] = [h for h in std.handlers if not isinstance(h.formatter, _RenderedOnly)]
    std.addHandler(handler)
    std.setLevel(level)
    std.propagate = False
    structlog.configure(
        processors=processors(json=as_json),
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=_BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "") -> Any:
    """A structlog logger under ``disclosure`` (``disclosure.<name>``); use inside functions."""
    return structlog.get_logger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)

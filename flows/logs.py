"""structlog, configured once for the whole process at its entry point.

Every event is rendered twice, from one event dict:

* for **people** — the stdlib record's message, which Prefect's API log handler ships to the
  run's log in the UI (``PREFECT_LOGGING_EXTRA_LOGGERS=disclosure``): one sentence, the event
  first, then its fields, then the context it happened in, without time or level (the UI shows
  both), e.g. ``partners_loaded · source=examples/partners.yaml partners=4 (request_id=…)``;
* for **machines** — our own stream handler on stderr: JSON lines when stderr is not a terminal,
  a readable console on one, with level and time; the formatter renders the event dict the
  record carries (:data:`EVENT_ATTRIBUTE`), not the message.

Context (request id, flow run id) travels in contextvars. Before either rendering, two
processors rewrite every value of the event:

* paths (:func:`shorten_paths`): a ``pathlib`` path under the working directory becomes relative
  to it, any other absolute path keeps its last two parts behind ``.../`` (``/etc/disclosure/
  partners.yaml`` → ``.../disclosure/partners.yaml``); in text, the working directory in front
  of a path is dropped (a traceback's ``/srv/engine/flows/x.py`` → ``flows/x.py``), and other
  absolute paths in text stay (a library's file in a traceback). Log a path as a ``Path``;
* BSN-shaped numbers (:func:`mask_identifiers`, nine digits standing alone) become asterisks:
  the first line of defence is not logging personal data at all, this is the last.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from functools import lru_cache
from json import dumps
from pathlib import PurePath
from typing import Any, TextIO

import structlog

LOGGER_NAME = "disclosure"
#: The attribute of a stdlib log record that carries structlog's (masked) event dict.
EVENT_ATTRIBUTE = "disclosure_event"
_NINE_DIGITS = re.compile(r"(?<![0-9A-Za-z])[0-9]{9}(?![0-9A-Za-z])")
MASK = "*********"
#: Keys of the event the sentence names last, in brackets: where it happened, not what.
CONTEXT_KEYS = ("request_id", "flow_run_id", "correlation_id")
#: Keys the sentence leaves out: the event leads it, Prefect shows time and level itself.
_NOT_FIELDS = frozenset({"event", "timestamp", "level", "exception", *CONTEXT_KEYS})
_PLAIN = re.compile(r"[^\s\"'=()\[\],]+")


# -- the last line of defence: BSN-shaped numbers -----------------------------------------------

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


# -- no host paths ------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _cwd_in_text(cwd: str) -> re.Pattern[str]:
    """The working directory in front of a path in text (not inside a URL or a longer path)."""
    return re.compile(r"(?<![\w./:~-])" + re.escape(cwd.rstrip(os.sep) + os.sep))


def shown_path(path: PurePath, cwd: str | None = None) -> str:
    """``path`` as a log line shows it: relative under the working directory, else its tail."""
    if not path.is_absolute():
        return str(path)
    here = os.getcwd() if cwd is None else cwd
    if here != path.anchor and path.is_relative_to(here):
        return str(path.relative_to(here))
    tail = path.parts[1:][-2:]
    return "/".join(("...", *tail)) if tail else str(path)


def _shorten(value: Any, cwd: str) -> Any:
    if isinstance(value, str):
        if cwd == os.sep or cwd not in value:
            return value
        return "." if value == cwd else _cwd_in_text(cwd).sub("", value)
    if isinstance(value, PurePath):
        return shown_path(value, cwd)
    if isinstance(value, dict):
        return {k: _shorten(v, cwd) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_shorten(v, cwd) for v in value]
    return value


def shorten_paths(_logger: object, _method: str,
                  event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no absolute host path in an event (see the module's docstring)."""
    cwd = os.getcwd()
    for key, value in event_dict.items():
        event_dict[key] = _shorten(value, cwd)
    return event_dict


# -- the sentence -------------------------------------------------------------------------------

def _text(value: Any) -> str:
    """A value in the sentence: plain words bare, text with spaces quoted, lists in brackets."""
    if isinstance(value, str):
        return value if _PLAIN.fullmatch(value) else dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return "(" + ", ".join(f"{k}={_text(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def sentence(event_dict: Mapping[str, Any]) -> str:
    """The event as a person reads it: ``event · key=value … (request_id=…, flow_run_id=…)``.

    Fields in the order they were logged, those without a value left out; no time or level;
    a traceback, if any, on the lines below.
    """
    words = [str(event_dict.get("event", ""))]
    fields = [f"{k}={_text(v)}" for k, v in event_dict.items()
              if k not in _NOT_FIELDS and v is not None]
    if fields:
        words += ["·", *fields]
    context = [f"{k}={_text(event_dict[k])}" for k in CONTEXT_KEYS
               if event_dict.get(k) is not None]
    if context:
        words.append("(" + ", ".join(context) + ")")
    exception = event_dict.get("exception")
    return " ".join(words) + (f"\n{exception}" if exception else "")


def to_record(_logger: object, _method: str,
              event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """structlog's last processor: the stdlib logger's arguments (after the manner of
    ``structlog.stdlib.render_to_log_kwargs``): the sentence as the message, the event dict as
    one extra attribute (under its own name, so no field can clash with the record's own)."""
    return {"msg": sentence(event_dict), "extra": {EVENT_ATTRIBUTE: dict(event_dict)}}


def processors() -> list[Any]:
    """The processor chain :func:`configure_logging` installs, ending in the stdlib logger's
    arguments."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        shorten_paths,
        mask_identifiers,
        to_record,
    ]


# -- the process's own stream -------------------------------------------------------------------

class _BoundLogger(structlog.stdlib.BoundLogger):
    """A stdlib-backed structlog logger whose ``exception`` hands the stdlib no exception object.

    structlog renders (and masks) the traceback into the event; were the stdlib record to carry
    ``exc_info`` as well, every handler, Prefect's API handler among them, would print the
    original, unmasked traceback beside it.
    """

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._proxy_to_logger("error", event, *args, **kw)


class _EventFormatter(logging.Formatter):
    """Our stream's lines: the record's event dict as JSON or for the console.

    A record that did not come through structlog gets an event dict of its own message, level
    and time, shortened and masked like any other; the stdlib's traceback is never added.
    """

    def __init__(self, *, json: bool) -> None:
        super().__init__()
        self._render: Any = (structlog.processors.JSONRenderer(sort_keys=True) if json
                             else structlog.dev.ConsoleRenderer(colors=False))

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, EVENT_ATTRIBUTE, None)
        if not isinstance(event, dict):
            at = datetime.fromtimestamp(record.created, UTC)
            event = {"event": record.getMessage(), "level": record.levelname.lower(),
                     "timestamp": at.isoformat().replace("+00:00", "Z")}
            event = mask_identifiers(None, "", shorten_paths(None, "", event))
        return str(self._render(None, record.levelname.lower(), dict(event)))


def configure_logging(*, level: int | str = "INFO", json: bool | None = None,
                      stream: TextIO | None = None) -> None:
    """Configure structlog and the ``disclosure`` stdlib logger; call once, at the entry point."""
    out = stream if stream is not None else sys.stderr
    as_json = json if json is not None else not out.isatty()
    handler = logging.StreamHandler(out)
    handler.setFormatter(_EventFormatter(json=as_json))
    std = logging.getLogger(LOGGER_NAME)
    # Replace our own stream handler if configured before; keep others (Prefect attaches its
    # API log handler here when PREFECT_LOGGING_EXTRA_LOGGERS names "disclosure").
    std.handlers[:] = [h for h in std.handlers if not isinstance(h.formatter, _EventFormatter)]
    std.addHandler(handler)
    std.setLevel(level)
    std.propagate = False
    structlog.configure(
        processors=processors(),
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=_BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "") -> Any:
    """A structlog logger under ``disclosure`` (``disclosure.<name>``); use inside functions."""
    return structlog.get_logger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)

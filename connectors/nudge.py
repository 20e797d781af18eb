"""Nudging the dispatcher once for many requests, off the request path.

The intake API pokes the :class:`Nudger` after every commit that recorded something; a thread of
its own calls the nudge callback (the CLI passes ``flows.starts.nudge_dispatcher``), at most
once per :data:`~legal_bases.limits.NUDGE_WINDOW_SECONDS`, however many requests arrived. If the
callback fails (Prefect is down) that is logged and nothing else happens: the requests are on the
ledger, and the dispatcher's schedule sweeps them up. Partners never wait for Prefect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from legal_bases import limits


class Nudger:
    """Calls ``nudge`` after :meth:`poke`, at most once per ``interval`` seconds, in a thread."""

    def __init__(self, nudge: Callable[[], object], *,
                 interval: float = limits.NUDGE_WINDOW_SECONDS) -> None:
        self._nudge = nudge
        self._interval = interval
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.calls = 0
        self.failures = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="intake-nudger", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (a nudge asked for and not yet made is dropped: the sweeper has it)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wanted.set()
        thread.join(timeout)

    def poke(self, _count: int = 1) -> None:
        """Ask for a nudge (cheap; callable from any thread)."""
        self._wanted.set()

    def _run(self) -> None:
        log = structlog.get_logger("disclosure.api")
        while True:
            self._wanted.wait()
            if self._stopping.is_set():
                return
            self._wanted.clear()
            started = time.monotonic()
            self.calls += 1
            try:
                self._nudge()
            except Exception as exc:  # Prefect unreachable: the sweeper picks the requests up
                self.failures += 1
                log.warning("dispatcher_nudge_failed", error=type(exc).__name__)
            else:
                log.debug("dispatcher_nudged")
            rest = self._interval - (time.monotonic() - started)
            if rest > 0 and self._stopping.wait(rest):
                return

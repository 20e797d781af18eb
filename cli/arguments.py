"""What the commands share: the usage error, the date argument, the calendar, the option of
the table of grounds, and a plain text table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from legal_bases.errors import DisclosureError


class UsageError(DisclosureError):
    """Raised when the command line was called with arguments or input it cannot use."""


def date_argument(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def today() -> date:
    """The one place the command line reads the calendar: the day of receipt, in UTC."""
    return datetime.now(UTC).date()


def grounds_option() -> argparse.ArgumentParser:
    """The ``--grounds DIR`` option, as a parent parser of the commands that read the table."""
    grounds_opt = argparse.ArgumentParser(add_help=False)
    grounds_opt.add_argument("--grounds", type=Path, default=None, metavar="DIR",
                             help="folder of ground files (default: the shipped table)")
    return grounds_opt


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def say(text: str) -> None:
    """One line on standard output, flushed (a served command's lines appear at once)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()

"""Benchmark of the decision core: assessments per second, reading (validate + assess) per
second, and bulk validation cost per subject.

    .venv/bin/python benchmarks/assess.py [--seconds 3] [--profile 15]

Prints its command line, then the median of five rounds for each figure, all in this one process
(one core). Targets: at least 20,000 single-subject assessments per second (issue 2); at least
25,000 single-subject requests validated and assessed per second (issue 12); 100,000 subjects
validated in under a second (issue 2). ``--profile N`` also runs validate + assess of the mix
under cProfile and prints its N top entries by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date

from legal_bases.assessment import assess
from legal_bases.identifiers import is_valid_bsn
from legal_bases.request import DisclosureRequest, parse_request, read_request, read_request_text
from legal_bases.table import load_table
from legal_bases.vocabulary import Body

RECEIVED = date(2026, 11, 28)

# (body, request template): a realistic mix of what partners send, every outcome represented.
MIX: list[tuple[Body, dict[str, object]]] = [
    (Body.BELASTINGDIENST, {"legal_basis": "awr-55", "purpose": "belastingheffing",
                            "case_reference": "FIN/1", "categories": ["personalia",
                                                                      "financiele_gegevens"]}),
    (Body.TOESLAGEN, {"legal_basis": "awir-38", "purpose": "toeslagen",
                      "categories": ["opleidingsgegevens", "financiele_gegevens"]}),
    (Body.SVB, {"legal_basis": "suwi-54-svb", "purpose": "kinderbijslag",
                "categories": ["opleidingsgegevens"]}),
    (Body.UWV, {"legal_basis": "suwi-54-uwv", "purpose": "werk_en_inkomen",
                "categories": ["personalia", "contacthistorie"]}),
    (Body.GEMEENTE, {"legal_basis": "participatiewet-64", "purpose": "bijstand",
                     "categories": ["personalia", "gezondheid"]}),
    (Body.GEMEENTE, {"legal_basis": "wro-21", "purpose": "leerplicht",
                     "categories": ["opleidingsgegevens", "gezondheid"]}),
    (Body.OPENBAAR_MINISTERIE, {"legal_basis": "sv-126nc", "purpose": "strafrechtelijk_onderzoek",
                                "categories": ["personalia"]}),
    (Body.OPENBAAR_MINISTERIE, {"legal_basis": "sv-126nd", "purpose": "strafrechtelijk_onderzoek",
                                "case_reference": "P-1", "categories": ["financiele_gegevens"]}),
    (Body.UWV, {"legal_basis": "awr-55", "purpose": "belastingheffing", "case_reference": "X",
                "categories": ["personalia"]}),
    (Body.CBS, {"legal_basis": "cbs-33", "purpose": "statistiek",
                "categories": ["opleidingsgegevens"]}),
]


def valid_bsns(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        number = f"{rng.randrange(100_000_000, 1_000_000_000)}"
        if is_valid_bsn(number):
            out.append(number)
    return out


def median_rate(fn: Callable[[], int], seconds: float) -> float:
    """Items per second of ``fn`` (which returns how many items it did), median of five rounds."""
    rates = []
    for _ in range(5):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            done += fn()
        rates.append(done / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="measuring time of each single-subject figure (default 3)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile validate + assess and print its N top entries")
    args = parser.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    table = load_table()
    bsns = valid_bsns(100_000)

    singles: list[tuple[DisclosureRequest, Body]] = []
    for i, (body, template) in enumerate(MIX * 100):
        raw = {"reference": f"R-{i}", "subjects": [{"bsn": bsns[i]}], **template}
        singles.append((parse_request(raw, received_on=RECEIVED), body))
    bulk_raw = {"reference": "BULK-1", "legal_basis": "cbs-33", "purpose": "statistiek",
                "subjects": [{"bsn": b} for b in bsns], "categories": ["opleidingsgegevens"]}
    bulk = parse_request(bulk_raw, received_on=RECEIVED)

    def assess_singles() -> int:
        for request, body in singles:
            assess(request, body, table)
        return len(singles)

    def assess_bulk() -> int:
        assess(bulk, Body.CBS, table)
        return 1

    raw_singles = [({"reference": f"R-{i}", "subjects": [{"bsn": bsns[i]}], **t}, b)
                   for i, (b, t) in enumerate(MIX * 10)]

    def validate_and_assess() -> int:
        for raw, body in raw_singles:
            assess(read_request(raw, received_on=RECEIVED), body, table)
        return len(raw_singles)

    texts = [(json.dumps(raw), body) for raw, body in raw_singles]

    def read_text_and_assess() -> int:
        for text, body in texts:
            assess(read_request_text(text, received_on=RECEIVED), body, table)
        return len(texts)

    single_rate = median_rate(assess_singles, args.seconds)
    print(f"assess, single-subject mix ({len(MIX)} kinds): {single_rate:,.0f} assessments/s "
          f"(target >= 20,000)")
    print(f"assess, one 100,000-subject request:      {median_rate(assess_bulk, 1.0):,.0f} "
          f"assessments/s")
    print(f"validate + assess, single-subject mix:     "
          f"{median_rate(validate_and_assess, args.seconds):,.0f} requests/s (target >= 25,000)")
    print(f"JSON text + validate + assess, same mix:   "
          f"{median_rate(read_text_and_assess, args.seconds):,.0f} requests/s")

    timings = []
    for _ in range(5):
        start = time.perf_counter()
        parse_request(bulk_raw, received_on=RECEIVED)
        timings.append(time.perf_counter() - start)
    best = statistics.median(timings)
    print(f"validate 100,000 subjects:                 {best * 1000:,.0f} ms "
          f"({best / 100_000 * 1e6:.2f} µs per subject; target < 1 s)")
    if args.profile:
        profile(validate_and_assess, args.seconds, args.profile)


def profile(fn: Callable[[], int], seconds: float, top: int) -> None:
    """Run ``fn`` under cProfile for about ``seconds`` and print its top entries."""
    profiler = cProfile.Profile()
    start = time.perf_counter()
    done = 0
    profiler.enable()
    while time.perf_counter() - start < seconds:
        done += fn()
    profiler.disable()
    print(f"\nprofile of validate + assess ({done:,} requests; times under the profiler):")
    for order in ("tottime", "cumulative"):
        print(f"-- top {top} by {order}")
        pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats(order).print_stats(top)


if __name__ == "__main__":
    main()

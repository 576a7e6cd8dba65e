"""Compiled expression conditions against the equivalent hand-written lambdas, and the most
expensive evaluations that can be built within the language's limits.

    .venv/bin/python benchmarks/bench_expressions.py [--calls N] [--repeat R] [--worst]

Prints, per case, the best time per call of the hand-written lambda and of the compiled
expression over N calls (default 1,000,000, cycling through a few events), and their ratio.
Exits non-zero when the simple comparison is slower than 1.5x its lambda. The "lists" case
tests membership in a named list of 1,000,000 card ids and a BIN prefix list
(fraudcep.rules.lists) against a lambda over the same frozensets.

With --worst it instead times hostile expressions on hostile payments (each payment within
the decoder's default limit of 64 KiB, each expression within the compiler's limits): every
case repeats one costly term ("t or t or ..."), as many times as the cost budget lets it run
to the end, and once more, when the evaluation stops with ExpressionLimitError. It prints the
slowest evaluation of each case and of all, and exits non-zero when one takes over 1 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from fraudcep.pattern.conditions import takes_context
from fraudcep.rules.expressions import ExpressionError, compile_expression
from fraudcep.rules.lists import Lists

SIMPLE_LIMIT = 1.5
WORST_LIMIT = 0.001  # seconds


class Ctx:
    """A matched partial match: what an iterative condition sees besides the event."""

    def __init__(self, stages: dict[str, list[Any]], previous: Any) -> None:
        self._stages = stages
        self.previous = previous
        self.timestamp = 0

    def events(self, name: str) -> Sequence[Any]:
        return self._stages.get(name, [])


def events() -> list[dict[str, Any]]:
    statuses = ["declined", "approved", "declined", "review"]
    return [
        {"amount": 500 + 700 * i, "status": statuses[i % 4], "merchant": f"m{i % 3}", "ts": i}
        for i in range(8)
    ]


def best_of(fn: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def loop1(cond: Callable[[Any], Any], evs: list[Any], calls: int) -> Callable[[], None]:
    rounds = calls // len(evs)

    def run() -> None:
        for _ in range(rounds):
            for e in evs:
                cond(e)

    return run


def loop2(
    cond: Callable[[Any, Any], Any], evs: list[Any], ctx: Any, calls: int
) -> Callable[[], None]:
    rounds = calls // len(evs)

    def run() -> None:
        for _ in range(rounds):
            for e in evs:
                cond(e, ctx)

    return run


# --------------------------------------------------------------------------- worst cases

BASE = {
    "payment_id": "p",
    "user_id": "u",
    "card_id": "c",
    "merchant": "m",
    "country": "DE",
    "amount": 5000,
    "currency": "EUR",
    "status": "approved",
    "ts": 1,
}
CYRILLIC = "\u0436"  # lower case; its upper case is one character too
EXPANDING = "\u0390"  # its upper case is three characters
EMOJI = "\U0001f600"  # four bytes a character in memory
BIG = int("9" * 4000)  # the longest integer a JSON decoder reads by default


@dataclass
class Worst:
    """One costly term, the payment fields it reads and, for aggregates, a stage's events."""

    name: str
    term: str
    fields: dict[str, Any]
    stage: list[dict[str, Any]] = dataclass_field(default_factory=list)


WORST = [
    # strings made by the expression: '+', lower(), upper()
    Worst("join two 16K strings", "len(d + e + d + e) < 0", {"d": "x" * 16_000, "e": "y" * 16_000}),
    Worst("join a 30K string to itself", "len(d + d) < 0", {"d": "x" * 30_000}),
    Worst(
        "join two 8K emoji strings",
        "len(d + e + d + e) < 0",
        {"d": EMOJI * 8_000, "e": EMOJI * 8_000},
    ),
    Worst("hash joined emoji strings", "d + e in ['a']", {"d": EMOJI * 7_000, "e": EMOJI * 7_000}),
    Worst("chain of 38 joins", "len(" + " + ".join(["d"] * 38) + ") < 0", {"d": "x" * 1_600}),
    Worst("lower() 30K Cyrillic", "contains(lower(d), 'q')", {"d": CYRILLIC * 30_000}),
    Worst("upper() 30K Cyrillic", "upper(d) == 'q'", {"d": CYRILLIC * 30_000}),
    Worst("upper() 21K 3-way expanding", "len(upper(d)) < 0", {"d": EXPANDING * 21_000}),
    Worst("lower() 60K ASCII", "lower(d) == 'q'", {"d": "X" * 60_000}),
    # searches: substring, list membership
    Worst("substring 'a'*9+'b' in 60K", "e in d", {"d": "a" * 60_000, "e": "a" * 9 + "b"}),
    Worst("substring 'a'*99+'b' in 60K", "e in d", {"d": "a" * 60_000, "e": "a" * 99 + "b"}),
    Worst("substring 'a'*999+'b' in 60K", "e in d", {"d": "a" * 60_000, "e": "a" * 999 + "b"}),
    Worst("emoji substring in 15K emoji", "e in d", {"d": EMOJI * 15_000, "e": EMOJI * 9 + "b"}),
    Worst("field in a 1000-char constant", "d in '" + "a" * 999 + "b'", {"d": "a" * 9 + "c"}),
    Worst("constant needle in 60K", "'" + "a" * 999 + "b' in d", {"d": "a" * 60_000}),
    Worst("contains() of 60K", "contains(d, e)", {"d": "a" * 60_000, "e": "a" * 99 + "b"}),
    Worst("str in 30K-int list", "'q' in l", {"l": [0] * 30_000}),
    Worst("None in 30K-int list", "nope in l", {"l": [0] * 30_000}),
    Worst("contains() 30K-int list", "contains(l, 'q')", {"l": [0] * 30_000}),
    Worst("list in 10K nested lists", "m in l", {"l": [[1]] * 10_000, "m": [0]}),
    # comparisons of two values from the payment
    Worst("15K-int lists !=", "l != m", {"l": [0] * 15_000, "m": [0] * 15_000}),
    Worst("15K-int lists <", "l < m", {"l": [0] * 15_000, "m": [0] * 15_000}),
    Worst("7K nested lists !=", "l != m", {"l": [[0]] * 7_000, "m": [[0]] * 7_000}),
    Worst("10K empty lists !=", "l != m", {"l": [[]] * 10_000, "m": [[]] * 10_000}),
    Worst("5K empty dicts !=", "l != m", {"l": [{}] * 5_000, "m": [{}] * 5_000}),
    Worst(
        "3K-key dicts !=",
        "o != p",
        {"o": {f"k{i}": 0 for i in range(3_000)}, "p": {f"k{i}": 0 for i in range(3_000)}},
    ),
    Worst("20K strings, mixed kinds <", "e < d", {"d": "a" * 20_000, "e": "a" * 19_999 + CYRILLIC}),
    Worst("30K strings equal !=", "d != e", {"d": "a" * 30_000, "e": "a" * 30_000}),
    Worst(
        "30K strings startswith", "startswith(d, e) and 0", {"d": "a" * 30_000, "e": "a" * 30_000}
    ),
    # numbers
    Worst("4000-digit int in a set", "x in [1, 2]", {"x": BIG}),
    Worst("4000-digit int sums", "x + x - x == 1", {"x": BIG}),
    Worst("4000-digit int // (refused)", "x // y == 1", {"x": BIG, "y": int("7" * 2000)}),
    Worst("1024-bit int %", "x % y == 1", {"x": 2**1023 + 12345, "y": 2**511 + 1}),
    Worst("1024-bit hour_of", "hour_of(x) == 1", {"x": 2**1023 + 12345}),
    # aggregates over a stage
    Worst("sum() of 500 events", "sum(small.amount) < 0", {}, [{"amount": 1}] * 500),
    Worst("avg() of 500 events", "avg(small.amount) < 0", {}, [{"amount": 1.5}] * 500),
    Worst("max() of 500 list values", "max(small.l) == 1", {}, [{"l": [0] * 50}] * 500),
    Worst(
        "max() of 25 20K strings",
        "max(small.d) == 'x'",
        {},
        [{"d": "a" * 19_999 + ("b" if i % 2 else CYRILLIC)} for i in range(25)],
    ),
]


def worst_payment(case: Worst) -> Any:
    from fraudcep.payments.payment import DEFAULT_MAX_BYTES, decode_payment

    raw = json.dumps({**BASE, **case.fields}, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(raw) <= DEFAULT_MAX_BYTES, (case.name, len(raw))
    return decode_payment(raw)


def time_worst(case: Worst, repeat: int) -> tuple[int, float, str]:
    """(how many terms run to the end, the slowest best-of-``repeat`` time, its outcome)."""
    payment = worst_payment(case)
    ctx = Ctx({"small": case.stage}, case.stage[-1] if case.stage else None)
    slowest, outcome, passed = 0.0, "refused", 0
    for k in range(1, 400):
        try:
            cond = compile_expression(" or ".join([case.term] * k), stages=["small"])
        except ExpressionError:
            break  # past the node or length limits
        uses_ctx = takes_context(cond)
        best, result = float("inf"), ""
        for _ in range(repeat):
            start = time.perf_counter()
            try:
                result = repr(cond(payment, ctx) if uses_ctx else cond(payment))
            except Exception as exc:  # the outcome is what is measured
                result = type(exc).__name__
            best = min(best, time.perf_counter() - start)
        if best >= slowest:
            slowest, outcome = best, f"{result} with {k} terms"
        if result not in ("True", "False"):
            break
        passed = k
    return passed, slowest, outcome


def worst(repeat: int) -> int:
    print(f"{'case':34s} {'terms':>5s} {'slowest':>10s}  outcome")
    top = 0.0
    for case in WORST:
        passed, slowest, outcome = time_worst(case, repeat)
        top = max(top, slowest)
        print(f"{case.name:34s} {passed:5d} {slowest * 1e3:7.3f} ms  {outcome}")
    print(f"slowest evaluation: {top * 1e3:.3f} ms (limit {WORST_LIMIT * 1e3:.0f} ms)")
    return 0 if top <= WORST_LIMIT else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--worst", action="store_true", help="time the worst cases instead")
    args = parser.parse_args(argv)
    if args.worst:
        return worst(args.repeat)
    evs = events()
    ctx = Ctx({"small": evs[:3]}, evs[2])

    simple_src = 'amount > 2000 and status == "declined"'
    simple = compile_expression(simple_src)

    def simple_lambda(e: Any) -> bool:
        return e["amount"] > 2000 and e["status"] == "declined"  # type: ignore[no-any-return]

    stage_src = "merchant != small[0].merchant and amount > 2 * prev.amount"
    staged = compile_expression(stage_src, stages=["small"])

    def stage_lambda(e: Any, ctx: Any) -> bool:
        small = ctx.events("small")
        first = small[0] if small else None
        prev = ctx.previous
        return (
            first is not None
            and e["merchant"] != first["merchant"]
            and prev is not None
            and e["amount"] > 2 * prev["amount"]
        )

    cards = [f"card-{i}" for i in range(1_000_000)]
    lists = Lists({"blocked_cards": cards, "risky_bins": ["4111", "52", "601100", "6"]})
    blocked, bins = lists.get("blocked_cards").entries, lists.get("risky_bins").entries
    list_evs = [
        dict(e, card_id=f"card-{i * 250_000}", bin=("411111", "520000", "999999")[i % 3])
        for i, e in enumerate(evs)
    ]
    lists_src = "card_id in lists.blocked_cards or prefix_in(bin, lists.risky_bins)"
    listed = compile_expression(lists_src, lists=lists)

    def lists_lambda(e: Any) -> bool:
        b = e["bin"]
        return e["card_id"] in blocked or any(b[:n] in bins for n in (1, 2, 4, 6))

    for e in evs:  # same answers before timing
        assert simple(e) == simple_lambda(e)
        assert staged(e, ctx) == stage_lambda(e, ctx)
    for e in list_evs:
        assert listed(e) == lists_lambda(e)

    cases = [
        (
            "simple",
            simple_src,
            loop1(simple_lambda, evs, args.calls),
            loop1(simple, evs, args.calls),
        ),
        (
            "stage",
            stage_src,
            loop2(stage_lambda, evs, ctx, args.calls),
            loop2(staged, evs, ctx, args.calls),
        ),
        (
            "lists",
            lists_src,
            loop1(lists_lambda, list_evs, args.calls),
            loop1(listed, list_evs, args.calls),
        ),
    ]
    ok = True
    for name, src, hand, compiled in cases:
        t_hand = best_of(hand, args.repeat)
        t_comp = best_of(compiled, args.repeat)
        ratio = t_comp / t_hand
        print(
            f"{name:7s} {src!r}\n"
            f"        lambda {t_hand / args.calls * 1e9:7.1f} ns/call   "
            f"compiled {t_comp / args.calls * 1e9:7.1f} ns/call   ratio {ratio:.2f}x"
        )
        if name == "simple" and ratio > SIMPLE_LIMIT:
            ok = False
    if not ok:
        print(f"FAIL: the simple expression is slower than {SIMPLE_LIMIT}x its lambda")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

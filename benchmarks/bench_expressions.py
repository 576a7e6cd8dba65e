"""Compiled expression conditions against the equivalent hand-written lambdas.

    .venv/bin/python benchmarks/bench_expressions.py [--calls N] [--repeat R]

Prints, per case, the best time per call of the hand-written lambda and of the compiled
expression over N calls (default 1,000,000, cycling through a few events), and their ratio.
Exits non-zero when the simple comparison is slower than 1.5x its lambda.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from fraudcep.expressions import compile_expression

SIMPLE_LIMIT = 1.5


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
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

    for e in evs:  # same answers before timing
        assert simple(e) == simple_lambda(e)
        assert staged(e, ctx) == stage_lambda(e, ctx)

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

"""Fuzz the expression compiler: only rule errors or working conditions, never anything else.

    .venv/bin/python scripts/fuzz_expressions.py [COUNT] [--seed N]

Generates COUNT expressions (default 100,000): a quarter each of random character soup, mutated
grammar-shaped text, grammar-shaped expressions, and one small grammar-shaped term repeated up
to 150 times with "or". Each is compiled and, when valid, called
on a few events (one of them a hostile payment of about 64 KiB), under a per-expression time
guard. Prints how many were valid, refused and anything else; how many evaluations answered and
how many stopped at a run-time limit (ExpressionLimitError); and the slowest compilation and
evaluation. Exits 1 on any other exception or a time-out.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from fraudcep.pattern.conditions import takes_context
from fraudcep.rules.expressions import ExpressionError, ExpressionLimitError, compile_expression

GUARD_SECONDS = 2.0
ATOMS = [
    "amount",
    "status",
    "card.country",
    "event.fee",
    "nope",
    "small[0].amount",
    "small[-1].status",
    "prev.amount",
    "count(small)",
    "sum(small.amount)",
    "avg(small.fee)",
    "'declined'",
    "'FR'",
    "0",
    "1",
    "-3",
    "2.5",
    "1e3",
    "None",
    "True",
    "small",
    "small.amount",
    "__class__",
    "_x",
    "event['__dict__']",
    "10**18",
    "9" * 25,
    "[1, 2]",
    "(x for x in y)",
    "lambda: 0",
    "memo",
    "tags",
    "lower(memo)",
    "upper(status)",
    "status + memo",
    "'x' * 3",
    "\u0430mount",
    "\uff53tatus",
]
BINARY = [
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "**",
    "<",
    "<=",
    ">",
    ">=",
    "==",
    "!=",
    "in",
    "not in",
    "and",
    "or",
    "is",
    "<<",
    "|",
]
CALLS = [
    "len",
    "lower",
    "upper",
    "startswith",
    "endswith",
    "contains",
    "lower",
    "upper",
    "abs",
    "round",
    "minutes",
    "hour_of",
    "weekday_of",
    "exists",
    "missing",
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "open",
    "getattr",
    "eval",
    "type",
]
SOUP = [
    *"abcxyz_019.()[]{}'\",:+-*/%<>=!~&|^@ \n\r\t\\#$",
    *("and ", " or ", "not ", "if ", ") or (", "\u0430", "\uff41", "\u202e", "\u00b7", "\u0390"),
]
EVENTS: list[dict[str, Any]] = [
    {},
    {"amount": 2500, "status": "declined", "card": {"country": "FR"}, "fee": 1.5},
    {"amount": None, "status": 3, "card": "x", "fee": -1e308},
    {"amount": 10**40, "status": "", "card": {"country": None}},
    {  # hostile: long strings and lists, a 4000-digit integer
        "amount": int("9" * 4000),
        "status": "\u0390" * 8_000,
        "memo": "a" * 20_000,
        "tags": [0] * 8_000,
        "card": [[0]] * 2_000,
        "fee": 1e308,
    },
]


class Ctx:
    def __init__(self) -> None:
        self.previous = EVENTS[1]
        self.timestamp = 0

    def events(self, name: str) -> Sequence[Any]:
        return EVENTS[1:]


class Hang(Exception):
    pass


def on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang


def grammar(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if depth > 4 or r < 0.3:
        return rng.choice(ATOMS)
    if r < 0.65:
        op = rng.choice(BINARY)
        return f"({grammar(rng, depth + 1)} {op} {grammar(rng, depth + 1)})"
    if r < 0.75:
        return f"({rng.choice(['not ', '-', '+', '~'])}{grammar(rng, depth + 1)})"
    if r < 0.85:
        a, b, c = (grammar(rng, depth + 1) for _ in range(3))
        return f"({a} if {b} else {c})"
    args = ", ".join(grammar(rng, depth + 1) for _ in range(rng.choice([1, 1, 2, 0, 3])))
    return f"{rng.choice(CALLS)}({args})"


def mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(chars) + 1)
        action = rng.random()
        if action < 0.4 and chars:
            del chars[min(i, len(chars) - 1)]
        elif action < 0.8:
            chars.insert(i, rng.choice(SOUP))
        else:
            chars[i:i] = list(rng.choice(ATOMS))
    return "".join(chars)


def generate(rng: random.Random, i: int) -> str:
    kind = i % 4
    if kind == 0:
        return "".join(rng.choice(SOUP) for _ in range(rng.randint(0, 40)))
    if kind == 1:
        return mutate(rng, grammar(rng))
    if kind == 2:
        return grammar(rng)
    # one small term repeated, as costly expressions are built
    return " or ".join([grammar(rng, 3)] * rng.randint(2, 150))


def evaluation_time(fn: Any, uses_ctx: bool, event: Any, ctx: Ctx) -> float:
    start = time.perf_counter()
    with contextlib.suppress(ExpressionLimitError):
        fn(event, ctx) if uses_ctx else fn(event)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    ctx = Ctx()
    signal.signal(signal.SIGALRM, on_alarm)
    valid = refused = other = answered = limited = 0
    slowest_compile = slowest_eval = 0.0
    slowest_source = ""
    start = time.perf_counter()
    for i in range(args.count):
        source = generate(rng, i)
        signal.setitimer(signal.ITIMER_REAL, GUARD_SECONDS)
        try:
            t0 = time.perf_counter()
            fn = compile_expression(source, stages=["small"])
            slowest_compile = max(slowest_compile, time.perf_counter() - t0)
            uses_ctx = takes_context(fn)
            valid += 1
            for event in EVENTS:
                t0 = time.perf_counter()
                try:
                    result = fn(event, ctx) if uses_ctx else fn(event)
                except ExpressionLimitError:
                    limited += 1
                else:
                    if result is not True and result is not False:
                        raise TypeError(f"condition returned {result!r}")
                    answered += 1
                took = time.perf_counter() - t0
                if took > slowest_eval:  # a record: timed again, best of five (noise aside)
                    took = min(took, *(evaluation_time(fn, uses_ctx, event, ctx) for _ in range(5)))
                    if took > slowest_eval:
                        slowest_eval, slowest_source = took, source
        except ExpressionError:
            refused += 1
        except Exception as exc:  # Hang included
            other += 1
            if other <= 20:
                print(f"OTHER {type(exc).__name__}: {exc} for {source!r}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    elapsed = time.perf_counter() - start
    print(
        f"{args.count} expressions in {elapsed:.1f} s: {valid} valid, {refused} refused, "
        f"{other} other exceptions; {answered + limited} evaluations: {answered} answered, "
        f"{limited} stopped at a run-time limit; slowest compile {slowest_compile * 1e3:.1f} ms, "
        f"slowest evaluation {slowest_eval * 1e3:.3f} ms (best of 5), of {slowest_source[:80]!r}"
    )
    return 1 if other else 0


if __name__ == "__main__":
    sys.exit(main())

"""Fuzz the expression compiler: only rule errors or working conditions, never anything else.

    .venv/bin/python scripts/fuzz_expressions.py [COUNT] [--seed N]

Generates COUNT expressions (default 100,000): a third random character soup, a third mutated
grammar-shaped text, a third grammar-shaped expressions. Each is compiled and, when valid, called
on a few events, under a per-expression time guard. Prints how many were valid, refused and
anything else, and exits 1 on any other exception or a time-out.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from fraudcep.conditions import takes_context
from fraudcep.expressions import ExpressionError, compile_expression

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
SOUP = [*"abcxyz_019.()[]{}'\",:+-*/%<>=!~&|^@ \n\\#$", "and ", " or ", "not ", "if "]
EVENTS: list[dict[str, Any]] = [
    {},
    {"amount": 2500, "status": "declined", "card": {"country": "FR"}, "fee": 1.5},
    {"amount": None, "status": 3, "card": "x", "fee": -1e308},
    {"amount": 10**40, "status": "", "card": {"country": None}},
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
    kind = i % 3
    if kind == 0:
        return "".join(rng.choice(SOUP) for _ in range(rng.randint(0, 40)))
    if kind == 1:
        return mutate(rng, grammar(rng))
    return grammar(rng)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    ctx = Ctx()
    signal.signal(signal.SIGALRM, on_alarm)
    valid = refused = other = 0
    slowest = 0.0
    start = time.perf_counter()
    for i in range(args.count):
        source = generate(rng, i)
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, GUARD_SECONDS)
        try:
            fn = compile_expression(source, stages=["small"])
            uses_ctx = takes_context(fn)
            for event in EVENTS:
                result = fn(event, ctx) if uses_ctx else fn(event)
                if result is not True and result is not False:
                    raise TypeError(f"condition returned {result!r}")
            valid += 1
        except ExpressionError:
            refused += 1
        except Exception as exc:  # Hang included
            other += 1
            if other <= 20:
                print(f"OTHER {type(exc).__name__}: {exc} for {source!r}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        slowest = max(slowest, time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    print(
        f"{args.count} expressions in {elapsed:.1f} s: {valid} valid, {refused} refused, "
        f"{other} other exceptions; slowest {slowest * 1000:.1f} ms"
    )
    return 1 if other else 0


if __name__ == "__main__":
    sys.exit(main())

"""Decoding and validating payment records: ``decode_payment`` against the careful reader.

    .venv/bin/python benchmarks/bench_decode.py [--records N] [--repeat R]

The records are what the Kafka runner benchmark writes: ``PaymentGenerator`` payments (2,000
users, 2 % over 2000, ``safe_noise=False``) as compact UTF-8 JSON (``fraudcep generate``'s
form). Prints the best and the worst of ``--repeat`` passes over them, in microseconds per
record, for:

- ``careful``: ``_decode_careful``, the ``json`` reader (the decoder before msgspec, and
  still the reader of any record msgspec could read differently);
- ``decode_payment``: msgspec for the usual record, then the same ``validate_payment``;
- ``msgspec only`` and ``validate_payment only``: its two parts.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from fraudcep.payments.payment import _decode_careful, decode_payment, validate_payment
from fraudcep.payments.synthetic import PaymentGenerator


def records(count: int) -> list[bytes]:
    payments, _ = PaymentGenerator(
        seed=7, users=2000, big_fraction=0.02, safe_noise=False
    ).generate(count)
    return [json.dumps(p, separators=(",", ":"), ensure_ascii=False).encode() for p in payments]


def per_record(call: Callable[[Any], object], items: Sequence[Any], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            call(item)
        times.append((time.perf_counter() - started) / len(items) * 1e6)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    raws = records(args.records)
    objects = [msgspec.json.decode(raw) for raw in raws]
    fast = msgspec.json.Decoder().decode
    cases: list[tuple[str, Callable[[Any], object], Sequence[Any]]] = [
        ("careful", lambda raw: _decode_careful(raw, 65536, 32), raws),
        ("decode_payment", decode_payment, raws),
        ("msgspec only", fast, raws),
        ("validate_payment only", validate_payment, objects),
    ]
    for raw in raws:  # the same payments both ways
        assert decode_payment(raw) == _decode_careful(raw, 65536, 32)
    for name, call, items in cases:
        times = per_record(call, items, args.repeat)
        print(f"{name:>22}: best {min(times):5.2f} us/record, worst {max(times):5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

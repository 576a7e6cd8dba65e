"""Engine state benchmarks: per-key record encode/decode, full snapshots against deltas as
the state grows, restores, the live-match count and memory per live partial match
(docs/performance.md, "State and checkpoints").

Run: ``.venv/bin/python benchmarks/bench_state.py [--keys 10000 100000 1000000] [--churn 0.01]
[--repeat 3] [--memory-keys 100000] [--json FILE]``. Each size builds an engine holding that
many keys with one live partial match each (the P1 shape: the seed rule, one payment over 2000
per user), then, ``--repeat`` times (the best of them is kept: slower rounds only measure
interference on a shared machine):

- a full ``snapshot()`` (seconds, bytes);
- ``--churn`` of the keys (other keys each round) get one more payment: ``snapshot_delta()``
  (ms, bytes);
- ``restore()`` of the full snapshot, and ``restore(base, deltas=[delta])``;

and then ``engine.stats`` (µs: the live partial matches are counted as they change, not by a
scan of the keys), and per key ``export_key`` and ``import_key`` (µs, best of 5 rounds of
20,000 calls). Last, memory per live partial match (tracemalloc, ``--memory-keys`` keys of the
P1 shape): the state of an engine that processed the payments (the payments themselves, which
the caller made, apart) and of one restored from its snapshot (the events it decoded
included).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
import tracemalloc
from pathlib import Path
from typing import Any

from fraudcep import Engine, Pattern, Rule

RULE = Rule(
    "three-over-2000",
    Pattern.begin("big").where(lambda p: p["amount"] > 2000).times(3).within(300_000),
    key="user_id",
)


def payment(i: int, user: int, ts: int) -> dict[str, Any]:
    return {
        "payment_id": f"p{i}",
        "user_id": f"u{user}",
        "card_id": f"c{user}",
        "merchant": "m-17",
        "country": "DE",
        "amount": 2500.0,
        "currency": "EUR",
        "status": "approved",
        "ts": ts,
    }


def engine_with(keys: int) -> Engine:
    engine = Engine([RULE], timestamp="ts")
    engine.process_many(payment(i, i, 1_000 + i // 100) for i in range(keys))
    return engine


def timed(call: Any) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def per_key(engine: Engine, key: str, rounds: int = 5, calls: int = 20_000) -> dict[str, float]:
    record = engine.export_key("user_id", key)
    assert record is not None
    encode = decode = float("inf")
    for _ in range(rounds):
        t, _ = timed(lambda: [engine.export_key("user_id", key) for _ in range(calls)])
        encode = min(encode, t / calls)
        t, _ = timed(lambda: [engine.import_key("user_id", key, record) for _ in range(calls)])
        decode = min(decode, t / calls)
    return {"encode_us": encode * 1e6, "decode_us": decode * 1e6, "record_bytes": len(record)}


def measure(keys: int, churn: float, repeat: int) -> dict[str, Any]:
    engine = engine_with(keys)
    changed = max(1, int(keys * churn))
    step = keys // changed
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    ts = 10_000 + keys // 100
    for round_ in range(repeat):
        full_s, base = timed(engine.snapshot)
        keep("full", full_s)
        engine.process_many(
            payment(keys * (round_ + 2) + j, j * step + round_, ts + j) for j in range(changed)
        )
        ts += changed + 10
        delta_s, delta = timed(engine.snapshot_delta)
        keep("delta", delta_s)
        restore_s, _ = timed(lambda: Engine.restore(base, [RULE], timestamp="ts"))  # noqa: B023
        keep("restore", restore_s)
        chain_s, restored = timed(
            lambda: Engine.restore(base, [RULE], deltas=[delta], timestamp="ts")  # noqa: B023
        )
        keep("chain", chain_s)
        assert restored.stats == engine.stats
        del restored
    stats_s = min(timed(lambda: [engine.stats for _ in range(1000)])[0] for _ in range(5)) / 1000
    out = {
        "keys": keys,
        "changed_keys": changed,
        "full_snapshot_s": best["full"],
        "full_bytes": len(base),
        "restore_full_s": best["restore"],
        "delta_ms": best["delta"] * 1e3,
        "delta_bytes": len(delta),
        "restore_base_and_delta_s": best["chain"],
        "stats_us": stats_s * 1e6,
        "live_partial_matches": engine.stats.live_partial_matches,
    }
    # a key no round changed: one live partial match, the P1 shape
    out.update(per_key(engine, f"u{repeat}" if repeat < step else f"u{keys - 1}"))
    return out


def memory(keys: int) -> dict[str, float]:
    """Bytes per live partial match (P1 shape) held by an engine that processed ``keys``
    payments, without the payments (the caller's), and by one restored from its snapshot."""
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    events = [payment(i, i, 1_000 + i // 100) for i in range(keys)]
    made = tracemalloc.get_traced_memory()[0]
    engine = Engine([RULE], timestamp="ts")
    engine.process_many(events)
    gc.collect()
    processed = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    live = engine.stats.live_partial_matches
    blob = engine.snapshot()
    del engine, events
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    restored = Engine.restore(blob, [RULE], timestamp="ts")
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert restored.stats.live_partial_matches == live
    return {
        "memory_keys": keys,
        "state_bytes_per_live_match": (processed - made) / live,
        "payment_bytes": (made - start) / keys,
        "restored_bytes_per_live_match": (after - before) / live,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--churn", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-keys", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results: dict[str, Any] = {"python": platform.python_version(), "sizes": []}
    for keys in args.keys:
        row = measure(keys, args.churn, args.repeat)
        results["sizes"].append(row)
        print(
            f"{keys:>9,} keys: full {row['full_snapshot_s']:.2f} s"
            f" / {row['full_bytes'] / 1e6:.1f} MB,"
            f" restore {row['restore_full_s']:.2f} s; delta ({row['changed_keys']:,} keys)"
            f" {row['delta_ms']:.1f} ms / {row['delta_bytes'] / 1e3:.0f} kB, restore base+delta"
            f" {row['restore_base_and_delta_s']:.2f} s; stats {row['stats_us']:.1f} µs;"
            f" per key: encode {row['encode_us']:.2f} µs, decode {row['decode_us']:.2f} µs,"
            f" {row['record_bytes']} bytes",
            flush=True,
        )
    if args.memory_keys:
        mem = memory(args.memory_keys)
        results["memory"] = mem
        print(
            f"memory ({args.memory_keys:,} keys): {mem['state_bytes_per_live_match']:,.0f} bytes"
            f" of state per live partial match (+ {mem['payment_bytes']:,.0f} bytes of the"
            f" caller's payment); restored: {mem['restored_bytes_per_live_match']:,.0f} bytes"
            " per live partial match, events included",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

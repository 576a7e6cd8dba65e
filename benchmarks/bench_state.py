"""Engine state benchmarks: per-key record encode/decode, and full snapshots against deltas as
the state grows (docs/performance.md, "State and checkpoints").

Run: ``.venv/bin/python benchmarks/bench_state.py [--keys 10000 100000 1000000] [--churn 0.01]
[--json FILE]``. Each size builds an engine holding that many keys with one live partial match
each (the P1 shape: the seed rule, one payment over 2000 per user), then measures

- a full ``snapshot()`` (seconds, bytes) and ``restore()`` of it;
- after ``--churn`` of the keys got one more payment: ``snapshot_delta()`` (ms, bytes), and
  ``restore(base, deltas=[delta])``;
- per key: ``export_key`` and ``import_key`` (µs, best of 5 rounds of 20,000 calls).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
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


def per_key(engine: Engine, rounds: int = 5, calls: int = 20_000) -> dict[str, float]:
    record = engine.export_key("user_id", "u1")
    assert record is not None
    encode = decode = float("inf")
    for _ in range(rounds):
        t, _ = timed(lambda: [engine.export_key("user_id", "u1") for _ in range(calls)])
        encode = min(encode, t / calls)
        t, _ = timed(lambda: [engine.import_key("user_id", "u1", record) for _ in range(calls)])
        decode = min(decode, t / calls)
    return {"encode_us": encode * 1e6, "decode_us": decode * 1e6, "record_bytes": len(record)}


def measure(keys: int, churn: float) -> dict[str, Any]:
    engine = engine_with(keys)
    full_s, base = timed(engine.snapshot)
    restore_s, _ = timed(lambda: Engine.restore(base, [RULE], timestamp="ts"))
    changed = max(1, int(keys * churn))
    step = keys // changed
    engine.process_many(
        payment(keys + j, j * step, 10_000 + keys // 100 + j) for j in range(changed)
    )
    delta_s, delta = timed(engine.snapshot_delta)
    chain_s, restored = timed(lambda: Engine.restore(base, [RULE], deltas=[delta], timestamp="ts"))
    assert restored.stats.live_keys == engine.stats.live_keys
    out = {
        "keys": keys,
        "changed_keys": changed,
        "full_snapshot_s": full_s,
        "full_bytes": len(base),
        "restore_full_s": restore_s,
        "delta_ms": delta_s * 1e3,
        "delta_bytes": len(delta),
        "restore_base_and_delta_s": chain_s,
    }
    out.update(per_key(engine))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--churn", type=float, default=0.01)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results: dict[str, Any] = {"python": platform.python_version(), "sizes": []}
    for keys in args.keys:
        row = measure(keys, args.churn)
        results["sizes"].append(row)
        print(
            f"{keys:>9,} keys: full {row['full_snapshot_s']:.2f} s"
            f" / {row['full_bytes'] / 1e6:.1f} MB,"
            f" restore {row['restore_full_s']:.2f} s; delta ({row['changed_keys']:,} keys)"
            f" {row['delta_ms']:.1f} ms / {row['delta_bytes'] / 1e3:.0f} kB, restore base+delta"
            f" {row['restore_base_and_delta_s']:.2f} s; per key: encode"
            f" {row['encode_us']:.2f} µs, decode {row['decode_us']:.2f} µs,"
            f" {row['record_bytes']} bytes",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

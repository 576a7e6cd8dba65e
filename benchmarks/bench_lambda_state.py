"""The Lambda detector's per-key state handling: per key per batch, and the state item's size
(docs/performance.md, "Lambda detector state").

Run: ``.venv/bin/python benchmarks/bench_lambda_state.py [--keys 2000] [--rounds 5]
[--moto URL] [--batches 4] [--json FILE]``. Every key holds the state of one payment over 2000
(a live partial match of high-value-3-in-5m and one of geo-hop, the default rules) and a
batch brings each key one more payment (under 2000: it changes no match). Measured in
process, best of ``--rounds``:

- ``whole-engine``: what the detector did per key before key records: restore the key's
  ``Engine.snapshot()``, process, move to the watermark, snapshot again;
- ``records``: what it does now, through its own code (``_start`` and ``_compute``): keys
  eight engines' worth at a time, each key's stored state read (frame, digest, MessagePack)
  and its records imported, its payment processed, the engine moved to the watermark once,
  each key's records exported and its state encoded and size-checked;
- ``... state only``: the same without processing and moving (restore + snapshot against
  decode + import + export + encode), in µs per key.

With ``--moto URL`` (a moto server, ``scripts/moto.sh start``), whole batches through
``Detector.process`` against DynamoDB over HTTP: µs per key per batch, after a first batch
that creates the items. This part uses only the detector's public API, so it can be run
against an earlier release to compare (``PYTHONPATH=<worktree>/adapters``).
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent / "adapters"))

from fraudcep import Engine
from fraudcep.rules import apply_definitions

T0 = 1_700_000_000_000
WORKERS = 8


def payment(user: int, n: int, amount: float) -> dict[str, Any]:
    return {
        "payment_id": f"p{user}-{n}",
        "user_id": f"u{user}",
        "card_id": f"c{user}",
        "merchant": f"m{n % 50}",
        "country": "DE",
        "amount": amount,
        "currency": "EUR",
        "status": "approved",
        "ts": T0 + n * 1_000 + user % 1_000,
    }


def best(rounds: int, call: Any) -> float:
    times = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def in_process(keys: int, rounds: int) -> dict[str, Any]:
    from fraudcep.runtime import SideOutputs
    from fraudcep_aws.key_state import (
        KeyState,
        KeyStateStore,
        StoredKey,
        StoredRecord,
        decode_key_state,
        encode_key_state,
    )
    from fraudcep_aws.lambda_detector import (
        Detector,
        DetectorConfig,
        _Item,
        load_rule_set,
    )
    from fraudcep_aws.msk_event import KafkaRecord

    rules = load_rule_set()
    definitions = rules.definitions
    options = {"timestamp": "ts", "event_id": "payment_id"}
    first = [payment(u, 0, 2500.0) for u in range(keys)]
    second = [payment(u, 1, 40.0) for u in range(keys)]
    created = max(p["ts"] for p in first)
    watermark = max(p["ts"] for p in second) - 1  # the batch's, as the detector moves it

    # -- before: a whole engine per key ------------------------------------------------------
    snapshots = []
    for p in first:
        engine = Engine([], **options)  # type: ignore[arg-type]
        apply_definitions(engine, definitions)
        engine.process(p)
        engine.advance_watermark(created)
        snapshots.append(engine.snapshot())
    rule_objects = [d.rule for d in definitions]

    def whole_engine() -> None:
        for blob, p in zip(snapshots, second, strict=True):
            engine = Engine.restore(blob, rule_objects, **options)  # type: ignore[arg-type]
            engine.process(p)
            engine.advance_watermark(watermark)
            engine.snapshot()

    def whole_engine_state_only() -> None:
        for blob in snapshots:
            Engine.restore(blob, rule_objects, **options).snapshot()  # type: ignore[arg-type]

    # -- now: key records, many keys to an engine --------------------------------------------
    config = DetectorConfig(alerts_table="a", state_table="s")
    detector = Detector.from_config(config, dynamodb=object())
    detector.state = KeyStateStore("s", None)

    def item(user: int, p: dict[str, Any], offset: int) -> _Item:
        value = json.dumps(p).encode()
        record = KafkaRecord("t-0", "t", 0, offset, p["ts"], None, value)
        return _Item(record, p)

    def run(states: list[KeyState], payments: list[dict[str, Any]], offset: int) -> list[Any]:
        outcomes: list[Any] = []
        size = -(-len(states) // WORKERS)
        for at in range(0, len(states), size):
            works = [
                detector._work(s.key, s, detector._start(s), [item(u, p, offset)], [])
                for u, (s, p) in enumerate(
                    zip(states[at : at + size], payments[at : at + size], strict=True), at
                )
            ]
            outcomes += detector._compute(works, watermark if offset else created)
        return outcomes

    empty = [KeyState(json.dumps(f"u{u}")) for u in range(keys)]
    made = run(empty, first, 0)
    states = [
        KeyState(s.key, 1, o.save.state, o.save.offsets, o.save.rules)
        for s, o in zip(empty, made, strict=True)
    ]

    def records() -> None:
        run(states, second, 1)

    engine = detector._new_engine(SideOutputs())
    stored = [
        decode_key_state(s.state or b"", key=s.key, rules=s.rules or "", offsets=s.offsets)
        for s in states
    ]

    def records_state_only() -> None:
        for s in states:
            assert s.state is not None
            st = decode_key_state(s.state, key=s.key, rules=s.rules or "", offsets=s.offsets)
            pairs = [(r.group, json.loads(r.key)) for r in st.records]
            for (group, key), r in zip(pairs, st.records, strict=True):
                engine.import_key(group, key, r.record)
            out = [StoredRecord(g, json.dumps(k), engine.export_key(g, k) or b"") for g, k in pairs]
            encode_key_state(
                StoredKey(st.watermark, st.order, st.due, out, list(st.held)),
                key=s.key,
                rules=s.rules or "",
                offsets=s.offsets,
            )

    result = {
        "keys": keys,
        "whole_engine_us": best(rounds, whole_engine) / keys * 1e6,
        "whole_engine_state_only_us": best(rounds, whole_engine_state_only) / keys * 1e6,
        "records_us": best(rounds, records) / keys * 1e6,
        "records_state_only_us": best(rounds, records_state_only) / keys * 1e6,
        "snapshot_bytes": statistics.mean(len(b) for b in snapshots),
        "state_bytes": statistics.mean(len(s.state or b"") for s in states),
        "records_per_key": statistics.mean(len(s.records) for s in stored),
    }
    detector.close()
    return result


def against_moto(endpoint: str, keys: int, batches: int) -> dict[str, Any]:
    import boto3

    from fraudcep_aws.dynamodb import create_alerts_table
    from fraudcep_aws.key_state import create_state_table
    from fraudcep_aws.lambda_detector import Detector, DetectorConfig

    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    tag = uuid.uuid4().hex[:8]
    config = DetectorConfig(alerts_table=f"bench-alerts-{tag}", state_table=f"bench-state-{tag}")
    create_alerts_table(ddb, config.alerts_table)
    create_state_table(ddb, config.state_table)
    detector = Detector.from_config(config, dynamodb=ddb)

    def event(n: int) -> dict[str, Any]:
        amount = 2500.0 if n == 0 else 40.0
        records = []
        for u in range(keys):
            value = json.dumps(payment(u, n, amount)).encode()
            records.append(
                {
                    "topic": "bench",
                    "partition": 0,
                    "offset": n * keys + u,
                    "timestamp": T0,
                    "key": base64.b64encode(f"u{u}".encode()).decode(),
                    "value": base64.b64encode(value).decode(),
                }
            )
        return {"eventSource": "aws:kafka", "records": {"bench-0": records}}

    detector.process(event(0))
    times = []
    for n in range(1, batches + 1):
        batch = event(n)
        start = time.perf_counter()
        report = detector.process(batch)
        times.append(time.perf_counter() - start)
        assert not report.failures and report.applied == keys, report
    sizes = []
    for page in ddb.get_paginator("scan").paginate(TableName=config.state_table):
        for i in page["Items"]:
            blob = i.get("state", i.get("snapshot"))
            if blob is not None:
                sizes.append(len(blob["B"]))
    detector.close()
    return {
        "keys": keys,
        "batches": batches,
        "per_key_per_batch_us": statistics.median(times) / keys * 1e6,
        "item_state_bytes": statistics.mean(sizes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--moto", help="a moto server's URL: also time whole batches")
    parser.add_argument("--moto-only", action="store_true", help="skip the in-process part")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    if not args.moto_only:
        out["in_process"] = in_process(args.keys, args.rounds)
        print(json.dumps(out["in_process"], indent=1))
    if args.moto:
        out["moto"] = against_moto(args.moto, args.keys, args.batches)
        print(json.dumps(out["moto"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

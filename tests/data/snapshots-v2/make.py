"""Make the format-2 fixtures: a chain (a base and two deltas), key records, and what the
engine that wrote them did next, written by the fraudcep on the path.

Run from the repository root with the release to record on the path::

    git worktree add --detach /tmp/fc-old <commit>
    PYTHONHASHSEED=0 PYTHONPATH=/tmp/fc-old:tests .venv/bin/python \\
        tests/data/snapshots-v2/make.py OUT_DIR

The files here were made at 9af1fc9 (format 2 before the codec's performance work): the
stream of ``tests/test_snapshot_deltas.py`` with values of every kind the codec carries.
"""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
from test_snapshot import make_rules
from test_snapshot_deltas import OPTIONS, events

from fraudcep import Engine

ODD: list[Any] = [
    ("a", 1),
    datetime(2026, 12, 5, 8, 30, tzinfo=UTC),
    date(2026, 12, 5),
    Decimal("12.50"),
    2**70,
    b"\x00\xff",
    ["x", {"y": [1, 2]}],
    "caf\u00e9",
    None,
]


def stream() -> list[dict[str, Any]]:
    out = events(11, 300)
    for i, event in enumerate(out):
        if i % 3 == 0:
            event["odd"] = ODD[(i // 3) % len(ODD)]
    return out


def tagged(value: Any) -> Any:
    """``value`` as JSON, the kinds JSON lacks tagged (the test reads them back)."""
    if isinstance(value, tuple):
        return {"$tuple": [tagged(v) for v in value]}
    if isinstance(value, list):
        return [tagged(v) for v in value]
    if isinstance(value, dict):
        return {k: tagged(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return {"$int": str(value)}
    return value


def main(out: Path) -> None:
    engine = Engine(make_rules(), **OPTIONS)
    payments = stream()
    engine.process_many(payments[:100])
    (out / "base.bin").write_bytes(engine.snapshot())
    engine.process_many(payments[100:170])
    (out / "delta1.bin").write_bytes(engine.snapshot_delta())
    engine.process_many(payments[170:230])
    (out / "delta2.bin").write_bytes(engine.snapshot_delta())
    records = []
    for group in sorted(engine.key_groups()):
        for key in ["x", "y", "z", "w", ("x", True), ("y", True), ("z", False), ("w", True)]:
            try:
                record = engine.export_key(group, key)
            except Exception:  # a key of the other group's kind
                continue
            if record is not None:
                records.append([group, repr(key), base64.b64encode(record).decode()])
    (out / "at-cut.bin").write_bytes(engine.snapshot())
    alerts = engine.process_many(payments[230:]) + engine.flush()
    expected = {
        "tail": tagged(payments[230:]),
        "records": records,
        "alerts": [[a.rule_id, repr(a.key), a.alert_id, a.emitted_at] for a in alerts],
        "timeouts": [
            [
                t.rule_id,
                repr(t.key),
                t.timeout_ts,
                {s: [e["id"] for e in v] for s, v in t.events.items()},
            ]
            for t in engine.drain_timeouts()
        ],
        "stats": attrs.asdict(engine.stats),
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

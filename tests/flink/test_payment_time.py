"""The event time the Kafka source reads from each record's JSON in Java
(``dev.fraudcep.flink.PaymentTimestampAssigner``, behind ``kafka_io.payment_time``): the
payment decoder's ``ts`` for every valid payment, and no event time (``Long.MIN_VALUE``,
which moves no watermark) for anything it cannot read plainly. Run in the Flink virtualenv
(the class lives in the JVM PyFlink starts)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.pyflink import flink_env, flink_python

pytestmark = pytest.mark.pyflink

NONE = -(2**63)
CASES: list[tuple[bytes, int]] = [
    (b'{"payment_id":"p","ts":1700000000123,"amount":5}', 1700000000123),
    (b' { "a" : {"ts": 1, "b": [1, {"ts": 2}]}, "s": "x\\"ts\\":3", "ts" : -42 } ', -42),
    (b'{"ts":17.5}', NONE),
    (b'{"ts":1e12}', NONE),
    (b'{"ts":"1700000000000"}', NONE),
    (b'{"ts":1,"ts":2}', NONE),
    (b'{"t\\u0073":5}', NONE),
    (b'{"ts":12345678901234567890}', NONE),
    (b"[1,2]", NONE),
    (b"not json", NONE),
    (b"", NONE),
    (b'{"amount":3}', NONE),
    (b'{"ts":', NONE),
    (b'{"x":"unterminated', NONE),
]
PROBE = """
import json, sys
from pyflink.java_gateway import get_gateway
from fraudcep_flink.environment import local_environment
local_environment()
jvm = get_gateway().jvm
assigner = jvm.dev.fraudcep.flink.PaymentTimestampAssigner("ts")
values = [bytes.fromhex(h) for h in json.loads(sys.stdin.read())]
print(json.dumps([assigner.read(v) for v in values]))
"""


def test_the_source_reads_the_payments_time_and_nothing_else(tmp_path: Path) -> None:
    env = flink_env()
    done = subprocess.run(
        [flink_python(), "-c", PROBE], input=json.dumps([v.hex() for v, _ in CASES]),
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == [want for _, want in CASES]

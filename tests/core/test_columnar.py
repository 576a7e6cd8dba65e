"""``Engine.process_batch`` over Arrow record batches is exactly ``process_many`` over the same
rows as dicts: the same alerts in the same order, the same side outputs, the same state."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fraudcep import Engine, Pattern, Rule  # noqa: E402
from fraudcep.errors import EventError  # noqa: E402
from fraudcep.payments.default_rules import default_rules  # noqa: E402
from fraudcep.rules import load_rules  # noqa: E402

RULES_YAML = """
- id: big-3
  key: user_id
  within: 40ms
  pattern:
    - name: first
      where: amount > 20
      times: 3
- id: probes-then-big
  key: card_id
  within: 60ms
  skip: skip_past_last_event
  pattern:
    - name: small
      where: amount < 5 and status == "declined"
      times_or_more: 2
    - name: big
      followed_by: true
      where: amount > 30 and merchant != small[0].merchant
- id: geo
  key: user_id
  within: 50ms
  skip: skip_past_last_event
  pattern:
    - name: a
      where: amount > 25
    - name: b
      followed_by: true
      where: amount > 25 and country != a[0].country
- id: declined-not-approved
  key: card_id
  within: 20ms
  pattern:
    - name: d
      where: status == "declined" and not (country in ["US", None])
    - name: ok
      not_followed_by: true
      where: status == "approved"
- id: optional-first
  key: user_id
  within: 30ms
  pattern:
    - name: a
      where: amount >= 28.5
      optional: true
    - name: b
      followed_by: true
      where: status == "declined" or missing(country)
- id: missing-field
  key: merchant
  within: 30ms
  pattern:
    - name: x
      where: not_a_column > 3 or status in ["x", None]
      times: 2
"""


def expression_rules() -> list[Rule]:
    return [d.rule for d in load_rules(RULES_YAML)]


def lambda_rule() -> Rule:
    pattern = (
        Pattern.begin("x")
        .where(lambda e: e["amount"] > 25)  # raises on None: a condition failure
        .times(2)
        .within(timedelta(milliseconds=30))
    )
    return Rule("lambda", pattern, key="user_id")


RULE_SETS = {
    **{
        f"alone:{i}": (lambda i=i: [expression_rules()[i]])  # type: ignore[misc]
        for i in range(6)
    },
    "expressions": expression_rules,
    "defaults": default_rules,
    "lambda": lambda: [lambda_rule()],
    "mixed": lambda: [*expression_rules(), lambda_rule()],
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@st.composite
def batches(draw: st.DrawFn) -> tuple[Any, list[int]]:
    n = draw(st.integers(0, 120))
    steps = draw(st.lists(st.integers(-6, 5), min_size=n, max_size=n))
    ts: list[int] = []
    now = 1_000
    for step in steps:
        now += step
        ts.append(now)
    amount_type = draw(st.sampled_from(["int", "float", "none"]))
    if amount_type == "int":
        amount: st.SearchStrategy[Any] = st.one_of(
            st.integers(0, 19), st.sampled_from([3, 4, 20, 21, 25, 29, 31, 501, 1501, 2001])
        )
        amount_arrow: Any = pa.int64()
    elif amount_type == "float":
        amount = st.one_of(
            st.sampled_from([0.5, 3.0, 4.99, 10.0, 12.5, -0.0, 7.25]),
            st.sampled_from([20.0, 20.5, 25.0, 28.5, 30.25, 500.5, 1500.5, 2000.01]),
        )
        amount_arrow = pa.float64()
    else:
        amount = st.none()
        amount_arrow = pa.null()
    maybe = st.booleans()
    columns: dict[str, Any] = {
        "user_id": [
            draw(st.one_of(st.integers(0, 12), st.none()) if draw(maybe) else st.integers(0, 12))
            for _ in range(n)
        ],
        "card_id": [draw(st.sampled_from(["c0", "c1", "c2", "c3", "c4", "c5"])) for _ in range(n)],
        "merchant": [draw(st.sampled_from(["m0", "m1", "m2", "m3", "m4", None])) for _ in range(n)],
        "amount": [draw(st.one_of(amount, st.none())) for _ in range(n)],
        "status": [
            draw(st.sampled_from(["approved", "declined", "declined", None])) for _ in range(n)
        ],
        "country": [draw(st.sampled_from(["US", "DE", "FR", None])) for _ in range(n)],
    }
    types = {
        "user_id": pa.int64(),
        "card_id": pa.string(),
        "merchant": pa.large_string(),
        "amount": amount_arrow,
        "status": pa.string(),
        "country": pa.string(),
    }
    ts_type = draw(st.sampled_from(["int", "ms", "us"]))
    if ts_type == "int":
        columns["ts"], types["ts"] = ts, pa.int64()
    elif ts_type == "ms":
        columns["ts"] = [_EPOCH + timedelta(milliseconds=t) for t in ts]
        types["ts"] = pa.timestamp("ms", tz="UTC")
    else:
        micros = [t * 1000 + draw(st.integers(0, 999)) for t in ts]
        columns["ts"] = [_EPOCH + timedelta(microseconds=u) for u in micros]
        types["ts"] = pa.timestamp("us")
    if draw(st.booleans()):
        del columns["country"], types["country"]
    schema = pa.schema([(name, types[name]) for name in columns])
    batch = pa.RecordBatch.from_pydict(columns, schema=schema)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return batch, cuts


def _pieces(batch: Any, cuts: list[int]) -> list[Any]:
    bounds = [0, *cuts, batch.num_rows]
    return [batch.slice(a, b - a) for a, b in itertools.pairwise(bounds)]


def _failures(engine: Engine) -> list[tuple[Any, ...]]:
    return list(engine.drain_errors())


def _outputs(engine: Engine) -> tuple[Any, ...]:
    return (
        engine.drain_late(),
        engine.drain_timeouts(),
        _failures(engine),
        engine.drain_overflows(),
        engine.stats,
    )


def _check_same(rules: list[Rule], batch: Any, cuts: list[int], **options: Any) -> None:
    rows = Engine(rules, timestamp="ts", **options)
    columns = Engine(rules, timestamp="ts", **options)
    assert columns.snapshot() == rows.snapshot()  # and from now on, deltas
    for piece in _pieces(batch, cuts):
        expected = rows.process_many(piece.to_pylist())
        got = columns.process_batch(piece)
        assert got == expected
        assert _outputs(columns) == _outputs(rows)
        assert columns.snapshot_delta() == rows.snapshot_delta()
    assert columns.snapshot() == rows.snapshot()
    assert columns.flush() == rows.flush()
    assert _outputs(columns) == _outputs(rows)


@pytest.mark.parametrize("rule_set", sorted(RULE_SETS))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=batches(), out_of_orderness=st.sampled_from([0, 0, 1, 4]))
def test_process_batch_is_process_many(
    rule_set: str, data: tuple[Any, list[int]], out_of_orderness: int
) -> None:
    batch, cuts = data
    _check_same(RULE_SETS[rule_set](), batch, cuts, max_out_of_orderness=out_of_orderness)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=batches())
def test_forced_watermarks(data: tuple[Any, list[int]]) -> None:
    batch, cuts = data
    _check_same(expression_rules(), batch, cuts, max_out_of_orderness=3, max_buffered_events=2)


def test_a_table_and_a_watermark_moved_by_hand() -> None:
    rows = [
        {
            "user_id": i % 3,
            "card_id": "c0",
            "merchant": "m0",
            "amount": 10 + (i * 7) % 40,
            "status": "declined" if i % 5 == 0 else "approved",
            "country": "DE",
            "ts": 1_000 + i,
        }
        for i in range(200)
    ]
    table = pa.Table.from_pylist(rows[:150]).combine_chunks()
    table = pa.concat_tables([table, pa.Table.from_pylist(rows[150:])])
    a, b = Engine(expression_rules(), timestamp="ts"), Engine(expression_rules(), timestamp="ts")
    assert a.advance_watermark(1_020) == b.advance_watermark(1_020)
    assert b.process_batch(table) == a.process_many(rows)
    assert _outputs(a) == _outputs(b)
    assert a.snapshot() == b.snapshot()


def test_a_bad_timestamp_raises_at_its_row() -> None:
    batch = pa.RecordBatch.from_pydict(
        {"user_id": [1, 1, 1, 2], "amount": [30, 30, 30, 1], "ts": [10, 11, None, 12]}
    )
    rules = [expression_rules()[0]]
    a, b = Engine(rules, timestamp="ts"), Engine(rules, timestamp="ts")
    with pytest.raises(EventError) as expected:
        a.process_many(batch.to_pylist())
    with pytest.raises(EventError) as got:
        b.process_batch(batch)
    assert str(got.value) == str(expected.value)
    assert a.snapshot() == b.snapshot()
    assert _outputs(a) == _outputs(b)


def test_processing_time_and_timestamp_functions_take_rows_one_by_one() -> None:
    batch = pa.RecordBatch.from_pydict({"user_id": [1, 1, 1], "amount": [30, 30, 30]})
    rule = expression_rules()[0]
    clock = iter(range(100, 200))
    from fraudcep import TimeMode

    engine = Engine([rule], time_mode=TimeMode.PROCESSING_TIME, clock=lambda: next(clock))
    assert len(engine.process_batch(batch)) == 1
    by_function = Engine([rule], timestamp=lambda e: 5 + e["amount"])
    assert by_function.process_batch(batch) == []
    assert by_function.stats.events_in == 3


def test_not_a_batch() -> None:
    from fraudcep.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="RecordBatch or Table"):
        Engine(expression_rules(), timestamp="ts").process_batch([{"ts": 1}])


def test_most_rows_are_left_out() -> None:
    """The point of the path: rows that change nothing are never made into dicts."""
    from fraudcep.engine import engine as engine_module

    rows = [
        {"user_id": i % 50, "amount": 2500.0 if i % 97 == 0 else 10.0, "ts": 1_000 + i}
        for i in range(5_000)
    ]
    seen: list[int] = []
    original = engine_module.Engine._ingest_rows

    def counting(self: Engine, batch_rows: list[Any], out: list[Any]) -> tuple[int, int]:
        seen.append(len(batch_rows))
        return original(self, batch_rows, out)

    rule = load_rules(
        "- id: p1\n  key: user_id\n  within: 5m\n  pattern:\n"
        "    - name: first\n      where: amount > 2000\n      times: 3\n"
    )[0].rule
    engine = Engine([rule], timestamp="ts")
    reference = Engine([rule], timestamp="ts").process_many(rows)
    try:
        engine_module.Engine._ingest_rows = counting  # type: ignore[method-assign]
        assert engine.process_batch(pa.RecordBatch.from_pylist(rows)) == reference
    finally:
        engine_module.Engine._ingest_rows = original  # type: ignore[method-assign]
    assert sum(seen) <= 60


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=batches(),
    before=st.lists(
        st.tuples(
            st.sampled_from([1, 1.0, True, "1", 2.5, None, 3, "c1", b"c1", (1,)]),
            st.sampled_from([0.5, 25.0, 2001.0]),
            st.integers(900, 1_010),
        ),
        max_size=12,
    ),
)
def test_keys_of_other_types_held_before_the_batch(
    data: tuple[Any, list[int]], before: list[tuple[Any, float, int]]
) -> None:
    """Keys held as 1.0, True or "1" (from dict events) meet int and string key columns as
    Python compares them."""
    batch, cuts = data
    rules = expression_rules()
    rows = Engine(rules, timestamp="ts", max_out_of_orderness=2)
    columns = Engine(rules, timestamp="ts", max_out_of_orderness=2)
    events = [
        {
            "user_id": key,
            "card_id": key,
            "merchant": "m0",
            "amount": amount,
            "status": "declined",
            "ts": ts,
        }
        for key, amount, ts in before
    ]
    for engine in (rows, columns):
        engine.process_many(events)
    for piece in _pieces(batch, cuts):
        assert columns.process_batch(piece) == rows.process_many(piece.to_pylist())
        assert _outputs(columns) == _outputs(rows)
    assert columns.snapshot() == rows.snapshot()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=batches())
def test_after_a_restore_and_a_key_taken_in(data: tuple[Any, list[int]]) -> None:
    """A restored engine, and a key record (with a timer the watermark has passed) taken in."""
    batch, cuts = data
    rules = expression_rules()
    source = Engine(rules, timestamp="ts")
    source.process_many(
        [
            {
                "user_id": 1,
                "card_id": "c1",
                "merchant": "m0",
                "amount": 30,
                "status": "declined",
                "ts": 900,
            },
            {
                "user_id": 1,
                "card_id": "c1",
                "merchant": "m0",
                "amount": 31,
                "status": "declined",
                "ts": 901,
            },
            {
                "user_id": 2,
                "card_id": "c2",
                "merchant": "m1",
                "amount": 1,
                "status": "declined",
                "ts": 902,
            },
        ]
    )
    record = source.export_key("user_id", 1)
    blob = source.snapshot()
    rows, columns = (
        Engine.restore(blob, rules, timestamp="ts"),
        Engine.restore(blob, rules, timestamp="ts"),
    )
    for engine in (rows, columns):
        engine.advance_watermark(995)
        engine.import_key("user_id", 1, record)
    for piece in _pieces(batch, cuts):
        assert columns.process_batch(piece) == rows.process_many(piece.to_pylist())
        assert _outputs(columns) == _outputs(rows)
    assert columns.snapshot() == rows.snapshot()


def test_rules_changed_between_batches() -> None:
    rows_data = [
        {
            "user_id": i % 4,
            "card_id": f"c{i % 3}",
            "merchant": f"m{i % 5}",
            "amount": [1, 25, 3, 2001, 40][i % 5],
            "status": ["declined", "approved"][i % 2],
            "country": ["US", "DE"][i % 2],
            "ts": 1_000 + i,
        }
        for i in range(300)
    ]
    batch = pa.RecordBatch.from_pylist(rows_data)
    first, *others = expression_rules()
    a, b = Engine([first], timestamp="ts"), Engine([first], timestamp="ts")
    assert b.process_batch(batch.slice(0, 100)) == a.process_many(rows_data[:100])
    for engine in (a, b):
        for rule in others:
            engine.add_rule(rule)
        engine.replace_rule(first)
    assert b.process_batch(batch.slice(100, 100)) == a.process_many(rows_data[100:200])
    for engine in (a, b):
        engine.disable_rule(others[0].id)
    assert b.process_batch(batch.slice(200)) == a.process_many(rows_data[200:])
    assert _outputs(a) == _outputs(b)
    assert a.snapshot() == b.snapshot()

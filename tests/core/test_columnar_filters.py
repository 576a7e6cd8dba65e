"""The vectorised form of an expression is its row-wise value on every row it decides."""

from __future__ import annotations

from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fraudcep.engine.vectorised import condition_filter, expression_filter  # noqa: E402
from fraudcep.pattern.conditions import And, Not, Or, Predicate  # noqa: E402
from fraudcep.rules.expressions import compile_expression  # noqa: E402

TRANSLATED = [
    "amount > 2000",
    "amount >= 2000.5",
    "amount < 2000.5 or amount == 7",
    "amount == 7.0",
    "amount != 7.5",
    "2000 < amount",
    "0 < amount <= 100",
    "-1 <= amount",
    "count_int > 3.5",
    "count_int <= -2.5",
    "count_int == 2.0",
    "count_int != 2.5",
    "count_int in [1, 2.0, 2.5, True, 'x', None]",
    "count_int not in [1, 3]",
    "amount in [1, 7.0, -0.0]",
    "status == 'declined'",
    "status != 'declined'",
    "status < 'b'",
    "status >= 'approved'",
    "status in ['declined', 'x']",
    "status in ['declined', None]",
    "status not in ['declined']",
    "status == 5",
    "status != 5",
    "amount == 'x'",
    "amount != 'x'",
    "flag",
    "not flag",
    "flag == True",
    "flag != 0",
    "flag == 2",
    "flag in [1]",
    "amount",
    "count_int",
    "status",
    "not status",
    "nothing",
    "nothing > 3",
    "nothing == None",
    "nothing != 'x'",
    "nothing in ['x', None]",
    "nothing is None",
    "amount is None",
    "amount is not None",
    "status == None",
    "exists(amount) and missing(nothing)",
    "missing(status)",
    "exists(5)",
    "not (amount > 10 and status == 'declined') or flag",
    "event.amount > 5 and event['status'] == 'approved'",
    "True",
    "None",
    "all_null == None",
    "all_null > 1",
    "amount == nothing",
    "amount != all_null",
    "status < nothing",
    "nothing == all_null",
]

NOT_TRANSLATED = [
    "amount * 2 > 10",
    "lower(status) == 'x'",
    "status > 5",  # a type error row-wise: the whole condition is false
    "amount < 'x'",
    "flag > 0",
    "amount > count_int",
    "1 < 2",
    "card.country == 'US'",
    "status in 'declined'",
    "amount > 2**70 if flag else 1",
    "count_int > 10000000000000000000.5",
    "status == amount",
]


def _schema() -> Any:
    return pa.schema(
        [
            ("amount", pa.float64()),
            ("count_int", pa.int32()),
            ("status", pa.large_string()),
            ("flag", pa.bool_()),
            ("all_null", pa.null()),
        ]
    )


_values = {
    "amount": st.one_of(
        st.none(),
        st.sampled_from([0.0, -0.0, 7.0, 7.5, 10.0, 2000.0, 2000.5, float("nan"), float("inf")]),
        st.floats(allow_nan=True),
    ),
    "count_int": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1), st.integers(-4, 4)),
    "status": st.one_of(st.none(), st.sampled_from(["", "approved", "declined", "b", "é", "Z"])),
    "flag": st.one_of(st.none(), st.booleans()),
    "all_null": st.none(),
}


@st.composite
def rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 30))
    return [{name: draw(values) for name, values in _values.items()} for _ in range(n)]


def _row_wise(source: str, batch: Any) -> list[bool]:
    fn = compile_expression(source)
    return [fn(row) for row in batch.to_pylist()]


@pytest.mark.parametrize("source", NOT_TRANSLATED)
def test_not_translated(source: str) -> None:
    assert expression_filter(source, _schema()) is None


@settings(max_examples=150, deadline=None)
@given(data=rows())
def test_translated_expressions_decide_as_row_wise(data: list[dict[str, Any]]) -> None:
    batch = pa.RecordBatch.from_pylist(data, schema=_schema())
    for source in TRANSLATED:
        mask = expression_filter(source, _schema())
        assert mask is not None, source
        got = mask(batch).to_pylist()
        expected = _row_wise(source, batch)
        for row, g, e in zip(batch.to_pylist(), got, expected, strict=True):
            assert g is None or g == e, (source, row, g, e)


def test_condition_trees() -> None:
    big = Predicate.of(compile_expression("amount > 10"))
    declined = Predicate.of(compile_expression("status == 'declined'"))
    tree = Or(And(big, Not(declined)), Not(big))
    schema = _schema()
    mask = condition_filter(tree, schema)
    assert mask is not None
    data = [
        {"amount": 20.0, "status": "declined"},
        {"amount": 20.0, "status": "approved"},
        {"amount": None, "status": None},
    ]
    batch = pa.RecordBatch.from_pylist(data, schema=schema)
    assert mask(batch).to_pylist() == [False, True, True]
    # a Python function, or one claiming an expression text, is not translated
    lam = Predicate.of(lambda e: e["amount"] > 10)
    assert condition_filter(And(big, lam), schema) is None

    def impostor(e: Any) -> bool:
        return True

    impostor.fraudcep_source = "amount > 10"  # type: ignore[attr-defined]
    assert condition_filter(Predicate.of(impostor), schema) is None
    with_context = Predicate.of(compile_expression("amount > a[0].amount", stages=["a"]))
    assert condition_filter(with_context, schema) is None
    assert condition_filter(None, schema) is not None


def test_large_integers_are_compared_exactly() -> None:
    schema = pa.schema([("n", pa.int64()), ("x", pa.float64())])
    data = [{"n": 2**53 + 1, "x": float(2**53)}, {"n": 2**53, "x": 1.0}]
    batch = pa.RecordBatch.from_pylist(data, schema=schema)
    for source in ("n > 9007199254740992.0", "n == 9007199254740992", "x == 9007199254740992"):
        mask = expression_filter(source, schema)
        assert mask is not None
        assert mask(batch).to_pylist() == _row_wise(source, batch), source
    assert expression_filter("x == 9007199254740993", schema) is None

"""Helpers for tests of the expression language: a context with stages, and a hypothesis
strategy of expressions over the language's constructs, fields and helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st


class Ctx:
    def __init__(self, stages: dict[str, list[Any]] | None = None, previous: Any = None) -> None:
        self.stages = stages or {}
        self.previous = previous
        self.timestamp = 0

    def events(self, name: str) -> Sequence[Any]:
        return self.stages.get(name, [])


FIELDS = ["amount", "fee", "status", "card.country", "card.limit", "event.amount", "nope"]
STRINGS = ["'declined'", "'ok'", "'FR'", "''"]
NUMBERS = ["0", "1", "-3", "2.5", "1000", "1e3"]


def atoms(stages: bool) -> st.SearchStrategy[str]:
    choices = [
        st.sampled_from(FIELDS),
        st.sampled_from(STRINGS),
        st.sampled_from(NUMBERS),
        st.sampled_from(["None", "True", "False"]),
    ]
    if stages:
        choices.append(
            st.sampled_from(
                [
                    "small[0].amount",
                    "small[-1].status",
                    "small[3].amount",
                    "prev.amount",
                    "prev.status",
                    "count(small)",
                    "sum(small.amount)",
                    "max(small.amount)",
                    "avg(small.fee)",
                    "min(small.status)",
                ]
            )
        )
    return st.one_of(*choices)


def expressions(stages: bool = True) -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binop = st.tuples(
            inner,
            st.sampled_from(["+", "-", "*", "/", "//", "%", "<", "<=", ">", ">=", "==", "!="]),
            inner,
        ).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
        boolop = st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        )
        chain = st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} < {t[1]} <= {t[2]})")
        unary = st.tuples(st.sampled_from(["not ", "-", "+"]), inner).map(
            lambda t: f"({t[0]}{t[1]})"
        )
        member = st.tuples(inner, st.sampled_from(["in", "not in"]), st.lists(inner, max_size=3))
        member_s = member.map(lambda t: f"({t[0]} {t[1]} [{', '.join(t[2])}])")
        in_field = st.tuples(inner, st.sampled_from(["status", "nope", "card"])).map(
            lambda t: f"({t[0]} in {t[1]})"
        )
        ifexp = st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})")
        one = st.tuples(
            st.sampled_from(
                [
                    *("len", "lower", "upper", "abs", "round", "minutes", "hour_of"),
                    *("weekday_of", "exists", "missing"),
                ]
            ),
            inner,
        ).map(lambda t: f"{t[0]}({t[1]})")
        two = st.tuples(st.sampled_from(["startswith", "endswith", "contains"]), inner, inner).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        )
        isnone = inner.map(lambda s: f"({s} is None)")
        return st.one_of(binop, boolop, chain, unary, member_s, in_field, ifexp, one, two, isnone)

    return st.recursive(atoms(stages), extend, max_leaves=8)

"""Named lists (fraudcep.rules.lists) in expressions, rule files, alerts and snapshots:
``x in lists.NAME``, ``prefix_in(x, lists.NAME)``, ``email_domain(x)``; a list changed between
events changes the decision with no recompilation; a rule naming a missing list is refused at
load time; alerts record the versions of the lists their rule reads; snapshots do not hold
list contents and restore after a list change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudcep import Engine
from fraudcep.pattern.conditions import expression_of
from fraudcep.rules import RuleSpecError, load_rules
from fraudcep.rules.expressions import ExpressionError, compile_expression
from fraudcep.rules.lists import ListError, Lists, NamedList, email_domain, parse_list_file
from fraudcep.runtime.output_records import alert_value


def step(engine: Engine, *events: dict[str, Any]) -> list[Any]:
    """Process ``events`` and move the watermark to the last one: their alerts."""
    out = engine.process_many(list(events))
    return out + engine.advance_watermark(events[-1]["ts"])


def registry() -> Lists:
    return Lists(
        {
            "blocked_cards": ["c1", "c2"],
            "risky_bins": ["4111", "52", "601100"],
            "disposable": ["mailinator.com"],
            "countries": ["KP", "IR"],
        }
    )


# -- the registry ----------------------------------------------------------------------------


def test_registry_versions_and_replace() -> None:
    lists = registry()
    assert lists.names() == ("blocked_cards", "countries", "disposable", "risky_bins")
    assert lists.version("blocked_cards") == 1
    assert lists.replace("blocked_cards", ["c3"]) == 2
    assert lists.replace("blocked_cards", ["c4"], version=10) == 10
    with pytest.raises(ListError):
        lists.replace("blocked_cards", [], version=10)
    assert lists.get("blocked_cards").entries == frozenset({"c4"})
    assert lists.replace("new_list", []) == 1
    with pytest.raises(ListError):
        lists.replace("_private", [])
    with pytest.raises(ListError):
        lists.replace("bad", [1.5])


def test_entries_are_strings_and_integers_match_by_their_text() -> None:
    lists = Lists({"bins": [411111, "52"]})
    named = lists.get("bins")
    assert named.entries == frozenset({"411111", "52"})
    assert 411111 in named and "411111" in named
    assert True not in Lists({"t": ["True", "1"]}).get("t")
    assert None not in named and 4.0 not in named and ["52"] not in named


def test_prefix_tries_each_distinct_length() -> None:
    named = registry().get("risky_bins")
    assert named.prefix_lengths == (2, 4, 6)
    assert named.has_prefix_of("411111") and named.has_prefix_of("5200") and named.has_prefix_of(52)
    assert named.has_prefix_of("601100") and not named.has_prefix_of("6011")
    assert not named.has_prefix_of("5") and not named.has_prefix_of(None)


def test_email_domain() -> None:
    assert email_domain("A.B@Mailinator.COM") == "mailinator.com"
    assert email_domain("a@b@c.org") == "c.org"
    assert email_domain("no-at") is None and email_domain("x@") is None
    assert email_domain(None) is None and email_domain(12) is None


def test_files_of_each_format(tmp_path: Path) -> None:
    (tmp_path / "blocked_cards.txt").write_text("# blocked\nc1\n\n  c2  \n")
    (tmp_path / "merchants.csv").write_text("# merchant,reason\nm1,fraud\n\nm2,chargebacks\n")
    (tmp_path / "bins.json").write_text(json.dumps(["4111", 520000]))
    (tmp_path / "domains.jsonl").write_text('"a.com"\n\n"b.org"\n')
    (tmp_path / "ignored.md").write_text("x\n")
    lists = Lists.from_path(tmp_path)
    assert lists.names() == ("bins", "blocked_cards", "domains", "merchants")
    assert lists.get("blocked_cards").entries == frozenset({"c1", "c2"})
    assert lists.get("merchants").entries == frozenset({"m1", "m2"})
    assert lists.get("bins").entries == frozenset({"4111", "520000"})
    assert lists.get("domains").entries == frozenset({"a.com", "b.org"})
    assert lists.load_file(tmp_path / "blocked_cards.txt").version == 2
    (tmp_path / "bad.json").write_text('{"a": 1}')
    with pytest.raises(ListError, match="JSON array"):
        lists.load_file(tmp_path / "bad.json")
    with pytest.raises(ListError, match="cannot read"):
        lists.load_file(tmp_path / "absent.txt")


def test_a_list_files_bytes_parse_as_its_file_would(tmp_path: Path) -> None:
    # what the directory reader takes from a file, an object store's reader takes from bytes
    samples = {
        "blocked_cards.txt": "\ufeff# blocked\nc1\n\n  c2  \n",
        "merchants.csv": "# merchant,reason\nm1,fraud\n",
        "bins.json": json.dumps(["4111", 520000]),
        "domains.jsonl": '"a.com"\n\n"b.org"\n',
    }
    for file_name, text in samples.items():
        (tmp_path / file_name).write_text(text, encoding="utf-8")
    from_files = Lists.from_path(tmp_path)
    for file_name, text in samples.items():
        name, entries = parse_list_file(text.encode(), f"lists/prod/{file_name}")
        assert from_files.get(name).entries == Lists({name: entries}).get(name).entries
    assert parse_list_file(b"[1]", "x.JSON") == ("x", [1])  # extensions in any case
    with pytest.raises(ListError, match=r"^s3://b/k\.txt: not UTF-8 text"):
        parse_list_file(b"\xff\xfe", "k.txt", source="s3://b/k.txt")
    with pytest.raises(ListError, match=r"^k\.json:1:2: "):
        parse_list_file(b"{", "k.json")


def test_a_million_entries_are_a_set() -> None:
    entries = [f"card-{i}" for i in range(1_000_000)]
    lists = Lists({"big": entries})
    named = lists.get("big")
    assert isinstance(named, NamedList) and isinstance(named.entries, frozenset)
    assert len(named) == 1_000_000
    f = compile_expression("card_id in lists.big", lists=lists)
    assert f({"card_id": "card-999999"}) and f({"card_id": "card-0"})
    assert not f({"card_id": "card-1000000"})


# -- expressions -----------------------------------------------------------------------------


def test_membership_prefix_and_domain() -> None:
    lists = registry()
    f = compile_expression(
        "card_id in lists.blocked_cards or prefix_in(card.bin, lists.risky_bins)"
        " or email_domain(email) in lists['disposable']",
        lists=lists,
    )
    assert f({"card_id": "c1"})
    assert f({"card_id": "x", "card": {"bin": "411111"}})
    assert f({"card_id": "x", "card": {"bin": 520001}})
    assert f({"email": "someone@MAILINATOR.com"})
    assert not f({"card_id": "x", "card": {"bin": "999999"}, "email": "a@b.com"})
    assert not f({})  # every field missing: None is in no list
    g = compile_expression("country not in lists.countries", lists=lists)
    assert g({"country": "FR"}) and not g({"country": "KP"})
    assert g({})  # 'not in' is the negation of 'in': None is not in the list


def test_a_list_changed_between_events_changes_the_decision() -> None:
    lists = registry()
    engine = Engine([d.rule for d in load_rules(_BLOCKED, lists=lists)], timestamp="ts")
    assert step(engine, {"card_id": "c9", "ts": 1, "amount": 1}) == []
    lists.replace("blocked_cards", ["c9"])
    alerts = step(engine, {"card_id": "c9", "ts": 2, "amount": 1})
    assert [a.rule_id for a in alerts] == ["blocked"]
    assert alerts[0].lists == {"blocked_cards": 2}
    lists.replace("blocked_cards", [])
    assert step(engine, {"card_id": "c9", "ts": 3, "amount": 1}) == []


_BLOCKED = """
- id: blocked
  key: card_id
  pattern:
    - name: pay
      where: card_id in lists.blocked_cards and amount > 0
"""

_TWO_LISTS = """
- id: risky
  key: card_id
  within: 1m
  pattern:
    - name: first
      where: prefix_in(bin, lists.risky_bins)
    - name: second
      followed_by: true
      where: email_domain(email) in lists.disposable
"""


def test_refused_expressions() -> None:
    lists = registry()
    for text, message in [
        ("x in lists.nope", "unknown list 'nope'"),
        ("x in lists", "'lists' cannot be used"),
        ("lists.blocked_cards", "a list cannot be used as a condition"),
        ("x == lists.blocked_cards", "may only be used as 'x in lists.NAME'"),
        ("prefix_in(x, y)", "prefix_in() needs a list"),
        ("prefix_in(x)", "prefix_in() takes 2 arguments"),
        ("x in lists.blocked_cards.y", "has no fields"),
        ("x in lists[0]", "a list is named by a string"),
    ]:
        with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace(")", r"\)")):
            compile_expression(text, lists=lists)
    with pytest.raises(ExpressionError, match="no lists are loaded"):
        compile_expression("x in lists.blocked_cards")


def test_a_field_named_lists_is_read_through_event() -> None:
    f = compile_expression("event.lists.a == 1", lists=registry())
    assert f({"lists": {"a": 1}})


def test_expressions_without_lists_are_unchanged() -> None:
    f = compile_expression("amount > 2", lists=registry())
    assert not hasattr(f, "fraudcep_lists")
    assert expression_of(f) == "amount > 2"


def test_an_expression_with_lists_is_not_vouched_for_by_its_text() -> None:
    # a vectorised filter made from the text alone could not see the lists
    f = compile_expression("card_id in lists.blocked_cards", lists=registry())
    assert f.fraudcep_lists == ("blocked_cards",)  # type: ignore[attr-defined]
    assert expression_of(f) is None


# -- loading ---------------------------------------------------------------------------------


def test_a_rule_naming_a_missing_list_is_refused_at_load_time() -> None:
    lists = Lists({"other": []})
    with pytest.raises(RuleSpecError) as info:
        load_rules(_BLOCKED, source="rules.yaml", lists=lists)
    (problem,) = info.value.problems
    assert problem.source == "rules.yaml" and problem.rule_id == "blocked"
    assert (problem.line, problem.column) == (6, 25)
    assert "unknown list 'blocked_cards'" in problem.message
    assert "card_id in lists.blocked_cards and amount > 0" in problem.message
    assert "known lists: other" in problem.message
    assert problem.missing_list == "blocked_cards"  # for a runtime to tell, not by the text
    with pytest.raises(RuleSpecError, match="no lists are loaded"):
        load_rules(_BLOCKED)
    # other problems name no list
    with pytest.raises(RuleSpecError) as other:
        load_rules(_BLOCKED.replace("card_id in", "card_id ==="), lists=lists)
    assert [p.missing_list for p in other.value.problems] == [None]


# -- alerts ----------------------------------------------------------------------------------


def test_alerts_record_the_versions_of_the_lists_their_rule_reads() -> None:
    lists = registry()
    lists.replace("disposable", ["mailinator.com"], version=7)
    rules = [d.rule for d in load_rules(_TWO_LISTS + _BLOCKED, lists=lists)]
    engine = Engine(rules, timestamp="ts")
    out = step(
        engine,
        {"card_id": "c1", "ts": 1, "bin": "4111000", "amount": 5},
        {"card_id": "c1", "ts": 2, "email": "x@mailinator.com", "amount": 5},
    )
    by_rule = {a.rule_id: a for a in out}
    assert by_rule["risky"].lists == {"disposable": 7, "risky_bins": 1}
    assert by_rule["blocked"].lists == {"blocked_cards": 1}
    record = json.loads(alert_value(by_rule["risky"]))
    assert record["lists"] == {"disposable": 7, "risky_bins": 1}
    # the versions are not part of the alert id
    again = Engine([d.rule for d in load_rules(_TWO_LISTS, lists=registry())], timestamp="ts")
    ids = [
        a.alert_id
        for a in step(
            again,
            {"card_id": "c1", "ts": 1, "bin": "4111000", "amount": 5},
            {"card_id": "c1", "ts": 2, "email": "x@mailinator.com", "amount": 5},
        )
    ]
    assert ids == [by_rule["risky"].alert_id]


def test_an_alert_of_a_rule_without_lists_has_no_lists_field() -> None:
    text = "- id: big\n  key: k\n  pattern:\n    - name: p\n      where: a > 1\n"
    rules = [d.rule for d in load_rules(text)]
    (alert,) = step(Engine(rules, timestamp="ts"), {"k": 1, "a": 2, "ts": 1})
    assert alert.lists == {}
    assert "lists" not in alert.to_dict()
    assert b'"lists"' not in alert_value(alert)


# -- snapshots -------------------------------------------------------------------------------


def test_a_snapshot_restores_after_a_list_changed() -> None:
    lists = registry()
    rules = [d.rule for d in load_rules(_TWO_LISTS, lists=lists)]
    engine = Engine(rules, timestamp="ts")
    assert step(engine, {"card_id": "c1", "ts": 1, "bin": "4111000"}) == []
    blob = engine.snapshot()
    assert b"mailinator" not in blob and b"4111" in blob  # the event, not the list
    lists.replace("disposable", ["example.org"])
    # the same rules, compiled again against the changed registry (as a restarted process does)
    again = [d.rule for d in load_rules(_TWO_LISTS, lists=lists)]
    restored = Engine.restore(blob, again, timestamp="ts")
    (alert,) = step(restored, {"card_id": "c1", "ts": 2, "email": "a@example.org"})
    assert alert.lists == {"disposable": 2, "risky_bins": 1}
    assert [e["ts"] for e in alert.events["first"]] == [1]
    # and with rules compiled against another registry holding the lists
    other = Lists({"risky_bins": [], "disposable": ["example.org"]})
    rules_other = [d.rule for d in load_rules(_TWO_LISTS, lists=other)]
    third = Engine.restore(blob, rules_other, timestamp="ts")
    assert len(step(third, {"card_id": "c1", "ts": 2, "email": "a@example.org"})) == 1


# -- property: the compiled expression equals a plain Python reference ----------------------

_TEXT = st.text(alphabet="ab12", max_size=4)
_VALUE = st.one_of(st.none(), _TEXT, st.integers(-3, 130), st.booleans(), st.floats(0, 2))


def _text(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(_TEXT, st.integers(0, 130)), max_size=8),
    st.lists(_TEXT, max_size=5),
    st.dictionaries(st.sampled_from(["x", "y"]), _VALUE, max_size=2),
)
def test_compiled_equals_reference(a: list[Any], b: list[str], event: dict[str, Any]) -> None:
    lists = Lists({"a": a, "b": b})
    text = "x in lists.a or (prefix_in(y, lists.b) and x not in lists.b)"
    f = compile_expression(text, lists=lists)
    set_a = {str(v) for v in a}
    set_b = set(b)
    x, y = _text(event.get("x")), _text(event.get("y"))
    in_a = x is not None and x in set_a
    prefix = y is not None and any(y.startswith(p) for p in set_b)
    not_in_b = not (x is not None and x in set_b)
    assert f(event) == (in_a or (prefix and not_in_b))
    # a changed list is seen by the same function
    lists.replace("a", [])
    assert f(event) == (prefix and not_in_b)

"""Rules-topic records without a broker: every way a record can be bad is a RuleRecordError
(or, for the reader, a logged and counted rejection), the rule set keeps what it had, and a
version never goes back."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from fraudcep.rules import load_rules
from fraudcep.runtime.rule_records import RuleRecordError, RuleSet, parse_rule_record
from fraudcep_kafka.rules_topic import RulesTopicReader

RULE = {"id": "r", "key": "user_id", "pattern": [{"name": "a", "where": "amount > 1"}]}


def record(**changes: Any) -> bytes:
    return json.dumps({**RULE, **changes}).encode()


LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [
        f"{n}: &{n} [" + ",".join(["*" + "abcdefghi"[i]] * 9) + "]"
        for i, n in enumerate("bcdefghi")
    ]
).encode()

HOSTILE: dict[str, tuple[bytes | None, bytes, str]] = {
    "recursive alias": (b"r", b"- &r {id: r, key: user_id, pattern: [*r]}", "YAML anchors"),
    "recursive alias mapping": (b"r", b"&r {id: r, key: user_id, pattern: [*r]}", "anchors"),
    "huge version": (b"r", record(version=0).replace(b"0", b"9" * 5_000, 1), "32 characters"),
    "alias bomb": (b"r", LAUGHS, "YAML anchors"),
    "huge times": (b"r", record(pattern=[{"name": "a", "times": 10**12}]), "1,000"),
    "huge range": (b"r", record(pattern=[{"name": "a", "times": [1, 10**9]}]), "1,000"),
    "deep JSON": (b"r", b"[" * 100_000 + b"]" * 100_000, "nested more than 32"),
    "deep YAML": (b"r", b"a: " + b"[" * 100_000, "nest"),
    "tag": (b"r", b"{id: r, key: !!python/object/apply:os.system [id]}", "YAML tags"),
    "UTF-16": (b"r", record().decode().encode("utf-16"), "UTF-8"),
    "Latin-1 key": (b"r\xe9", record(), "UTF-8"),
    "no key": (None, record(), "needs the rule id as its key"),
    "other key": (b"s", record(), "must hold exactly that rule"),
    "two rules": (b"r", json.dumps([RULE, {**RULE, "id": "s"}]).encode(), "exactly"),
    "dunder key path": (b"r", record(key="__class__"), "key"),
    "NUL": (b"r", record().replace(b'"r"', b'"r\x00"'), "NUL"),
    "too large": (b"r", b"#" * 300_000 + b"\n" + record(), "larger than"),
    "unhashable contiguity": (
        b"r",
        record(pattern=[{"name": "a"}, {"name": "b", "contiguity": ["next"]}]),
        "contiguity",
    ),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_records_are_rule_record_errors(name: str) -> None:
    key, value, part = HOSTILE[name]
    started = time.perf_counter()
    with pytest.raises(RuleRecordError) as info:
        parse_rule_record(key, value, source="fraud.rules[0]@7")
    assert time.perf_counter() - started < 30, "a generous guard against hangs only"
    message = str(info.value)
    assert "fraud.rules[0]@7" in message and part in message, message
    assert len(message) < 5_000


def test_record_forms_mapping_list_and_yaml_flow() -> None:
    expected = parse_rule_record(b"r", record(), source="s").spec
    for value in (
        json.dumps([RULE]).encode(),
        b"{id: r, key: user_id, pattern: [{name: a, where: amount > 1}]}",
        b"id: r\nkey: user_id\npattern:\n  - {name: a, where: amount > 1}\n",
        b"\xef\xbb\xbf" + record(),
    ):
        assert parse_rule_record(b"r", value, source="s").spec == expected, value


def test_a_bad_record_leaves_the_rule_set_as_it_was() -> None:
    rule_set = RuleSet([])
    assert rule_set.apply_record(b"r", record(version=1), source="t@0")
    for name, (key, value, _) in HOSTILE.items():
        with pytest.raises(RuleRecordError):
            rule_set.apply_record(key, value, source=f"t@{name}")
    [kept] = rule_set.effective()
    assert (kept.id, kept.version) == ("r", 1)


def test_versions_never_go_back() -> None:
    file_rules = load_rules(json.dumps([{**RULE, "version": 5}, {**RULE, "id": "f"}]))
    rule_set = RuleSet(file_rules)
    with pytest.raises(RuleRecordError, match="version 4 is older than version 5 from the rule"):
        rule_set.apply_record(b"r", record(version=4), source="t@0")
    assert rule_set.apply_record(b"r", record(version=6), source="t@1")
    with pytest.raises(RuleRecordError, match="version 5 is older than version 6 from the rules"):
        rule_set.apply_record(b"r", record(version=5), source="t@2")
    assert not rule_set.apply_record(b"r", record(version=6), source="t@3")  # the same again
    assert rule_set.apply_record(b"f", record(id="f", version=0), source="t@4")  # file: none
    assert rule_set.apply_record(b"r", record(), source="t@5")  # no version: not compared
    assert sorted((d.id, d.version) for d in rule_set.effective()) == [("f", 0), ("r", None)]


class Message:
    def __init__(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        self._key, self._value, self._offset = key, value, offset

    def topic(self) -> str:
        return "fraud.rules"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


class Exploding(RuleSet):
    def apply_record(self, key: bytes | None, value: bytes | None, *, source: str) -> bool:
        raise RecursionError("maximum recursion depth exceeded")


def test_the_reader_refuses_any_failure_logs_it_and_counts_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[int] = []
    reader = RulesTopicReader(
        lambda conf: object(), "fraud.rules", RuleSet([]), on_rejected=lambda: counted.append(1)
    )
    with caplog.at_level(logging.ERROR, logger="fraudcep.rules"):
        assert not reader._take(Message(b"r", HOSTILE["alias bomb"][1], 3))
        assert not reader._take(Message(b"x" * 500, HOSTILE["recursive alias"][1], 4))
        reader.rule_set = Exploding([])
        assert not reader._take(Message(b"r", record(), 5))
    assert len(counted) == 3
    logged = [r.__dict__["fields"] for r in caplog.records if r.msg == "rejected rules record"]
    assert [(f["partition"], f["offset"]) for f in logged] == [(0, 3), (0, 4), (0, 5)]
    assert logged[0]["key"] == "'r'" and len(logged[1]["key"]) <= 200
    assert "YAML anchors" in logged[0]["error"]
    assert logged[2]["error"] == (
        "fraud.rules[0]@5: RecursionError: maximum recursion depth exceeded"
    )

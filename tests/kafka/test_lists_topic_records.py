"""Lists-topic records without a broker: the two value forms, the limits, tombstones, and
the reader's refusal (logged, counted, the list as it was) of every bad record."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.paths import REPO

from fraudcep.rules import Lists, load_rules
from fraudcep.runtime.list_records import (
    MAX_ENTRIES,
    MAX_ENTRY_LENGTH,
    MAX_LIST_RECORD_BYTES,
    ListRecordError,
    ListSet,
    parse_list_record,
)
from fraudcep.runtime.rule_records import RuleRecordError, RuleSet
from fraudcep_kafka.lists_topic import ListsTopicReader

RULE = {"id": "blocked", "key": "card_id", "pattern": [{"name": "p", "where": ""}]}


def test_a_json_array_and_newline_text_are_the_two_forms() -> None:
    expected = ("blocked_cards", ["c1", "c2", "42"])
    assert parse_list_record(b"blocked_cards", b'["c1", "c2", 42]', source="s") == expected
    assert parse_list_record(b"blocked_cards", b'  \n["c1","c2",42]', source="s") == expected
    text = b"# cards\nc1\n\n  c2  \n42\n"
    assert parse_list_record(b"blocked_cards", text, source="s") == expected
    assert parse_list_record(b"blocked_cards", b"\xef\xbb\xbfc1\nc2\n42", source="s") == expected
    assert parse_list_record(b"empty", b"[]", source="s") == ("empty", [])


BAD: dict[str, tuple[bytes | None, bytes, str]] = {
    "no key": (None, b"[]", "needs the list name as its key"),
    "bad name": (b"not a name", b"[]", "bad list name"),
    "dunder name": (b"__class__", b"[]", "bad list name"),
    "Latin-1 key": (b"l\xe9", b"[]", "UTF-8"),
    "Latin-1 value": (b"l", b"caf\xe9", "UTF-8"),
    "bad JSON": (b"l", b'["a", ', "s@1:"),
    "not an array": (b"l", b'[{"a": 1}]', "string or an integer"),
    "bool entry": (b"l", b"[true]", "string or an integer"),
    "nested": (b"l", b"[[1]]", "string or an integer"),
    "too large": (b"l", b"a\n" * (MAX_LIST_RECORD_BYTES // 2 + 1), "at most 8,388,608 bytes"),
    "too many": (b"l", b"[" + b"1," * MAX_ENTRIES + b"2]", "more than 1,000,000 entries"),
    "too long": (b"l", b"a" * (MAX_ENTRY_LENGTH + 1), "at most 256 characters"),
    "empty entry": (b"l", b'["a", ""]', "an empty entry"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_records_are_list_record_errors(name: str) -> None:
    key, value, part = BAD[name]
    with pytest.raises(ListRecordError) as info:
        parse_list_record(key, value, source="s@1")
    message = str(info.value)
    assert message.startswith("s@1") and part in message, message
    assert len(message) < 1_000


def test_records_replace_lists_and_tombstones_go_back_to_the_file() -> None:
    lists = Lists({"blocked_cards": ["c1"]})
    list_set = ListSet(lists)
    assert list_set.apply_record(b"blocked_cards", b'["c2"]', source="t@0")
    assert lists.get("blocked_cards").entries == {"c2"} and lists.version("blocked_cards") == 2
    assert not list_set.apply_record(b"blocked_cards", b"c2\n", source="t@1")  # the same
    assert lists.version("blocked_cards") == 2
    assert list_set.apply_record(b"risky_bins", b"4111\n", source="t@2")  # a new list
    assert lists.versions() == {"blocked_cards": 2, "risky_bins": 1}
    assert list_set.apply_record(b"blocked_cards", None, source="t@3")  # back to the file's
    assert lists.get("blocked_cards").entries == {"c1"} and lists.version("blocked_cards") == 3
    assert list_set.apply_record(b"risky_bins", b"", source="t@4")  # no file: emptied
    assert len(lists.get("risky_bins")) == 0 and "risky_bins" in lists
    assert not list_set.apply_record(b"unknown", None, source="t@5")
    assert "unknown" not in lists
    for key, value, _ in BAD.values():
        with pytest.raises(ListRecordError):
            list_set.apply_record(key, value, source="t@6")
    assert lists.versions() == {"blocked_cards": 3, "risky_bins": 2}


def test_rules_topic_records_may_name_the_lists_and_no_other() -> None:
    lists = Lists({"blocked_cards": ["c1"]})
    spec = {**RULE, "pattern": [{"name": "p", "where": "card_id in lists.blocked_cards"}]}
    rule_set = RuleSet(load_rules(json.dumps([spec]), lists=lists), lists=lists)
    assert rule_set.apply_record(b"other", json.dumps({**spec, "id": "other"}).encode(), source="s")
    missing = {**spec, "pattern": [{"name": "p", "where": "card_id in lists.nope"}]}
    with pytest.raises(RuleRecordError, match="nope"):
        rule_set.apply_record(b"blocked", json.dumps(missing).encode(), source="s")


class Message:
    def __init__(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        self._key, self._value, self._offset = key, value, offset

    def topic(self) -> str:
        return "fraud.lists"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def test_the_reader_refuses_bad_records_logs_and_counts_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lists = Lists({"blocked_cards": ["c1"]})
    counted: list[int] = []
    reader = ListsTopicReader(
        lambda conf: object(), "fraud.lists", ListSet(lists), on_rejected=lambda: counted.append(1)
    )
    with caplog.at_level(logging.INFO, logger="fraudcep.lists"):
        assert not reader._take(Message(b"blocked_cards", b'["c2", ', 3))
        assert not reader._take(Message(None, b"[]", 4))
        assert reader._take(Message(b"blocked_cards", b'["c2"]', 5))
    assert len(counted) == 2
    logged = [r.__dict__["fields"] for r in caplog.records if r.msg == "rejected lists record"]
    assert [(f["offset"], f["key"]) for f in logged] == [(3, "'blocked_cards'"), (4, None)]
    assert "fraud.lists[0]@3" in logged[0]["error"]
    [changed] = [r.__dict__["fields"] for r in caplog.records if r.msg == "list changed"]
    assert changed == {
        "list": "blocked_cards", "version": 2, "entries": 1, "source": "fraud.lists[0]@5"
    }  # fmt: skip
    assert lists.get("blocked_cards").entries == {"c2"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fraudcep_cli", "lists", "publish", *args],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip


def test_lists_publish_checks_the_file_before_it_connects(tmp_path: Path) -> None:
    """Nothing listens at the bootstrap address: a bad file stops it first."""
    long = tmp_path / "cards.txt"
    long.write_text("c1\n" + "x" * (MAX_ENTRY_LENGTH + 1) + "\n")
    bad_json = tmp_path / "cards.json"
    bad_json.write_text('["c1", ')
    for args, part in [
        (["cards", str(long)], "at most 256 characters"),
        (["cards", str(bad_json)], "cards.json:1:"),
        (["not a name", str(long)], "bad list name"),
        (["not a name", "--delete"], "bad list name"),
        (["cards", str(tmp_path / "missing.txt")], "cannot read"),
    ]:
        done = cli(*args, "--bootstrap", "127.0.0.1:1")
        assert done.returncode == 1 and part in done.stderr, (args, done.stderr)
    done = cli("cards", "--bootstrap", "127.0.0.1:1")
    assert done.returncode == 2 and "FILE or --delete" in done.stderr


def test_lists_options_from_flags_environment_and_file(tmp_path: Path) -> None:
    from fraudcep_cli.main import build_parser
    from fraudcep_kafka.config import OPTIONS, from_sources

    assert from_sources({}, environ={}).lists == ()
    assert from_sources({}, environ={}).lists_topic == "fraud.lists"
    env = {"FRAUDCEP_LISTS": "a.txt, dir", "FRAUDCEP_LISTS_TOPIC": "off"}
    config = from_sources({}, environ=env)
    assert (config.lists, config.lists_topic) == (("a.txt", "dir"), None)
    toml = tmp_path / "runner.toml"
    toml.write_text('lists = ["x.json"]\nlists_topic = "lists.v2"\n')
    config = from_sources({}, environ={}, config_file=toml)
    assert (config.lists, config.lists_topic) == (("x.json",), "lists.v2")
    args = build_parser().parse_args(["run", "--lists", "a.txt", "--lists", "dir"])
    flags = {option.name: getattr(args, option.name) for option in OPTIONS}
    assert from_sources(flags, environ=env).lists == ("a.txt", "dir")


def test_a_rule_naming_a_missing_list_is_refused_when_built_without_a_topic(tmp_path: Path) -> None:
    from fraudcep.rules import RuleSpecError
    from fraudcep_kafka.config import RunnerConfig
    from fraudcep_kafka.runner import Runner

    rules = tmp_path / "rules.json"
    spec = {**RULE, "pattern": [{"name": "p", "where": "card_id in lists.blocked_cards"}]}
    rules.write_text(json.dumps([spec]))
    (tmp_path / "blocked_cards.txt").write_text("c1\n")
    settings: dict[str, Any] = {
        "rules": str(rules),
        "checkpoints": str(tmp_path / "c"),
        "metrics_address": None,
    }
    with pytest.raises(RuleSpecError, match="unknown list 'blocked_cards'"):
        Runner(RunnerConfig(lists_topic=None, **settings))
    deferred = Runner(RunnerConfig(**settings))  # the lists topic may hold it: read it first
    assert deferred._rules_deferred and deferred.rule_set.effective() == []
    runner = Runner(RunnerConfig(lists=(str(tmp_path / "blocked_cards.txt"),), **settings))
    assert runner.lists.versions() == {"blocked_cards": 1}
    assert [d.id for d in runner.rule_set.effective()] == ["blocked"]

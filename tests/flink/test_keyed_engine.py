"""The per-key engine of the Flink job (:mod:`fraudcep_flink.keyed`), without Flink: a
stream run key by key the way the job's keyed function runs it (periodic watermarks, a
timer per key at its next due time, state written after every change, cached engines
evicted at random and loaded again from their state) gives the core engine's alerts, id for
id; rule changes reach each key on its next payment or timer; state refused when it is not
the job's."""

from __future__ import annotations

import json
import random
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudcep import Engine
from fraudcep.errors import EventError, FraudcepError, SnapshotError
from fraudcep.payments.default_rules import default_rule_definitions
from fraudcep.payments.synthetic import PaymentGenerator
from fraudcep.rules import Lists, load_rules
from fraudcep.runtime import EngineOptions
from fraudcep.runtime.list_records import ListSet
from fraudcep.runtime.rule_records import RuleRecordError
from fraudcep.timeutil import MAX_TIMESTAMP
from fraudcep_flink.keyed import KeyedEngine, RuleVersion, RuleVersions, flink_key, keys_of


class KeyedJob:
    """The keyed function's logic over a list of payments, with Flink's event time: the
    watermark (max ts - bound - 1) emitted every ``every`` payments, timers firing when it
    passes them, and a cache that forgets keys with probability ``evict``."""

    def __init__(
        self, versions: RuleVersions, bound: int, *, evict: float, seed: int, every: int
    ) -> None:
        self.versions = versions
        self.bound = bound
        self.options = EngineOptions(max_out_of_orderness=bound)
        self.state: dict[str, Any] = {}
        self.cache: dict[str, KeyedEngine] = {}
        self.timers: dict[str, int] = {}
        self.rng = random.Random(seed)
        self.evict = evict
        self.every = every
        self.watermark = -(2**63)
        self.alerts: list[Any] = []
        self.late: list[Any] = []

    def _entry(self, fk: str, group: str, key: Hashable) -> KeyedEngine:
        entry = self.cache.get(fk)
        if entry is None:
            stored = self.state.get(fk)
            if stored is None:
                entry = KeyedEngine(group, key, self.versions.current, self.options)
            else:
                entry = KeyedEngine.load(stored, self.versions, self.options)
            self.cache[fk] = entry
        entry.to_rules(self.versions.current)
        return entry

    def _save(self, fk: str, entry: KeyedEngine) -> None:
        saved = entry.state()
        if saved is None:
            self.state.pop(fk, None)
            self.cache.pop(fk, None)
            self.timers.pop(fk, None)
            return
        self.state[fk] = saved
        due = entry.next_due
        if due is not None:
            self.timers[fk] = due
        if self.rng.random() < self.evict:
            self.cache.pop(fk, None)

    def move_to(self, watermark: int) -> None:
        self.watermark = max(self.watermark, watermark)
        for fk, due in sorted(self.timers.items(), key=lambda kv: kv[1]):
            if due <= self.watermark and fk in self.timers:
                del self.timers[fk]
                group, key = self.state[fk][1], self.state[fk][2]
                entry = self._entry(fk, group, key)
                self.alerts += entry.advance(self.watermark)
                self._save(fk, entry)

    def run(self, payments: list[dict[str, Any]], changes: dict[int, bytes] | None = None) -> None:
        high = -(2**63)
        for n, payment in enumerate(payments):
            for rule_id, value in (changes or {}).items() if n == len(payments) // 2 else ():
                self.versions.apply_record(str(rule_id).encode(), value, source="test")
            if payment["ts"] <= self.watermark:
                self.late.append(payment)
                continue
            for group, key in keys_of(payment, self.versions.current):
                fk = flink_key(group, key)
                entry = self._entry(fk, group, key)
                self.alerts += entry.feed(payment, self.watermark)
                self._save(fk, entry)
            high = max(high, payment["ts"])
            if n % self.every == 0:
                self.move_to(high - self.bound - 1)
        self.move_to(MAX_TIMESTAMP)


def stream(seed: int, n: int, jitter: int) -> list[dict[str, Any]]:
    gen = PaymentGenerator(
        seed=seed, users=60, jitter_ms=jitter, safe_noise=False, scenarios_per_10k=80
    )
    return [dict(p) for p in gen.payments(n)]


def core_alert_ids(payments: list[dict[str, Any]], bound: int) -> list[str]:
    engine = Engine(
        [d.rule for d in default_rule_definitions()],
        event_id="payment_id",
        max_out_of_orderness=bound,
    )
    return sorted(a.alert_id for a in [*engine.process_many(payments), *engine.flush()])


@settings(max_examples=12)
@given(
    seed=st.integers(0, 10_000),
    evict=st.sampled_from([0.0, 0.3, 1.0]),
    every=st.sampled_from([1, 7, 200]),
)
def test_key_by_key_gives_the_core_engines_alerts(seed: int, evict: float, every: int) -> None:
    payments = stream(seed, 1500, jitter=1500)
    job = KeyedJob(RuleVersions(default_rule_definitions()), 1500, evict=evict, seed=seed,
                   every=every)  # fmt: skip
    job.run(payments)
    assert job.late == []
    assert sorted(a.alert_id for a in job.alerts) == core_alert_ids(payments, 1500)
    assert job.state == {}, "every key cleared its state once the final watermark passed"


def test_alerts_come_before_the_final_watermark() -> None:
    payments = stream(3, 3000, jitter=0)
    job = KeyedJob(RuleVersions(default_rule_definitions()), 0, evict=0.5, seed=1, every=1)
    job.run(payments[:-1])
    assert job.alerts


LOW_AMOUNT = b"""
id: many_small
version: 1
key: user_id
pattern:
  - name: a
    where: amount > 1
  - name: b
    where: amount > 1
    contiguity: followed_by
within: 1m
"""


def test_a_rule_added_mid_stream_reaches_each_key_on_its_next_payment() -> None:
    payments = stream(5, 2000, jitter=0)
    versions = RuleVersions(default_rule_definitions())
    before = versions.current.digest
    job = KeyedJob(versions, 0, evict=0.3, seed=2, every=1)
    job.run(payments, {"many_small": LOW_AMOUNT})
    assert versions.current.digest != before
    new = [a for a in job.alerts if a.rule_id == "many_small"]
    assert new, "the added rule alerts"
    half_ts = payments[len(payments) // 2]["ts"]
    first = min(min(e["ts"] for e in a.events["a"]) for a in new)
    assert first >= half_ts - 60_000, "it saw nothing before it was added (but its window)"
    # and the state written with the old rules was read with them, then converted
    assert before in versions.known


def test_a_disabled_rule_stops_alerting_and_a_replaced_one_runs_its_new_version() -> None:
    payments = stream(6, 4000, jitter=0)
    defs = default_rule_definitions()
    target = defs[0]
    spec = dict(target.spec)
    versions = RuleVersions(defs)
    job = KeyedJob(versions, 0, evict=0.3, seed=3, every=1)
    disabled = {**spec, "enabled": False, "version": (target.version or 1) + 1}
    job.run(payments, {target.id: json.dumps(disabled).encode()})
    mid = payments[len(payments) // 2]["ts"]
    assert all(
        max(e["ts"] for es in a.events.values() for e in es) < mid + 1
        for a in job.alerts
        if a.rule_id == target.id
    ), "no alert of the disabled rule completes after it was disabled"


def test_an_older_version_from_the_topic_is_refused() -> None:
    defs = load_rules(
        LOW_AMOUNT.decode().replace("version: 1", "version: 3"), source="t", rule_mapping=True
    )
    versions = RuleVersions(defs)
    from fraudcep.runtime.rule_records import RuleRecordError

    with pytest.raises(RuleRecordError, match="older"):
        versions.apply_record(b"many_small", LOW_AMOUNT, source="t")


def test_a_payment_without_a_rule_key_goes_nowhere() -> None:
    version = RuleVersion.of(default_rule_definitions())
    with pytest.raises(EventError):
        keys_of({"payment_id": "p", "ts": 1, "amount": 3}, version)


def test_state_of_another_format_or_unknown_rules_is_refused() -> None:
    versions = RuleVersions(default_rule_definitions())
    options = EngineOptions()
    with pytest.raises(SnapshotError, match="format"):
        KeyedEngine.load((99, "user_id", "u", versions.current.digest, None, ()), versions,
                         options)  # fmt: skip
    with pytest.raises(SnapshotError, match="not known"):
        KeyedEngine.load((1, "user_id", "u", "0" * 64, None, ()), versions, options)


def test_flink_keys_keep_key_types_apart() -> None:
    assert flink_key("user_id", 5) != flink_key("user_id", "5")


BLOCKED = {
    "id": "blocked",
    "version": 1,
    "key": "card_id",
    "pattern": [{"name": "p", "where": "card_id in lists.blocked_cards"}],
}


def test_rules_read_the_instances_lists_and_a_change_reaches_every_key() -> None:
    """Rules compiled against the instance's lists: a lists-topic record changes what every
    key decides, cached or loaded again from its state, with no new rule version; alerts
    carry the list's version. A rule set kept as text compiles against them too."""
    lists = Lists({"blocked_cards": ["c1"]})
    list_set = ListSet(lists)
    versions = RuleVersions(load_rules(json.dumps([BLOCKED]), lists=lists), lists=lists)
    options = EngineOptions()

    def pay(entry: KeyedEngine, n: int) -> list[Any]:
        payment = {"payment_id": f"p{n}", "card_id": entry.key, "ts": n}
        return entry.feed(payment, n - 1) + entry.advance(n)

    c1 = KeyedEngine("card_id", "c1", versions.current, options)
    c2 = KeyedEngine("card_id", "c2", versions.current, options)
    assert [a.lists for a in pay(c1, 1)] == [{"blocked_cards": 1}]
    assert pay(c2, 2) == []
    digest = versions.current.digest

    assert list_set.apply_record(b"blocked_cards", b'["c2"]', source="lists@0")
    assert versions.current.digest == digest  # no new rule version
    assert pay(c1, 3) == []
    assert [a.lists for a in pay(c2, 4)] == [{"blocked_cards": 2}]
    again = KeyedEngine("card_id", "c2", versions.current, options)  # evicted, made again
    assert [a.lists for a in pay(again, 5)] == [{"blocked_cards": 2}]

    kept = versions.from_text(versions.current.text(), source="set")
    assert kept.digest == digest
    with pytest.raises(FraudcepError, match="nope"):
        RuleVersions(load_rules(json.dumps([{**BLOCKED, "pattern": [
            {"name": "p", "where": "card_id in lists.nope"}]}]), lists=lists))  # fmt: skip


def test_a_topic_rule_naming_a_missing_list_is_refused() -> None:
    lists = Lists({"blocked_cards": ["c1"]})
    versions = RuleVersions([], lists=lists)
    missing = {**BLOCKED, "pattern": [{"name": "p", "where": "card_id in lists.nope"}]}
    with pytest.raises(RuleRecordError, match="nope") as info:
        versions.apply_record(b"blocked", json.dumps(missing).encode(), source="rules@0")
    assert info.value.missing_lists == ("nope",)
    assert versions.apply_record(b"blocked", json.dumps(BLOCKED).encode(), source="rules@1")


def test_a_promoted_rule_alerts_live_on_each_keys_next_payment() -> None:
    """A shadow rule's alerts are shadow; a new version with mode live from the rules topic
    reaches each key on its next payment, whose alerts are live; a mode change keeping the
    version is refused."""
    spec = {"id": "watch", "version": 1, "mode": "shadow", "key": "user_id",
            "pattern": [{"name": "p", "where": "amount > 3000"}]}  # fmt: skip
    versions = RuleVersions(load_rules(json.dumps([spec])))
    options = EngineOptions()
    entry = KeyedEngine("user_id", "u1", versions.current, options)

    def pay(n: int) -> list[Any]:
        entry.to_rules(versions.current)
        return entry.feed({"payment_id": f"p{n}", "user_id": "u1", "amount": 4000, "ts": n},
                          n - 1) + entry.advance(n)  # fmt: skip

    assert [(a.mode, a.rule_version) for a in pay(1)] == [("shadow", 1)]
    with pytest.raises(RuleRecordError, match="mode"):
        versions.apply_record(b"watch", json.dumps({**spec, "mode": "live"}).encode(), source="r")
    promoted = json.dumps({**spec, "version": 2, "mode": "live"}).encode()
    assert versions.apply_record(b"watch", promoted, source="r")
    assert [(a.mode, a.rule_version) for a in pay(2)] == [("live", 2)]

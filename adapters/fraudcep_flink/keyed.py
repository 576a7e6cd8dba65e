"""The engine per Flink key, and the rule versions every key is brought to, without PyFlink.

A Flink job runs the rules per key of each *key group* (the rules keyed by ``user_id``, those
keyed by ``card_id``, ...: :func:`~fraudcep.engine.state.key_group`), one Flink key per
(group, key). What a key keeps between elements is its :class:`KeyedEngine`'s
:meth:`~KeyedEngine.state`: the rule set it was written with (a digest), the key's engine
record (:meth:`fraudcep.Engine.export_key`) and the payments it holds above the watermark
(an engine's event buffer is not part of a key record). The job's keyed function keeps that
in a ``ValueState`` and caches the live :class:`KeyedEngine` per key, so that a hot key is
not decoded for every payment; the state is written after every change, so a restored or
rescaled job starts from it with an empty cache.

Rules change while the job runs. :class:`RuleVersions` is the rule file overridden by the
rules topic's records (:class:`fraudcep.runtime.rule_records.RuleSet`), and remembers every
rule set it ever had by digest: a key's state is always read with the rules it was written
with, then brought to the current ones (:func:`fraudcep.runtime.reconcile`, as the Kafka
runner and the Lambda detector do) on the key's next payment or timer. Keyed state cannot be
touched from the rules side, hence "next".

Everything here is plain Python, so the semantics are tested without a Flink cluster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from fraudcep import Alert, Engine
from fraudcep.engine.state import key_group
from fraudcep.errors import EventError, SnapshotError
from fraudcep.rules import Lists, RuleDefinition, apply_definitions, dump_rules, load_rules
from fraudcep.runtime import EngineOptions, Reconciliation, reconcile
from fraudcep.runtime.rule_records import RuleSet
from fraudcep.timeutil import MAX_TIMESTAMP

__all__ = [
    "STATE_FORMAT",
    "KeyedEngine",
    "RuleVersion",
    "RuleVersions",
    "flink_key",
    "keys_of",
]

STATE_FORMAT = 1
"""The first item of a key's state tuple; another value is refused (a newer job's state)."""


@attrs.frozen
class RuleVersion:
    """One rule set: its definitions (sorted by id), their digest, and per key group the
    definitions of the rules keyed by it."""

    digest: str
    definitions: tuple[RuleDefinition, ...]
    groups: Mapping[str, tuple[RuleDefinition, ...]]
    keyers: tuple[tuple[str, Callable[[Any], Hashable]], ...]
    """The key group and key function of each group with an enabled rule: the fan-out."""

    @classmethod
    def of(cls, definitions: Iterable[RuleDefinition]) -> RuleVersion:
        ordered = tuple(sorted(definitions, key=lambda d: d.id))
        text = dump_rules(ordered, format="json")
        groups: dict[str, list[RuleDefinition]] = {}
        keyers: dict[str, Callable[[Any], Hashable]] = {}
        for d in ordered:
            group = key_group(d.rule)
            groups.setdefault(group, []).append(d)
            if d.enabled:
                keyers.setdefault(group, d.rule.key_function())
        return cls(
            digest=hashlib.sha256(text.encode()).hexdigest(),
            definitions=ordered,
            groups={g: tuple(ds) for g, ds in groups.items()},
            keyers=tuple(keyers.items()),
        )

    def text(self) -> str:
        """The rule set as a rule file (JSON), from which :meth:`from_text` makes it again."""
        return dump_rules(self.definitions, format="json")

    @classmethod
    def from_text(cls, text: str, *, source: str, lists: Lists | None = None) -> RuleVersion:
        """The rule set of :meth:`text`, its expressions reading ``lists``."""
        return cls.of(load_rules(text, source=source, lists=lists))


class RuleVersions:
    """The current rules (the rule file, overridden by the rules topic) and every rule set
    there has been, by digest. Fed the rules topic's records in order, every parallel
    instance of a job arrives at the same versions (the digests are of sorted definitions).
    Rules are compiled against ``lists``, the instance's named lists: a list change is seen
    by every rule reading it with no new version (the digests are of the rules' text)."""

    def __init__(self, file_rules: Sequence[RuleDefinition], *, lists: Lists | None = None) -> None:
        self.lists = lists
        self.rule_set = RuleSet(file_rules, lists=lists)
        self.current = RuleVersion.of(self.rule_set.effective())
        self.known: dict[str, RuleVersion] = {self.current.digest: self.current}

    def apply_record(self, key: bytes | None, value: bytes | None, *, source: str) -> bool:
        """Take one rules-topic record (raises :class:`~fraudcep.runtime.rule_records.
        RuleRecordError` for one that cannot be taken); True when the rules changed."""
        if not self.rule_set.apply_record(key, value, source=source):
            return False
        version = RuleVersion.of(self.rule_set.effective())
        if version.digest == self.current.digest:
            return False
        self.current = self.known.setdefault(version.digest, version)
        return True

    def from_text(self, text: str, *, source: str) -> RuleVersion:
        """A rule set kept as text (:meth:`RuleVersion.text`), compiled against the lists."""
        return RuleVersion.from_text(text, source=source, lists=self.lists)

    def remember(self, version: RuleVersion) -> None:
        """Know ``version`` (restored from a checkpoint) as one a key may have been written
        with."""
        self.known.setdefault(version.digest, version)

    def get(self, digest: str) -> RuleVersion:
        try:
            return self.known[digest]
        except KeyError:
            raise SnapshotError(f"a key's state names rule set {digest[:12]}, not known") from None


def keys_of(payment: Any, version: RuleVersion) -> list[tuple[str, Hashable]]:
    """The (group, key) pairs ``payment`` goes to under ``version``; raises
    :class:`~fraudcep.errors.EventError` when a rule's key cannot be read from it (the
    payment then goes nowhere, as the core engine refuses it whole)."""
    out = []
    for group, keyer in version.keyers:
        key = keyer(payment)
        try:
            hash(key)
        except TypeError:
            raise EventError(f"key {group!r} gave an unhashable {type(key).__name__}") from None
        out.append((group, key))
    return out


def flink_key(group: str, key: Hashable) -> str:
    """The Flink key of ``key`` in ``group``: a string (Flink hashes it to a key group), with
    the key's type, so that the int 5 and the string "5" stay different keys as in the
    engine."""
    return f"{group}\x00{type(key).__name__}\x00{key}"


class KeyedEngine:
    """One Flink key's engine: the rules of its key group, its key record, the payments it
    holds above the watermark, and the event-time timer the job registered for it."""

    def __init__(
        self,
        group: str,
        key: Hashable,
        version: RuleVersion,
        options: EngineOptions,
        callbacks: Mapping[str, Any] | None = None,
    ) -> None:
        self.group = group
        self.key = key
        self.version = version
        self.held: list[Any] = []
        self.timer: int | None = None
        self._options = options
        self._callbacks = dict(callbacks or {})
        self.engine = self._new_engine(version)
        self._ts = options.timestamp_field

    def _new_engine(self, version: RuleVersion) -> Engine:
        engine = Engine([], auto_watermark=False, **self._options.engine_kwargs(**self._callbacks))
        apply_definitions(engine, version.groups.get(self.group, ()))
        return engine

    @classmethod
    def load(
        cls,
        state: Any,
        versions: RuleVersions,
        options: EngineOptions,
        callbacks: Mapping[str, Any] | None = None,
    ) -> KeyedEngine:
        """The key whose :meth:`state` is ``state``, on the rules it was written with."""
        if not isinstance(state, tuple) or len(state) != 6 or state[0] != STATE_FORMAT:
            raise SnapshotError(f"a key's Flink state is not of format {STATE_FORMAT}")
        _, group, key, digest, record, held = state
        keyed = cls(group, key, versions.get(digest), options, callbacks)
        if record is not None:
            keyed.engine.import_key(group, key, record)
        for payment in held:
            keyed.engine.process(payment)
        keyed.held = list(held)
        return keyed

    def to_rules(self, version: RuleVersion) -> Reconciliation | None:
        """Bring the key to ``version`` (None: it is on it already). A refused change (a rule
        older than the one the key runs) leaves the key on its rules."""
        if version.digest == self.version.digest:
            return None
        done = reconcile(self.engine, version.groups.get(self.group, ()), as_loaded=True)
        if done.refused is None:
            self.version = version
        return done

    def feed(self, payment: Any, watermark: int) -> list[Alert]:
        """Move to ``watermark``, then take ``payment`` (above it: the caller dead-letters
        payments at or below the watermark before they reach a key)."""
        alerts = self.advance(watermark)
        alerts += self.engine.process(payment)
        self.held.append(payment)
        return alerts

    def advance(self, watermark: int) -> list[Alert]:
        """Move the key's event time to ``watermark``: what that closes."""
        engine = self.engine
        if engine.watermark is not None and watermark <= engine.watermark:
            return []
        watermark = min(watermark, MAX_TIMESTAMP)
        alerts = engine.advance_watermark(watermark)
        if self.held:
            ts = self._ts
            self.held = [p for p in self.held if p[ts] > watermark]
        return alerts

    @property
    def next_due(self) -> int | None:
        """When the key next needs event time to move (a held payment, a window to close)."""
        return self.engine.next_due

    def state(self) -> tuple[Any, ...] | None:
        """What the job keeps for the key (None: nothing; the key's state is cleared)."""
        if not self.engine.rules:  # the group's rules are gone: so is what the key held
            return None
        record = self.engine.export_key(self.group, self.key)
        if record is None and not self.held:
            return None
        return (
            STATE_FORMAT,
            self.group,
            self.key,
            self.version.digest,
            record,
            tuple(self.held),
        )

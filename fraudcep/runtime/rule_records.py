"""Rules-topic records: one rule per record, keyed by its id, overriding the rule file.

A runtime that follows a compacted rules topic (the Kafka runner, the PyFlink job) reads it
the same way: a record's key is a rule id; its value is that one rule in the rule format
(YAML or JSON, a list of one rule or the rule's mapping); an empty value (a tombstone) drops
the topic's definition, so the rule file's definition of that id, if any, applies again. The
latest record per key wins, exactly what compaction keeps, so a restart that re-reads the
topic arrives at the same rules. :class:`RuleSet` is that merge; what a runtime does with a
record it refuses (log, count, keep the rules as they were) is the runtime's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fraudcep.rules import Lists, RuleDefinition, RuleSpecError, load_rules

__all__ = ["RuleRecordError", "RuleSet", "parse_rule_record", "short_repr"]


class RuleRecordError(ValueError):
    """A rules-topic record that does not hold exactly the rule its key names."""

    def __init__(self, message: str, *, missing_lists: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.missing_lists = tuple(sorted(set(missing_lists)))
        """The named lists the record's rule reads that the runtime lacks (sorted): a runtime
        that can get them later (the PyFlink job, from its lists topic) tries it again then."""


def parse_rule_record(
    key: bytes | None, value: bytes | None, *, source: str, lists: Lists | None = None
) -> RuleDefinition:
    """The one rule of a rules-topic record (not a tombstone); errors name ``source``. The
    rule may name the lists of ``lists`` (a rule naming another list is refused)."""
    if key is None:
        raise RuleRecordError(f"{source}: a rules record needs the rule id as its key")
    try:
        rule_id = key.decode("utf-8")
        text = (value or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise RuleRecordError(f"{source}: key and value must be UTF-8") from None
    try:
        # the rule file loader, with all its limits; a mapping is the one rule itself
        definitions = load_rules(text, source=source, rule_mapping=True, lists=lists)
    except RuleSpecError as exc:
        missing = [p.missing_list for p in exc.problems if p.missing_list is not None]
        raise RuleRecordError(str(exc), missing_lists=missing) from None
    if len(definitions) != 1 or definitions[0].id != rule_id:
        got = [d.id for d in definitions]
        raise RuleRecordError(
            f"{source}: key {short_repr(rule_id)} must hold exactly that rule, got "
            f"{short_repr(', '.join(got) or 'none')}"
        )
    return definitions[0]


def short_repr(text: str, limit: int = 200) -> str:
    """``repr(text)`` cut to ``limit`` characters (keys and values come from the topic)."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[: limit - 5]}...{shown[-2:]}"


class RuleSet:
    """The effective rules: file definitions, overridden by topic definitions per id. Topic
    records are compiled against ``lists`` (the named lists their rules may read)."""

    def __init__(self, file_rules: Sequence[RuleDefinition], *, lists: Lists | None = None) -> None:
        self.lists = lists
        self.file_rules = {d.id: d for d in file_rules}
        self.topic_rules: dict[str, RuleDefinition] = {}

    def effective(self) -> list[RuleDefinition]:
        merged = dict(self.file_rules)
        merged.update(self.topic_rules)
        return list(merged.values())

    def apply_record(self, key: bytes | None, value: bytes | None, *, source: str) -> bool:
        """Take one rules-topic record; True when it changed the effective rules.

        A definition whose ``version`` is lower than the one it would replace (the topic's,
        else the rule file's) is refused, as a running runner refuses it: so a restart that
        re-reads the topic does not bring back a version the runners never ran. A change of
        ``mode`` (a promotion) that keeps the version is refused too: it would be ignored.
        """
        if not value:  # null or zero-length: a tombstone
            if key is None:
                raise RuleRecordError(f"{source}: a tombstone without a key")
            rule_id = key.decode("utf-8", errors="replace")
            return self.topic_rules.pop(rule_id, None) is not None
        definition = parse_rule_record(key, value, source=source, lists=self.lists)
        old = self.topic_rules.get(definition.id)
        replaced = old or self.file_rules.get(definition.id)
        if (
            replaced is not None
            and replaced.version is not None
            and definition.version is not None
            and definition.version < replaced.version
        ):
            where = "the rules topic" if old is not None else "the rule file"
            raise RuleRecordError(
                f"{source}: rule {short_repr(definition.id)}: version {definition.version} is "
                f"older than version {replaced.version} from {where}"
            )
        if (
            replaced is not None
            and replaced.version is not None
            and definition.version == replaced.version
            and definition.mode != replaced.mode
        ):
            raise RuleRecordError(
                f"{source}: rule {short_repr(definition.id)}: mode {definition.mode} with the "
                f"version {definition.version} of the {replaced.mode} rule; a change of mode "
                "is a new version"
            )
        self.topic_rules[definition.id] = definition
        return old is None or old.spec != definition.spec or old.version != definition.version

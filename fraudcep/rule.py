"""A rule: a pattern, a name for it, and how events are partitioned into keys."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import attrs

from fraudcep.compiler import CompiledNFA, compile_pattern
from fraudcep.errors import ConfigurationError, EventError, MalformedPatternError
from fraudcep.pattern import Pattern

KeySpec = str | Callable[[Any], Hashable]


def field_getter(name: str) -> Callable[[Any], Any]:
    """Read field ``name`` of a mapping, or attribute ``name`` of any other object."""

    def get(event: Any) -> Any:
        try:
            return event[name]
        except (KeyError, TypeError, IndexError):
            try:
                return getattr(event, name)
            except AttributeError:
                raise EventError(f"event has no field {name!r}: {event!r:.200}") from None

    get.__name__ = f"field_{name}"
    return get


def _check_id(_: Rule, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"a rule id must be a non-empty string, got {value!r}")


def _check_pattern(rule: Rule, _: attrs.Attribute[Pattern], value: Pattern) -> None:
    if not isinstance(value, Pattern):
        raise ConfigurationError(f"rule {rule.id!r}: pattern must be a Pattern, got {value!r}")


def _check_key(rule: Rule, _: attrs.Attribute[KeySpec], value: KeySpec) -> None:
    if isinstance(value, str):
        if not value:
            raise ConfigurationError(f"rule {rule.id!r}: the key field name is empty")
    elif not callable(value):
        raise ConfigurationError(
            f"rule {rule.id!r}: key must be a field name or a callable, got {value!r}"
        )


@attrs.frozen
class Rule:
    """``Rule(id, pattern, key=...)``: run ``pattern`` separately for every key.

    The pattern is compiled when the rule is made, so a pattern Flink would refuse is refused
    here, with the rule's id in the message.
    """

    id: str = attrs.field(validator=_check_id)
    pattern: Pattern = attrs.field(validator=_check_pattern)
    key: KeySpec = attrs.field(validator=_check_key)
    nfa: CompiledNFA = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        try:
            nfa = compile_pattern(self.pattern)
        except MalformedPatternError as exc:
            raise MalformedPatternError(f"rule {self.id!r}: {exc}") from None
        object.__setattr__(self, "nfa", nfa)

    def key_function(self) -> Callable[[Any], Hashable]:
        if isinstance(self.key, str):
            return field_getter(self.key)
        return self.key

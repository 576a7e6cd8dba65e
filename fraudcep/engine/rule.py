"""A rule: a pattern, a name for it, and how events are partitioned into keys."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

import attrs

from fraudcep.alert import LIVE, MODES
from fraudcep.errors import ConfigurationError, EventError, MalformedPatternError
from fraudcep.nfa.compiler import CompiledNFA, compile_pattern
from fraudcep.pattern.conditions import Predicate, predicates
from fraudcep.pattern.pattern import Pattern

KeySpec = str | Callable[[Any], Hashable]


def field_getter(name: str) -> Callable[[Any], Any]:
    """Read field ``name`` of a mapping, or data attribute ``name`` of any other object.

    A mapping's own methods (``items``), methods of any object and names starting with an
    underscore are never read: a key or timestamp is data, and a rule must not reach into
    an object's machinery."""

    def get(event: Any) -> Any:
        try:
            return event[name]
        except (KeyError, TypeError, IndexError):
            pass
        value = _MISSING
        if not isinstance(event, Mapping) and not name.startswith("_"):
            value = getattr(event, name, _MISSING)
            if inspect.ismethod(value) or inspect.isbuiltin(value) or inspect.isroutine(value):
                value = _MISSING
        if value is _MISSING:
            raise EventError(f"event has no field {name!r}: {_show(event)}")
        return value

    get.__name__ = f"field_{name}"
    return get


_MISSING: Any = object()


def _show(event: Any) -> str:
    try:
        return f"{event!r:.200}"
    except Exception:  # a failing repr must not hide the missing field
        return f"a {type(event).__name__}"


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


def _check_mode(rule: Rule, _: attrs.Attribute[str], value: str) -> None:
    if value not in MODES:
        raise ConfigurationError(
            f"rule {rule.id!r}: mode must be one of {', '.join(MODES)}, got {value!r}"
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
    mode: str = attrs.field(default=LIVE, validator=_check_mode, kw_only=True)
    """``"live"`` or ``"shadow"``: a shadow rule matches like any other, and its alerts say
    so (``Alert.mode``) for runtimes to record them apart and never act on them."""
    nfa: CompiledNFA = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        try:
            nfa = compile_pattern(self.pattern)
        except MalformedPatternError as exc:
            raise MalformedPatternError(f"rule {self.id!r}: {exc}") from None
        object.__setattr__(self, "nfa", nfa)

    def predicates(self) -> Iterator[Predicate]:
        """The user callables of the compiled pattern's conditions, edge by edge in the
        automaton's order, each condition left to right."""
        for state in self.nfa.states:
            for transition in state.transitions:
                yield from predicates(transition.condition)

    def key_function(self) -> Callable[[Any], Hashable]:
        if isinstance(self.key, str):
            return field_getter(self.key)
        return self.key

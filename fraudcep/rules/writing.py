"""Writing rules as data: patterns whose conditions carry their expression text back to
normal-form specs, rule files in YAML or JSON, and the published JSON Schema."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
import yaml.constructor
import yaml.nodes
import yaml.reader
import yaml.resolver

from fraudcep.alert import LIVE
from fraudcep.engine.rule import Rule
from fraudcep.errors import ConfigurationError
from fraudcep.pattern.conditions import And, Condition, Or, Predicate
from fraudcep.pattern.pattern import (
    Consuming,
    Pattern,
    QuantifierKind,
    Stage,
)
from fraudcep.pattern.skip import SkipKind, SkipStrategy
from fraudcep.rules.checking import CONTIGUITY_NAMES
from fraudcep.rules.definitions import RuleDefinition, Spec
from fraudcep.rules.durations import format_duration

SCHEMA_PATH = Path(__file__).resolve().parent / "rule_schema.json"
"""The published JSON Schema (draft 2020-12) of the rule format."""


def _source_of(fn: Callable[..., Any], what: str) -> str:
    text = getattr(fn, "fraudcep_source", None)
    if not isinstance(text, str):
        raise ConfigurationError(
            f"{what}: condition {fn!r} has no expression text (fraudcep_source); only "
            "conditions compiled from expressions can be written as a rule spec"
        )
    return text


def _steps(cond: Condition, what: str) -> list[tuple[str, str]]:
    if isinstance(cond, Predicate):
        return [("where", _source_of(cond.fn, what))]
    if isinstance(cond, And | Or) and isinstance(cond.right, Predicate):
        kind = "where" if isinstance(cond, And) else "or_where"
        return [*_steps(cond.left, what), (kind, _source_of(cond.right.fn, what))]
    raise ConfigurationError(
        f"{what}: condition {cond!r} was not built by where()/or_where() and has no spec form"
    )


def _one_or_list(items: list[str]) -> str | list[str]:
    return items[0] if len(items) == 1 else items


def _windows_spec(fl: int | None, pc: int | None) -> Spec:
    if fl is not None and pc is not None:
        return {
            "within": {
                "first_and_last": format_duration(fl),
                "previous_and_current": format_duration(pc),
            }
        }
    if fl is not None:
        return {"within": format_duration(fl)}
    if pc is not None:
        return {"within": format_duration(pc), "within_type": "previous_and_current"}
    return {}


def _stage_spec(stage: Stage, first: bool) -> Spec:
    out: Spec = {}
    what = f"stage {stage.name!r}" if stage.group is None else "group"
    if stage.group is not None:
        out["group"] = pattern_to_spec(stage.group)
    else:
        out["name"] = stage.name
    q = stage.quantifier
    if not first and q.consuming is not Consuming.SKIP_TILL_NEXT:
        out["contiguity"] = CONTIGUITY_NAMES[q.consuming]
    if stage.condition is not None:
        steps = _steps(stage.condition, what)
        kinds = [k for k, _ in steps]
        if kinds == sorted(kinds, key=lambda k: k == "or_where"):
            wheres = [t for k, t in steps if k == "where"]
            ors = [t for k, t in steps if k == "or_where"]
            out["where"] = _one_or_list(wheres)
            if ors:
                out["or_where"] = _one_or_list(ors)
        else:
            out["conditions"] = [{k: t} for k, t in steps]
    if stage.until is not None:
        if not isinstance(stage.until, Predicate):
            raise ConfigurationError(f"{what}: until condition has no spec form")
        out["until"] = _source_of(stage.until.fn, what)
    if stage.times is not None:
        times = stage.times
        if q.kind is QuantifierKind.LOOPING:
            if times.low == 1:
                out["one_or_more"] = True
            else:
                out["times_or_more"] = times.low
        else:
            out["times"] = times.low if times.low == times.high else [times.low, times.high]
        if times.window_ms is not None:
            out["window"] = format_duration(times.window_ms)
    if q.optional:
        out["optional"] = True
    if q.greedy:
        out["greedy"] = True
    if q.inner is Consuming.STRICT:
        out["consecutive"] = True
    elif q.inner is Consuming.SKIP_TILL_ANY:
        out["allow_combinations"] = True
    out.update(_windows_spec(stage.window_first_last_ms, stage.window_previous_current_ms))
    return out


def pattern_to_spec(pattern: Pattern) -> list[Spec]:
    """The stage list of ``pattern`` in the rule format (normal form).

    Every condition must carry its expression text in ``fraudcep_source`` (as the callables
    of :func:`fraudcep.rules.expressions.compile_expression` do); otherwise
    :class:`~fraudcep.ConfigurationError` is raised. The skip strategy is not part of a stage
    list: see :func:`rule_to_spec`.
    """
    return [_stage_spec(stage, i == 0) for i, stage in enumerate(pattern.stages)]


def _skip_spec(skip: SkipStrategy) -> Any:
    if skip.kind in (SkipKind.SKIP_TO_FIRST, SkipKind.SKIP_TO_LAST):
        return {skip.kind.value: skip.stage}
    return skip.kind.value


def rule_to_spec(rule: Rule) -> Spec:
    """``rule`` in the rule format (normal form): id, mode (when not live), key, within, skip
    and pattern.

    The FIRST_AND_LAST window of the last top-level stage is written as the rule's ``within``.
    The key must be a field name or a key function made by :func:`load_rules` for a dotted path.
    """
    if isinstance(rule.key, str):
        key = rule.key
    else:
        source = getattr(rule.key, "fraudcep_source", None)
        if not isinstance(source, str):
            raise ConfigurationError(
                f"rule {rule.id!r}: the key {rule.key!r} is a callable without a field path"
            )
        key = source
    stages = pattern_to_spec(rule.pattern)
    spec: Spec = {"id": rule.id}
    if rule.mode != LIVE:
        spec["mode"] = rule.mode
    spec["key"] = key
    last = stages[-1]
    within = last.get("within")
    if isinstance(within, dict):
        spec["within"] = within["first_and_last"]
        last["within"] = within["previous_and_current"]
        last["within_type"] = "previous_and_current"
    elif within is not None and "within_type" not in last:
        spec["within"] = last.pop("within")
    if rule.pattern.skip_strategy.kind is not SkipKind.NO_SKIP:
        spec["skip"] = _skip_spec(rule.pattern.skip_strategy)
    spec["pattern"] = stages
    return spec


def dump_rules(definitions: Sequence[RuleDefinition | Rule], format: str = "yaml") -> str:
    """A rule file (``"yaml"`` or ``"json"``) holding ``definitions`` in normal form."""
    specs = [d.spec if isinstance(d, RuleDefinition) else rule_to_spec(d) for d in definitions]
    if format == "json":
        return json.dumps(specs, indent=2) + "\n"
    if format == "yaml":
        return yaml.safe_dump(specs, sort_keys=False, allow_unicode=True, width=100)
    raise ValueError(f"format must be 'yaml' or 'json', got {format!r}")


def rule_schema() -> dict[str, Any]:
    """The published JSON Schema of the rule format, as a dict."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema

"""Rules as data: a declarative YAML/JSON rule format, its loader and its writer.

A rule file is a list of rules (or a mapping with a ``rules`` list); each rule is a mapping
with an ``id``, a ``key``, an optional ``within``/``skip`` and a ``pattern``: a list of stages
whose conditions are expressions of :mod:`fraudcep.rules.expressions`. The format is described
in ``docs/rules.md`` and published as a JSON Schema (``fraudcep/rules/rule_schema.json``).

:func:`load_rules` parses a file, checks it and reports *every* problem at once, each with its
rule, field path, line and column (:class:`RuleSpecError`), and builds one
:class:`fraudcep.Rule` per rule through the public :class:`~fraudcep.Pattern` API.
:func:`rule_to_spec` and :func:`pattern_to_spec` go the other way for patterns whose conditions
carry their expression text (``fraudcep_source``): spec -> rule -> spec is the identity on
normalised specs, and the rebuilt rule finds the same alerts.

One module per step: :mod:`~fraudcep.rules.reading` (text to positioned data),
:mod:`~fraudcep.rules.checking` (data to a checked model), :mod:`~fraudcep.rules.building`
(model to :class:`fraudcep.Rule`), :mod:`~fraudcep.rules.loading` (the three together),
:mod:`~fraudcep.rules.writing` (rules back to specs), :mod:`~fraudcep.rules.reconciling`
(an engine brought in line with definitions); :mod:`~fraudcep.rules.limits` holds the bounds.
:mod:`~fraudcep.rules.lists` holds the named lists expressions may read (:class:`Lists`).
"""

from __future__ import annotations

from fraudcep.rules.definitions import ExpressionCompiler, RuleDefinition, Spec
from fraudcep.rules.durations import format_duration, parse_duration
from fraudcep.rules.lists import ListError, Lists, NamedList
from fraudcep.rules.loading import load_rule_file, load_rules
from fraudcep.rules.problems import Problem, RuleSpecError
from fraudcep.rules.reconciling import apply_definitions
from fraudcep.rules.writing import (
    SCHEMA_PATH,
    dump_rules,
    pattern_to_spec,
    rule_schema,
    rule_to_spec,
)

__all__ = [
    "SCHEMA_PATH",
    "ExpressionCompiler",
    "ListError",
    "Lists",
    "NamedList",
    "Problem",
    "RuleDefinition",
    "RuleSpecError",
    "Spec",
    "apply_definitions",
    "dump_rules",
    "format_duration",
    "load_rule_file",
    "load_rules",
    "parse_duration",
    "pattern_to_spec",
    "rule_schema",
    "rule_to_spec",
]

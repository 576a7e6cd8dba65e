"""Checking one rule's data into an intermediate model, reporting every problem with its
field path and position."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from fraudcep.alert import LIVE, MODES
from fraudcep.pattern.pattern import (
    MAX_CONDITIONS_PER_STAGE,
    MAX_QUANTIFIER_COUNT,
    MAX_STAGES,
    Consuming,
    WithinType,
)
from fraudcep.pattern.skip import SkipStrategy
from fraudcep.rules.definitions import Path_, Position
from fraudcep.rules.durations import parse_duration
from fraudcep.rules.expressions import check_field_path
from fraudcep.rules.limits import (
    MAX_FILE_CONDITION_TEXT,
    MAX_FILE_CONDITIONS,
    MAX_FILE_STAGES,
    MAX_NAME_LENGTH,
    MAX_VERSION,
    Budget,
)
from fraudcep.rules.problems import Problem, TooManyProblems, add_problem, show
from fraudcep.rules.reading import Document

CONTIGUITIES: dict[str, Consuming] = {
    "next": Consuming.STRICT,
    "followed_by": Consuming.SKIP_TILL_NEXT,
    "followed_by_any": Consuming.SKIP_TILL_ANY,
    "not_next": Consuming.NOT_NEXT,
    "not_followed_by": Consuming.NOT_FOLLOW,
}
CONTIGUITY_NAMES = {v: k for k, v in CONTIGUITIES.items()}

_SKIPS_SIMPLE = {
    "no_skip": SkipStrategy.no_skip,
    "skip_to_next": SkipStrategy.skip_to_next,
    "skip_past_last_event": SkipStrategy.skip_past_last_event,
}
_SKIPS_NAMED = {
    "skip_to_first": SkipStrategy.skip_to_first,
    "skip_to_last": SkipStrategy.skip_to_last,
}

_WITHIN_TYPES = {t.value: t for t in WithinType}

RULE_FIELDS = (
    "id",
    "description",
    "version",
    "enabled",
    "mode",
    "key",
    "within",
    "within_type",
    "skip",
    "pattern",
)
STAGE_FIELDS = (
    "name",
    "group",
    "contiguity",
    *CONTIGUITIES,
    "where",
    "or_where",
    "conditions",
    "until",
    "times",
    "times_or_more",
    "one_or_more",
    "window",
    "optional",
    "greedy",
    "consecutive",
    "allow_combinations",
    "within",
    "within_type",
)


@attrs.define
class _Expr:
    text: str
    path: Path_
    kind: str  # where / or_where / until
    fn: Callable[..., Any] | None = None


@attrs.define
class StageModel:
    path: Path_
    name: str | None
    group: list[StageModel] | None
    contiguity: Consuming | None
    contiguity_path: Path_
    conditions: list[_Expr]
    until: _Expr | None
    quantifier: tuple[str, Any] | None  # ("times", (lo, hi)) / ("times_or_more", n)
    quantifier_path: Path_
    window: int | None
    flags: dict[str, Path_]  # optional/greedy/consecutive/allow_combinations set to true
    windows: list[tuple[WithinType, int, Path_]]


@attrs.define
class RuleModel:
    path: Path_
    id: str
    description: str | None
    version: int | None
    enabled: bool
    mode: str
    key: str
    windows: list[tuple[WithinType, int, Path_]]
    skip: SkipStrategy
    skip_path: Path_
    stages: list[StageModel]


def render_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class Checker:
    """Validates one rule's data, collecting problems with positions."""

    def __init__(
        self,
        doc: Document,
        source: str,
        problems: list[Problem],
        prefix: Path_,
        rule_id: str,
        budget: Budget,
    ) -> None:
        self.doc = doc
        self.source = source
        self.problems = problems
        self.prefix = prefix
        self.rule_id = rule_id
        self.failed = False
        self.stage_count = 0
        self.budget = budget

    def file_limit(self, path: Path_, message: str) -> None:
        """Report a limit of the whole file and stop reading it."""
        self.error(path, message)
        raise TooManyProblems

    def position(self, path: Path_, at_key: bool = False) -> Position:
        full = (*self.prefix, *path)
        if at_key and full in self.doc.keys:
            return self.doc.keys[full]
        while full:
            if full in self.doc.values:
                return self.doc.values[full]
            full = full[:-1]
        return self.doc.values.get((), (1, 1))

    def text_position(self, path: Path_) -> Position:
        full = (*self.prefix, *path)
        return self.doc.text_starts.get(full) or self.position(path)

    def error(self, path: Path_, message: str, at_key: bool = False) -> None:
        self.failed = True
        if not at_key and (*self.prefix, *path) in self.doc.refused:
            return  # reported while reading
        line, column = self.position(path, at_key)
        add_problem(
            self.problems,
            Problem(self.source, self.rule_id, render_path(path), line, column, message),
        )

    # -- typed reads ----------------------------------------------------------------------

    def unknown_keys(self, data: Mapping[str, Any], allowed: Sequence[str], path: Path_) -> None:
        for key in data:
            if key not in allowed:
                hint = _close(key, allowed)
                self.error((*path, key), f"unknown field {show(key)}{hint}", at_key=True)

    def string(self, data: Mapping[str, Any], key: str, path: Path_) -> str | None:
        """The non-empty string ``data[key]``; None (reported unless absent) otherwise."""
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            self.error((*path, key), f"must be a non-empty string, got {show(value)}")
            return None
        return value

    def name(self, data: Mapping[str, Any], key: str, path: Path_) -> str | None:
        """A rule id or stage name: a string of printable characters, not too long."""
        value = self.string(data, key, path)
        if value is None:
            return None
        problem = name_problem(value)
        if problem is not None:
            self.error((*path, key), problem)
            return None
        return value

    def boolean(self, data: Mapping[str, Any], key: str, path: Path_) -> bool | None:
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, bool):
            self.error((*path, key), f"must be true or false, got {show(value)}")
            return None
        return value

    def count(self, value: Any, path: Path_, minimum: int, maximum: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.error(path, f"must be an integer from {minimum} to {maximum:,}, got {show(value)}")
            return None
        return value

    def duration(self, value: Any, path: Path_) -> int | None:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.error(path, str(exc))
            return None

    def windows(self, data: Mapping[str, Any], path: Path_) -> list[tuple[WithinType, int, Path_]]:
        out: list[tuple[WithinType, int, Path_]] = []
        if "within" not in data:
            if "within_type" in data:
                self.error((*path, "within_type"), "within_type needs within")
            return out
        within = data["within"]
        wpath = (*path, "within")
        if isinstance(within, Mapping):
            if "within_type" in data:
                self.error(
                    (*path, "within_type"),
                    "within_type goes with a single duration, not a mapping of windows",
                )
            if not within:
                self.error(wpath, "needs first_and_last and/or previous_and_current")
            for name, value in within.items():
                if name not in _WITHIN_TYPES:
                    self.error(
                        (*wpath, name),
                        f"unknown window type {show(name)} (first_and_last, previous_and_current)",
                        at_key=True,
                    )
                    continue
                ms = self.duration(value, (*wpath, name))
                if ms is not None:
                    out.append((_WITHIN_TYPES[name], ms, (*wpath, name)))
            out.sort(key=lambda w: list(WithinType).index(w[0]))
            return out
        ms = self.duration(within, wpath)
        kind = WithinType.FIRST_AND_LAST
        if "within_type" in data:
            name = data["within_type"]
            if not isinstance(name, str) or name not in _WITHIN_TYPES:
                self.error(
                    (*path, "within_type"),
                    f"must be first_and_last or previous_and_current, got {show(name)}",
                )
            else:
                kind = _WITHIN_TYPES[name]
        if ms is not None:
            out.append((kind, ms, wpath))
        return out

    # -- expressions ----------------------------------------------------------------------

    def expressions(self, value: Any, path: Path_, kind: str) -> list[_Expr]:
        if isinstance(value, str):
            if not value.strip():
                self.error(path, "an expression must not be empty")
                return []
            self.budget.conditions += 1
            if self.budget.conditions > MAX_FILE_CONDITIONS:
                self.file_limit(path, f"more than {MAX_FILE_CONDITIONS:,} conditions in one file")
            self.budget.condition_text += len(value)
            if self.budget.condition_text > MAX_FILE_CONDITION_TEXT:
                self.file_limit(
                    path,
                    f"more than {MAX_FILE_CONDITION_TEXT:,} characters of conditions in one file",
                )
            return [_Expr(value, path, kind)]
        if isinstance(value, list) and value:
            out: list[_Expr] = []
            for i, item in enumerate(value):
                out.extend(
                    self.expressions(item, (*path, i), kind)
                    if isinstance(item, str)
                    else self._not_expression(item, (*path, i))
                )
            return out
        self.error(path, f"must be an expression (a string) or a list of them, got {show(value)}")
        return []

    def _not_expression(self, value: Any, path: Path_) -> list[_Expr]:
        self.error(path, f"must be an expression (a string), got {show(value)}")
        return []

    # -- stages ---------------------------------------------------------------------------

    def stages(self, value: Any, path: Path_, names: list[str]) -> list[StageModel]:
        if not isinstance(value, list) or not value:
            self.error(path, "must be a non-empty list of stages")
            return []
        out = []
        for i, item in enumerate(value):
            self.budget.stages += 1
            if self.budget.stages > MAX_FILE_STAGES:
                self.file_limit((*path, i), f"more than {MAX_FILE_STAGES:,} stages in one file")
            self.stage_count += 1
            if self.stage_count > MAX_STAGES:
                self.error(
                    (*path, i),
                    f"more than {MAX_STAGES} stages in one rule (groups and their stages count)",
                )
                break
            stage = self.stage(item, (*path, i), i == 0, names)
            if stage is not None:
                out.append(stage)
        return out

    def stage(self, data: Any, path: Path_, first: bool, names: list[str]) -> StageModel | None:
        if not isinstance(data, Mapping):
            self.error(path, f"a stage must be a mapping, got {show(data)}")
            return None
        self.unknown_keys(data, STAGE_FIELDS, path)
        name: str | None = None
        group: list[StageModel] | None = None
        if "group" in data:
            if "name" in data:
                self.error((*path, "name"), "a group stage has no name", at_key=True)
            for key in ("where", "or_where", "conditions", "greedy"):
                if key in data:
                    self.error((*path, key), f"{key} does not apply to a group", at_key=True)
            group = self.stages(data["group"], (*path, "group"), names)
        elif "name" not in data:
            self.error(path, "a stage needs a name (or a group)")
        elif (name := self.name(data, "name", path)) is None:
            pass
        elif ":" in name:
            self.error((*path, "name"), "':' is reserved for internal names")
            name = None
        elif name in names:
            self.error((*path, "name"), f"duplicate stage name {show(name)}")
            name = None
        else:
            names.append(name)
        contiguity, contiguity_path = self._contiguity(data, path, first)
        conditions = self._conditions(data, path)
        if len(conditions) > MAX_CONDITIONS_PER_STAGE:
            self.error(
                conditions[MAX_CONDITIONS_PER_STAGE].path,
                f"more than {MAX_CONDITIONS_PER_STAGE} conditions in one stage",
            )
        until = None
        if "until" in data:
            found = self.expressions(data["until"], (*path, "until"), "until")
            if len(found) > 1 or isinstance(data["until"], list):
                self.error((*path, "until"), "until takes a single expression")
            elif found:
                until = found[0]
        quantifier, qpath = self._quantifier(data, path)
        window = None
        if "window" in data:
            window = self.duration(data["window"], (*path, "window"))
            if quantifier is None:
                self.error(
                    (*path, "window"),
                    "window needs a quantifier (times, times_or_more, one_or_more)",
                    at_key=True,
                )
        flags: dict[str, Path_] = {}
        for flag in ("optional", "greedy", "consecutive", "allow_combinations"):
            if self.boolean(data, flag, path):
                flags[flag] = (*path, flag)
        return StageModel(
            path=path,
            name=name,
            group=group,
            contiguity=contiguity,
            contiguity_path=contiguity_path,
            conditions=conditions,
            until=until,
            quantifier=quantifier,
            quantifier_path=qpath,
            window=window,
            flags=flags,
            windows=self.windows(data, path),
        )

    def _contiguity(
        self, data: Mapping[str, Any], path: Path_, first: bool
    ) -> tuple[Consuming | None, Path_]:
        given: list[tuple[str, Path_]] = []
        if "contiguity" in data:
            value = data["contiguity"]
            if not isinstance(value, str) or value not in CONTIGUITIES:
                self.error(
                    (*path, "contiguity"),
                    f"must be one of {', '.join(CONTIGUITIES)}, got {show(value)}",
                )
            else:
                given.append((value, (*path, "contiguity")))
        for name in CONTIGUITIES:
            if name in data:
                if data[name] is not True:
                    self.error(
                        (*path, name),
                        f"write {name}: true (or contiguity: {name}), got {show(data[name])}",
                    )
                else:
                    given.append((name, (*path, name)))
        if len(given) > 1:
            self.error(given[1][1], "the contiguity to the previous stage is given twice", True)
            return None, given[0][1]
        if first:
            if given:
                self.error(given[0][1], "the first stage has no previous stage", at_key=True)
            return Consuming.STRICT, path
        if not given:
            return Consuming.SKIP_TILL_NEXT, path
        if data.get("group") is not None and given[0][0].startswith("not_"):
            self.error(given[0][1], "a negation cannot be a group", at_key=True)
        return CONTIGUITIES[given[0][0]], given[0][1]

    def _conditions(self, data: Mapping[str, Any], path: Path_) -> list[_Expr]:
        out: list[_Expr] = []
        if "conditions" in data:
            cpath = (*path, "conditions")
            for key in ("where", "or_where"):
                if key in data:
                    self.error((*path, key), f"use either conditions or {key}", at_key=True)
            items = data["conditions"]
            if not isinstance(items, list) or not items:
                self.error(cpath, "must be a non-empty list of {where: ...} / {or_where: ...}")
                return out
            for i, item in enumerate(items):
                if (
                    not isinstance(item, Mapping)
                    or len(item) != 1
                    or next(iter(item)) not in ("where", "or_where")
                ):
                    self.error((*cpath, i), "must be a mapping {where: EXPR} or {or_where: EXPR}")
                    continue
                kind, text = next(iter(item.items()))
                if not isinstance(text, str):
                    self.error(
                        (*cpath, i, kind), f"must be an expression (a string), got {show(text)}"
                    )
                    continue
                out.extend(self.expressions(text, (*cpath, i, kind), kind))
            return out
        for key in ("where", "or_where"):
            if key in data:
                out.extend(self.expressions(data[key], (*path, key), key))
        return out

    def _quantifier(
        self, data: Mapping[str, Any], path: Path_
    ) -> tuple[tuple[str, Any] | None, Path_]:
        present = [k for k in ("times", "times_or_more", "one_or_more") if k in data]
        if len(present) > 1:
            self.error((*path, present[1]), f"only one of {', '.join(present)}", at_key=True)
        if not present:
            return None, path
        key = present[0]
        qpath = (*path, key)
        value = data[key]
        if key == "one_or_more":
            if value is not True:
                self.error(qpath, f"write one_or_more: true, got {show(value)}")
                return None, qpath
            return ("times_or_more", 1), qpath
        if key == "times_or_more":
            n = self.count(value, qpath, 1, MAX_QUANTIFIER_COUNT)
            return (None if n is None else ("times_or_more", n)), qpath
        if isinstance(value, list):
            if len(value) != 2:
                self.error(qpath, f"must be a count or [low, high], got {show(value)}")
                return None, qpath
            low = self.count(value[0], (*qpath, 0), 0, MAX_QUANTIFIER_COUNT)
            high = self.count(value[1], (*qpath, 1), 1, MAX_QUANTIFIER_COUNT)
            if low is None or high is None:
                return None, qpath
            if high < low:
                self.error(qpath, f"the upper bound {high} is below the lower bound {low}")
                return None, qpath
            return ("times", (low, high)), qpath
        n = self.count(value, qpath, 1, MAX_QUANTIFIER_COUNT)
        return (None if n is None else ("times", (n, n))), qpath


def _close(word: str, options: Sequence[str]) -> str:
    import difflib

    near = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def name_problem(value: Any) -> str | None:
    """What is wrong with a rule id or stage name, if anything."""
    if not isinstance(value, str) or not value.strip():
        return f"must be a non-empty string, got {show(value)}"
    if len(value) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters"
    bad = next((c for c in value if unicodedata.category(c)[0] in "CZ" and c != " "), None)
    if bad is not None:
        return f"must not hold control, format or separator characters such as {bad!r}"
    return None


def _key_problem(key: str) -> str | None:
    """What is wrong with a rule's ``key`` path, if anything: the expression language's rules
    for field names (ASCII letters, digits and '_', starting with a letter) hold for each part."""
    if len(key) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters"
    return check_field_path(key)


def check_rule(
    checker: Checker, data: Any, path: Path_, seen_ids: dict[str, Path_]
) -> RuleModel | None:
    if not isinstance(data, Mapping):
        checker.error((), f"a rule must be a mapping, got {show(data)}")
        return None
    checker.unknown_keys(data, RULE_FIELDS, ())
    rule_id = checker.name(data, "id", ())
    if "id" not in data:
        checker.error((), "a rule needs an id")
    if rule_id is not None:
        if rule_id in seen_ids:
            checker.error(("id",), f"duplicate rule id {show(rule_id)}")
        seen_ids[rule_id] = path
    description = None
    if "description" in data:
        description = data["description"]
        if not isinstance(description, str):
            checker.error(("description",), f"must be a string, got {show(description)}")
            description = None
    version = None
    if "version" in data:
        version = checker.count(data["version"], ("version",), 0, MAX_VERSION)
    enabled = checker.boolean(data, "enabled", ())
    mode = checker.string(data, "mode", ())
    if mode is not None and mode not in MODES:
        checker.error(("mode",), f"must be one of {', '.join(MODES)}, got {show(mode)}")
        mode = None
    key = checker.string(data, "key", ())
    if "key" not in data:
        checker.error((), "a rule needs a key (the field that partitions events)")
    elif key is not None and (problem := _key_problem(key)) is not None:
        checker.error(("key",), problem)
        key = None
    windows = checker.windows(data, ())
    names: list[str] = []
    stages = checker.stages(data.get("pattern"), ("pattern",), names)
    skip = _check_skip(checker, data, names)
    return RuleModel(
        path=path,
        id=checker.rule_id if rule_id is None else rule_id,
        description=description,
        version=version,
        enabled=True if enabled is None else enabled,
        mode=mode or LIVE,
        key=key or "",
        windows=windows,
        skip=skip,
        skip_path=("skip",),
        stages=stages,
    )


def _check_skip(checker: Checker, data: Mapping[str, Any], names: Sequence[str]) -> SkipStrategy:
    if "skip" not in data:
        return SkipStrategy.no_skip()
    value = data["skip"]
    if isinstance(value, str) and value in _SKIPS_SIMPLE:
        return _SKIPS_SIMPLE[value]()
    if isinstance(value, Mapping) and len(value) == 1:
        kind, stage = next(iter(value.items()))
        if kind in _SKIPS_NAMED:
            if not isinstance(stage, str) or stage not in names:
                checker.error(("skip", kind), f"{kind} names an unknown stage {show(stage)}")
                return SkipStrategy.no_skip()
            return _SKIPS_NAMED[kind](stage)
    checker.error(
        ("skip",),
        "must be no_skip, skip_to_next, skip_past_last_event, {skip_to_first: STAGE} or "
        f"{{skip_to_last: STAGE}}, got {show(value)}",
    )
    return SkipStrategy.no_skip()

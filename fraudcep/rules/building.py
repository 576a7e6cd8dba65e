"""Building a checked rule through the public Pattern API, reporting what the API refuses at
the place in the file it came from."""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import partial
from typing import Any

from fraudcep.engine.rule import Rule
from fraudcep.errors import ConfigurationError, EventError, FraudcepError
from fraudcep.pattern.pattern import (
    Consuming,
    Pattern,
    WithinType,
)
from fraudcep.pattern.skip import SkipStrategy
from fraudcep.rules.checking import Checker, RuleModel, StageModel, render_path
from fraudcep.rules.definitions import ExpressionCompiler, Path_
from fraudcep.rules.problems import Problem


class Stop(Exception):
    """A builder call failed (its problem is recorded); stop building this rule."""


_MISSING: Any = object()


def _key_function(path: str) -> Callable[[Any], Hashable]:
    parts = path.split(".")

    def get(event: Any) -> Hashable:
        value = event
        for part in parts:
            if isinstance(value, Mapping):
                value = value.get(part, _MISSING)
            else:  # a public data attribute (parts never start with '_')
                value = getattr(value, part, _MISSING)
                if callable(value) or isinstance(value, types.ModuleType):
                    value = _MISSING
            if value is _MISSING:
                raise EventError(f"event has no field {path!r}: {event!r:.200}")
        result: Hashable = value
        return result

    get.__name__ = f"key_{path.replace('.', '_')}"
    get.fraudcep_source = path  # type: ignore[attr-defined]
    return get


def default_compiler() -> ExpressionCompiler:
    try:
        module = importlib.import_module("fraudcep.rules.expressions")
    except ImportError as exc:  # pragma: no cover - the module ships with fraudcep
        raise ConfigurationError(f"the expression language is not available: {exc}") from None
    compiler: ExpressionCompiler = module.compile_expression
    return compiler


class _Builder:
    def __init__(self, checker: Checker, compiler: ExpressionCompiler) -> None:
        self.checker = checker
        self.compiler = compiler

    def compile_all(self, stages: Sequence[StageModel], names: tuple[str, ...]) -> None:
        for stage in stages:
            exprs = [*stage.conditions, *([stage.until] if stage.until else [])]
            for expr in exprs:
                line, column = self.checker.text_position(expr.path)
                try:
                    expr.fn = self.compiler(
                        expr.text,
                        stages=names,
                        rule_id=self.checker.rule_id,
                        field=render_path(expr.path),
                        line=line,
                        column=column,
                    )
                except (FraudcepError, ValueError, TypeError, SyntaxError, RecursionError) as exc:
                    self.checker.failed = True
                    self.checker.problems.append(
                        Problem(
                            self.checker.source,
                            self.checker.rule_id,
                            render_path(expr.path),
                            _int_attr(exc, "line", line),
                            _int_attr(exc, "column", column),
                            _message(exc),
                            getattr(exc, "missing_list", None),
                        )
                    )
            if stage.group is not None:
                self.compile_all(stage.group, names)

    def call(self, path: Path_, fn: Callable[[], Pattern]) -> Pattern:
        try:
            return fn()
        except (FraudcepError, ValueError, TypeError) as exc:
            self.checker.error(path, _message(exc), at_key=True)
            raise Stop from None

    def sequence(self, stages: Sequence[StageModel], skip: SkipStrategy | None) -> Pattern:
        pattern: Pattern | None = None
        for stage in stages:
            target: str | Pattern
            if stage.group is not None:
                target = self.sequence(stage.group, None)
            else:
                assert stage.name is not None
                target = stage.name
            if pattern is None:
                pattern = self.call(stage.path, partial(Pattern.begin, target, skip=skip))
            else:
                pattern = self.call(
                    stage.contiguity_path, _connector(pattern, stage.contiguity, target)
                )
            pattern = self.configure(pattern, stage)
        assert pattern is not None
        return pattern

    def configure(self, pattern: Pattern, stage: StageModel) -> Pattern:
        for expr in stage.conditions:
            fn = expr.fn
            assert fn is not None
            method = pattern.where if expr.kind == "where" else pattern.or_where
            pattern = self.call(expr.path, partial(method, fn))
        if stage.quantifier is not None:
            kind, value = stage.quantifier
            p = pattern
            window = stage.window
            if kind == "times":
                low, high = value
                if low == high:
                    pattern = self.call(stage.quantifier_path, lambda: p.times(low, window=window))
                else:
                    pattern = self.call(
                        stage.quantifier_path, lambda: p.times(low, high, window=window)
                    )
            else:
                pattern = self.call(
                    stage.quantifier_path, lambda: p.times_or_more(value, window=window)
                )
        for flag in ("consecutive", "allow_combinations", "optional", "greedy"):
            if flag in stage.flags:
                method = getattr(pattern, flag)
                pattern = self.call(stage.flags[flag], method)
        if stage.until is not None:
            fn = stage.until.fn
            assert fn is not None
            p = pattern
            pattern = self.call(stage.until.path, lambda: p.until(fn))
        return self.windows(pattern, stage.windows)

    def windows(
        self, pattern: Pattern, windows: Sequence[tuple[WithinType, int, Path_]]
    ) -> Pattern:
        for kind, ms, path in windows:
            pattern = self.call(path, partial(pattern.within, ms, kind))
        return pattern


def _connector(
    pattern: Pattern, contiguity: Consuming | None, target: str | Pattern
) -> Callable[[], Pattern]:
    def connect() -> Pattern:
        if contiguity is Consuming.STRICT:
            return pattern.next(target)
        if contiguity is Consuming.SKIP_TILL_ANY:
            return pattern.followed_by_any(target)
        if contiguity in (Consuming.NOT_NEXT, Consuming.NOT_FOLLOW):
            if not isinstance(target, str):
                raise ConfigurationError("a negation cannot be a group")
            if contiguity is Consuming.NOT_NEXT:
                return pattern.not_next(target)
            return pattern.not_followed_by(target)
        return pattern.followed_by(target)

    return connect


def _int_attr(exc: BaseException, name: str, default: int) -> int:
    value = getattr(exc, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _message(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) else str(exc)


def build_rule(model: RuleModel, checker: Checker, compiler: ExpressionCompiler) -> Rule | None:
    builder = _Builder(checker, compiler)
    names = tuple(_names(model.stages))
    builder.compile_all(model.stages, names)  # reports every bad expression, even so
    if checker.failed or not model.stages:
        return None
    last = model.stages[-1]
    own = {kind for kind, _, _ in last.windows}
    for kind, _, path in model.windows:
        if kind in own:
            checker.error(
                path,
                f"a {kind.value} window is given both on the rule and on its last stage",
                at_key=True,
            )
            return None
    try:
        pattern = builder.sequence(model.stages, model.skip)
        pattern = builder.windows(pattern, model.windows)
    except Stop:
        return None
    key: str | Callable[[Any], Hashable] = (
        model.key if "." not in model.key else _key_function(model.key)
    )
    try:
        return Rule(model.id, pattern, key=key, mode=model.mode)
    except (FraudcepError, ValueError) as exc:
        message = str(exc).removeprefix(f"rule {model.id!r}: ")
        checker.error(("pattern",), message, at_key=True)
        return None
    except (RecursionError, SyntaxError, MemoryError) as exc:
        # the limits above keep rules far from these; should one get here, it is refused
        what = type(exc).__name__
        checker.error(("pattern",), f"the pattern is too complex to compile ({what})", True)
        return None


def _names(stages: Sequence[StageModel]) -> list[str]:
    out: list[str] = []
    for stage in stages:
        if stage.group is not None:
            out.extend(_names(stage.group))
        elif stage.name is not None:
            out.append(stage.name)
    return out

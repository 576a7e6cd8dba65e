"""Conditions: user predicates, their combinations, and their compilation to one function.

A condition is either ``f(event)`` or ``f(event, ctx)``; the second form is Flink's iterative
condition and reads the events already matched in the partial match through ``ctx.events(name)``.
Combinations (``where``/``or_where``/``until`` and the negations the NFA compiler adds) are kept
as a small tree and compiled once into a single Python function, so evaluating a combined
condition costs one call per user predicate and nothing per tree node.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import attrs


class Context(Protocol):
    """What an iterative condition sees besides the event."""

    @property
    def timestamp(self) -> int:
        """Event time (or processing time) of the event being evaluated, in ms."""
        ...

    @property
    def previous(self) -> Any:
        """The event matched last in this partial match, or ``None``."""
        ...

    def events(self, name: str) -> Sequence[Any]:
        """Events already matched to stage ``name`` in this partial match, in order."""
        ...


def takes_context(fn: Callable[..., Any]) -> bool:
    """True when ``fn`` wants ``fn(event, ctx)``.

    That is: it has two or more positional parameters without defaults, or a positional
    parameter named ``ctx`` or ``context``. Parameters with defaults (``lambda e, v=1: ...``)
    are not mistaken for the context.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if not positional and not any(
        p.kind is inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values()
    ):
        raise TypeError(f"condition {fn!r} must accept the event as its first argument")
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty:
            raise TypeError(
                f"condition {fn!r}: keyword-only parameter {p.name!r} is not supported; "
                "write f(event) or f(event, ctx)"
            )
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    if len(required) >= 2:
        return True
    return any(p.name in ("ctx", "context") for p in positional[1:])


class Condition:
    """A node of a condition tree."""

    __slots__ = ()

    def uses_context(self) -> bool:
        raise NotImplementedError


@attrs.frozen(eq=False)
class TrueCondition(Condition):
    """Always true: Flink's ``BooleanConditions.trueFunction()``."""

    def uses_context(self) -> bool:
        return False


TRUE = TrueCondition()


@attrs.frozen(eq=False)
class Predicate(Condition):
    """A user callable."""

    fn: Callable[..., Any]
    with_context: bool

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> Predicate:
        if not callable(fn):
            raise TypeError(f"a condition must be callable, got {fn!r}")
        return cls(fn, takes_context(fn))

    def uses_context(self) -> bool:
        return self.with_context


@attrs.frozen(eq=False)
class And(Condition):
    left: Condition
    right: Condition

    def uses_context(self) -> bool:
        return self.left.uses_context() or self.right.uses_context()


@attrs.frozen(eq=False)
class Or(Condition):
    left: Condition
    right: Condition

    def uses_context(self) -> bool:
        return self.left.uses_context() or self.right.uses_context()


@attrs.frozen(eq=False)
class Not(Condition):
    inner: Condition

    def uses_context(self) -> bool:
        return self.inner.uses_context()


def predicates(cond: Condition | None) -> Iterator[Predicate]:
    """The user callables of a condition tree, left to right (a loop, not recursion)."""
    pending: list[Condition | None] = [cond]
    while pending:
        node = pending.pop()
        if isinstance(node, Predicate):
            yield node
        elif isinstance(node, And | Or):
            pending += [node.right, node.left]
        elif isinstance(node, Not):
            pending.append(node.inner)


CompiledCondition = Callable[[Any, Any], bool]


def compile_condition(cond: Condition) -> CompiledCondition:
    """Turn a condition tree into one function ``f(event, ctx) -> bool``.

    The tree is rendered as a Python expression (``and``/``or``/``not`` short-circuit exactly as
    Flink's ``RichAndCondition``/``RichOrCondition`` do) and compiled once.
    """
    fn: CompiledCondition = _define(cond, "e, ctx")
    return fn


def _define(cond: Condition, parameters: str) -> Any:
    """Compile ``cond`` into ``def _condition(<parameters>)`` and return that function."""
    namespace: dict[str, Any] = {}
    source = _render(cond, namespace)
    code = f"def _condition({parameters}):\n    return bool({source})\n"
    exec(compile(code, "<fraudcep-condition>", "exec"), namespace)
    return namespace["_condition"]


def _render(cond: Condition, namespace: dict[str, Any]) -> str:
    if isinstance(cond, TrueCondition):
        return "True"
    if isinstance(cond, Predicate):
        name = f"_p{len(namespace)}"
        namespace[name] = cond.fn
        return f"{name}(e, ctx)" if cond.with_context else f"{name}(e)"
    if isinstance(cond, And):
        return f"({_render(cond.left, namespace)} and {_render(cond.right, namespace)})"
    if isinstance(cond, Or):
        return f"({_render(cond.left, namespace)} or {_render(cond.right, namespace)})"
    if isinstance(cond, Not):
        return f"(not {_render(cond.inner, namespace)})"
    raise TypeError(f"not a condition: {cond!r}")


def compile_single_argument(cond: Condition) -> Callable[[Any], bool] | None:
    """A one-argument version of ``cond`` when it needs no context (for the hot path)."""
    if cond.uses_context():
        return None
    if isinstance(cond, Predicate):
        return cond.fn
    fn: Callable[[Any], bool] = _define(cond, "e")
    return fn


_EXPRESSIONS: weakref.WeakKeyDictionary[Callable[..., Any], str] = weakref.WeakKeyDictionary()


def declare_expression(fn: Callable[..., Any], source: str) -> None:
    """Record that ``fn`` evaluates the expression-language text ``source`` exactly, as every
    function :func:`fraudcep.rules.expressions.compile_expression` makes does; a translation of
    the text (a vectorised filter, :mod:`fraudcep.engine.vectorised`) may then stand for it."""
    _EXPRESSIONS[fn] = source


def expression_of(fn: object) -> str | None:
    """The expression text declared for ``fn`` (see :func:`declare_expression`), else None.

    Unlike ``fraudcep_source``, which any function may carry, a declared text vouches for the
    function's semantics."""
    if not callable(fn):
        return None
    try:
        return _EXPRESSIONS.get(fn)
    except TypeError:  # not weakly referenceable: never declared
        return None

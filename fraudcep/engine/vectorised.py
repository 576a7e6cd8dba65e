"""Conditions as vectorised filters over Arrow record batches, exactly as they decide row-wise.

:func:`condition_filter` translates a condition tree (``where`` / ``or_where`` / ``until`` and
the negations the NFA compiler adds) whose predicates are all expression-language functions
(:func:`fraudcep.rules.expressions.compile_expression`) into a function from a record batch to
a boolean array: the value the condition takes on each row, where the row is the dict
``batch.to_pylist()`` gives. A null in that array means "not known": callers treat it as
possibly true. Only a subset of the language is translated, and only over columns whose Arrow
type makes the row-wise evaluation provably equal to the vectorised one:

- fields: top-level names (``amount``, ``event.amount``, ``event["amount"]``); a field the
  batch lacks is None in every row, as a missing field is row-wise;
- constants: numbers, strings, True, False, None;
- comparisons (``== != < <= > >=``, chains, ``is None``, ``is not None``) between a field and a
  constant: integer columns (int8..int64, uint8..uint32) and float32/float64 columns with
  numbers, string columns with strings (``==``/``!=`` with any constant), boolean columns with
  ``==``/``!=``; None in a comparison behaves as row-wise (ordering false, ``==`` only None);
- ``in`` / ``not in`` a list, tuple or set of constants;
- ``and``, ``or``, ``not``, the truth of a field or constant, ``exists(x)``, ``missing(x)``.

Anything else (arithmetic, helpers such as ``lower()``, nested fields, a comparison that could be
a type error row-wise such as a string column ordered against a number, conditions reading the
partial match, Python functions) is not translated: :func:`condition_filter` returns None and the
caller must treat every row as possibly matching. Inside the subset no row-wise evaluation can
raise or hit a type error, so the translation is compositional.

pyarrow is imported when this module is; the core imports this module only when a record batch
is given to it.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from fraudcep.pattern.conditions import (
    And,
    Condition,
    Not,
    Or,
    Predicate,
    TrueCondition,
    expression_of,
)

__all__ = ["Mask", "condition_filter", "expression_filter"]

Mask = Callable[[pa.RecordBatch], pa.Array]
"""A translated condition: the batch's rows -> boolean array (null: not known)."""

_INT, _FLOAT, _STR, _BOOL, _NONE = "int", "float", "str", "bool", "none"
_EXACT_FLOAT_INT = 2**53  # ints of at most this size convert to float exactly
_INT64 = 2**63


class _Untranslatable(Exception):
    """The expression (or the batch's column types) are outside the translated subset."""


def condition_filter(cond: Condition | None, schema: pa.Schema) -> Mask | None:
    """The vectorised form of ``cond`` over batches of ``schema``, or None if there is none.

    ``None`` as ``cond`` is the always-true edge of an automaton.
    """
    try:
        return _condition(cond, schema)
    except _Untranslatable:
        return None


def expression_filter(source: str, schema: pa.Schema) -> Mask | None:
    """The vectorised form of the single-event expression ``source`` over ``schema``, or None.

    ``source`` must be an expression :func:`~fraudcep.rules.expressions.compile_expression`
    accepts and that reads no stage and no ``prev``.
    """
    try:
        return _Translator(schema).translate(source)
    except _Untranslatable:
        return None


def _condition(cond: Condition | None, schema: pa.Schema) -> Mask:
    if cond is None or isinstance(cond, TrueCondition):
        return _constant_mask(True)
    if isinstance(cond, Predicate):
        if cond.with_context:
            raise _Untranslatable
        source = expression_of(cond.fn)
        if source is None:
            raise _Untranslatable
        return _Translator(schema).translate(source)
    if isinstance(cond, And):
        left, right = _condition(cond.left, schema), _condition(cond.right, schema)
        return lambda b: pc.and_kleene(left(b), right(b))
    if isinstance(cond, Or):
        left, right = _condition(cond.left, schema), _condition(cond.right, schema)
        return lambda b: pc.or_kleene(left(b), right(b))
    if isinstance(cond, Not):
        inner = _condition(cond.inner, schema)
        return lambda b: pc.invert(inner(b))
    raise _Untranslatable


def _constant_mask(value: bool) -> Mask:
    scalar = pa.scalar(value, pa.bool_())
    return lambda batch: pa.repeat(scalar, batch.num_rows)


def _kind(field_type: pa.DataType) -> str | None:
    """How a column's values compare row-wise, when the translation supports its type."""
    t = pa.types
    if (t.is_signed_integer(field_type) or t.is_unsigned_integer(field_type)) and not (
        t.is_uint64(field_type)
    ):
        return _INT
    if t.is_float32(field_type) or t.is_float64(field_type):
        return _FLOAT
    if t.is_string(field_type) or t.is_large_string(field_type):
        return _STR
    if t.is_boolean(field_type):
        return _BOOL
    if t.is_null(field_type):
        return _NONE
    return None


class _Value:
    """A translated value: a column (``name`` with ``kind``) or a constant."""

    __slots__ = ("const", "kind", "name")

    def __init__(self, kind: str, name: str | None = None, const: Any = None) -> None:
        self.kind = kind  # _INT/_FLOAT/_STR/_BOOL/_NONE for columns; "const" for constants
        self.name = name
        self.const = const

    @property
    def is_none(self) -> bool:
        """Always None: a missing field, a column of nulls or the constant None."""
        return self.kind == _NONE or (self.kind == "const" and self.const is None)

    def column(self, batch: pa.RecordBatch) -> pa.Array:
        assert self.name is not None
        array = batch.column(self.name)
        if self.kind == _INT and array.type != pa.int64():
            return pc.cast(array, pa.int64())
        if self.kind == _FLOAT and array.type != pa.float64():
            return pc.cast(array, pa.float64())
        return array


_FLIP = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq", "ne": "ne"}
_CMP: dict[type[ast.cmpop], str] = {
    ast.Eq: "eq",
    ast.NotEq: "ne",
    ast.Lt: "lt",
    ast.LtE: "le",
    ast.Gt: "gt",
    ast.GtE: "ge",
}
_ARROW_CMP = {
    "eq": pc.equal,
    "ne": pc.not_equal,
    "lt": pc.less,
    "le": pc.less_equal,
    "gt": pc.greater,
    "ge": pc.greater_equal,
}


def _fill(array: pa.Array, value: bool) -> pa.Array:
    return pc.fill_null(array, value)


class _Translator:
    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema

    def translate(self, source: str) -> Mask:
        text = re.sub(r"\r\n?", "\n", source)
        try:
            tree = ast.parse(f"({text}\n)", mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            raise _Untranslatable from None
        return self.truth(tree.body)

    # ---- values

    def field(self, name: str) -> _Value:
        index = self.schema.get_field_index(name)
        if index < 0:
            if name in self.schema.names:  # a name held twice: ambiguous
                raise _Untranslatable
            return _Value(_NONE)  # missing: None in every row
        kind = _kind(self.schema.field(index).type)
        if kind is None:
            raise _Untranslatable
        return _Value(kind, name)

    def value(self, node: ast.expr) -> _Value:
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = node.operand
            number = inner.value if isinstance(inner, ast.Constant) else None
            if isinstance(number, int | float) and not isinstance(number, bool):
                return self.constant(-number if isinstance(node.op, ast.USub) else number)
            raise _Untranslatable
        if isinstance(node, ast.Name):
            if node.id in ("event", "prev"):
                raise _Untranslatable
            return self.field(node.id)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "event":
                return self.field(node.attr)
            raise _Untranslatable
        if isinstance(node, ast.Subscript):
            base, key = node.value, node.slice
            if (
                isinstance(base, ast.Name)
                and base.id == "event"
                and isinstance(key, ast.Constant)
                and isinstance(key.value, str)
            ):
                return self.field(key.value)
            raise _Untranslatable
        raise _Untranslatable

    @staticmethod
    def constant(value: Any) -> _Value:
        if value is None or type(value) in (bool, int, str):
            return _Value("const", const=value)
        if type(value) is float and math.isfinite(value):
            return _Value("const", const=value)
        raise _Untranslatable

    # ---- truth

    def truth(self, node: ast.expr) -> Mask:
        """The truth of ``node`` in a boolean context."""
        if isinstance(node, ast.BoolOp):
            parts = [self.truth(v) for v in node.values]
            combine = pc.and_kleene if isinstance(node.op, ast.And) else pc.or_kleene

            def boolop(batch: pa.RecordBatch) -> pa.Array:
                result = parts[0](batch)
                for part in parts[1:]:
                    result = combine(result, part(batch))
                return result

            return boolop
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.truth(node.operand)
            return lambda b: pc.invert(inner(b))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        return self.truth_of_value(self.value(node))

    def truth_of_value(self, v: _Value) -> Mask:
        if v.kind == "const":
            return _constant_mask(bool(v.const))
        if v.kind == _NONE:
            return _constant_mask(False)
        if v.kind == _BOOL:
            return lambda b: _fill(v.column(b), False)
        if v.kind == _STR:
            return lambda b: _fill(pc.greater(pc.utf8_length(v.column(b)), 0), False)
        zero = 0 if v.kind == _INT else 0.0
        return lambda b: _fill(pc.not_equal(v.column(b), zero), False)  # NaN is true

    def call(self, node: ast.Call) -> Mask:
        if not isinstance(node.func, ast.Name) or node.keywords or len(node.args) != 1:
            raise _Untranslatable
        name = node.func.id
        if name not in ("exists", "missing"):
            raise _Untranslatable
        v = self.value(node.args[0])
        present: Mask
        if v.is_none:
            present = _constant_mask(False)
        elif v.kind == "const":
            present = _constant_mask(True)
        else:
            present = lambda b: pc.is_valid(v.column(b))  # noqa: E731
        if name == "exists":
            return present
        return lambda b: pc.invert(present(b))

    def compare(self, node: ast.Compare) -> Mask:
        operands = [node.left, *node.comparators]
        parts: list[Mask] = []
        for i, op in enumerate(node.ops):
            parts.append(self.pair(op, operands[i], operands[i + 1]))
        if len(parts) == 1:
            return parts[0]

        def chain(batch: pa.RecordBatch) -> pa.Array:
            result = parts[0](batch)
            for part in parts[1:]:
                result = pc.and_kleene(result, part(batch))
            return result

        return chain

    def pair(self, op: ast.cmpop, left_node: ast.expr, right_node: ast.expr) -> Mask:
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right_node, (ast.List, ast.Tuple, ast.Set)):
                raise _Untranslatable
            consts = [self.value(e) for e in right_node.elts]
            if any(c.kind != "const" for c in consts):
                raise _Untranslatable
            member = self.membership(self.value(left_node), [c.const for c in consts])
            if isinstance(op, ast.In):
                return member
            return lambda b: pc.invert(member(b))
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (isinstance(right_node, ast.Constant) and right_node.value is None):
                raise _Untranslatable
            is_none = self.equals_none(self.value(left_node))
            if isinstance(op, ast.Is):
                return is_none
            return lambda b: pc.invert(is_none(b))
        name = _CMP.get(type(op))
        if name is None:
            raise _Untranslatable
        left, right = self.value(left_node), self.value(right_node)
        if left.kind == "const" and right.kind != "const":
            left, right, name = right, left, _FLIP[name]
        if left.kind == "const" or not (right.kind == "const" or right.is_none):
            raise _Untranslatable  # two constants or two columns: left to the row-wise path
        if right.kind != "const":
            right = _Value("const", const=None)  # a missing field or a column of nulls
        return self.column_vs_constant(left, name, right)

    def equals_none(self, v: _Value) -> Mask:
        if v.is_none:
            return _constant_mask(True)
        if v.kind == "const":
            return _constant_mask(False)
        return lambda b: pc.is_null(v.column(b))

    def column_vs_constant(self, col: _Value, op: str, const: _Value) -> Mask:
        c = const.const
        if col.kind == _NONE or c is None:
            # row-wise: ordering with None is false; None == x only for x None
            if op in ("eq", "ne"):
                is_none = self.equals_none(col) if c is None else _constant_mask(False)
                if op == "eq":
                    return is_none
                return lambda b: pc.invert(is_none(b))
            return _constant_mask(False)
        kind = col.kind
        number = type(c) in (int, float, bool)
        if kind == _STR:
            if type(c) is str:
                return self.arrow_compare(col, op, c)
            if op in ("eq", "ne"):  # a string never equals a number
                return self.null_aware_constant(col, op == "ne")
            raise _Untranslatable  # ordering a string with a number: a type error row-wise
        if kind == _BOOL:
            if op not in ("eq", "ne"):
                raise _Untranslatable
            if number and c in (0, 1):
                flag = bool(c)
                equal: Mask = lambda b: _fill(  # noqa: E731
                    pc.equal(col.column(b), flag), False
                )
            else:
                equal = _constant_mask(False)
            if op == "eq":
                return equal
            return lambda b: pc.invert(equal(b))
        # numeric columns
        if type(c) is str:
            if op in ("eq", "ne"):
                return self.null_aware_constant(col, op == "ne")
            raise _Untranslatable
        if type(c) is bool:
            c = int(c)
        if kind == _INT:
            if type(c) is float:
                if abs(c) >= 2**62:
                    raise _Untranslatable
                if not c.is_integer():
                    if op in ("eq", "ne"):  # an int never equals a fractional float
                        return _constant_mask(op == "ne")
                    floor = math.floor(c)
                    # x < c <=> x <= floor(c); x > c <=> x > floor(c), for integers x
                    op = {"lt": "le", "le": "le", "gt": "gt", "ge": "gt"}[op]
                    return self.arrow_compare(col, op, floor)
                c = int(c)
            if not -_INT64 <= c < _INT64:
                raise _Untranslatable
            return self.arrow_compare(col, op, c)
        # floats
        if type(c) is int:
            if abs(c) > _EXACT_FLOAT_INT:
                raise _Untranslatable
            c = float(c)
        return self.arrow_compare(col, op, c)

    @staticmethod
    def null_aware_constant(col: _Value, value: bool) -> Mask:
        """``col == c`` (False) or ``col != c`` (True) for a constant of another type: the same
        in every row, None included (None == c is false too)."""
        del col
        return _constant_mask(value)

    @staticmethod
    def arrow_compare(col: _Value, op: str, c: Any) -> Mask:
        fn = _ARROW_CMP[op]
        on_none = op == "ne"  # None != c is true; None == c and ordering with None are false

        def compare(batch: pa.RecordBatch) -> pa.Array:
            return _fill(fn(col.column(batch), c), on_none)

        return compare

    def membership(self, v: _Value, consts: list[Any]) -> Mask:
        """``v in {consts}`` as the row-wise ``in`` of a frozenset of constants decides it."""
        has_none = any(c is None for c in consts)
        if v.is_none:
            return _constant_mask(has_none)
        if v.kind == "const":
            raise _Untranslatable
        values: list[Any] = []
        value_type: pa.DataType
        if v.kind == _STR:
            values = [c for c in consts if type(c) is str]
            value_type = pa.string() if pa.types.is_string(self.type_of(v)) else pa.large_string()
        elif v.kind == _INT:
            for c in consts:
                if type(c) in (int, bool):
                    if -_INT64 <= c < _INT64:
                        values.append(int(c))
                elif type(c) is float and c.is_integer() and abs(c) < 2**62:
                    values.append(int(c))
            value_type = pa.int64()
        elif v.kind == _FLOAT:
            for c in consts:
                if type(c) in (int, bool):
                    if abs(c) > _EXACT_FLOAT_INT:
                        raise _Untranslatable
                    values.append(float(c))
                elif type(c) is float:
                    values.append(c + 0.0)  # -0.0 -> 0.0
            value_type = pa.float64()
        else:  # booleans: True == 1, False == 0
            for c in consts:
                if type(c) in (int, float, bool) and c in (0, 1):
                    values.append(bool(c))
            value_type = pa.bool_()
        value_set = pa.array(values, value_type)

        def member(batch: pa.RecordBatch) -> pa.Array:
            column = v.column(batch)
            if v.kind == _FLOAT:  # the set finds -0.0 as 0.0, as == does; Arrow's would not
                column = pc.add(column, 0.0)
            found = pc.is_in(column, value_set=value_set)  # nulls: not in the set, no nulls
            if has_none:
                return pc.or_(found, pc.is_null(column))
            return pc.and_(found, pc.is_valid(column))

        return member

    def type_of(self, v: _Value) -> pa.DataType:
        assert v.name is not None
        return self.schema.field(v.name).type

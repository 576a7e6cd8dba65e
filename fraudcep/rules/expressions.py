"""A small, safe condition language, compiled once to a Python function.

``compile_expression("amount > 2000 and status == 'declined'")`` returns a plain function usable
as a fraudcep condition: ``f(event)``, or ``f(event, ctx)`` when the expression reads events
already matched in the partial match (stage names, ``prev``). The text is parsed with
``ast.parse``, every node is checked against a whitelist, and the checked tree is translated to
Python source that calls a few null-safe runtime helpers; that source is compiled once, into a
namespace holding only those helpers and empty builtins. Nothing is interpreted per event.

Each compiled function has two bodies. When the event is a plain ``dict`` it first runs a fast
body that is the expression written as ordinary Python (``e["amount"] > 2000 and ...``); if that
raises (a missing field, a ``None`` operand, a type error), the general body runs with the
documented semantics: missing fields are ``None``, ordering comparisons with ``None`` are false,
arithmetic with ``None`` gives ``None``, and a type error anywhere makes the condition false.
Both bodies give the same answer whenever the fast one does not raise. docs/expressions.md is the
language reference.

The text must be one whole expression, and outside strings and comments plain ASCII (so that no
look-alike letter names another field). Run-time work is bounded: strings made at run time are
at most MAX_TEXT_LENGTH characters, and the operations whose work grows with their input spend
units of a per-evaluation budget of MAX_COST; over either, the condition raises
ExpressionLimitError. Which operations are charged is decided when compiling, so an expression
such as ``amount > 2000 and status == "declined"`` carries no budget at all.
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize
import types
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from fraudcep.errors import FraudcepError
from fraudcep.pattern.conditions import declare_expression

if TYPE_CHECKING:
    from fraudcep.rules.lists import Lists

__all__ = [
    "HELPERS",
    "MAX_CONSTANT_INT",
    "MAX_COST",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_NODES",
    "MAX_SOURCE_LENGTH",
    "MAX_STRING_LENGTH",
    "MAX_TEXT_LENGTH",
    "Condition",
    "ExpressionCondition",
    "ExpressionError",
    "ExpressionLimitError",
    "check_field_path",
    "check_identifier",
    "compile_expression",
    "email_domain",
]

MAX_SOURCE_LENGTH = 4000
MAX_NODES = 500
MAX_DEPTH = 40
MAX_CONSTANT_INT = 10**18
MAX_STRING_LENGTH = 1000
MAX_ELEMENTS = 1000
MAX_TEXT_LENGTH = 65_536
"""The longest string that '+', lower() or upper() may make at run time."""
MAX_COST = 600_000
"""The cost units one evaluation may spend (about 0.6 ms on the reference machine)."""
_MAX_INT_BITS = 1024  # longer integers in * / // % hour_of weekday_of: a type error (false)


class ExpressionError(FraudcepError, ValueError):
    """An expression that is not valid; names the rule, the field and the line and column."""

    def __init__(
        self,
        reason: str,
        *,
        rule_id: str,
        field: str,
        line: int,
        column: int,
        missing_list: str | None = None,
    ) -> None:
        self.reason = reason
        self.missing_list = missing_list
        """The list the expression names and the registry lacks, when that is the error."""
        self.rule_id = rule_id
        self.field = field
        self.line = line
        self.column = column
        super().__init__(
            f"rule {rule_id!r}, field {field!r}, line {line}, column {column}: {reason}"
        )


class ExpressionLimitError(FraudcepError, RuntimeError):
    """An evaluation that went over a run-time limit: a string longer than
    :data:`MAX_TEXT_LENGTH`, or more work than :data:`MAX_COST` allows.

    The condition function raises it instead of answering; the engine reports the event as a
    condition failure of the rule (``Engine.drain_errors`` / ``on_error``) and the key's
    partial matches stay as they were before the event.
    """


class ExpressionCondition(Protocol):
    """What :func:`compile_expression` returns: a condition function that knows its source."""

    fraudcep_source: str

    def __call__(self, event: Any, /, *ctx: Any) -> bool: ...


Condition = ExpressionCondition

# --------------------------------------------------------------------------- names

# Letters of other scripts that look like ASCII ones, for suggestions only (NFKD, applied
# first, already maps full-width, mathematical and accented letters to theirs).
_LOOK_ALIKES = str.maketrans(
    "\u0430\u0441\u0435\u0456\u0458\u043e\u0440\u0455"  # Cyrillic a c e i j o p s
    "\u0443\u0445\u0501\u04bb\u04cf\u051b\u051d"  # Cyrillic y x d h l q w
    "\u0410\u0412\u0421\u0415\u041d\u0406\u0408\u041a"  # Cyrillic A B C E H I J K
    "\u041c\u041e\u0420\u0405\u0422\u0425\u0423"  # Cyrillic M O P S T X Y
    "\u03b1\u03b9\u03ba\u03bd\u03bf\u03c1\u03c4\u03c5"  # Greek a i k n o p t u
    "\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c"  # Greek A B E Z H I K M
    "\u039d\u039f\u03a1\u03a4\u03a5\u03a7"  # Greek N O P T Y X
    "\u0131\u0251",  # Latin i a
    "aceijopsyxdhlqwABCEHIJKMOPSTXYaiknoptuABEZHIKMNOPTYXia",
)

_FIELD_PART = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Characters that reorder how text is displayed: refused anywhere, strings and comments too.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _describe(char: str) -> str:
    return f"{char!r} is U+{ord(char):04X} {unicodedata.name(char, 'UNNAMED')}"


def _ascii_for(text: str) -> str | None:
    """The ASCII text ``text`` looks like, when there is an obvious one."""
    plain = unicodedata.normalize("NFKD", text).translate(_LOOK_ALIKES)
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return plain if plain.isascii() and plain != text else None


def _first_non_ascii(text: str) -> int:
    return next(i for i, c in enumerate(text) if not c.isascii())


def _not_ascii(what: str, text: str) -> str:
    char = text[_first_non_ascii(text)]
    message = f"{what} {text!r} is not ASCII: {_describe(char)}"
    suggestion = _ascii_for(text)
    if suggestion is not None:
        return f"{message}; did you mean {suggestion!r}?"
    return f"{message}; use ASCII letters, digits and '_'"


def _name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a field or stage name in an expression, if anything."""
    if not name:
        return "empty field name"
    if not name.isascii():
        return _not_ascii("name", name)
    if name.startswith("_"):
        return f"names starting with '_' are not allowed: {name!r}"
    if not name.isprintable():
        return f"name {name!r} holds a control character"
    return None


def check_identifier(name: object) -> str | None:
    """What is wrong with ``name`` as one field or stage name, or None if it is valid.

    The rules of names in expressions: ASCII letters, digits and ``_``, starting with a letter
    (so neither ``_private`` nor ``__class__``), and nothing but ASCII, so that a look-alike
    such as ``amount`` spelt with a Cyrillic ``a`` cannot stand for ``amount``.
    """
    if not isinstance(name, str):
        return f"a name must be a string, not {type(name).__name__}"
    problem = _name_problem(name)
    if problem is not None:
        return problem
    if not _FIELD_PART.fullmatch(name):
        return f"{name!r} is not a name: use ASCII letters, digits and '_', starting with a letter"
    return None


def check_field_path(path: object) -> str | None:
    """What is wrong with ``path`` as a dotted field path (``card.country``), or None.

    Each part must pass :func:`check_identifier`; this is how a path such as a rule's ``key``
    is held to the same rules as the field names of an expression.
    """
    if not isinstance(path, str):
        return f"a field path must be a string, not {type(path).__name__}"
    if not path:
        return "empty field path"
    for part in path.split("."):
        if not part:
            return f"field path {path!r} has an empty part"
        problem = check_identifier(part)
        if problem is not None:
            return problem if part == path else f"in field path {path!r}: {problem}"
    return None


# --------------------------------------------------------------------------- runtime helpers

_NUMBER = (int, float)
_OPAQUE = (str, bytes, bytearray, int, float, complex, list, tuple, set, frozenset)
_NEVER_READ = (
    type,
    types.ModuleType,
    types.FrameType,
    types.CodeType,
    types.TracebackType,
    types.GeneratorType,
    types.CoroutineType,
    types.AsyncGeneratorType,
)


def _get(obj: Any, key: str) -> Any:
    """Field ``key`` of ``obj``: a mapping's key, or another object's public data attribute."""
    if obj.__class__ is dict or isinstance(obj, Mapping):
        return obj.get(key)
    if obj is None or isinstance(obj, _OPAQUE):
        return None
    value = getattr(obj, key, None)
    if callable(value) or isinstance(value, _NEVER_READ):
        return None
    return value


def _path(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if obj is None:
            return None
        obj = _get(obj, key)
    return obj


def _idx(seq: Any, i: int) -> Any:
    if seq.__class__ is list or seq.__class__ is tuple or isinstance(seq, Sequence):
        try:
            return seq[i]
        except IndexError:
            return None
    return None


_FAST_NUMBER: frozenset[Any] = frozenset({int, float})
_SMALL = 2**62


def _num(x: Any) -> bool:
    return x.__class__ in _FAST_NUMBER or isinstance(x, _NUMBER)


def _bad(op: str, a: Any, b: Any = None) -> TypeError:
    return TypeError(f"unsupported operand types for {op}: {type(a).__name__}, {type(b).__name__}")


# ---- cost: what an evaluation may spend (see MAX_COST), charged where the work is done

_Budget = list[int]  # [units left]; one per evaluation, made by the compiled function

# Units charged, chosen so that one unit costs at most about a nanosecond on the reference
# machine (benchmarks/bench_expressions.py --worst measures the most expensive evaluations).
_W_TEXT = 1  # per ASCII character joined by '+' (2 for others: hashing wide ones costs more)
_W_CASE = 26  # per character case-mapped when not ASCII (up to 25 ns for some letters)
_W_SEARCH = 4  # per character of a string searched by 'in' / contains()
_W_ORDER = 1  # per character of two strings ordered by < <= > >= (the shorter one)
_W_MEMBER = 20  # per element of a list or tuple searched for a plain value
_W_ELEMENT = 40  # per element of a collection compared with, or searched for, a collection
_W_NESTED = 150_000  # once per such comparison or search that meets nested collections
_W_EVENT = 300  # per event of a stage aggregated by sum/min/max/avg

_SCALAR: frozenset[Any] = frozenset({int, float, bool, str, type(None)})
_NESTING: frozenset[Any] = frozenset({list, tuple, dict, set, frozenset})
_COLLECTION = (list, tuple, dict, set, frozenset, Mapping, Sequence)


def _over(what: str) -> ExpressionLimitError:
    return ExpressionLimitError(f"{what}: the evaluation costs more than {MAX_COST} units")


def _too_long(what: str, n: int) -> ExpressionLimitError:
    return ExpressionLimitError(
        f"{what} would make a string of {n} characters, longer than {MAX_TEXT_LENGTH}"
    )


def _spend(budget: _Budget, units: int, what: str) -> None:
    budget[0] -= units
    if budget[0] < 0:
        raise _over(what)


def _is_collection(x: Any) -> bool:
    return x.__class__ in _NESTING or (
        not isinstance(x, (str, bytes, bytearray)) and isinstance(x, _COLLECTION)
    )


def _spend_scan(budget: _Budget, x: Any, what: str) -> None:
    """Charge comparing collection ``x`` element by element with another collection.

    When no element of ``x`` is a collection, each element comparison takes one step (or one
    ``memcmp`` of two strings); otherwise the comparison may go as deep as the data, whose
    size the record size bounds, so it costs a flat _W_NESTED more. The scan for nested
    collections runs in C and is paid for before it starts.
    """
    _spend(budget, len(x) * _W_ELEMENT, what)
    values: Any = x
    if x.__class__ is not list and x.__class__ is not tuple and isinstance(x, Mapping):
        values = x.values()
    if not _NESTING.isdisjoint(map(type, values)):
        _spend(budget, _W_NESTED, what)


def _spend_pair(budget: _Budget, a: Any, b: Any, what: str, equality: bool) -> None:
    """Charge comparing ``a`` with ``b``, when neither is a plain value."""
    if not (_is_collection(a) and _is_collection(b)):
        return  # a custom object, or a collection against something else: one step
    if equality and a.__class__ is b.__class__ and len(a) != len(b):
        return  # == on lists, tuples and dicts of different lengths stops at once
    _spend_scan(budget, a if len(a) <= len(b) else b, what)


def _spend_search(budget: _Budget, a: Any, c: Any, what: str) -> None:
    """Charge ``a in c`` for a list or tuple ``c``."""
    if a.__class__ in _SCALAR or not _is_collection(a):
        _spend(budget, len(c) * _W_MEMBER, what)  # one step per element
    else:
        _spend_scan(budget, c, what)


# ---- arithmetic


def _add(a: Any, b: Any) -> Any:
    """``+`` when one side is known to be a number: never joins strings."""
    if a.__class__ in _FAST_NUMBER and b.__class__ in _FAST_NUMBER:
        return a + b
    if a is None or b is None:
        return None
    if _num(a) and _num(b):
        return a + b
    raise _bad("+", a, b)


def _cat(a: Any, b: Any, budget: _Budget) -> Any:
    """``+`` of two numbers, or of two strings: the joined string is charged and bounded."""
    if a.__class__ in _FAST_NUMBER and b.__class__ in _FAST_NUMBER:
        return a + b
    if a is None or b is None:
        return None
    if isinstance(a, str) and isinstance(b, str):
        n = len(a) + len(b)
        if n > MAX_TEXT_LENGTH:
            raise _too_long("'+'", n)
        _spend(budget, n * (_W_TEXT if a.isascii() and b.isascii() else 2 * _W_TEXT), "'+'")
        return a + b
    if _num(a) and _num(b):
        return a + b
    raise _bad("+", a, b)


def _sub(a: Any, b: Any) -> Any:
    if a.__class__ in _FAST_NUMBER and b.__class__ in _FAST_NUMBER:
        return a - b
    if a is None or b is None:
        return None
    if _num(a) and _num(b):
        return a - b
    raise _bad("-", a, b)


def _big(x: Any) -> bool:
    """An integer of more than _MAX_INT_BITS bits: refused by * / // % and the time helpers."""
    return isinstance(x, int) and not -_SMALL < x < _SMALL and int(x).bit_length() > _MAX_INT_BITS


def _int_guard(op: str, a: Any, b: Any = 0) -> None:
    if _big(a) or _big(b):
        raise OverflowError(f"integer operand of {op} longer than {_MAX_INT_BITS} bits")


def _mul(a: Any, b: Any) -> Any:
    if a.__class__ is float or b.__class__ is float:
        if _num(a) and _num(b):
            _int_guard("*", a, b)
            return a * b
    elif (
        a.__class__ is int and b.__class__ is int and -_SMALL < a < _SMALL and -_SMALL < b < _SMALL
    ):
        return a * b
    if a is None or b is None:
        return None
    if _num(a) and _num(b):
        if int(a).bit_length() + int(b).bit_length() > _MAX_INT_BITS:
            raise OverflowError(f"integer product longer than {_MAX_INT_BITS} bits")
        return a * b
    raise _bad("*", a, b)


def _div(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if _num(a) and _num(b):
        _int_guard("/", a, b)
        return None if b == 0 else a / b
    raise _bad("/", a, b)


def _floordiv(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if _num(a) and _num(b):
        _int_guard("//", a, b)
        return None if b == 0 else a // b
    raise _bad("//", a, b)


def _mod(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if _num(a) and _num(b):
        _int_guard("%", a, b)
        return None if b == 0 else a % b
    raise _bad("%", a, b)


def _neg(a: Any) -> Any:
    if a is None:
        return None
    if _num(a):
        return -a
    raise _bad("unary -", a)


def _pos(a: Any) -> Any:
    if a is None:
        return None
    if _num(a):
        return +a
    raise _bad("unary +", a)


# ---- comparisons: the plain ones, for a side that is a constant or a number, are cheap


def _lt(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a < b


def _le(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a <= b


def _gt(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a > b


def _ge(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a >= b


def _in(a: Any, c: Any) -> bool:
    if c is None:
        return False
    return a in c


def _in_set(a: Any, s: frozenset[Any]) -> bool:
    try:
        return a in s
    except TypeError:  # unhashable: equal to none of the (hashable) constants
        return False


def _eq_c(a: Any, b: Any, budget: _Budget) -> bool:
    if a.__class__ not in _SCALAR and b.__class__ not in _SCALAR:
        _spend_pair(budget, a, b, "==", True)
    return bool(a == b)


def _ne_c(a: Any, b: Any, budget: _Budget) -> bool:
    if a.__class__ not in _SCALAR and b.__class__ not in _SCALAR:
        _spend_pair(budget, a, b, "!=", True)
    return bool(a != b)


def _order(a: Any, b: Any, budget: _Budget, what: str) -> bool:
    """Charge ordering ``a`` and ``b``; False when either is None."""
    if a is None or b is None:
        return False
    if isinstance(a, str) and isinstance(b, str):
        _spend(budget, min(len(a), len(b)) * _W_ORDER, what)
    elif a.__class__ not in _SCALAR and b.__class__ not in _SCALAR:
        _spend_pair(budget, a, b, what, False)
    return True


def _lt_c(a: Any, b: Any, budget: _Budget) -> bool:
    return _order(a, b, budget, "<") and bool(a < b)


def _le_c(a: Any, b: Any, budget: _Budget) -> bool:
    return _order(a, b, budget, "<=") and bool(a <= b)


def _gt_c(a: Any, b: Any, budget: _Budget) -> bool:
    return _order(a, b, budget, ">") and bool(a > b)


def _ge_c(a: Any, b: Any, budget: _Budget) -> bool:
    return _order(a, b, budget, ">=") and bool(a >= b)


def _in_c(a: Any, c: Any, budget: _Budget) -> bool:
    """``a in c`` for a ``c`` that is not a constant: charged by what it searches."""
    if c is None:
        return False
    if isinstance(c, str):
        if isinstance(a, str):
            _spend(budget, len(c) * _W_SEARCH, "'in'")
    elif (
        c.__class__ is list
        or c.__class__ is tuple
        or (isinstance(c, Sequence) and not isinstance(c, (bytes, bytearray)))
    ):
        _spend_search(budget, a, c, "'in'")
    return a in c  # mappings and sets are hashed; anything else raises TypeError: false


# ---- helpers


def _values(stage: Sequence[Any], path: tuple[str, ...]) -> list[Any]:
    return [v for v in (_path(ev, path) for ev in stage) if v is not None]


def _count(stage: Sequence[Any]) -> int:
    return len(stage)


def _aggregated(
    stage: Sequence[Any], path: tuple[str, ...], budget: _Budget, what: str
) -> list[Any]:
    _spend(budget, len(stage) * _W_EVENT, what)
    return _values(stage, path)


def _total(values: list[Any]) -> Any:
    total: Any = 0
    for v in values:
        total = _add(total, v)
    return total


def _sum(stage: Sequence[Any], path: tuple[str, ...], budget: _Budget) -> Any:
    return _total(_aggregated(stage, path, budget, "sum()"))


def _extreme(
    pick: Callable[[list[Any]], Any],
    stage: Sequence[Any],
    path: tuple[str, ...],
    budget: _Budget,
    what: str,
) -> Any:
    values = _aggregated(stage, path, budget, what)
    for v in values:  # min() and max() compare the values with each other
        if v.__class__ is str:
            _spend(budget, len(v) * _W_ORDER, what)
        elif v.__class__ not in _SCALAR and _is_collection(v):
            _spend_scan(budget, v, what)
    return pick(values) if values else None


def _min(stage: Sequence[Any], path: tuple[str, ...], budget: _Budget) -> Any:
    return _extreme(min, stage, path, budget, "min()")


def _max(stage: Sequence[Any], path: tuple[str, ...], budget: _Budget) -> Any:
    return _extreme(max, stage, path, budget, "max()")


def _avg(stage: Sequence[Any], path: tuple[str, ...], budget: _Budget) -> Any:
    values = _aggregated(stage, path, budget, "avg()")
    return None if not values else _div(_total(values), len(values))


def _len(x: Any) -> Any:
    if isinstance(x, (str, list, tuple, set, frozenset, Mapping, Sequence)):
        return len(x)
    return None


def _case(s: Any, budget: _Budget, upper: bool) -> Any:
    if not isinstance(s, str):
        return None
    what = "upper()" if upper else "lower()"
    if len(s) > MAX_TEXT_LENGTH:
        raise _too_long(what, len(s))
    _spend(budget, len(s) * (_W_TEXT if s.isascii() else _W_CASE), what)
    out = s.upper() if upper else s.lower()
    if len(out) > MAX_TEXT_LENGTH:  # some letters map to two or three
        raise _too_long(what, len(out))
    return out


def _lower(s: Any, budget: _Budget) -> Any:
    return _case(s, budget, False)


def _upper(s: Any, budget: _Budget) -> Any:
    return _case(s, budget, True)


def _startswith(s: Any, p: Any) -> bool:
    return isinstance(s, str) and isinstance(p, str) and s.startswith(p)


def _endswith(s: Any, p: Any) -> bool:
    return isinstance(s, str) and isinstance(p, str) and s.endswith(p)


def _contains(s: Any, p: Any, budget: _Budget) -> bool:
    if isinstance(s, str):
        if not isinstance(p, str):
            return False
        _spend(budget, len(s) * _W_SEARCH, "contains()")
        return p in s
    if isinstance(s, (list, tuple)):
        _spend_search(budget, p, s, "contains()")
    elif not isinstance(s, (set, frozenset, Mapping)):
        return False
    try:
        return p in s
    except TypeError:
        return False


def _abs(x: Any) -> Any:
    if x is None:
        return None
    if _num(x):
        return abs(x)
    raise _bad("abs()", x)


def _round(x: Any) -> Any:
    if x is None:
        return None
    if _num(x):
        return round(x)
    raise _bad("round()", x)


def _scale(factor: int) -> Callable[[Any], Any]:
    def scale(n: Any) -> Any:
        return _mul(n, factor)

    return scale


def _hour_of(ts: Any) -> Any:
    if ts is None:
        return None
    if _num(ts):
        _int_guard("hour_of()", ts)
        return int(ts // 3_600_000) % 24
    raise _bad("hour_of()", ts)


def _weekday_of(ts: Any) -> Any:
    if ts is None:
        return None
    if _num(ts):
        _int_guard("weekday_of()", ts)
        return (int(ts // 86_400_000) + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    raise _bad("weekday_of()", ts)


def email_domain(address: Any) -> str | None:
    """The domain of an e-mail address, lower-cased: what follows its last ``@``; None when
    ``address`` is not a string with a non-empty domain after an ``@`` (the language's
    ``email_domain()``)."""
    if not isinstance(address, str):
        return None
    at = address.rfind("@")
    if at < 0 or at == len(address) - 1:
        return None
    return address[at + 1 :].lower()


def _exists(x: Any) -> bool:
    return x is not None


def _missing(x: Any) -> bool:
    return x is None


# name -> (runtime function, number of arguments, kind of argument: "value"/"stage"/"field")
HELPERS: dict[str, tuple[Callable[..., Any], int, str]] = {
    "count": (_count, 1, "stage"),
    "sum": (_sum, 1, "field"),
    "min": (_min, 1, "field"),
    "max": (_max, 1, "field"),
    "avg": (_avg, 1, "field"),
    "len": (_len, 1, "value"),
    "lower": (_lower, 1, "value"),
    "upper": (_upper, 1, "value"),
    "startswith": (_startswith, 2, "value"),
    "endswith": (_endswith, 2, "value"),
    "contains": (_contains, 2, "value"),
    "abs": (_abs, 1, "value"),
    "round": (_round, 1, "value"),
    "seconds": (_scale(1_000), 1, "value"),
    "minutes": (_scale(60_000), 1, "value"),
    "hours": (_scale(3_600_000), 1, "value"),
    "hour_of": (_hour_of, 1, "value"),
    "weekday_of": (_weekday_of, 1, "value"),
    "exists": (_exists, 1, "value"),
    "missing": (_missing, 1, "value"),
    "email_domain": (email_domain, 1, "value"),
}
# Helpers whose work grows with their input: they take the evaluation's budget last.
_CHARGED_HELPERS = frozenset({"sum", "min", "max", "avg", "lower", "upper", "contains"})
# Helpers whose result is a number (or None, or a bool): comparing it costs nothing.
_NUMBER_HELPERS = frozenset(HELPERS) - {"min", "max", "lower", "upper", "email_domain"}

_RUNTIME: dict[str, Any] = {
    "_g": _get,
    "_idx": _idx,
    "_add": _add,
    "_cat": _cat,
    "_sub": _sub,
    "_mul": _mul,
    "_div": _div,
    "_floordiv": _floordiv,
    "_mod": _mod,
    "_neg": _neg,
    "_pos": _pos,
    "_lt": _lt,
    "_le": _le,
    "_gt": _gt,
    "_ge": _ge,
    "_in": _in,
    "_in_set": _in_set,
    "_eq_c": _eq_c,
    "_ne_c": _ne_c,
    "_lt_c": _lt_c,
    "_le_c": _le_c,
    "_gt_c": _gt_c,
    "_ge_c": _ge_c,
    "_in_c": _in_c,
    "_dict": dict,
    "_Exception": Exception,
    "_Limit": ExpressionLimitError,
    "_SCALAR": _SCALAR,
    "_NUM": _FAST_NUMBER,
    "_NEVER": object(),
    "_COST": MAX_COST,
    "_FALSE_ON": (TypeError, ValueError, ArithmeticError),
    **{f"_h_{name}": fn for name, (fn, _, _) in HELPERS.items()},
}

# --------------------------------------------------------------------------- checking + codegen

_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "_add",
    ast.Sub: "_sub",
    ast.Mult: "_mul",
    ast.Div: "_div",
    ast.FloorDiv: "_floordiv",
    ast.Mod: "_mod",
}
_OP_SYMBOL = {"_add": "+", "_sub": "-", "_mul": "*", "_div": "/", "_floordiv": "//", "_mod": "%"}
_OP_TEXT: dict[type[ast.AST], str] = {
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
    ast.Invert: "~",
}
_RAW_CMP: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
}
# The budget of the evaluation, made when the first charged operation needs it.
_BUDGET = "(_b or (_b := [_COST]))"
_CHARGED_CMP: dict[type[ast.cmpop], str] = {
    ast.Eq: "_eq_c",
    ast.NotEq: "_ne_c",
    ast.Lt: "_lt_c",
    ast.LtE: "_le_c",
    ast.Gt: "_gt_c",
    ast.GtE: "_ge_c",
}
_SAFE_CMP: dict[type[ast.cmpop], str] = {
    ast.Lt: "_lt",
    ast.LtE: "_le",
    ast.Gt: "_gt",
    ast.GtE: "_ge",
}
_FORBIDDEN: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "generator expressions",
    ast.JoinedStr: "f-strings",
    ast.FormattedValue: "f-strings",
    ast.NamedExpr: "assignment expressions (:=)",
    ast.Starred: "star arguments",
    ast.Dict: "dict literals",
    ast.Slice: "slices",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}

VALUE, STAGE, FIELD = "value", "stage", "field"
LISTS, LIST = "lists", "list"  # the name 'lists', and one named list: lists.NAME


# What a value is known to be before run time: a number, bool or None ("number"), a string or
# None ("string"), or anything.
NUMBER, STRING, ANY = "number", "string", "any"


class _Out:
    """A translated node: Python source, what it denotes, what its value is known to be, and
    that value when it is a constant."""

    __slots__ = ("code", "const", "is_const", "kind", "path", "type")

    def __init__(
        self,
        code: str,
        kind: str = VALUE,
        *,
        path: tuple[str, ...] = (),
        const: Any = None,
        is_const: bool = False,
        type: str = ANY,
    ) -> None:
        self.code = code
        self.kind = kind
        self.path = path
        self.const = const
        self.is_const = is_const
        self.type = type

    @property
    def cheap(self) -> bool:
        """Comparing anything with this value takes a bounded time: it is a constant (at most
        MAX_STRING_LENGTH characters) or a number."""
        return self.is_const or self.type == NUMBER


def _join(types: Sequence[str]) -> str:
    return types[0] if all(t == types[0] for t in types) else ANY


class _Compiler:
    def __init__(
        self,
        source: str,
        stages: Sequence[str],
        rule_id: str,
        field: str,
        line: int,
        column: int,
        lists: Lists | None = None,
    ) -> None:
        self.source = source
        self.lists = lists
        self.list_names: set[str] = set()
        self.lines = re.split(r"\r\n|\r|\n", source)
        self.stages = frozenset(stages)
        self.rule_id = rule_id
        self.field = field
        self.line = line
        self.column = column
        self.namespace: dict[str, Any] = dict(_RUNTIME)
        self.uses_ctx = False
        self.temps = 0
        self.consts = 0
        self.fast = False
        self.charged = False  # some operation spends the evaluation's budget ("_b")

    # ---- errors

    def error(
        self, reason: str, lineno: int = 1, col: int = 0, *, missing_list: str | None = None
    ) -> ExpressionError:
        """An error at 1-based ``lineno`` and 0-based character ``col`` of the source."""
        if lineno <= 1:
            line, column = self.line, self.column + col
        else:
            line, column = self.line + lineno - 1, col + 1
        return ExpressionError(
            reason,
            rule_id=self.rule_id,
            field=self.field,
            line=line,
            column=column,
            missing_list=missing_list,
        )

    def at(self, node: ast.AST, reason: str, *, missing_list: str | None = None) -> ExpressionError:
        lineno = getattr(node, "lineno", 1)
        offset = getattr(node, "col_offset", 0)
        if lineno == 1:  # the source is parsed as "(" + source
            offset = max(offset - 1, 0)
        if 1 <= lineno <= len(self.lines):  # ast offsets count UTF-8 bytes
            text = self.lines[lineno - 1].encode("utf-8")[:offset]
            offset = len(text.decode("utf-8", errors="replace"))
        return self.error(reason, lineno, offset, missing_list=missing_list)

    # ---- entry

    def compile(self) -> ExpressionCondition:
        src = self.source
        if len(src) > MAX_SOURCE_LENGTH:
            raise self.error(f"expression longer than {MAX_SOURCE_LENGTH} characters")
        if not src.strip():
            raise self.error("empty expression")
        self.refuse_bidi()
        # The text is parsed inside parentheses so that it may span lines and start with
        # blanks; scan() then makes sure that it is one whole expression on its own: it may
        # not close the parentheses around it, nor join the closing one with a trailing '\\'.
        text = re.sub(r"\r\n?", "\n", src)
        wrapped = f"({text}\n)"
        try:
            tree = ast.parse(wrapped, mode="eval")
        except SyntaxError as exc:
            if exc.msg.startswith("unmatched"):
                self.scan(wrapped, brackets_only=True)
            lineno, offset = exc.lineno or 1, max((exc.offset or 1) - 1, 0)
            if lineno == 1:
                offset = max(offset - 1, 0)
            if lineno > len(self.lines):
                lineno, offset = len(self.lines), len(self.lines[-1])
            raise self.error(f"syntax error: {exc.msg}", lineno, offset) from None
        except (ValueError, MemoryError, RecursionError) as exc:
            raise self.error(f"cannot parse expression: {exc}") from None
        self.scan(wrapped)
        body = tree.body
        self.count_nodes(body)
        slow = self.emit(body, 0)
        if slow.kind != VALUE:
            raise self.at(body, self.kind_message(slow, "as a condition"))
        self.fast = True
        fast = self.emit(body, 0)
        params = "e, ctx" if self.uses_ctx else "e"
        # An expression whose work grows with its input gets a budget, shared by both bodies;
        # one without (decided here, from its operations and what their operands are known to
        # be) runs as it is.
        budget = "    _b = None\n" if self.charged else ""
        over = "        except _Limit:\n            raise\n" if self.charged else ""
        code = (
            f"def _condition({params}):\n"
            f"{budget}"
            f"    if e.__class__ is _dict:\n"
            f"        try:\n"
            f"            return True if ({fast.code}) else False\n"
            f"{over}"
            f"        except _Exception:\n"
            f"            pass\n"
            f"    try:\n"
            f"        return True if ({slow.code}) else False\n"
            f"    except _FALSE_ON:\n"
            f"        return False\n"
        )
        if self.list_names:
            assert self.lists is not None
            self.namespace["_lin"] = self.lists.contains
            self.namespace["_lpre"] = self.lists.prefix_in
        self.namespace["__builtins__"] = {}
        exec(compile(code, f"<expression {self.rule_id}:{self.field}>", "exec"), self.namespace)
        fn = self.namespace.pop("_condition")
        fn.fraudcep_source = src
        fn.__doc__ = src
        if self.list_names:
            # what the expression read depends on the lists, not on its text alone: no
            # translation of the text may stand for it; alerts record the lists' versions
            assert self.lists is not None
            names = tuple(sorted(self.list_names))
            fn.fraudcep_lists = names
            fn.fraudcep_list_versions = partial(_list_versions, self.lists, names)
        else:
            declare_expression(fn, src)
        result: ExpressionCondition = fn
        return result

    def refuse_bidi(self) -> None:
        for lineno, text in enumerate(self.lines, 1):
            for col, char in enumerate(text):
                if char in _BIDI:
                    raise self.error(
                        f"{_describe(char)}, which changes how the text is displayed", lineno, col
                    )

    def scan(self, wrapped: str, brackets_only: bool = False) -> None:
        """Refuse, with its position, a bracket of the text that closes the wrapping one, a
        line continuation at its end, and any non-ASCII character outside strings and
        comments (Python would read a look-alike as another name, or normalise it)."""
        closing = (wrapped.count("\n") + 1, 0)  # where the wrapping ")" starts
        depth = 0
        before_closing = tokenize.NL
        previous = tokenize.NL
        try:
            for tok in tokenize.generate_tokens(io.StringIO(wrapped).readline):
                lineno, col = tok.start
                if lineno == 1:
                    col -= 1  # the wrapping "("
                if tok.type == tokenize.OP and tok.string in "([{":
                    depth += 1
                elif tok.type == tokenize.OP and tok.string in ")]}":
                    depth -= 1
                    if tok.start == closing:
                        before_closing = previous
                    elif depth <= 0:
                        raise self.error(
                            f"unmatched {tok.string!r}: an expression is one whole expression",
                            lineno,
                            col,
                        )
                elif brackets_only or tok.type in (tokenize.STRING, tokenize.COMMENT):
                    pass
                elif not tok.string.isascii():
                    raise self.error(
                        self.not_ascii(tok), lineno, col + _first_non_ascii(tok.string)
                    )
                previous = tok.type
        except (tokenize.TokenError, SyntaxError):
            return  # the parser reports it
        if not brackets_only and before_closing != tokenize.NL:
            raise self.error(
                "a line continuation ('\\') cannot end the expression",
                len(self.lines),
                max(len(self.lines[-1]) - 1, 0),
            )

    @staticmethod
    def not_ascii(tok: tokenize.TokenInfo) -> str:
        if tok.type == tokenize.NAME:
            return _not_ascii("identifier", tok.string)
        char = tok.string[_first_non_ascii(tok.string)]
        return f"{_describe(char)}: outside strings and comments an expression is ASCII"

    def count_nodes(self, body: ast.AST) -> None:
        count = 0
        for node in ast.walk(body):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                if len(node.elts) > MAX_ELEMENTS:
                    raise self.at(node, f"literal with more than {MAX_ELEMENTS} elements")
                count -= sum(isinstance(x, ast.Constant) for x in node.elts)
            if not isinstance(node, (ast.expr_context, ast.operator, ast.cmpop, ast.unaryop)):
                count += 1
            if count > MAX_NODES:
                raise self.at(body, f"expression has more than {MAX_NODES} elements")

    # ---- translation

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def const_name(self, value: Any) -> str:
        self.consts += 1
        name = f"_c{self.consts}"
        self.namespace[name] = value
        return name

    def kind_message(self, out: _Out, where: str) -> str:
        if out.kind == LISTS:
            return f"'lists' cannot be used {where}; name a list: x in lists.NAME"
        if out.kind == LIST:
            return (
                f"a list cannot be used {where}; test membership: x in lists.{out.path[0]}, "
                f"x not in lists.{out.path[0]} or prefix_in(x, lists.{out.path[0]})"
            )
        if out.kind == STAGE:
            return (
                f"a stage (a list of events) cannot be used {where}; "
                "use stage[0], stage[-1], count(stage) or an aggregate"
            )
        return f"stage.field (a list of values) cannot be used {where}; use sum/min/max/avg"

    def value(self, node: ast.expr, depth: int, where: str) -> _Out:
        out = self.emit(node, depth)
        if out.kind != VALUE:
            raise self.at(node, self.kind_message(out, where))
        return out

    def emit(self, node: ast.expr, depth: int) -> _Out:
        if depth > MAX_DEPTH:
            raise self.at(node, f"expression nested deeper than {MAX_DEPTH} levels")
        d = depth + 1
        if isinstance(node, ast.Constant):
            return self.constant(node, node.value)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Attribute):
            return self.field_of(node, self.emit(node.value, d), node.attr)
        if isinstance(node, ast.Subscript):
            return self.subscript(node, d)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, d)
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                text = _OP_TEXT.get(type(node.op), type(node.op).__name__)
                raise self.at(node, f"operator {text!r} is not allowed")
            left = self.value(node.left, d, "in arithmetic")
            right = self.value(node.right, d, "in arithmetic")
            if isinstance(node.op, ast.Add):
                return self.add(node, left, right)
            for side, out in ((node.left, left), (node.right, right)):
                if out.type == STRING:
                    raise self.at(side, f"a string cannot be an operand of {_OP_SYMBOL[op]!r}")
            return _Out(f"{op}({left.code}, {right.code})", type=NUMBER)
        if isinstance(node, ast.BoolOp):
            word = " and " if isinstance(node.op, ast.And) else " or "
            outs = [self.value(v, d, "with and/or") for v in node.values]
            code = "(" + word.join(o.code for o in outs) + ")"
            return _Out(code, type=_join([o.type for o in outs]))
        if isinstance(node, ast.Compare):
            return self.compare(node, d)
        if isinstance(node, ast.IfExp):
            test = self.value(node.test, d, "as a test")
            yes = self.value(node.body, d, "in if/else")
            no = self.value(node.orelse, d, "in if/else")
            return _Out(
                f"({yes.code} if {test.code} else {no.code})", type=_join([yes.type, no.type])
            )
        if isinstance(node, ast.Call):
            return self.call(node, d)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            raise self.at(node, "list literals are only allowed on the right of 'in' / 'not in'")
        what = _FORBIDDEN.get(type(node), type(node).__name__)
        raise self.at(node, f"{what} not allowed in an expression")

    def constant(self, node: ast.AST, value: Any) -> _Out:
        if value is None or isinstance(value, bool):
            return _Out(repr(value), const=value, is_const=True, type=NUMBER)
        if isinstance(value, int):
            if abs(value) > MAX_CONSTANT_INT:
                raise self.at(node, f"integer constant larger than {MAX_CONSTANT_INT}")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise self.at(node, "float constant is not finite")
        elif isinstance(value, str):
            if len(value) > MAX_STRING_LENGTH:
                raise self.at(node, f"string constant longer than {MAX_STRING_LENGTH}")
        else:
            raise self.at(node, f"{type(value).__name__} constants are not allowed")
        kind = STRING if isinstance(value, str) else NUMBER
        return _Out(f"({value!r})", const=value, is_const=True, type=kind)

    def add(self, node: ast.BinOp, left: _Out, right: _Out) -> _Out:
        """``+``: numbers add, strings join (charged, and bounded by MAX_TEXT_LENGTH)."""
        types = {left.type, right.type}
        if types == {NUMBER, STRING}:
            raise self.at(node, "'+' of a string and a number is always a type error")
        if left.is_const and right.is_const and types == {STRING}:
            return self.constant(node, left.const + right.const)
        if NUMBER in types:  # the other side is a number too, or it is a type error
            return _Out(f"_add({left.code}, {right.code})", type=NUMBER)
        self.charged = True
        return _Out(f"_cat({left.code}, {right.code}, {_BUDGET})", type=_join([*types]))

    def check_name(self, node: ast.AST, name: str) -> None:
        problem = _name_problem(name)
        if problem is not None:
            raise self.at(node, problem)

    def name(self, node: ast.Name) -> _Out:
        self.check_name(node, node.id)
        if node.id == "event":
            return _Out("e")
        if node.id == "prev":
            self.uses_ctx = True
            return _Out("ctx.previous")
        if node.id in self.stages:
            self.uses_ctx = True
            return _Out(f"ctx.events({node.id!r})", STAGE)
        if node.id == "lists":
            return _Out("<lists>", LISTS)
        return self.field_of(node, _Out("e"), node.id)

    def list_name(self, node: ast.AST, name: str) -> str:
        """``name`` as a list of the registry; refused when the registry has no such list."""
        self.check_name(node, name)
        if self.lists is None or name not in self.lists:
            known = ", ".join(self.lists.names()) if self.lists is not None else ""
            text = self.source if len(self.source) <= 80 else self.source[:77] + "..."
            raise self.at(
                node,
                f"unknown list {name!r} in {text!r}; "
                + (f"known lists: {known}" if known else "no lists are loaded"),
                missing_list=name,
            )
        self.list_names.add(name)
        return name

    def field_of(self, node: ast.AST, base: _Out, key: str) -> _Out:
        if base.kind == LISTS:
            return _Out("<list>", LIST, path=(self.list_name(node, key),))
        if base.kind == LIST:
            raise self.at(node, f"list {base.path[0]!r} has no fields")
        self.check_name(node, key)
        if base.kind == STAGE:
            return _Out(base.code, FIELD, path=(key,))
        if base.kind == FIELD:
            return _Out(base.code, FIELD, path=(*base.path, key))
        if base.code == "e" and self.fast:
            return _Out(f"e[{key!r}]")
        if self.fast:  # a missing key raises KeyError: the general body then runs
            t = self.temp()
            return _Out(
                f"({t}[{key!r}] if ({t} := {base.code}).__class__ is _dict else _g({t}, {key!r}))"
            )
        return _Out(f"_g({base.code}, {key!r})")

    def int_index(self, node: ast.expr) -> int | None:
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            sign = -1 if isinstance(node.op, ast.USub) else 1
            node = node.operand
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int)
            and not isinstance(node.value, bool)
            and abs(node.value) <= MAX_CONSTANT_INT
        ):
            return sign * node.value
        return None

    def subscript(self, node: ast.Subscript, d: int) -> _Out:
        base = self.emit(node.value, d)
        key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return self.field_of(key, base, key.value)
        index = self.int_index(key)
        if base.kind in (LISTS, LIST):
            raise self.at(key, "a list is named by a string: lists.NAME or lists['NAME']")
        if index is None:
            raise self.at(key, "subscripts must be an integer or string constant")
        if base.kind == FIELD:
            raise self.at(node, "stage.field cannot be indexed; index the stage: stage[0].field")
        if base.kind == STAGE and self.fast:  # out of range raises IndexError: general body
            return _Out(f"{base.code}[{index}]")
        return _Out(f"_idx({base.code}, {index})")

    def unary(self, node: ast.UnaryOp, d: int) -> _Out:
        if isinstance(node.op, ast.Not):
            return _Out(f"(not {self.value(node.operand, d, 'with not').code})", type=NUMBER)
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self.value(node.operand, d, "in arithmetic")
            sign = "-" if isinstance(node.op, ast.USub) else "+"
            if inner.type == STRING:
                raise self.at(node, f"a string cannot be an operand of unary {sign!r}")
            if inner.is_const and isinstance(inner.const, (int, float)):
                value = -inner.const if isinstance(node.op, ast.USub) else +inner.const
                return self.constant(node, value)
            fn = "_neg" if isinstance(node.op, ast.USub) else "_pos"
            return _Out(f"{fn}({inner.code})", type=NUMBER)
        raise self.at(node, f"operator {_OP_TEXT.get(type(node.op), '?')!r} is not allowed")

    def collection(self, node: ast.List | ast.Tuple | ast.Set, d: int) -> tuple[str, bool, bool]:
        """Source for the right side of ``in``; True when it is a frozenset of constants; True
        when every element is cheap to compare with."""
        items = [self.value(e, d, "in a list") for e in node.elts]
        if all(i.is_const for i in items):
            values = [i.const for i in items]
            return self.const_name(frozenset(values)), True, True
        code = "(" + "".join(f"{i.code}, " for i in items) + ")"
        return code, False, all(i.cheap for i in items)

    def compare(self, node: ast.Compare, d: int) -> _Out:
        refs = [self.emit(c, d) if _names_lists(c) else None for c in node.comparators]
        if any(r is not None and r.kind == LIST for r in refs):
            return self.list_compare(node, d, refs)
        operands = [self.value(node.left, d, "in a comparison")]
        # per comparison: the source of its right side, whether that is a frozenset of
        # constants, and whether the comparison takes a bounded time whatever the input
        rights: list[tuple[str, bool, bool]] = []
        for op, operand in zip(node.ops, node.comparators, strict=True):
            if type(op) not in _RAW_CMP:
                raise self.at(node, f"comparison {type(op).__name__} is not allowed")
            if isinstance(op, (ast.Is, ast.IsNot)) and not (
                isinstance(operand, ast.Constant) and operand.value is None
            ):
                raise self.at(operand, "'is' and 'is not' may only be used with None")
            left = operands[-1]
            if isinstance(operand, (ast.List, ast.Tuple, ast.Set)):
                if not isinstance(op, (ast.In, ast.NotIn)):
                    raise self.at(operand, "list literals are only allowed on the right of 'in'")
                code, is_set, cheap_items = self.collection(operand, d)
                rights.append((code, is_set, is_set or cheap_items or left.cheap))
                operands.append(_Out("<collection>", type=ANY))
            else:
                right = self.value(operand, d, "in a comparison")
                if isinstance(op, (ast.In, ast.NotIn)):
                    cheap = right.cheap  # the work is a search of the right side
                else:
                    cheap = left.cheap or right.cheap or isinstance(op, (ast.Is, ast.IsNot))
                rights.append((right.code, False, cheap))
                operands.append(right)
        all_cheap = all(cheap for _, _, cheap in rights)
        if self.fast and all_cheap:
            parts = [operands[0].code]
            for op, (code, _, _) in zip(node.ops, rights, strict=True):
                parts.append(f" {_RAW_CMP[type(op)]} {code}")
            return _Out("(" + "".join(parts) + ")", type=NUMBER)
        if not all_cheap:
            self.charged = True
        pairs: list[str] = []
        left_code = operands[0].code
        last = len(node.ops) - 1
        for i, (op, (code, is_set, cheap)) in enumerate(zip(node.ops, rights, strict=True)):
            right_code = code
            if i < last:
                t = self.temp()
                right_code, after = f"({t} := {code})", t
            else:
                after = right_code
            pairs.append(self.pair(op, left_code, right_code, is_set, cheap))
            left_code = after
        return _Out("(" + " and ".join(pairs) + ")", type=NUMBER)

    def list_compare(self, node: ast.Compare, d: int, refs: list[_Out | None]) -> _Out:
        """``x in lists.NAME`` / ``x not in lists.NAME``: a lookup of the live list."""
        ref = refs[0]
        op = node.ops[0]
        if len(node.ops) != 1 or ref is None or not isinstance(op, (ast.In, ast.NotIn)):
            raise self.at(
                node, "a list may only be used as 'x in lists.NAME' or 'x not in lists.NAME'"
            )
        left = self.value(node.left, d, "in a comparison")
        test = f"_lin({ref.path[0]!r}, {left.code})"
        return _Out(f"(not {test})" if isinstance(op, ast.NotIn) else test, type=NUMBER)

    def prefix_in(self, node: ast.Call, d: int) -> _Out:
        """``prefix_in(x, lists.NAME)``: some prefix of x is an entry of the live list."""
        if (
            node.keywords
            or len(node.args) != 2
            or any(isinstance(a, ast.Starred) for a in node.args)
        ):
            raise self.at(node, "prefix_in() takes 2 arguments: prefix_in(x, lists.NAME)")
        ref = self.emit(node.args[1], d) if _names_lists(node.args[1]) else None
        if ref is None or ref.kind != LIST:
            raise self.at(
                node.args[1], "prefix_in() needs a list second, e.g. prefix_in(bin, lists.NAME)"
            )
        value = self.value(node.args[0], d, "in prefix_in()")
        return _Out(f"_lpre({ref.path[0]!r}, {value.code})", type=NUMBER)

    def pair(self, op: ast.cmpop, left: str, right: str, is_set: bool, cheap: bool) -> str:
        """One comparison of a chain."""
        negate = isinstance(op, ast.NotIn)
        if not cheap:
            if isinstance(op, (ast.In, ast.NotIn)):
                test = f"_in_c({left}, {right}, {_BUDGET})"
                return f"(not {test})" if negate else test
            charged = _CHARGED_CMP[type(op)]
            if not self.fast:
                return f"{charged}({left}, {right}, {_BUDGET})"
            # Inline, the common case, when the left side alone makes the comparison cheap: a
            # plain value (string, number, None) for == and !=, a number for ordering. Both
            # sides are evaluated once, in order, in the test ("is _NEVER" is always false), so
            # that neither is written twice (nested comparisons would double at each level).
            a, b = self.temp(), self.temp()
            plain = "_SCALAR" if isinstance(op, (ast.Eq, ast.NotEq)) else "_NUM"
            raw = _RAW_CMP[type(op)]
            return (
                f"({a} {raw} {b} if (({a} := {left}).__class__ in {plain}) | "
                f"(({b} := {right}) is _NEVER) else {charged}({a}, {b}, {_BUDGET}))"
            )
        if self.fast:
            return f"({left} {_RAW_CMP[type(op)]} {right})"
        if type(op) in _SAFE_CMP:
            return f"{_SAFE_CMP[type(op)]}({left}, {right})"
        if isinstance(op, (ast.In, ast.NotIn)):
            test = f"_in_set({left}, {right})" if is_set else f"_in({left}, {right})"
            return f"(not {test})" if negate else test
        return f"({left} {_RAW_CMP[type(op)]} {right})"

    def call(self, node: ast.Call, d: int) -> _Out:
        if not isinstance(node.func, ast.Name):
            raise self.at(node, "only the documented helper functions can be called, by name")
        name = node.func.id
        if name == "prefix_in":
            return self.prefix_in(node, d)
        if name not in HELPERS:
            raise self.at(node, f"unknown function {name!r}")
        if node.keywords:
            raise self.at(node, f"{name}() takes no keyword arguments")
        _, arity, kind = HELPERS[name]
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.at(node, "star arguments not allowed in an expression")
        if len(node.args) != arity:
            plural = "s" if arity > 1 else ""
            raise self.at(node, f"{name}() takes {arity} argument{plural}, got {len(node.args)}")
        args = [self.emit(a, d) for a in node.args]
        result = (
            NUMBER if name in _NUMBER_HELPERS else STRING if name in ("lower", "upper") else ANY
        )
        budget = ""
        if name in _CHARGED_HELPERS:
            self.charged = True
            budget = f", {_BUDGET}"
        if kind == STAGE:
            if args[0].kind != STAGE:
                raise self.at(node.args[0], f"{name}() needs a stage name, e.g. {name}(first)")
            return _Out(f"_h_{name}({args[0].code})", type=result)
        if kind == FIELD:
            if args[0].kind != FIELD:
                raise self.at(
                    node.args[0], f"{name}() needs stage.field, e.g. {name}(first.amount)"
                )
            return _Out(f"_h_{name}({args[0].code}, {args[0].path!r}{budget})", type=result)
        if name == "len" and args[0].kind == STAGE:
            return _Out(f"_h_count({args[0].code})", type=NUMBER)
        for arg, out in zip(node.args, args, strict=True):
            if out.kind != VALUE:
                raise self.at(arg, self.kind_message(out, f"in {name}()"))
        return _Out(f"_h_{name}({', '.join(a.code for a in args)}{budget})", type=result)


def _names_lists(node: ast.AST) -> bool:
    """``node`` is ``lists.NAME``, ``lists['NAME']`` or something else under ``lists``."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return isinstance(node, ast.Name) and node.id == "lists"


def _list_versions(lists: Lists, names: tuple[str, ...]) -> dict[str, int]:
    return lists.versions(names)


def compile_expression(
    source: str,
    *,
    stages: Sequence[str] = (),
    rule_id: str = "<rule>",
    field: str = "where",
    line: int = 1,
    column: int = 1,
    lists: Lists | None = None,
) -> ExpressionCondition:
    """Compile ``source`` into a condition function; raise :class:`ExpressionError` if invalid.

    ``stages`` are the stage names the expression may refer to. The result is ``f(event)`` when
    the expression reads no stage and no ``prev``, otherwise ``f(event, ctx)``; its
    ``fraudcep_source`` attribute is ``source``. ``rule_id``, ``field``, ``line`` and ``column``
    (where the expression starts in its rule file) only serve to locate errors.

    ``lists`` is the registry of named lists (:class:`fraudcep.rules.lists.Lists`) that
    ``x in lists.NAME`` and ``prefix_in(x, lists.NAME)`` read at evaluation time; an expression
    naming a list the registry lacks (or naming one without a registry) is refused. Such a
    function also has ``fraudcep_lists`` (the names) and ``fraudcep_list_versions()`` (their
    current versions, which alerts record).
    """
    if not isinstance(source, str):
        raise ExpressionError(
            f"expression must be a string, not {type(source).__name__}",
            rule_id=rule_id,
            field=field,
            line=line,
            column=column,
        )
    with warnings.catch_warnings():  # e.g. "'is' with a literal": the semantics are defined
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return _Compiler(source, stages, rule_id, field, line, column, lists).compile()

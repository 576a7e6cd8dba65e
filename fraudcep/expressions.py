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
from typing import Any, Protocol

from fraudcep.errors import FraudcepError

__all__ = [
    "HELPERS",
    "MAX_CONSTANT_INT",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_NODES",
    "MAX_SOURCE_LENGTH",
    "MAX_STRING_LENGTH",
    "Condition",
    "ExpressionCondition",
    "ExpressionError",
    "check_field_path",
    "check_identifier",
    "compile_expression",
]

MAX_SOURCE_LENGTH = 4000
MAX_NODES = 500
MAX_DEPTH = 40
MAX_CONSTANT_INT = 10**18
MAX_STRING_LENGTH = 1000
MAX_ELEMENTS = 1000
_MAX_INT_BITS = 4096  # products of larger ints are refused at run time (condition false)


class ExpressionError(FraudcepError, ValueError):
    """An expression that is not valid; names the rule, the field and the line and column."""

    def __init__(self, reason: str, *, rule_id: str, field: str, line: int, column: int) -> None:
        self.reason = reason
        self.rule_id = rule_id
        self.field = field
        self.line = line
        self.column = column
        super().__init__(
            f"rule {rule_id!r}, field {field!r}, line {line}, column {column}: {reason}"
        )


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


def _add(a: Any, b: Any) -> Any:
    if a.__class__ in _FAST_NUMBER and b.__class__ in _FAST_NUMBER:
        return a + b
    if a is None or b is None:
        return None
    if (_num(a) and _num(b)) or (isinstance(a, str) and isinstance(b, str)):
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


def _mul(a: Any, b: Any) -> Any:
    if a.__class__ is float or b.__class__ is float:
        if _num(a) and _num(b):
            return a * b
    elif (
        a.__class__ is int and b.__class__ is int and -_SMALL < a < _SMALL and -_SMALL < b < _SMALL
    ):
        return a * b
    if a is None or b is None:
        return None
    if _num(a) and _num(b):
        if int(a).bit_length() + int(b).bit_length() > _MAX_INT_BITS:
            raise OverflowError("integer product too large")
        return a * b
    raise _bad("*", a, b)


def _div(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if _num(a) and _num(b):
        return None if b == 0 else a / b
    raise _bad("/", a, b)


def _floordiv(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if _num(a) and _num(b):
        return None if b == 0 else a // b
    raise _bad("//", a, b)


def _mod(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if _num(a) and _num(b):
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


def _values(stage: Sequence[Any], path: tuple[str, ...]) -> list[Any]:
    return [v for v in (_path(ev, path) for ev in stage) if v is not None]


def _count(stage: Sequence[Any]) -> int:
    return len(stage)


def _sum(stage: Sequence[Any], path: tuple[str, ...]) -> Any:
    total: Any = 0
    for v in _values(stage, path):
        total = _add(total, v)
    return total


def _min(stage: Sequence[Any], path: tuple[str, ...]) -> Any:
    values = _values(stage, path)
    return min(values) if values else None


def _max(stage: Sequence[Any], path: tuple[str, ...]) -> Any:
    values = _values(stage, path)
    return max(values) if values else None


def _avg(stage: Sequence[Any], path: tuple[str, ...]) -> Any:
    values = _values(stage, path)
    return None if not values else _div(_sum(stage, path), len(values))


def _len(x: Any) -> Any:
    if isinstance(x, (str, list, tuple, set, frozenset, Mapping, Sequence)):
        return len(x)
    return None


def _lower(s: Any) -> Any:
    return s.lower() if isinstance(s, str) else None


def _upper(s: Any) -> Any:
    return s.upper() if isinstance(s, str) else None


def _startswith(s: Any, p: Any) -> bool:
    return isinstance(s, str) and isinstance(p, str) and s.startswith(p)


def _endswith(s: Any, p: Any) -> bool:
    return isinstance(s, str) and isinstance(p, str) and s.endswith(p)


def _contains(s: Any, p: Any) -> bool:
    if isinstance(s, str):
        return isinstance(p, str) and p in s
    if isinstance(s, (list, tuple, set, frozenset, Mapping)):
        try:
            return p in s
        except TypeError:
            return False
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
        return int(ts // 3_600_000) % 24
    raise _bad("hour_of()", ts)


def _weekday_of(ts: Any) -> Any:
    if ts is None:
        return None
    if _num(ts):
        return (int(ts // 86_400_000) + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    raise _bad("weekday_of()", ts)


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
}

_RUNTIME: dict[str, Any] = {
    "_g": _get,
    "_idx": _idx,
    "_add": _add,
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
    "_dict": dict,
    "_Exception": Exception,
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


class _Out:
    """A translated node: Python source, what it denotes, and its value when it is a constant."""

    __slots__ = ("code", "const", "is_const", "kind", "path")

    def __init__(
        self,
        code: str,
        kind: str = VALUE,
        *,
        path: tuple[str, ...] = (),
        const: Any = None,
        is_const: bool = False,
    ) -> None:
        self.code = code
        self.kind = kind
        self.path = path
        self.const = const
        self.is_const = is_const


class _Compiler:
    def __init__(
        self, source: str, stages: Sequence[str], rule_id: str, field: str, line: int, column: int
    ) -> None:
        self.source = source
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

    # ---- errors

    def error(self, reason: str, lineno: int = 1, col: int = 0) -> ExpressionError:
        """An error at 1-based ``lineno`` and 0-based character ``col`` of the source."""
        if lineno <= 1:
            line, column = self.line, self.column + col
        else:
            line, column = self.line + lineno - 1, col + 1
        return ExpressionError(
            reason, rule_id=self.rule_id, field=self.field, line=line, column=column
        )

    def at(self, node: ast.AST, reason: str) -> ExpressionError:
        lineno = getattr(node, "lineno", 1)
        offset = getattr(node, "col_offset", 0)
        if lineno == 1:  # the source is parsed as "(" + source
            offset = max(offset - 1, 0)
        if 1 <= lineno <= len(self.lines):  # ast offsets count UTF-8 bytes
            text = self.lines[lineno - 1].encode("utf-8")[:offset]
            offset = len(text.decode("utf-8", errors="replace"))
        return self.error(reason, lineno, offset)

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
        code = (
            f"def _condition({params}):\n"
            f"    if e.__class__ is _dict:\n"
            f"        try:\n"
            f"            return True if ({fast.code}) else False\n"
            f"        except _Exception:\n"
            f"            pass\n"
            f"    try:\n"
            f"        return True if ({slow.code}) else False\n"
            f"    except _FALSE_ON:\n"
            f"        return False\n"
        )
        self.namespace["__builtins__"] = {}
        exec(compile(code, f"<expression {self.rule_id}:{self.field}>", "exec"), self.namespace)
        fn = self.namespace.pop("_condition")
        fn.fraudcep_source = src
        fn.__doc__ = src
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
            return _Out(f"{op}({left.code}, {right.code})")
        if isinstance(node, ast.BoolOp):
            word = " and " if isinstance(node.op, ast.And) else " or "
            parts = [self.value(v, d, "with and/or").code for v in node.values]
            return _Out("(" + word.join(parts) + ")")
        if isinstance(node, ast.Compare):
            return self.compare(node, d)
        if isinstance(node, ast.IfExp):
            test = self.value(node.test, d, "as a test")
            yes = self.value(node.body, d, "in if/else")
            no = self.value(node.orelse, d, "in if/else")
            return _Out(f"({yes.code} if {test.code} else {no.code})")
        if isinstance(node, ast.Call):
            return self.call(node, d)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            raise self.at(node, "list literals are only allowed on the right of 'in' / 'not in'")
        what = _FORBIDDEN.get(type(node), type(node).__name__)
        raise self.at(node, f"{what} not allowed in an expression")

    def constant(self, node: ast.AST, value: Any) -> _Out:
        if value is None or isinstance(value, bool):
            return _Out(repr(value), const=value, is_const=True)
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
        return _Out(f"({value!r})", const=value, is_const=True)

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
        return self.field_of(node, _Out("e"), node.id)

    def field_of(self, node: ast.AST, base: _Out, key: str) -> _Out:
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
        if index is None:
            raise self.at(key, "subscripts must be an integer or string constant")
        if base.kind == FIELD:
            raise self.at(node, "stage.field cannot be indexed; index the stage: stage[0].field")
        if base.kind == STAGE and self.fast:  # out of range raises IndexError: general body
            return _Out(f"{base.code}[{index}]")
        return _Out(f"_idx({base.code}, {index})")

    def unary(self, node: ast.UnaryOp, d: int) -> _Out:
        if isinstance(node.op, ast.Not):
            return _Out(f"(not {self.value(node.operand, d, 'with not').code})")
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self.value(node.operand, d, "in arithmetic")
            if inner.is_const and isinstance(inner.const, (int, float)):
                value = -inner.const if isinstance(node.op, ast.USub) else +inner.const
                return self.constant(node, value)
            fn = "_neg" if isinstance(node.op, ast.USub) else "_pos"
            return _Out(f"{fn}({inner.code})")
        raise self.at(node, f"operator {_OP_TEXT.get(type(node.op), '?')!r} is not allowed")

    def collection(self, node: ast.List | ast.Tuple | ast.Set, d: int) -> tuple[str, bool]:
        """Source for the right side of ``in``; True when it is a frozenset of constants."""
        items = [self.value(e, d, "in a list") for e in node.elts]
        if all(i.is_const for i in items):
            values = [i.const for i in items]
            return self.const_name(frozenset(values)), True
        return "(" + "".join(f"{i.code}, " for i in items) + ")", False

    def compare(self, node: ast.Compare, d: int) -> _Out:
        operands = [self.value(node.left, d, "in a comparison")]
        codes: list[tuple[str, bool]] = []
        for op, operand in zip(node.ops, node.comparators, strict=True):
            if type(op) not in _RAW_CMP:
                raise self.at(node, f"comparison {type(op).__name__} is not allowed")
            if isinstance(op, (ast.Is, ast.IsNot)) and not (
                isinstance(operand, ast.Constant) and operand.value is None
            ):
                raise self.at(operand, "'is' and 'is not' may only be used with None")
            if isinstance(operand, (ast.List, ast.Tuple, ast.Set)):
                if not isinstance(op, (ast.In, ast.NotIn)):
                    raise self.at(operand, "list literals are only allowed on the right of 'in'")
                codes.append(self.collection(operand, d))
                operands.append(_Out("<collection>"))
            else:
                operands.append(self.value(operand, d, "in a comparison"))
                codes.append((operands[-1].code, False))
        if self.fast:
            parts = [operands[0].code]
            for op, (code, _) in zip(node.ops, codes, strict=True):
                parts.append(f" {_RAW_CMP[type(op)]} {code}")
            return _Out("(" + "".join(parts) + ")")
        pairs: list[str] = []
        left = operands[0].code
        last = len(node.ops) - 1
        for i, (op, (code, is_set)) in enumerate(zip(node.ops, codes, strict=True)):
            right = code
            if i < last:
                t = self.temp()
                right, after = f"({t} := {code})", t
            else:
                after = right
            if type(op) in _SAFE_CMP:
                pairs.append(f"{_SAFE_CMP[type(op)]}({left}, {right})")
            elif isinstance(op, (ast.In, ast.NotIn)):
                test = f"_in_set({left}, {right})" if is_set else f"_in({left}, {right})"
                pairs.append(test if isinstance(op, ast.In) else f"(not {test})")
            else:
                pairs.append(f"({left} {_RAW_CMP[type(op)]} {right})")
            left = after
        return _Out("(" + " and ".join(pairs) + ")")

    def call(self, node: ast.Call, d: int) -> _Out:
        if not isinstance(node.func, ast.Name):
            raise self.at(node, "only the documented helper functions can be called, by name")
        name = node.func.id
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
        if kind == STAGE:
            if args[0].kind != STAGE:
                raise self.at(node.args[0], f"{name}() needs a stage name, e.g. {name}(first)")
            return _Out(f"_h_{name}({args[0].code})")
        if kind == FIELD:
            if args[0].kind != FIELD:
                raise self.at(
                    node.args[0], f"{name}() needs stage.field, e.g. {name}(first.amount)"
                )
            return _Out(f"_h_{name}({args[0].code}, {args[0].path!r})")
        if name == "len" and args[0].kind == STAGE:
            return _Out(f"_h_count({args[0].code})")
        for arg, out in zip(node.args, args, strict=True):
            if out.kind != VALUE:
                raise self.at(arg, self.kind_message(out, f"in {name}()"))
        return _Out(f"_h_{name}({', '.join(a.code for a in args)})")


def compile_expression(
    source: str,
    *,
    stages: Sequence[str] = (),
    rule_id: str = "<rule>",
    field: str = "where",
    line: int = 1,
    column: int = 1,
) -> ExpressionCondition:
    """Compile ``source`` into a condition function; raise :class:`ExpressionError` if invalid.

    ``stages`` are the stage names the expression may refer to. The result is ``f(event)`` when
    the expression reads no stage and no ``prev``, otherwise ``f(event, ctx)``; its
    ``fraudcep_source`` attribute is ``source``. ``rule_id``, ``field``, ``line`` and ``column``
    (where the expression starts in its rule file) only serve to locate errors.
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
        return _Compiler(source, stages, rule_id, field, line, column).compile()

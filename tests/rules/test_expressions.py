"""The condition expression language: every construct and helper, and a property test against an
independent reference interpreter over the same (whitelisted) Python AST."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.expressions import Ctx, expressions

from fraudcep import Engine, Pattern, Rule
from fraudcep.pattern.conditions import takes_context
from fraudcep.rules.expressions import ExpressionError, compile_expression


class Wrapped(Mapping[str, Any]):
    """A mapping that is not a dict: always takes the general (null-safe) body."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class Obj:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def method(self) -> int:
        return 1


def ev(source: str, event: Any, ctx: Ctx | None = None, stages: Sequence[str] = ()) -> bool:
    fn = compile_expression(source, stages=stages)
    result = fn(event, ctx or Ctx()) if takes_context(fn) else fn(event)
    assert result is True or result is False
    if isinstance(event, dict):  # the general body gives the same answer
        again = fn(Wrapped(event), ctx or Ctx()) if takes_context(fn) else fn(Wrapped(event))
        assert again is result, source
    return result


PAY = {"amount": 2500, "status": "declined", "card": {"country": "FR", "bin": "4111"}, "ts": 0}


# --------------------------------------------------------------------------- constructs


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("amount > 2000", True),
        ("amount > 2000 and status == 'declined'", True),
        ("amount < 2000 or status == 'declined'", True),
        ("not amount < 2000", True),
        ("1000 < amount <= 2500 < 3000", True),
        ("1000 < amount < 2000", False),
        ("card.country == 'FR'", True),
        ("card['country'] == 'FR'", True),
        ("event.card.bin == '4111'", True),
        ("event['amount'] == 2500", True),
        ("amount + 500 == 3000", True),
        ("amount - 500 == 2000", True),
        ("amount * 2 == 5000", True),
        ("amount / 2 == 1250", True),
        ("amount // 1000 == 2", True),
        ("amount % 1000 == 500", True),
        ("-amount == -2500", True),
        ("+amount == 2500", True),
        ("status + '!' == 'declined!'", True),
        ("status in ['declined', 'fraud']", True),
        ("status not in ('declined', 'fraud')", False),
        ("status in {'x', card.country, 'declined'}", True),
        ("'FR' in card", False),
        ("'country' in card", True),
        ("'dec' in status", True),
        ("(1 if amount > 2000 else 2) == 1", True),
        ("nothing is None", True),
        ("amount is not None", True),
        ("True", True),
        ("None", False),
        ("amount", True),
        ("amount != 2500", False),
    ],
)
def test_constructs(source: str, expected: bool) -> None:
    assert ev(source, PAY) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("missing_field > 3", False),
        ("not missing_field > 3", True),
        ("missing_field < 3", False),
        ("missing_field == None", True),
        ("missing_field != 3", True),
        ("missing_field + 1 == None", True),
        ("card.nothing.deeper == None", True),
        ("status.deeper == None", True),
        ("not missing_field", True),
        ("missing_field in [1, None]", True),
        ("1 in missing_field", False),
        ("1 not in missing_field", True),
        ("amount / 0 == None", True),
        ("amount % 0 == None", True),
        ("'a' < 3", False),
        ("not ('a' < 3)", False),  # a type error makes the whole condition false
        ("status * 3 == 'x'", False),  # no sequence repetition
        ("status - 1 == None", False),
    ],
)
def test_none_and_type_error_semantics(source: str, expected: bool) -> None:
    assert ev(source, PAY) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("len(status) == 8", True),
        ("len(card) == 2", True),
        ("len(amount) == None", True),
        ("lower('AbC') == 'abc'", True),
        ("upper(status) == 'DECLINED'", True),
        ("upper(amount) == None", True),
        ("startswith(card.bin, '41')", True),
        ("endswith(card.bin, '11')", True),
        ("startswith(amount, '2')", False),
        ("contains(status, 'clin')", True),
        ("contains(card, 'bin')", True),
        ("contains(status, 3)", False),
        ("abs(-amount) == 2500", True),
        ("round(2.6) == 3", True),
        ("round(nothing) == None", True),
        ("seconds(2) == 2000 and minutes(2) == 120000 and hours(1) == 3600000", True),
        ("minutes(nothing) == None", True),
        ("hour_of(ts) == 0 and weekday_of(ts) == 3", True),  # 1970-01-01 was a Thursday
        ("hour_of(ts + hours(25)) == 1 and weekday_of(ts + hours(96)) == 0", True),
        ("hour_of(nothing) == None", True),
        ("exists(amount) and missing(nothing)", True),
        ("exists(card.nothing)", False),
    ],
)
def test_helpers(source: str, expected: bool) -> None:
    assert ev(source, PAY) is expected


def test_stage_references_and_aggregates() -> None:
    small = [
        {"amount": 1, "merchant": "a"},
        {"amount": 3, "merchant": "b"},
        {"merchant": "c"},
    ]
    ctx = Ctx({"small": small}, previous=small[-1])
    stages = ["small", "big"]
    cases = {
        "small[0].merchant == 'a' and small[-1].merchant == 'c'": True,
        "small[5] == None and small[-9].merchant == None": True,
        "count(small) == 3 and len(small) == 3 and count(big) == 0": True,
        "sum(small.amount) == 4 and avg(small.amount) == 2": True,
        "min(small.amount) == 1 and max(small.amount) == 3": True,
        "max(big.amount) == None and avg(big.amount) == None and sum(big.amount) == 0": True,
        "min(small.merchant) == 'a'": True,
        "merchant != small[0].merchant": True,
        "prev.merchant == 'c' and prev.amount == None": True,
        "amount > 2 * avg(small.amount)": True,
        "small['amount'] == 1": False,  # stage['x'] is stage.x: only valid in an aggregate
    }
    for source, expected in cases.items():
        if source.startswith("small['amount']"):
            with pytest.raises(ExpressionError):
                compile_expression(source, stages=stages)
            continue
        assert ev(source, {"amount": 5, "merchant": "z"}, ctx, stages) is expected, source
    # prev before anything matched
    assert ev("prev == None and prev.amount == None", {}, Ctx(), ()) is True


def test_arity_of_the_result_and_its_source() -> None:
    simple = compile_expression("amount > 1")
    staged = compile_expression("amount > small[0].amount", stages=["small"])
    with_prev = compile_expression("amount > prev.amount")
    assert not takes_context(simple)
    assert takes_context(staged) and takes_context(with_prev)
    assert simple.fraudcep_source == "amount > 1"
    assert staged.fraudcep_source == "amount > small[0].amount"
    # a stage name that is not declared is just a field
    assert not takes_context(compile_expression("small == 1"))
    assert simple.__globals__["__builtins__"] == {}  # type: ignore[attr-defined]


def test_attribute_events() -> None:
    obj = Obj(amount=3000, status="declined", card=Obj(country="FR"), _secret=1)
    assert ev("amount > 2000 and card.country == 'FR'", obj)
    assert ev("method == None", obj)  # callables are never read
    assert ev("status.upper == None and amount.real == None", obj)  # nor attributes of data
    for source in ("_secret == 1", "__dict__ == None", "card._secret", "event['_secret']"):
        with pytest.raises(ExpressionError):
            compile_expression(source)


def test_multiline_and_blank_prefixed_expressions() -> None:
    assert ev("  amount > 2000\nand status == 'declined'  # a comment\n", PAY)


def test_errors_name_rule_field_line_and_column() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(
            "amount > 1 and\n    foo(amount)",
            rule_id="card-testing",
            field="pattern[1].where",
            line=3,
            column=14,
        )
    err = info.value
    assert (err.rule_id, err.field, err.line, err.column) == (
        "card-testing",
        "pattern[1].where",
        4,
        5,
    )
    assert str(err) == (
        "rule 'card-testing', field 'pattern[1].where', line 4, column 5: unknown function 'foo'"
    )
    with pytest.raises(ExpressionError) as info:
        compile_expression("amount > __x", line=3, column=14)
    assert (info.value.line, info.value.column) == (3, 23)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "source",
    [
        "count(amount)",
        "sum(amount)",
        "sum(small)",
        "small",
        "small.amount > 1",
        "small + 1",
        "len(small.amount)",
        "small.amount[0]",
        "lower(small)",
        "count(small, small)",
        "count()",
        "amount is 3",
        "amount is not 3",
        "amount[1.5]",
        "amount[x]",
        "[1, 2]",
        "amount < [1]",
        "",
        "   ",
        "amount >",
    ],
)
def test_invalid_expressions(source: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(source, stages=["small"])


def test_in_an_engine() -> None:
    pattern = (
        Pattern.begin("small")
        .where(compile_expression("amount < 10"))
        .times(2)
        .followed_by("big")
        .where(
            compile_expression(
                "amount > 100 * avg(small.amount) and merchant != small[0].merchant",
                stages=["small", "big"],
            )
        )
    )
    engine = Engine([Rule("r", pattern, key="user")], timestamp="ts")
    stream = [
        {"user": 1, "ts": 1, "amount": 2, "merchant": "a"},
        {"user": 1, "ts": 2, "amount": 4, "merchant": "a"},
        {"user": 1, "ts": 3, "amount": 250, "merchant": "a"},
        {"user": 1, "ts": 4, "amount": 500, "merchant": "b"},
    ]
    alerts = engine.process_many(stream) + engine.flush()
    assert [[e["ts"] for e in a.events["big"]] for a in alerts] == [[4]]


# --------------------------------------------------------------------------- reference


class Fail(Exception):
    """A type error: the whole condition is false."""


def ref_get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return None


def is_num(x: Any) -> bool:
    return isinstance(x, (int, float))


def reference(source: str, event: Any, ctx: Ctx, stages: Sequence[str]) -> bool:
    """A tiny, direct interpreter of the documented semantics."""

    def val(node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id == "event":
                return event
            if node.id == "prev":
                return ctx.previous
            if node.id in stages:
                return list(ctx.events(node.id))
            return ref_get(event, node.id)
        if isinstance(node, ast.Attribute):
            return ref_get(val(node.value), node.attr)
        if isinstance(node, ast.Subscript):
            base = val(node.value)
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                return ref_get(base, key.value)
            i = val(key)
            if isinstance(base, (list, str)) and -len(base) <= i < len(base):
                return base[i]
            return None
        if isinstance(node, ast.UnaryOp):
            x = val(node.operand)
            if isinstance(node.op, ast.Not):
                return not x
            if x is None:
                return None
            if not is_num(x):
                raise Fail
            return -x if isinstance(node.op, ast.USub) else x
        if isinstance(node, ast.BinOp):
            a, b = val(node.left), val(node.right)
            if a is None or b is None:
                return None
            if isinstance(node.op, ast.Add) and isinstance(a, str) and isinstance(b, str):
                return a + b
            if not (is_num(a) and is_num(b)):
                raise Fail
            if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
                return None
            ops = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//"}
            sym = ops.get(type(node.op), "%")
            return eval(f"a {sym} b", {"__builtins__": {}}, {"a": a, "b": b})
        if isinstance(node, ast.BoolOp):
            result: Any = None
            for v in node.values:
                result = val(v)
                if isinstance(node.op, ast.And) and not result:
                    return result
                if isinstance(node.op, ast.Or) and result:
                    return result
            return result
        if isinstance(node, ast.IfExp):
            return val(node.body) if val(node.test) else val(node.orelse)
        if isinstance(node, ast.Compare):
            left = val(node.left)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                if isinstance(comp, (ast.List, ast.Tuple, ast.Set)):
                    right: Any = [val(e) for e in comp.elts]
                else:
                    right = val(comp)
                if not compare(op, left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            return call(node.func.id, node.args)
        raise AssertionError(ast.dump(node))

    def compare(op: ast.cmpop, a: Any, b: Any) -> bool:
        if isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
            if a is None or b is None:
                return False
            try:
                return bool(
                    a < b
                    if isinstance(op, ast.Lt)
                    else a <= b
                    if isinstance(op, ast.LtE)
                    else a > b
                    if isinstance(op, ast.Gt)
                    else a >= b
                )
            except TypeError:
                raise Fail from None
        if isinstance(op, (ast.In, ast.NotIn)):
            try:
                found = b is not None and a in b
            except TypeError:
                raise Fail from None
            return found if isinstance(op, ast.In) else not found
        if isinstance(op, ast.Eq):
            return bool(a == b)
        if isinstance(op, ast.NotEq):
            return bool(a != b)
        if isinstance(op, ast.Is):
            return a is b
        return a is not b

    def call(name: str, args: list[ast.expr]) -> Any:
        if name in ("sum", "min", "max", "avg"):
            attr = args[0]
            assert isinstance(attr, ast.Attribute)
            values = [ref_get(e, attr.attr) for e in val(attr.value)]
            values = [v for v in values if v is not None]
            if name == "sum":
                if not all(is_num(v) for v in values):
                    raise Fail
                return sum(values)
            if not values:
                return None
            if name == "avg":
                if not all(is_num(v) for v in values):
                    raise Fail
                return sum(values) / len(values)
            try:
                return min(values) if name == "min" else max(values)
            except TypeError:
                raise Fail from None
        xs = [val(a) for a in args]
        x = xs[0]
        if name in ("count", "len"):
            return len(x) if isinstance(x, (str, list, dict)) else None
        if name in ("exists", "missing"):
            return (x is not None) == (name == "exists")
        if name in ("lower", "upper"):
            return getattr(x, name)() if isinstance(x, str) else None
        if name in ("startswith", "endswith"):
            return isinstance(x, str) and isinstance(xs[1], str) and getattr(x, name)(xs[1])
        if name == "contains":
            if isinstance(x, str):
                return isinstance(xs[1], str) and xs[1] in x
            return isinstance(x, (list, dict)) and xs[1] in x
        if x is None:
            return None
        if not is_num(x):
            raise Fail
        scale = {"seconds": 1000, "minutes": 60_000, "hours": 3_600_000}
        if name in scale:
            return x * scale[name]
        if name == "abs":
            return abs(x)
        if name == "round":
            return round(x)
        if name == "hour_of":
            return int(x // 3_600_000) % 24
        return (int(x // 86_400_000) + 3) % 7

    tree = ast.parse(f"({source}\n)", mode="eval")
    try:
        return bool(val(tree.body))
    except (Fail, ArithmeticError, ValueError):
        return False


# --------------------------------------------------------------------------- property


scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 3000),
    st.floats(-10, 10, allow_nan=False),
    st.sampled_from(["declined", "ok", "FR", ""]),
)


def payments() -> st.SearchStrategy[dict[str, Any]]:
    card = st.dictionaries(st.sampled_from(["country", "limit"]), scalar, max_size=2)
    return st.fixed_dictionaries(
        {},
        optional={
            "amount": scalar,
            "fee": scalar,
            "status": scalar,
            "card": st.one_of(card, scalar),
        },
    )


@settings(max_examples=1500, deadline=None)
@given(
    source=expressions(),
    event=payments(),
    small=st.lists(payments(), max_size=3),
    previous=st.one_of(st.none(), payments()),
)
def test_compiled_agrees_with_reference(
    source: str, event: dict[str, Any], small: list[dict[str, Any]], previous: Any
) -> None:
    try:
        fn = compile_expression(source, stages=["small"])
    except ExpressionError:
        return  # e.g. a literal list of a stage.field; the property is about valid ones
    ctx = Ctx({"small": small}, previous)
    expected = reference(source, event, ctx, ["small"])
    for e in (event, Wrapped(event)):
        got = fn(e, ctx) if takes_context(fn) else fn(e)
        assert got is expected, (source, event, small, previous)


# --------------------------------------------------------------------------- whole expressions


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ("amount) or (1", 1, 7),
        ("amount > 1) or (True", 1, 11),
        ("amount)", 1, 7),
        ("status == 'x') or ('y'", 1, 14),
        ("amount > 1\n) or (1", 2, 1),
        ("amount > 1 and (\n  status)) or ((True\n)", 2, 10),
        ("amount # a comment\n) or (1", 2, 1),
        ("amount > 1 \\", 1, 12),
        ("amount\\\n) or (1", 2, 1),
    ],
)
def test_the_text_is_one_whole_expression(source: str, line: int, column: int) -> None:
    """The text cannot close the parentheses it is parsed in, nor end in a line continuation."""
    with pytest.raises(ExpressionError) as info:
        compile_expression(source, line=1, column=1)
    assert (info.value.line, info.value.column) == (line, column), info.value.reason


def test_brackets_in_strings_and_comments_are_text() -> None:
    assert ev("status != ')' and status != '(' # ) or (\n", PAY)
    assert ev("(amount > 2000\n) and (status == 'declined')", PAY)
    assert ev("amount > 2000 and \\\n status == 'declined'", PAY)
    assert ev("amount > 2000\r\nand status == 'declined'\r", PAY)


# --------------------------------------------------------------------------- ASCII names


@pytest.mark.parametrize(
    ("source", "column", "char", "suggestion"),
    [
        ("\u0430mount > 2000", 1, "U+0430 CYRILLIC SMALL LETTER A", "amount"),
        ("amount > 1 and st\u0430tus == 'x'", 18, "U+0430", "status"),
        ("\u0455tatus == 'x'", 1, "U+0455 CYRILLIC SMALL LETTER DZE", "status"),
        ("card.c\u043euntry == 'FR'", 7, "U+043E", "country"),
        ("\u03bfamount > 1", 1, "U+03BF GREEK SMALL LETTER OMICRON", "oamount"),
        ("\uff53\uff54\uff41\uff54\uff55\uff53 == 'x'", 1, "U+FF53 FULLWIDTH", "status"),
        (
            "\U0001d41a\U0001d426\U0001d428\U0001d42e\U0001d427\U0001d42d > 1",
            1,
            "MATHEMATICAL",
            "amount",
        ),
        ("\ufb01eld == 1", 1, "U+FB01 LATIN SMALL LIGATURE FI", "field"),
        ("am\u00f6unt > 1", 3, "U+00F6", "amount"),
        ("count(sm\u0430ll) > 1", 9, "U+0430", "small"),
        ("l\u043ewer(status) == 'x'", 2, "U+043E", "lower"),
        ("event.\u0430mount > 1", 7, "U+0430", "amount"),
    ],
)
def test_non_ascii_identifiers_are_refused(
    source: str, column: int, char: str, suggestion: str
) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source, stages=["small"], line=1, column=1)
    err = info.value
    assert err.column == column, err.reason
    assert "is not ASCII" in err.reason and char in err.reason
    assert err.reason.endswith(f"did you mean {suggestion!r}?")


@pytest.mark.parametrize(
    "source",
    [
        "amount\u00b7x > 1",  # a middle dot: part of an identifier for Python
        "amount\u0301 > 1",  # a combining accent
        "x\uff15 > 1",  # a full-width digit, which Python reads as 5
        "\u65e5\u672c > 1",  # no ASCII look-alike
        "amount \u2265 5",  # not an operator
        "event['\u0430mount'] > 1",  # field names in brackets too
        "event['a\\x00'] > 1",
        "amount > 1 # \u202e } \u2066 comment",  # display reordering, even in a comment
        "status == '\u2067x\u2069'",
    ],
)
def test_non_ascii_outside_strings_and_comments_is_refused(source: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(source)


def test_non_ascii_strings_and_comments_are_text() -> None:
    assert ev(
        "merchant == 'Caf\u00e9 \u65e5\u672c' # \u0441\u0447\u0451\u0442 \u2014 ok",
        {"merchant": "Caf\u00e9 \u65e5\u672c"},
    )
    assert ev(
        "lower(city) == '\u043c\u043e\u0441\u043a\u0432\u0430'",
        {"city": "\u041c\u043e\u0441\u043a\u0432\u0430"},
    )


def test_check_identifier_and_field_path() -> None:
    from fraudcep.rules.expressions import check_field_path, check_identifier

    for good in ("user_id", "card.country", "a.b.c", "x1", "Amount"):
        assert check_field_path(good) is None, good
    assert check_identifier("small") is None
    problems = {
        "__class__": "names starting with '_'",
        "card.__dict__": "names starting with '_'",
        "_private": "names starting with '_'",
        "\u0430mount": "did you mean 'amount'?",
        "card.c\u043euntry": "did you mean 'country'?",
        "a..b": "empty part",
        "": "empty field path",
        ".a": "empty part",
        "x-y": "is not a name",
        "1st": "is not a name",
        "a b": "is not a name",
        "a\x00": "control character",
    }
    for path, expected in problems.items():
        problem = check_field_path(path)
        assert problem is not None and expected in problem, (path, problem)
    assert check_identifier("a.b") is not None  # one name, not a path
    assert check_field_path(3) is not None


# --------------------------------------------------------------------------- cost limits


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("'a' * 3 == 'aaa'", "a string cannot be an operand of '*'"),
        ("status * 3 == 'x' and 'a' * amount == 'b'", "a string cannot be an operand of '*'"),
        ("-'a' == 1", "a string cannot be an operand of unary '-'"),
        ("'%s' % status == 'x'", "a string cannot be an operand of '%'"),
        ("lower(status) // 2 == 1", "a string cannot be an operand of '//'"),
        ("'a' + 1 == 2", "'+' of a string and a number is always a type error"),
        ("upper(status) + len(status) == 2", "'+' of a string and a number"),
        ("'" + "a" * 600 + "' + '" + "b" * 600 + "' == status", "string constant longer than"),
    ],
)
def test_string_growth_decided_when_compiling(source: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert reason in info.value.reason


def test_constant_strings_are_joined_when_compiling() -> None:
    assert ev("'de' + 'clined' == status and status in ['x', 'dec' + 'lined']", PAY)


def budgeted(source: str, stages: Sequence[str] = ()) -> bool:
    """Whether the compiled condition carries a cost budget (it does when some operation's
    work grows with its input)."""
    fn: Any = compile_expression(source, stages=stages)
    return "_b" in fn.__code__.co_varnames


def test_only_expressions_with_growing_work_carry_a_budget() -> None:
    for source in (
        "amount > 2000 and status == 'declined'",
        "status in ['a', 'b'] and not amount <= 3",
        "amount - fee > 10 and amount * 2 < prev.amount",  # numbers
        "hour_of(ts) < 6 and len(status) > 2 and startswith(status, 'de')",
        "x in (1, 2, fee * 2)",  # numbers searched for: one step each
        "count(small) > 2 and small[0].amount > 3",
    ):
        assert not budgeted(source, ["small"]), source
    for source in (
        "merchant != small[0].merchant",  # two fields: could be two lists
        "status + 'x' == 'y'",
        "amount + fee > 10",  # could join two strings
        "lower(status) == 'x'",
        "'dec' in status",
        "contains(tags, 'x')",
        "sum(small.amount) > 3",
    ):
        assert budgeted(source, ["small"]), source


def limit_error(source: str, event: Any, ctx: Ctx | None = None) -> str:
    """The message of the ExpressionLimitError the condition raises, for a dict event and
    for a mapping that is not a dict (the two bodies of the compiled function)."""
    from fraudcep.rules.expressions import ExpressionLimitError

    fn = compile_expression(source, stages=["small"])
    messages = []
    for e in (event, Wrapped(event)):
        with pytest.raises(ExpressionLimitError) as info:
            fn(e, ctx or Ctx()) if takes_context(fn) else fn(e)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    return messages[0]


def test_strings_made_at_run_time_are_bounded() -> None:
    from fraudcep.rules.expressions import MAX_TEXT_LENGTH

    half = "x" * (MAX_TEXT_LENGTH // 2)
    assert ev("len(d + d) == " + str(2 * len(half)), {"d": half})
    assert "longer than 65536" in limit_error("len(d + d + 'x') > 0", {"d": half})
    assert "longer than 65536" in limit_error("len(d + 'x') > 0", {"d": half + half})
    # upper() can make three characters of one: its result is bounded too
    expanding = "\u0390" * (MAX_TEXT_LENGTH // 3 + 1)
    assert "upper() would make a string of 65538" in limit_error("upper(d) == ''", {"d": expanding})
    assert ev("upper(d) == ''", {"d": expanding[:-1]}) is False
    assert "lower()" in limit_error("lower(d) == ''", {"d": "x" * (MAX_TEXT_LENGTH + 1)})


@pytest.mark.parametrize(
    ("term", "event", "most"),
    [
        # (one costly term, an event for it, how many such terms one evaluation can afford)
        ("'q' in l", {"l": [0] * 1000}, 30),  # 20 units per element searched
        ("contains(l, 'q')", {"l": [0] * 1000}, 30),
        ("m in l", {"l": [0] * 1000, "m": [1]}, 15),  # 40 per element when comparing lists
        ("l != m", {"l": [0] * 1000, "m": [0] * 1000}, 15),
        ("l < m", {"l": [0] * 1000, "m": [0] * 1000}, 15),
        ("l != m", {"l": [[0]] * 100, "m": [[0]] * 100}, 3),  # 150,000 for nested ones
        (
            "o != p",
            {"o": {f"k{i}": 1 for i in range(1000)}, "p": {f"k{i}": 1 for i in range(1000)}},
            15,
        ),
        ("e in d", {"d": "a" * 10_000, "e": "b"}, 15),  # 4 units per character searched
        ("contains(d, 'b')", {"d": "a" * 10_000}, 15),
        ("lower(d) == 'x'", {"d": "A" * 10_000}, 60),  # 1 per ASCII character
        ("lower(d) == 'x'", {"d": "\u0416" * 1_000}, 23),  # 26 per other character
        ("len(d + d) < 0", {"d": "a" * 10_000}, 30),  # 1 per ASCII character joined
        ("len(d + d) < 0", {"d": "\u0416" * 10_000}, 15),  # 2 per other character
        ("e < d", {"d": "a" * 10_000, "e": "a" * 10_000}, 60),  # 1 per character ordered
        ("sum(small.amount) < 0", {}, 20),  # 300 per event aggregated (100 events)
        ("max(small.amount) < 0", {}, 20),
        ("avg(small.amount) < 0", {}, 20),
    ],
)
def test_an_evaluation_does_a_bounded_amount_of_work(term: str, event: Any, most: int) -> None:
    """The work of an evaluation is bounded by counting: each operation whose work grows with
    its input spends units for it, and one evaluation may spend MAX_COST (600,000) units. So
    ``term or term or ...`` runs to its end with ``most`` terms and stops with one more."""
    ctx = Ctx({"small": [{"amount": 1}] * 100})
    most_terms = " or ".join([term] * most)
    assert ev(most_terms, event, ctx, ["small"]) is False
    message = limit_error(f"{most_terms} or {term}", event, ctx)
    assert "the evaluation costs more than 600000 units" in message


def test_bounded_work_needs_no_budget_and_refuses_nothing() -> None:
    """What is not charged takes a time bounded by the expression's size: comparing with a
    constant (at most 1000 characters) or a number, hashing for a constant list, integers of at
    most 1024 bits in * / // % and the time helpers."""
    big = {"d": "a" * 60_000, "l": [0] * 30_000, "x": 10**150}
    assert ev(" or ".join(["d == 'x'", "l == 1", "d in ['a', 'b']", "x < 2.5"] * 20), big) is False
    assert ev("x * x > 0 and x // 7 > 0 and x % 7 >= 0 and hour_of(x) >= 0", big) is True
    huge = {"x": int("9" * 400)}  # 1329 bits: a type error, so false
    for source in ("x * 1 > 0", "x // 7 > 0", "x % 7 >= 0", "x / 7 > 0", "hour_of(x) >= 0"):
        assert ev(source, huge) is False, source
        assert ev(f"not ({source})", huge) is False, source


def test_a_limit_is_a_condition_failure_in_the_engine() -> None:
    where = compile_expression("contains(lower(memo), 'gift')")
    engine = Engine([Rule("r", Pattern.begin("a").where(where), key="user")], timestamp="ts")
    alerts = (
        engine.process_many(
            [
                {"user": 1, "ts": 1, "memo": "a Gift card"},
                {"user": 1, "ts": 2, "memo": "\u0416" * 30_000},  # 780,000 units: over the limit
            ]
        )
        + engine.flush()
    )
    assert [a.events["a"][0]["ts"] for a in alerts] == [1]
    failures = engine.drain_errors()
    assert [f.event["ts"] for f in failures] == [2]
    assert failures[0].error.startswith("ExpressionLimitError: lower(): the evaluation costs")


def test_nested_comparisons_compile_to_code_of_linear_size() -> None:
    source = "a"
    for i in range(38):
        source = f"(x{i} != {source})"
    fn: Any = compile_expression(source)
    assert len(fn.__code__.co_code) < 40 * 400
    assert fn({}) is True

"""Loading rule files and rules-topic records: reading, checking and building every rule, and
raising all problems at once."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraudcep.engine.rule import Rule
from fraudcep.errors import ConfigurationError
from fraudcep.rules.building import build_rule, default_compiler
from fraudcep.rules.checking import Checker, RuleModel, check_rule, name_problem
from fraudcep.rules.definitions import ExpressionCompiler, Path_, RuleDefinition, Spec
from fraudcep.rules.limits import MAX_RULES, MAX_TEXT_SIZE, Budget
from fraudcep.rules.problems import Problem, RuleSpecError, TooManyProblems, add_problem
from fraudcep.rules.reading import parse_document
from fraudcep.rules.writing import rule_to_spec

if TYPE_CHECKING:
    from fraudcep.rules.lists import Lists


def load_rules(
    text: str,
    *,
    source: str = "<string>",
    compiler: ExpressionCompiler | None = None,
    rule_mapping: bool = False,
    lists: Lists | None = None,
) -> list[RuleDefinition]:
    """Parse, check and build every rule of a YAML or JSON rule file.

    The format is JSON when ``source`` ends in ``.json`` (or, for other names, when the text
    starts with ``{`` or ``[``), YAML otherwise. Every problem of the file is collected and
    raised together as one :class:`RuleSpecError` (reading stops after
    :data:`MAX_PROBLEMS`). ``compiler`` compiles the expressions (default:
    :func:`fraudcep.rules.expressions.compile_expression`). With ``rule_mapping``, a mapping
    without a ``rules`` field is read as one rule (the form of a rules-topic record).
    ``lists`` is the registry of named lists the expressions may name (``x in lists.NAME``,
    see :mod:`fraudcep.rules.lists`); a rule naming a list it lacks is a problem of the file.
    It is given to the default compiler; a ``compiler`` given too must take it itself.

    Nothing in ``text`` can make this raise anything but :class:`RuleSpecError`, recurse
    without bound or take time or memory beyond the limits in ``docs/rules.md``.
    """
    problems: list[Problem] = []
    if compiler is None and lists is not None:
        compiler = _with_lists(lists)
    try:
        definitions = _load(text, source, compiler, rule_mapping, problems)
    except TooManyProblems:
        raise RuleSpecError(problems) from None
    if problems:
        raise RuleSpecError(problems)
    return definitions


def _load(
    text: str,
    source: str,
    compiler: ExpressionCompiler | None,
    rule_mapping: bool,
    problems: list[Problem],
) -> list[RuleDefinition]:
    doc = parse_document(text, source, problems)
    if doc is None:
        return []
    data = doc.data
    items: list[tuple[Path_, Any]]
    if isinstance(data, Mapping) and rule_mapping and "rules" not in data:
        items = [((), data)]
    else:
        prefix: Path_ = ()
        if isinstance(data, Mapping):
            for key in data:
                if key != "rules":
                    line, column = doc.keys.get((key,), (1, 1))
                    message = "unknown top-level field (expected rules)"
                    add_problem(problems, Problem(source, None, key, line, column, message))
            data = data.get("rules")
            prefix = ("rules",)
        if not isinstance(data, list) or not data:
            line, column = doc.values.get(prefix, (1, 1))
            message = "a rule file is a non-empty list of rules"
            add_problem(problems, Problem(source, None, "", line, column, message))
            return []
        if len(data) > MAX_RULES:
            line, column = doc.values.get((*prefix, MAX_RULES), (1, 1))
            message = f"more than {MAX_RULES:,} rules in one file"
            add_problem(problems, Problem(source, None, "", line, column, message))
            return []
        items = [((*prefix, index), item) for index, item in enumerate(data)]
    resolved = compiler
    definitions: list[RuleDefinition] = []
    seen: dict[str, Path_] = {}
    budget = Budget()
    checked: list[tuple[Checker, RuleModel, Any]] = []
    for index, (path, item) in enumerate(items):  # every check first: they are cheap
        rule_id = item.get("id") if isinstance(item, Mapping) else None
        label = rule_id if isinstance(rule_id, str) and name_problem(rule_id) is None else ""
        label = label or f"#{index + 1}"
        checker = Checker(doc, source, problems, path, label, budget)
        model = check_rule(checker, item, path, seen)
        if model is not None:
            checked.append((checker, model, item))
    for checker, model, item in checked:
        if resolved is None:
            resolved = default_compiler()
        rule = build_rule(model, checker, resolved)
        if rule is None:
            continue
        definitions.append(
            RuleDefinition(
                id=model.id,
                version=model.version,
                enabled=model.enabled,
                description=model.description,
                spec=_definition_spec(model, rule, item),
                rule=rule,
            )
        )
    return definitions


_UTF32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _with_lists(lists: Lists) -> ExpressionCompiler:
    from fraudcep.rules.expressions import compile_expression

    compiler: ExpressionCompiler = partial(compile_expression, lists=lists)
    return compiler


def load_rule_file(
    path: str | Path,
    *,
    compiler: ExpressionCompiler | None = None,
    lists: Lists | None = None,
) -> list[RuleDefinition]:
    """:func:`load_rules` on a file of UTF-8 text (a UTF-8 byte order mark is skipped);
    problems name the file as their source. A file that is larger than
    :data:`MAX_TEXT_SIZE` bytes or not UTF-8 is a :class:`RuleSpecError` at the place it
    goes wrong; an unreadable one is an ``OSError``."""
    p = Path(path)
    source = str(p)
    with p.open("rb") as handle:
        data = handle.read(MAX_TEXT_SIZE + 1)

    def refuse(line: int, column: int, message: str) -> RuleSpecError:
        return RuleSpecError([Problem(source, None, "", line, column, message)])

    if len(data) > MAX_TEXT_SIZE:
        raise refuse(1, 1, f"larger than {MAX_TEXT_SIZE:,} bytes (256 KiB)")
    for boms, name in ((_UTF32_BOMS, "UTF-32"), (_UTF16_BOMS, "UTF-16")):
        if data.startswith(boms):
            message = f"a {name} file (it starts with a {name} byte order mark)"
            raise refuse(1, 1, f"{message}: a rule file is UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        byte = data[exc.start]
        raise refuse(
            line, column, f"not UTF-8 (byte 0x{byte:02x}): a rule file is UTF-8 text"
        ) from None
    return load_rules(text, source=source, compiler=compiler, lists=lists)


def _definition_spec(model: RuleModel, rule: Rule, raw: Any) -> Spec:
    try:
        body = rule_to_spec(rule)
    except ConfigurationError:
        return dict(raw)
    spec: Spec = {"id": model.id}
    if model.description is not None:
        spec["description"] = model.description
    if model.version is not None:
        spec["version"] = model.version
    if not model.enabled:
        spec["enabled"] = False
    body.pop("id")
    spec.update(body)
    return spec

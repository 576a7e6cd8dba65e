"""Rules as data: a declarative YAML/JSON rule format, its loader and its writer.

A rule file is a list of rules (or a mapping with a ``rules`` list); each rule is a mapping
with an ``id``, a ``key``, an optional ``within``/``skip`` and a ``pattern``: a list of stages
whose conditions are expressions of :mod:`fraudcep.expressions`. The format is described in
``docs/rules.md`` and published as a JSON Schema (``fraudcep/rule_schema.json``).

:func:`load_rules` parses a file, checks it and reports *every* problem at once, each with its
rule, field path, line and column (:class:`RuleSpecError`), and builds one
:class:`fraudcep.Rule` per rule through the public :class:`~fraudcep.Pattern` API.
:func:`rule_to_spec` and :func:`pattern_to_spec` go the other way for patterns whose conditions
carry their expression text (``fraudcep_source``): spec -> rule -> spec is the identity on
normalised specs, and the rebuilt rule finds the same alerts.
"""

from __future__ import annotations

import bisect
import importlib
import json
import re
import types
import unicodedata
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import yaml
import yaml.constructor
import yaml.nodes
import yaml.reader
import yaml.resolver

from fraudcep.conditions import And, Condition, Or, Predicate
from fraudcep.errors import ConfigurationError, EventError, FraudcepError
from fraudcep.expressions import check_field_path
from fraudcep.pattern import (
    MAX_CONDITIONS_PER_STAGE,
    MAX_QUANTIFIER_COUNT,
    MAX_STAGES,
    Consuming,
    Pattern,
    QuantifierKind,
    Stage,
    WithinType,
)
from fraudcep.rule import Rule
from fraudcep.skip import SkipKind, SkipStrategy

if TYPE_CHECKING:
    from fraudcep.engine import Engine

__all__ = [
    "SCHEMA_PATH",
    "ExpressionCompiler",
    "Problem",
    "RuleDefinition",
    "RuleSpecError",
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

SCHEMA_PATH = Path(__file__).resolve().parent / "rule_schema.json"
"""The published JSON Schema (draft 2020-12) of the rule format."""

Spec = dict[str, Any]
Path_ = tuple[str | int, ...]
Position = tuple[int, int]


class ExpressionCompiler(Protocol):
    """``fraudcep.expressions.compile_expression``'s signature."""

    def __call__(
        self,
        source: str,
        *,
        stages: Sequence[str],
        rule_id: str,
        field: str,
        line: int,
        column: int,
    ) -> Callable[..., Any]: ...


# -- problems -------------------------------------------------------------------------------


@attrs.frozen
class Problem:
    """One thing wrong with a rule file, and where it is (1-based line and column)."""

    source: str
    rule_id: str | None
    field: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:{self.column}:"
        rule = "" if self.rule_id is None else f" rule {self.rule_id!r}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}{rule}{field} {self.message}"


class RuleSpecError(FraudcepError, ValueError):
    """A rule file with problems; ``problems`` lists all of them, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = sorted(problems, key=lambda p: (p.line, p.column))
        count = len(self.problems)
        head = "\n".join(str(p) for p in self.problems[:20])
        more = f"\n... and {count - 20} more" if count > 20 else ""
        super().__init__(f"{count} problem(s) in rule file:\n{head}{more}")


@attrs.frozen
class RuleDefinition:
    """A loaded rule: its metadata, its normalised spec and the compiled :class:`Rule`."""

    id: str
    version: int | None
    enabled: bool
    description: str | None
    spec: Spec = attrs.field(eq=False)
    rule: Rule = attrs.field(eq=False)


# -- durations ------------------------------------------------------------------------------

_UNITS: dict[str, int] = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
# ASCII digits only (``\\d`` takes any Unicode digit, fullwidth ones included), at most 18 of
# them (they are read before the bound is checked)
_DURATION = re.compile(r"[ \t]*([0-9]{1,18})[ \t]*(ms|s|m|h|d)[ \t]*")


def parse_duration(value: object) -> int:
    """``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"`` or an int of ms, as ms (> 0, at
    most :data:`MAX_DURATION_MS`)."""
    if isinstance(value, bool):
        raise ValueError(f"a duration must be like 500ms, 30s, 5m, 2h, 1d or an int, not {value}")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        ms = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(
            f"a duration must be like 500ms, 30s, 5m, 2h, 1d or an int of ms, got {_show(value)}"
        )
    if ms <= 0:
        raise ValueError(f"a duration must be longer than 0 ms, got {_show(value)}")
    if ms > MAX_DURATION_MS:
        raise ValueError(
            f"a duration must be at most {MAX_DURATION_MS // 86_400_000}d, got {_show(value)}"
        )
    return ms


def format_duration(ms: int) -> str:
    """The normal form of a duration: the largest unit that divides it (``300000`` -> ``5m``)."""
    for unit, size in _UNITS.items():
        if ms % size == 0:
            return f"{ms // size}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


# -- limits ---------------------------------------------------------------------------------

MAX_TEXT_SIZE = 262_144
"""The largest rule file (bytes of a file, characters of a text): 256 KiB."""
MAX_DEPTH = 32
"""The deepest nesting of lists and mappings in a rule file."""
MAX_RULES = 1_000
"""The most rules one file holds."""
MAX_NAME_LENGTH = 200
"""The longest rule id and stage name, in characters."""
MAX_VERSION = 2**63 - 1
"""The largest rule ``version`` (a signed 64-bit integer, as in Kafka headers and Java)."""
MAX_DURATION_MS = 3_650 * 86_400_000
"""The longest duration (``within``, ``window``): 3650 days."""
MAX_INT_CHARS = 32
"""The longest text of an integer in a rule file; longer ones are refused unread."""
MAX_NODES = 100_000
"""The most values in one rule file (mapping keys, lists and mappings included)."""
MAX_FILE_STAGES = 1_000
"""The most stages in all the rules of one file (groups and their stages count)."""
MAX_FILE_CONDITIONS = 1_000
"""The most expressions (``where``, ``or_where``, ``until``) in all the rules of one file."""
MAX_FILE_CONDITION_TEXT = 100_000
"""The most characters of expression text in all the rules of one file (compiling takes time
in proportion to it)."""
MAX_PROBLEMS = 1_000
"""Reading stops after this many problems."""


class _TooManyProblems(Exception):
    """The problem list is full, or a limit of the whole file is reached: stop checking."""


@attrs.define
class _Budget:
    """What the rules of one file have used of the file's limits."""

    stages: int = 0
    conditions: int = 0
    condition_text: int = 0


def _add_problem(problems: list[Problem], problem: Problem) -> None:
    problems.append(problem)
    if len(problems) >= MAX_PROBLEMS:
        problems.append(
            attrs.evolve(problem, message=f"more than {MAX_PROBLEMS:,} problems: stopped here")
        )
        raise _TooManyProblems


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (values in messages come from the file)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


# -- reading the document with positions -----------------------------------------------------


class _Document:
    """Plain data of a parsed file plus the position of every value and mapping key."""

    def __init__(self) -> None:
        self.values: dict[Path_, Position] = {}
        self.keys: dict[Path_, Position] = {}
        self.text_starts: dict[Path_, Position] = {}
        # values refused while reading (already reported): checks of them stay silent
        self.refused: set[Path_] = set()
        self.data: Any = None


class _Stop(Exception):
    """A builder call failed (its problem is recorded); stop building this rule."""


class _Lines:
    """Line and column (1-based, in characters) of an index into the text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def at(self, index: int) -> Position:
        line = bisect.bisect_right(self.starts, index)
        return (line, index - self.starts[line - 1] + 1)


_YAML_INT = "tag:yaml.org,2002:int"
_YAML_STR = "tag:yaml.org,2002:str"
_YAML_CONSTRUCTED = {
    _YAML_INT: "construct_yaml_int",
    "tag:yaml.org,2002:float": "construct_yaml_float",
    "tag:yaml.org,2002:bool": "construct_yaml_bool",
    "tag:yaml.org,2002:null": "construct_yaml_null",
    "tag:yaml.org,2002:timestamp": "construct_yaml_timestamp",
}
# libyaml's event parser when it is there (fast), PyYAML's own otherwise: the same events
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SKIP: Any = object()  # the key of a mapping entry that is reported and left out
_IN_KEY: Any = object()  # the key of a mapping entry while its refused key is being read


def _mark(mark: Any) -> Position:
    return (mark.line + 1, mark.column + 1)


class _Frame:
    __slots__ = ("container", "key", "path")

    def __init__(self, container: Any, path: Path_ | None) -> None:
        self.container = container  # a list or a dict; None while skipping a refused key
        self.path = path  # None: positions are not recorded (a left-out entry)
        self.key: Any = None  # a mapping's pending key (None: a key comes next)


class _YamlReader:
    """Builds plain data with positions from YAML parser events, without recursion.

    Aliases, anchors and tags are refused (a rule file needs none of them, and aliases are
    what recursive structures and exponential "billion laughs" expansions are made of); so is
    nesting deeper than :data:`MAX_DEPTH`, and an integer of more than :data:`MAX_INT_CHARS`
    characters is refused before it is converted.
    """

    def __init__(self, text: str, doc: _Document, problems: list[Problem], source: str) -> None:
        self.text = text
        self.doc = doc
        self.problems = problems
        self.source = source
        self.resolver: Any = yaml.resolver.Resolver()
        self.constructor = yaml.constructor.SafeConstructor()
        self.lines: list[str] | None = None

    def problem(self, mark: Any, message: str) -> None:
        line, column = _mark(mark) if mark is not None else (1, 1)
        _add_problem(self.problems, Problem(self.source, None, "", line, column, message))

    def read(self) -> bool:
        """Fill the document; False (with the problem recorded) when it cannot be read."""
        stack: list[_Frame] = []
        documents = 0
        root: list[Any] = []
        nodes = 0
        for event in yaml.parse(self.text, Loader=_YAML_LOADER):
            if isinstance(event, yaml.NodeEvent):
                nodes += 1
                if nodes > MAX_NODES:
                    self.problem(event.start_mark, f"more than {MAX_NODES:,} values in one file")
                    return False
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    self.problem(
                        event.start_mark,
                        "a rule file is one YAML document (a second one starts here)",
                    )
                    return False
                continue
            if isinstance(event, yaml.AliasEvent):
                self.problem(
                    event.start_mark,
                    f"YAML aliases (*{event.anchor}) are not allowed in rule files: write the "
                    "value out",
                )
                return False
            if isinstance(event, yaml.NodeEvent):
                if event.anchor is not None:
                    self.problem(
                        event.start_mark,
                        f"YAML anchors (&{event.anchor}) are not allowed in rule files",
                    )
                    return False
                tag = getattr(event, "tag", None)
                if tag is not None:
                    shown = _show(tag.replace("tag:yaml.org,2002:", "!!", 1), 80)
                    self.problem(
                        event.start_mark, f"YAML tags ({shown}) are not allowed in rule files"
                    )
                    return False
            if isinstance(event, yaml.CollectionStartEvent):
                if len(stack) >= MAX_DEPTH:
                    self.problem(
                        event.start_mark,
                        f"lists and mappings are nested more than {MAX_DEPTH} levels deep",
                    )
                    return False
                path = self.place(stack, event)
                container: Any = [] if isinstance(event, yaml.SequenceStartEvent) else {}
                if path is _SKIP:
                    stack.append(_Frame(None, None))
                else:
                    if path is not None:
                        self.doc.values[path] = _mark(event.start_mark)
                    stack.append(_Frame(container, path))
            elif isinstance(event, yaml.CollectionEndEvent):
                frame = stack.pop()
                if frame.container is None:  # the end of a refused key, or of a part of it
                    if stack and stack[-1].key is _IN_KEY:
                        stack[-1].key = _SKIP
                    continue
                self.deliver(stack, root, frame.container)
            elif isinstance(event, yaml.ScalarEvent):
                path = self.place(stack, event)
                if path is _SKIP:
                    continue
                if path is None:  # inside a left-out entry: kept out of the data
                    self.deliver(stack, root, None)
                    continue
                self.doc.values[path] = _mark(event.start_mark)
                self.deliver(stack, root, self.scalar(event, path))
        if not root:
            self.problem(None, "the file holds no rules")
            return False
        self.doc.data = root[0]
        return True

    def place(self, stack: list[_Frame], event: Any) -> Any:
        """The path of the node ``event`` starts, None when it is not recorded, ``_SKIP``
        when it is a mapping key (a scalar key is taken here) or inside a refused key."""
        if not stack:
            return ()
        frame = stack[-1]
        if frame.container is None:
            return _SKIP
        if isinstance(frame.container, list):
            return None if frame.path is None else (*frame.path, len(frame.container))
        if frame.key is None:  # this node is a key
            if not isinstance(event, yaml.ScalarEvent):
                self.problem(event.start_mark, "a mapping key must be a string")
                frame.key = _IN_KEY
                return _SKIP
            key = event.value
            if key in frame.container:
                self.problem(event.start_mark, f"duplicate key {_show(key)}")
                frame.key = _SKIP
            else:
                frame.key = key
                if frame.path is not None:
                    self.doc.keys[(*frame.path, key)] = _mark(event.start_mark)
            return _SKIP
        if frame.key is _SKIP or frame.path is None:
            return None
        return (*frame.path, frame.key)

    def deliver(self, stack: list[_Frame], root: list[Any], value: Any) -> None:
        if not stack:
            root.append(value)
            return
        frame = stack[-1]
        if frame.container is None:
            return
        if isinstance(frame.container, list):
            frame.container.append(value)
            return
        if frame.key is not _SKIP:
            frame.container[frame.key] = value
        frame.key = None

    def scalar(self, event: Any, path: Path_) -> Any:
        value: str = event.value
        tag = self.resolver.resolve(yaml.nodes.ScalarNode, value, event.implicit)
        if tag == _YAML_STR:
            self.doc.text_starts[path] = self.text_start(event)
            return value
        method = _YAML_CONSTRUCTED.get(tag)
        if method is None:  # merge (<<) and value (=) keys of YAML 1.1: plain text here
            return value
        if tag == _YAML_INT and len(value) > MAX_INT_CHARS:
            self.refuse(event, path, f"an integer of more than {MAX_INT_CHARS} characters")
            return value
        node = yaml.nodes.ScalarNode(tag, value, event.start_mark, event.end_mark)
        try:
            return getattr(self.constructor, method)(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            self.refuse(event, path, f"bad value: {exc}")
            return value

    def refuse(self, event: Any, path: Path_, message: str) -> None:
        self.doc.refused.add(path)
        self.problem(event.start_mark, message)

    def text_start(self, event: Any) -> Position:
        """Where the text of a string scalar starts (after its quote, or below a block
        indicator)."""
        line, column = _mark(event.start_mark)
        if event.style in ('"', "'"):
            return (line, column + 1)
        if event.style in ("|", ">"):
            if self.lines is None:
                self.lines = self.text.split("\n")
            if line < len(self.lines):
                below = self.lines[line]
                return (line + 1, len(below) - len(below.lstrip(" ")) + 1)
            return (line + 1, 1)
        return (line, column)


_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_JSON_WORDS = {"true": True, "false": False, "null": None}
# the standard library's JSON string reader (strict: no raw control characters)
_scanstring: Callable[[str, int, bool], tuple[str, int]] = vars(json.decoder)["scanstring"]


class _JsonSyntaxError(Exception):
    def __init__(self, index: int, message: str, prefix: str = "bad JSON: ") -> None:
        super().__init__(message)
        self.index = index
        self.message = prefix + message


class _JsonReader:
    """A JSON parser that records positions, iterative (nesting is limited to
    :data:`MAX_DEPTH`), with the standard library's reading of strings and numbers.
    Duplicate keys are reported; the first one counts."""

    def __init__(self, text: str, doc: _Document, problems: list[Problem], source: str) -> None:
        self.text = text
        self.doc = doc
        self.problems = problems
        self.source = source
        self.lines = _Lines(text)
        self.bad_syntax = False  # the reading failed on JSON syntax (not on a limit)

    def read(self) -> bool:
        """Fill the document; False (with the problem recorded) when it cannot be read."""
        try:
            self.doc.data = self.parse()
        except _JsonSyntaxError as exc:
            self.bad_syntax = exc.message.startswith("bad JSON: ")
            line, column = self.lines.at(exc.index)
            problem = Problem(self.source, None, "", line, column, exc.message)
            _add_problem(self.problems, problem)
            return False
        return True

    def space(self, i: int) -> int:
        match = _JSON_SPACE.match(self.text, i)
        assert match is not None
        return match.end()

    def parse(self) -> Any:
        text = self.text
        stack: list[_Frame] = []
        i = self.space(0)
        if i == len(text):
            raise _JsonSyntaxError(i, "the file holds no rules")
        path: Path_ | None = ()
        nodes = 0
        while True:
            # a value starts at i (after white space), to be stored at path
            i = self.space(i)
            nodes += 1
            if nodes > MAX_NODES:
                raise _JsonSyntaxError(i, f"more than {MAX_NODES:,} values in one file", "")
            if path is not None:
                self.doc.values[path] = self.lines.at(i)
            char = text[i : i + 1]
            value: Any
            if char in ("[", "{"):
                if len(stack) >= MAX_DEPTH:
                    raise _JsonSyntaxError(
                        i, f"lists and objects are nested more than {MAX_DEPTH} levels deep"
                    )
                container: Any = [] if char == "[" else {}
                stack.append(_Frame(container, path))
                i = self.space(i + 1)
                closing = "]" if char == "[" else "}"
                if text[i : i + 1] == closing:
                    stack.pop()
                    value, i = container, i + 1
                elif char == "[":
                    path = None if path is None else (*path, 0)
                    continue
                else:
                    i, path = self.key(stack[-1], i)
                    continue
            elif char == '"':
                if path is not None:
                    self.doc.text_starts[path] = self.lines.at(i + 1)
                value, i = self.string(i)
            elif match := _JSON_NUMBER.match(text, i):
                number = match.group()
                if len(number) > MAX_INT_CHARS:
                    raise _JsonSyntaxError(i, f"a number of more than {MAX_INT_CHARS} characters")
                value = float(number) if match.group(1) or match.group(2) else int(number)
                i = match.end()
            else:
                for word, constant in _JSON_WORDS.items():
                    if text.startswith(word, i):
                        value, i = constant, i + len(word)
                        break
                else:
                    raise _JsonSyntaxError(i, "Expecting value")
            # the value is complete: store it, and close the containers it completes
            while True:
                if not stack:
                    end = self.space(i)
                    if end != len(text):
                        raise _JsonSyntaxError(end, "Extra data")
                    return value
                frame = stack[-1]
                if isinstance(frame.container, list):
                    frame.container.append(value)
                    i = self.space(i)
                    char = text[i : i + 1]
                    if char == ",":
                        i += 1
                        n = len(frame.container)
                        path = None if frame.path is None else (*frame.path, n)
                        break
                    if char != "]":
                        raise _JsonSyntaxError(i, "Expecting ',' delimiter")
                else:
                    if frame.key is not _SKIP:
                        frame.container[frame.key] = value
                    i = self.space(i)
                    char = text[i : i + 1]
                    if char == ",":
                        i, path = self.key(frame, self.space(i + 1))
                        break
                    if char != "}":
                        raise _JsonSyntaxError(i, "Expecting ',' delimiter")
                stack.pop()
                value, i = frame.container, i + 1

    def string(self, i: int) -> tuple[str, int]:
        try:
            return _scanstring(self.text, i + 1, True)
        except json.JSONDecodeError as exc:
            raise _JsonSyntaxError(exc.pos, exc.msg) from None

    def key(self, frame: _Frame, i: int) -> tuple[int, Path_ | None]:
        """Read ``"key":`` at ``i``; the index after it and the path of its value."""
        if self.text[i : i + 1] != '"':
            raise _JsonSyntaxError(i, "Expecting property name enclosed in double quotes")
        start = i
        key, i = self.string(i)
        i = self.space(i)
        if self.text[i : i + 1] != ":":
            raise _JsonSyntaxError(i, "Expecting ':' delimiter")
        if key in frame.container:
            line, column = self.lines.at(start)
            _add_problem(
                self.problems,
                Problem(self.source, None, "", line, column, f"duplicate key {_show(key)}"),
            )
            frame.key = _SKIP
            return i + 1, None
        frame.key = key
        if frame.path is None:
            return i + 1, None
        self.doc.keys[(*frame.path, key)] = self.lines.at(start)
        return i + 1, (*frame.path, key)


def _format(text: str, source: str) -> str:
    """``json``, ``yaml``, or ``either`` (JSON first, YAML when that is not JSON)."""
    suffix = Path(source).suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    return "either" if text.lstrip()[:1] in ("{", "[") else "yaml"


_SURROGATE = re.compile("[\ud800-\udfff]")


def _parse(text: str, source: str, problems: list[Problem]) -> _Document | None:
    def refuse(index: int, message: str) -> None:
        line, column = _Lines(text).at(index)
        problems.append(Problem(source, None, "", line, column, message))

    if len(text) > MAX_TEXT_SIZE:
        problems.append(
            Problem(source, None, "", 1, 1, f"larger than {MAX_TEXT_SIZE:,} characters (256 KiB)")
        )
        return None
    text = text.removeprefix("\ufeff")
    nul = text.find("\x00")
    if nul >= 0:
        refuse(nul, "a NUL character: a rule file is UTF-8 text (UTF-16 has NULs like this one)")
        return None
    if surrogate := _SURROGATE.search(text):
        refuse(surrogate.start(), "a lone surrogate character: not valid Unicode text")
        return None
    form = _format(text, source)
    if form == "yaml":
        return _parse_yaml(text, source, problems)[0]
    doc = _Document()
    found: list[Problem] = []
    reader = _JsonReader(text, doc, found, source)
    try:
        ok = reader.read()
    except _TooManyProblems:
        problems.extend(found)
        raise
    if ok or form == "json" or not reader.bad_syntax:
        problems.extend(found)
        return doc if ok else None
    # a text of no known format that starts like JSON but is not: YAML (flow style) may be
    # meant; when it is not YAML either, the JSON problem is the one to report
    as_yaml: list[Problem] = []
    try:
        yaml_doc, yaml_syntax = _parse_yaml(text, source, as_yaml)
    except _TooManyProblems:
        problems.extend(as_yaml)
        raise
    problems.extend(found if yaml_syntax else as_yaml)
    return yaml_doc


def _parse_yaml(text: str, source: str, problems: list[Problem]) -> tuple[_Document | None, bool]:
    """The document (None when it cannot be read) and whether YAML syntax was the reason."""
    doc = _Document()
    try:
        ok = _YamlReader(text, doc, problems, source).read()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = _mark(mark) if mark is not None else (1, 1)
        what = exc.problem or str(exc)
        problems.append(Problem(source, None, "", line, column, f"bad YAML: {what}"))
        return None, True
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        index = exc.position
        if _YAML_LOADER is not yaml.SafeLoader:  # libyaml counts bytes of UTF-8 here
            index = len(text.encode("utf-8")[:index].decode("utf-8", errors="ignore"))
        line, column = _Lines(text).at(index)
        what = f"the character {chr(exc.character)!r} is not allowed in YAML"
        problems.append(Problem(source, None, "", line, column, f"bad YAML: {what}"))
        return None, True
    except yaml.YAMLError as exc:
        problems.append(Problem(source, None, "", 1, 1, f"bad YAML: {_show(str(exc), 300)}"))
        return None, True
    return (doc if ok else None), False


# -- the intermediate model ------------------------------------------------------------------

CONTIGUITIES: dict[str, Consuming] = {
    "next": Consuming.STRICT,
    "followed_by": Consuming.SKIP_TILL_NEXT,
    "followed_by_any": Consuming.SKIP_TILL_ANY,
    "not_next": Consuming.NOT_NEXT,
    "not_followed_by": Consuming.NOT_FOLLOW,
}
_CONTIGUITY_NAMES = {v: k for k, v in CONTIGUITIES.items()}

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
class _StageModel:
    path: Path_
    name: str | None
    group: list[_StageModel] | None
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
class _RuleModel:
    path: Path_
    id: str
    description: str | None
    version: int | None
    enabled: bool
    key: str
    windows: list[tuple[WithinType, int, Path_]]
    skip: SkipStrategy
    skip_path: Path_
    stages: list[_StageModel]


def _render_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class _Checker:
    """Validates one rule's data, collecting problems with positions."""

    def __init__(
        self,
        doc: _Document,
        source: str,
        problems: list[Problem],
        prefix: Path_,
        rule_id: str,
        budget: _Budget,
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
        raise _TooManyProblems

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
        _add_problem(
            self.problems,
            Problem(self.source, self.rule_id, _render_path(path), line, column, message),
        )

    # -- typed reads ----------------------------------------------------------------------

    def unknown_keys(self, data: Mapping[str, Any], allowed: Sequence[str], path: Path_) -> None:
        for key in data:
            if key not in allowed:
                hint = _close(key, allowed)
                self.error((*path, key), f"unknown field {_show(key)}{hint}", at_key=True)

    def string(self, data: Mapping[str, Any], key: str, path: Path_) -> str | None:
        """The non-empty string ``data[key]``; None (reported unless absent) otherwise."""
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            self.error((*path, key), f"must be a non-empty string, got {_show(value)}")
            return None
        return value

    def name(self, data: Mapping[str, Any], key: str, path: Path_) -> str | None:
        """A rule id or stage name: a string of printable characters, not too long."""
        value = self.string(data, key, path)
        if value is None:
            return None
        problem = _name_problem(value)
        if problem is not None:
            self.error((*path, key), problem)
            return None
        return value

    def boolean(self, data: Mapping[str, Any], key: str, path: Path_) -> bool | None:
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, bool):
            self.error((*path, key), f"must be true or false, got {_show(value)}")
            return None
        return value

    def count(self, value: Any, path: Path_, minimum: int, maximum: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.error(
                path, f"must be an integer from {minimum} to {maximum:,}, got {_show(value)}"
            )
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
                        f"unknown window type {_show(name)} (first_and_last, previous_and_current)",
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
                    f"must be first_and_last or previous_and_current, got {_show(name)}",
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
        self.error(path, f"must be an expression (a string) or a list of them, got {_show(value)}")
        return []

    def _not_expression(self, value: Any, path: Path_) -> list[_Expr]:
        self.error(path, f"must be an expression (a string), got {_show(value)}")
        return []

    # -- stages ---------------------------------------------------------------------------

    def stages(self, value: Any, path: Path_, names: list[str]) -> list[_StageModel]:
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

    def stage(self, data: Any, path: Path_, first: bool, names: list[str]) -> _StageModel | None:
        if not isinstance(data, Mapping):
            self.error(path, f"a stage must be a mapping, got {_show(data)}")
            return None
        self.unknown_keys(data, STAGE_FIELDS, path)
        name: str | None = None
        group: list[_StageModel] | None = None
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
            self.error((*path, "name"), f"duplicate stage name {_show(name)}")
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
        return _StageModel(
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
                    f"must be one of {', '.join(CONTIGUITIES)}, got {_show(value)}",
                )
            else:
                given.append((value, (*path, "contiguity")))
        for name in CONTIGUITIES:
            if name in data:
                if data[name] is not True:
                    self.error(
                        (*path, name),
                        f"write {name}: true (or contiguity: {name}), got {_show(data[name])}",
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
                        (*cpath, i, kind), f"must be an expression (a string), got {_show(text)}"
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
                self.error(qpath, f"write one_or_more: true, got {_show(value)}")
                return None, qpath
            return ("times_or_more", 1), qpath
        if key == "times_or_more":
            n = self.count(value, qpath, 1, MAX_QUANTIFIER_COUNT)
            return (None if n is None else ("times_or_more", n)), qpath
        if isinstance(value, list):
            if len(value) != 2:
                self.error(qpath, f"must be a count or [low, high], got {_show(value)}")
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


def _name_problem(value: Any) -> str | None:
    """What is wrong with a rule id or stage name, if anything."""
    if not isinstance(value, str) or not value.strip():
        return f"must be a non-empty string, got {_show(value)}"
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


def _check_rule(
    checker: _Checker, data: Any, path: Path_, seen_ids: dict[str, Path_]
) -> _RuleModel | None:
    if not isinstance(data, Mapping):
        checker.error((), f"a rule must be a mapping, got {_show(data)}")
        return None
    checker.unknown_keys(data, RULE_FIELDS, ())
    rule_id = checker.name(data, "id", ())
    if "id" not in data:
        checker.error((), "a rule needs an id")
    if rule_id is not None:
        if rule_id in seen_ids:
            checker.error(("id",), f"duplicate rule id {_show(rule_id)}")
        seen_ids[rule_id] = path
    description = None
    if "description" in data:
        description = data["description"]
        if not isinstance(description, str):
            checker.error(("description",), f"must be a string, got {_show(description)}")
            description = None
    version = None
    if "version" in data:
        version = checker.count(data["version"], ("version",), 0, MAX_VERSION)
    enabled = checker.boolean(data, "enabled", ())
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
    return _RuleModel(
        path=path,
        id=checker.rule_id if rule_id is None else rule_id,
        description=description,
        version=version,
        enabled=True if enabled is None else enabled,
        key=key or "",
        windows=windows,
        skip=skip,
        skip_path=("skip",),
        stages=stages,
    )


def _check_skip(checker: _Checker, data: Mapping[str, Any], names: Sequence[str]) -> SkipStrategy:
    if "skip" not in data:
        return SkipStrategy.no_skip()
    value = data["skip"]
    if isinstance(value, str) and value in _SKIPS_SIMPLE:
        return _SKIPS_SIMPLE[value]()
    if isinstance(value, Mapping) and len(value) == 1:
        kind, stage = next(iter(value.items()))
        if kind in _SKIPS_NAMED:
            if not isinstance(stage, str) or stage not in names:
                checker.error(("skip", kind), f"{kind} names an unknown stage {_show(stage)}")
                return SkipStrategy.no_skip()
            return _SKIPS_NAMED[kind](stage)
    checker.error(
        ("skip",),
        "must be no_skip, skip_to_next, skip_past_last_event, {skip_to_first: STAGE} or "
        f"{{skip_to_last: STAGE}}, got {_show(value)}",
    )
    return SkipStrategy.no_skip()


# -- building ---------------------------------------------------------------------------------


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


def _default_compiler() -> ExpressionCompiler:
    try:
        module = importlib.import_module("fraudcep.expressions")
    except ImportError as exc:  # pragma: no cover - the module ships with fraudcep
        raise ConfigurationError(f"the expression language is not available: {exc}") from None
    compiler: ExpressionCompiler = module.compile_expression
    return compiler


class _Builder:
    def __init__(self, checker: _Checker, compiler: ExpressionCompiler) -> None:
        self.checker = checker
        self.compiler = compiler

    def compile_all(self, stages: Sequence[_StageModel], names: tuple[str, ...]) -> None:
        for stage in stages:
            exprs = [*stage.conditions, *([stage.until] if stage.until else [])]
            for expr in exprs:
                line, column = self.checker.text_position(expr.path)
                try:
                    expr.fn = self.compiler(
                        expr.text,
                        stages=names,
                        rule_id=self.checker.rule_id,
                        field=_render_path(expr.path),
                        line=line,
                        column=column,
                    )
                except (FraudcepError, ValueError, TypeError, SyntaxError, RecursionError) as exc:
                    self.checker.failed = True
                    self.checker.problems.append(
                        Problem(
                            self.checker.source,
                            self.checker.rule_id,
                            _render_path(expr.path),
                            _int_attr(exc, "line", line),
                            _int_attr(exc, "column", column),
                            _message(exc),
                        )
                    )
            if stage.group is not None:
                self.compile_all(stage.group, names)

    def call(self, path: Path_, fn: Callable[[], Pattern]) -> Pattern:
        try:
            return fn()
        except (FraudcepError, ValueError, TypeError) as exc:
            self.checker.error(path, _message(exc), at_key=True)
            raise _Stop from None

    def sequence(self, stages: Sequence[_StageModel], skip: SkipStrategy | None) -> Pattern:
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

    def configure(self, pattern: Pattern, stage: _StageModel) -> Pattern:
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


def _build_rule(model: _RuleModel, checker: _Checker, compiler: ExpressionCompiler) -> Rule | None:
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
    except _Stop:
        return None
    key: str | Callable[[Any], Hashable] = (
        model.key if "." not in model.key else _key_function(model.key)
    )
    try:
        return Rule(model.id, pattern, key=key)
    except (FraudcepError, ValueError) as exc:
        message = str(exc).removeprefix(f"rule {model.id!r}: ")
        checker.error(("pattern",), message, at_key=True)
        return None
    except (RecursionError, SyntaxError, MemoryError) as exc:
        # the limits above keep rules far from these; should one get here, it is refused
        what = type(exc).__name__
        checker.error(("pattern",), f"the pattern is too complex to compile ({what})", True)
        return None


def _names(stages: Sequence[_StageModel]) -> list[str]:
    out: list[str] = []
    for stage in stages:
        if stage.group is not None:
            out.extend(_names(stage.group))
        elif stage.name is not None:
            out.append(stage.name)
    return out


# -- loading --------------------------------------------------------------------------------


def load_rules(
    text: str,
    *,
    source: str = "<string>",
    compiler: ExpressionCompiler | None = None,
    rule_mapping: bool = False,
) -> list[RuleDefinition]:
    """Parse, check and build every rule of a YAML or JSON rule file.

    The format is JSON when ``source`` ends in ``.json`` (or, for other names, when the text
    starts with ``{`` or ``[``), YAML otherwise. Every problem of the file is collected and
    raised together as one :class:`RuleSpecError` (reading stops after
    :data:`MAX_PROBLEMS`). ``compiler`` compiles the expressions (default:
    :func:`fraudcep.expressions.compile_expression`). With ``rule_mapping``, a mapping
    without a ``rules`` field is read as one rule (the form of a rules-topic record).

    Nothing in ``text`` can make this raise anything but :class:`RuleSpecError`, recurse
    without bound or take time or memory beyond the limits in ``docs/rules.md``.
    """
    problems: list[Problem] = []
    try:
        definitions = _load(text, source, compiler, rule_mapping, problems)
    except _TooManyProblems:
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
    doc = _parse(text, source, problems)
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
                    _add_problem(problems, Problem(source, None, key, line, column, message))
            data = data.get("rules")
            prefix = ("rules",)
        if not isinstance(data, list) or not data:
            line, column = doc.values.get(prefix, (1, 1))
            message = "a rule file is a non-empty list of rules"
            _add_problem(problems, Problem(source, None, "", line, column, message))
            return []
        if len(data) > MAX_RULES:
            line, column = doc.values.get((*prefix, MAX_RULES), (1, 1))
            message = f"more than {MAX_RULES:,} rules in one file"
            _add_problem(problems, Problem(source, None, "", line, column, message))
            return []
        items = [((*prefix, index), item) for index, item in enumerate(data)]
    resolved = compiler
    definitions: list[RuleDefinition] = []
    seen: dict[str, Path_] = {}
    budget = _Budget()
    checked: list[tuple[_Checker, _RuleModel, Any]] = []
    for index, (path, item) in enumerate(items):  # every check first: they are cheap
        rule_id = item.get("id") if isinstance(item, Mapping) else None
        label = rule_id if isinstance(rule_id, str) and _name_problem(rule_id) is None else ""
        label = label or f"#{index + 1}"
        checker = _Checker(doc, source, problems, path, label, budget)
        model = _check_rule(checker, item, path, seen)
        if model is not None:
            checked.append((checker, model, item))
    for checker, model, item in checked:
        if resolved is None:
            resolved = _default_compiler()
        rule = _build_rule(model, checker, resolved)
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


def load_rule_file(
    path: str | Path, *, compiler: ExpressionCompiler | None = None
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
    return load_rules(text, source=source, compiler=compiler)


def _definition_spec(model: _RuleModel, rule: Rule, raw: Any) -> Spec:
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


# -- pattern -> spec --------------------------------------------------------------------------


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
        out["contiguity"] = _CONTIGUITY_NAMES[q.consuming]
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
    of :func:`fraudcep.expressions.compile_expression` do); otherwise
    :class:`~fraudcep.ConfigurationError` is raised. The skip strategy is not part of a stage
    list: see :func:`rule_to_spec`.
    """
    return [_stage_spec(stage, i == 0) for i, stage in enumerate(pattern.stages)]


def _skip_spec(skip: SkipStrategy) -> Any:
    if skip.kind in (SkipKind.SKIP_TO_FIRST, SkipKind.SKIP_TO_LAST):
        return {skip.kind.value: skip.stage}
    return skip.kind.value


def rule_to_spec(rule: Rule) -> Spec:
    """``rule`` in the rule format (normal form): id, key, within, skip and pattern.

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
    spec: Spec = {"id": rule.id, "key": key}
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


def apply_definitions(engine: Engine, definitions: Iterable[RuleDefinition]) -> list[str]:
    """Bring ``engine``'s rules in line with ``definitions`` (a whole rule file, or the latest
    state of a rules topic) and return what changed, one line per rule.

    A new id is added (with its ``version``, 1 when it has none); a known id is replaced when
    its ``version`` is higher than the running one — or, for a definition without a version,
    when its spec differs from the running rule's (the engine then counts the version up); an
    ``enabled`` flag that changed disables or enables the rule; an id the definitions no
    longer contain is removed. A lower version is refused (``ConfigurationError``) before
    anything changes, so an old rule file cannot silently roll rules back.
    """
    wanted = {d.id: d for d in definitions}
    current = engine.rule_versions()
    for rule_id, d in wanted.items():
        if rule_id in current and d.version is not None and d.version < current[rule_id]:
            raise ConfigurationError(
                f"rule {rule_id!r}: version {d.version} is older than the running "
                f"version {current[rule_id]}"
            )
    running = {r.id: r for r in engine.rules}
    changes: list[str] = []
    for rule_id in [i for i in current if i not in wanted]:
        engine.remove_rule(rule_id)
        changes.append(f"removed {rule_id}")
    for rule_id, d in wanted.items():
        if rule_id not in current:
            version = engine.add_rule(d.rule, version=d.version or 1)
            changes.append(f"added {rule_id} v{version}")
        elif _newer(d, current[rule_id], running.get(rule_id)):
            version = engine.replace_rule(d.rule, version=d.version)
            changes.append(f"replaced {rule_id} v{current[rule_id]} -> v{version}")
        is_enabled = rule_id in {r.id for r in engine.rules}
        if d.enabled and not is_enabled:
            engine.enable_rule(rule_id)
            changes.append(f"enabled {rule_id}")
        elif not d.enabled and is_enabled:
            engine.disable_rule(rule_id)
            changes.append(f"disabled {rule_id}")
    return changes


def _newer(definition: RuleDefinition, version: int, rule: Rule | None) -> bool:
    if definition.version is not None:
        return definition.version > version
    if rule is None:
        return True  # disabled: compare nothing, replace
    try:
        return rule_to_spec(rule) != definition.spec
    except ConfigurationError:
        return True  # a rule built in Python cannot be compared: take the definition

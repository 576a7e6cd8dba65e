"""Reading a YAML or JSON rule file into plain data with the position of every value and key,
without recursion and without expanding anything (aliases, anchors and tags are refused)."""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
import yaml.constructor
import yaml.nodes
import yaml.reader
import yaml.resolver

from fraudcep.rules.definitions import Path_, Position
from fraudcep.rules.limits import MAX_DEPTH, MAX_INT_CHARS, MAX_NODES, MAX_TEXT_SIZE
from fraudcep.rules.problems import Problem, TooManyProblems, add_problem, show


class Document:
    """Plain data of a parsed file plus the position of every value and mapping key."""

    def __init__(self) -> None:
        self.values: dict[Path_, Position] = {}
        self.keys: dict[Path_, Position] = {}
        self.text_starts: dict[Path_, Position] = {}
        # values refused while reading (already reported): checks of them stay silent
        self.refused: set[Path_] = set()
        self.data: Any = None


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

    def __init__(self, text: str, doc: Document, problems: list[Problem], source: str) -> None:
        self.text = text
        self.doc = doc
        self.problems = problems
        self.source = source
        self.resolver: Any = yaml.resolver.Resolver()
        self.constructor = yaml.constructor.SafeConstructor()
        self.lines: list[str] | None = None

    def problem(self, mark: Any, message: str) -> None:
        line, column = _mark(mark) if mark is not None else (1, 1)
        add_problem(self.problems, Problem(self.source, None, "", line, column, message))

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
                    shown = show(tag.replace("tag:yaml.org,2002:", "!!", 1), 80)
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
                self.problem(event.start_mark, f"duplicate key {show(key)}")
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

    def __init__(self, text: str, doc: Document, problems: list[Problem], source: str) -> None:
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
            add_problem(self.problems, problem)
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
            add_problem(
                self.problems,
                Problem(self.source, None, "", line, column, f"duplicate key {show(key)}"),
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


def parse_document(text: str, source: str, problems: list[Problem]) -> Document | None:
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
    doc = Document()
    found: list[Problem] = []
    reader = _JsonReader(text, doc, found, source)
    try:
        ok = reader.read()
    except TooManyProblems:
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
    except TooManyProblems:
        problems.extend(as_yaml)
        raise
    problems.extend(found if yaml_syntax else as_yaml)
    return yaml_doc


def _parse_yaml(text: str, source: str, problems: list[Problem]) -> tuple[Document | None, bool]:
    """The document (None when it cannot be read) and whether YAML syntax was the reason."""
    doc = Document()
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
        problems.append(Problem(source, None, "", 1, 1, f"bad YAML: {show(str(exc), 300)}"))
        return None, True
    return (doc if ok else None), False

"""Named lists: sets of strings (card ids, merchants, countries, BIN prefixes, e-mail domains)
that rule expressions test membership in, and that change without a rule change.

A :class:`Lists` registry holds :class:`NamedList` values, each a name, a version and a
``frozenset`` of entries. Expressions compiled with the registry
(``compile_expression(..., lists=registry)``, ``load_rules(..., lists=registry)``) read it at
evaluation time: ``card_id in lists.blocked_cards`` is one dictionary lookup and one set lookup,
whatever the size of the list, and :meth:`Lists.replace` changes the decision of the next
evaluation with no recompilation. ``prefix_in(card_bin, lists.risky_bins)`` is true when some
prefix of the value is an entry: one set lookup per distinct entry length.

Entries are strings, matched exactly (after stripping blanks around them in files); a value
tested against a list matches when it is a string equal to an entry, or an integer (not a
bool) whose decimal text is one. Anything else, ``None`` included, is in no list.

Files (:meth:`Lists.load_file`, :meth:`Lists.from_path`; :func:`parse_list_file` for a file's
bytes got elsewhere, such as an object store), by extension; a list is named after its file's
stem:

* ``.json``: a JSON array of strings (or integers);
* ``.jsonl``: one JSON string (or integer) per line, blank lines skipped;
* ``.csv``: the first column of each row; rows that are blank or whose first cell starts with
  ``#`` are skipped;
* any other extension (``.txt``, ``.list``): one entry per line; blank lines and lines starting
  with ``#`` are skipped.

docs/rules.md, "Named lists", describes them for rule authors.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

from fraudcep.errors import ConfigurationError
from fraudcep.rules.expressions import check_identifier, email_domain

__all__ = [
    "LIST_EXTENSIONS",
    "ListError",
    "Lists",
    "NamedList",
    "email_domain",
    "list_text",
    "parse_list_file",
]

LIST_EXTENSIONS = (".txt", ".list", ".csv", ".json", ".jsonl")
"""The file extensions :meth:`Lists.load_dir` reads."""


class ListError(ConfigurationError):
    """A list that cannot be made: a bad name, a bad entry, an unreadable file."""


def list_text(value: Any) -> str | None:
    """The text ``value`` is looked up as in a list: itself for a string, the decimal text of an
    integer that is not a bool; None (in no list) for anything else."""
    if value.__class__ is str:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _entries(values: Iterable[Any], name: str) -> frozenset[str]:
    out: set[str] = set()
    for value in values:
        text = list_text(value)
        if text is None:
            raise ListError(
                f"list {name!r}: an entry must be a string or an integer, "
                f"not {type(value).__name__}"
            )
        out.add(text)
    return frozenset(out)


@attrs.frozen
class NamedList:
    """One version of a named list."""

    name: str
    version: int
    entries: frozenset[str] = attrs.field(repr=lambda e: f"<{len(e)} entries>")
    prefix_lengths: tuple[int, ...] = attrs.field(init=False, repr=False, eq=False)
    """The distinct lengths of the entries, shortest first: what ``prefix_in`` tries."""

    @prefix_lengths.default
    def _lengths(self) -> tuple[int, ...]:
        return tuple(sorted({len(e) for e in self.entries}))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, value: object) -> bool:
        text = list_text(value)
        return text is not None and text in self.entries

    def has_prefix_of(self, value: object) -> bool:
        """True when some prefix of ``value`` (its whole text included) is an entry."""
        text = list_text(value)
        if text is None:
            return False
        entries = self.entries
        n = len(text)
        for length in self.prefix_lengths:
            if length > n:
                return False
            if text[:length] in entries:
                return True
        return False


class Lists:
    """A registry of named lists, read by the expressions compiled with it.

    ``Lists({"blocked_cards": ["c1", "c2"]})`` makes each list at version 1;
    :meth:`replace` puts a new version in place (the version goes up by one, or to the one
    given). Replacing is atomic: an evaluation sees the old entries or the new ones. Lists are
    never removed (a rule compiled against a list can always evaluate); replace a list by an
    empty one instead.
    """

    def __init__(self, lists: Mapping[str, Iterable[Any]] | None = None) -> None:
        self._lists: dict[str, NamedList] = {}
        self._lock = threading.Lock()
        for name, entries in (lists or {}).items():
            self.replace(name, entries)

    # -- reading

    def __contains__(self, name: object) -> bool:
        return name in self._lists

    def __iter__(self) -> Iterator[NamedList]:
        return iter(list(self._lists.values()))

    def __len__(self) -> int:
        return len(self._lists)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n.name}@{n.version}:{len(n)}" for n in self._lists.values())
        return f"Lists({inner})"

    def names(self) -> tuple[str, ...]:
        """The names of the lists, sorted."""
        return tuple(sorted(self._lists))

    def get(self, name: str) -> NamedList:
        """The current version of list ``name``; KeyError if there is none."""
        return self._lists[name]

    def version(self, name: str) -> int:
        return self._lists[name].version

    def versions(self, names: Iterable[str] | None = None) -> dict[str, int]:
        """The current version of each list of ``names`` (default: all) that exists."""
        lists = self._lists
        if names is None:
            return {name: lists[name].version for name in sorted(lists)}
        return {name: lists[name].version for name in names if name in lists}

    def contains(self, name: str, value: Any) -> bool:
        """``value in lists.name``: False for a value that is not a string or an integer, and
        for a list that does not exist."""
        entry = self._lists.get(name)
        if entry is None:
            return False
        if value.__class__ is str:
            return value in entry.entries
        return value in entry

    def prefix_in(self, name: str, value: Any) -> bool:
        """``prefix_in(value, lists.name)``: some prefix of ``value`` is an entry."""
        entry = self._lists.get(name)
        return entry is not None and entry.has_prefix_of(value)

    # -- changing

    def replace(self, name: str, entries: Iterable[Any], *, version: int | None = None) -> int:
        """Make ``entries`` the content of list ``name`` (created if new); returns its version:
        ``version`` if given (it must be higher than the current one), else the current one
        plus one (1 for a new list)."""
        problem = check_identifier(name)
        if problem is not None:
            raise ListError(f"bad list name: {problem}")
        values = _entries(entries, name)
        with self._lock:
            current = self._lists.get(name)
            old = current.version if current is not None else 0
            if version is None:
                new = old + 1
            elif isinstance(version, bool) or not isinstance(version, int) or version <= old:
                raise ListError(f"list {name!r}: version {version!r} must be an integer > {old}")
            else:
                new = version
            self._lists[name] = NamedList(name, new, values)
        return new

    def load_file(self, path: str | Path, *, name: str | None = None) -> NamedList:
        """Read list file ``path`` (its format by extension, see the module) into list ``name``
        (default: the file's stem); returns the new version of the list."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ListError(f"{p}: cannot read: {exc.strerror or exc}") from None
        stem, entries = parse_list_file(data, p.name, source=str(p))
        list_name = stem if name is None else name
        self.replace(list_name, entries)
        return self._lists[list_name]

    def load_dir(self, path: str | Path) -> list[NamedList]:
        """Read every list file of directory ``path`` (extensions :data:`LIST_EXTENSIONS`),
        in name order; two files with the same stem are an error."""
        files = sorted(
            f for f in Path(path).iterdir() if f.is_file() and f.suffix.lower() in LIST_EXTENSIONS
        )
        stems: dict[str, Path] = {}
        for f in files:
            if f.stem in stems:
                raise ListError(f"two files for list {f.stem!r}: {stems[f.stem]} and {f}")
            stems[f.stem] = f
        return [self.load_file(f) for f in files]

    @classmethod
    def from_path(cls, *paths: str | Path) -> Lists:
        """A registry of the lists of ``paths``: list files, or directories of them."""
        lists = cls()
        for path in paths:
            if Path(path).is_dir():
                lists.load_dir(path)
            else:
                lists.load_file(path)
        return lists


def parse_list_file(
    data: bytes, file_name: str, *, source: str | None = None
) -> tuple[str, list[Any]]:
    """The list name (the stem of ``file_name``, a file or object name whose ``/``-separated
    last part counts) and entries of a list file's bytes, read as its extension says (see the
    module): one parser for the lists of files and those of other stores. UTF-8, a byte
    order mark skipped; errors name ``source`` (default ``file_name``). The name is not
    checked here: :meth:`Lists.replace` does it."""
    where = file_name if source is None else source
    p = PurePosixPath(file_name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ListError(f"{where}: not UTF-8 text ({exc.reason})") from None
    return p.stem, read_entries(text, p.suffix.lower(), where)


def read_entries(text: str, extension: str, source: str = "<list>") -> list[Any]:
    """The entries of a list file's ``text``, read as its ``extension`` says (see the module)."""
    if extension == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ListError(f"{source}:{exc.lineno}:{exc.colno}: {exc.msg}") from None
        if not isinstance(data, list):
            raise ListError(f"{source}: a .json list file is a JSON array of strings")
        return [_json_entry(v, source, 1) for v in data]
    if extension == ".jsonl":
        out = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ListError(f"{source}:{lineno}:{exc.colno}: {exc.msg}") from None
            out.append(_json_entry(value, source, lineno))
        return out
    if extension == ".csv":
        out = []
        for row in csv.reader(io.StringIO(text)):
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            out.append(row[0].strip())
        return out
    entries = (line.strip() for line in text.splitlines())
    return [e for e in entries if e and not e.startswith("#")]


def _json_entry(value: Any, source: str, lineno: int) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ListError(f"{source}:{lineno}: a list entry is a string or an integer, not {value!r}")

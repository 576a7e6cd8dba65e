"""Lists-topic records: one named list per record, keyed by its name, overriding the list files.

A runtime that follows a compacted lists topic (the Kafka runner, the PyFlink job) reads it
the same way. A record's key is a list name; its value is the list's whole content, either a
JSON array of strings (or integers) — a value whose first non-blank character is ``[`` — or
UTF-8 text with one entry per line (blanks around an entry stripped; blank lines and lines
starting with ``#`` skipped). A record replaces the list (:meth:`fraudcep.rules.Lists.replace`:
its version goes up by one); an empty array empties it. A tombstone (null or empty value)
brings the list back to its list file's entries, or empties it when no file gave it (lists are
never removed: a rule naming one must always evaluate). The latest record per key wins, which
is what compaction keeps, so a restart that re-reads the topic arrives at the same entries
(not necessarily at the same version numbers: a version counts the changes a runtime has taken
since it started).

:class:`ListSet` is that merge; what a runtime does with a record it refuses
(:class:`ListRecordError`: no key, a bad name, not UTF-8, not a JSON array of strings, beyond
the limits below) is the runtime's: log it, count it, keep the list as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

from fraudcep.rules import ListError, Lists
from fraudcep.rules.lists import read_entries
from fraudcep.runtime.rule_records import short_repr

__all__ = [
    "MAX_ENTRIES",
    "MAX_ENTRY_LENGTH",
    "MAX_LIST_RECORD_BYTES",
    "ListRecordError",
    "ListSet",
    "parse_list_record",
]

MAX_LIST_RECORD_BYTES = 8 * 1024 * 1024
"""The largest lists-topic value taken (8 MiB; the broker's own limit, ``max.message.bytes``,
is usually lower: 1 MiB by default)."""
MAX_ENTRIES = 1_000_000
"""The most entries one list record may hold."""
MAX_ENTRY_LENGTH = 256
"""The longest entry (in characters) a list record may hold."""


class ListRecordError(ValueError):
    """A lists-topic record that cannot be taken."""


def parse_list_record(key: bytes | None, value: bytes, *, source: str) -> tuple[str, list[str]]:
    """The list name and entries of a lists-topic record (not a tombstone); errors name
    ``source``."""
    if key is None:
        raise ListRecordError(f"{source}: a lists record needs the list name as its key")
    if len(value) > MAX_LIST_RECORD_BYTES:
        raise ListRecordError(
            f"{source}: a lists record is at most {MAX_LIST_RECORD_BYTES:,} bytes, "
            f"got {len(value):,}"
        )
    try:
        name = key.decode("utf-8")
        text = value.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ListRecordError(f"{source}: key and value must be UTF-8") from None
    try:
        probe = Lists()
        probe.replace(name, ())  # the name's checks, the same as the registry's
        raw = read_entries(text, ".json" if text.lstrip().startswith("[") else ".txt", source)
    except ListError as exc:
        text = str(exc)
        raise ListRecordError(text if text.startswith(source) else f"{source}: {text}") from None
    if len(raw) > MAX_ENTRIES:
        raise ListRecordError(
            f"{source}: list {short_repr(name)}: more than {MAX_ENTRIES:,} entries ({len(raw):,})"
        )
    entries = [e if isinstance(e, str) else str(e) for e in raw]
    for entry in entries:
        if len(entry) > MAX_ENTRY_LENGTH:
            raise ListRecordError(
                f"{source}: list {short_repr(name)}: an entry is at most {MAX_ENTRY_LENGTH} "
                f"characters, got {short_repr(entry, 60)} ({len(entry):,})"
            )
        if not entry:
            raise ListRecordError(f"{source}: list {short_repr(name)}: an empty entry")
    return name, entries


class ListSet:
    """A runtime's lists: the list files' entries, overridden by lists-topic records per name,
    in the registry the rules read (:attr:`lists`)."""

    def __init__(self, lists: Lists) -> None:
        self.lists = lists
        self.file_lists = {named.name: named.entries for named in lists}

    def apply_record(self, key: bytes | None, value: bytes | None, *, source: str) -> bool:
        """Take one lists-topic record; True when it changed a list's entries (a record
        repeating the entries a list has changes nothing, not even its version)."""
        if not value:  # null or zero-length: a tombstone
            if key is None:
                raise ListRecordError(f"{source}: a tombstone without a key")
            name = key.decode("utf-8", errors="replace")
            if name not in self.lists:
                return False
            entries: Sequence[str] = sorted(self.file_lists.get(name, frozenset()))
        else:
            name, entries = parse_list_record(key, value, source=source)
        if name in self.lists and self.lists.get(name).entries == frozenset(entries):
            return False
        try:
            self.lists.replace(name, entries)
        except ListError as exc:
            raise ListRecordError(f"{source}: {exc}") from None
        return True

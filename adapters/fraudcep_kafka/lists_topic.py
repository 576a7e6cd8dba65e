"""Following the lists topic: the ``--lists`` files, overridden list by list by a compacted
topic.

A record's key is a list name; its value is the list's whole content, either a JSON array of
strings (or integers) — a value whose first non-blank character is ``[`` — or UTF-8 text with
one entry per line (blanks around an entry stripped; blank lines and lines starting with ``#``
skipped). A record replaces the list (:meth:`fraudcep.rules.Lists.replace`: its version goes up
by one) and the next payments are judged against the new entries; an empty array empties it.
A tombstone (null or empty value) brings the list back to its ``--lists`` file's entries, or
empties it when no file gave it (lists are never removed: a rule naming one must always
evaluate). The latest record per key wins, which is what compaction keeps, so a restart that
re-reads the topic arrives at the same entries (not necessarily at the same version numbers:
a version counts the changes this runner has taken since it started).

A record that cannot be taken (no key, a bad name, not UTF-8, not a JSON array of strings,
beyond the limits below) is logged with its key, partition, offset and the reason, counted
(``fraudcep_list_records_rejected_total``), and the list stays as it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fraudcep.rules import ListError, Lists
from fraudcep.rules.lists import read_entries
from fraudcep.runtime.rule_records import short_repr
from fraudcep_kafka.logs import fields
from fraudcep_kafka.rules_topic import RulesTopicReader

__all__ = [
    "MAX_ENTRIES",
    "MAX_ENTRY_LENGTH",
    "MAX_LIST_RECORD_BYTES",
    "ListRecordError",
    "ListSet",
    "ListsTopicReader",
    "parse_list_record",
    "publish_list",
]

log = logging.getLogger("fraudcep.lists")

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
    """The runner's lists: the ``--lists`` files' entries, overridden by lists-topic records
    per name, in the registry the rules read (:attr:`lists`)."""

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


class ListsTopicReader(RulesTopicReader):
    """Follows the lists topic with its own consumer (assigned partitions, no group), like
    :class:`~fraudcep_kafka.rules_topic.RulesTopicReader` the rules topic."""

    what = "lists"
    log = log

    def __init__(
        self, consumer_factory: Any, topic: str, list_set: ListSet, *, on_rejected: Any = None
    ) -> None:
        super().__init__(consumer_factory, topic, None, on_rejected=on_rejected)
        self.list_set = list_set

    def _apply(self, msg: Any, source: str) -> bool:
        changed = self.list_set.apply_record(msg.key(), msg.value(), source=source)
        if changed:
            name = msg.key().decode("utf-8", errors="replace")
            named = self.list_set.lists.get(name)
            self.log.info(
                "list changed",
                extra=fields(list=name, version=named.version, entries=len(named), source=source),
            )
        return changed


def publish_list(
    bootstrap: str,
    topic: str,
    name: str,
    entries: Sequence[str] | None,
    *,
    client_config: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Write list ``name`` to the lists topic: its ``entries`` as a JSON array, or a
    tombstone for None (back to the ``--lists`` file's entries). Checks the record as a
    runner would first (``ListRecordError``); creates the topic (compacted, one partition)
    when it is missing. Raises ``RuntimeError`` when the broker did not take the record."""
    from fraudcep_kafka.topics import publish_compacted

    value = None
    if entries is not None:
        value = json.dumps(list(entries), separators=(",", ":"), ensure_ascii=False).encode()
        parse_list_record(name.encode(), value, source=f"list {name}")
    else:
        parse_list_record(name.encode(), b"[]", source=f"list {name}")
    publish_compacted(
        bootstrap,
        topic,
        [(name.encode(), value)],
        what="list",
        client_config=client_config,
        timeout_s=timeout_s,
    )

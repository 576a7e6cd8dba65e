"""Following the lists topic: the ``--lists`` files, overridden list by list by a compacted
topic.

What a record holds, its limits, tombstones and how records override the list files is the
runtime kit's (:mod:`fraudcep.runtime.list_records`, shared with the PyFlink job).

A record that cannot be taken is logged with its key, partition, offset and the reason,
counted (``fraudcep_list_records_rejected_total``), and the list stays as it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fraudcep.runtime.list_records import (
    MAX_ENTRIES,
    MAX_ENTRY_LENGTH,
    MAX_LIST_RECORD_BYTES,
    ListRecordError,
    ListSet,
    parse_list_record,
)
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

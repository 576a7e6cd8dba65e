"""Named lists kept in S3, followed by a warm Lambda without a redeploy.

``s3://BUCKET/PREFIX``: every object directly under the prefix whose name ends in one of
:data:`fraudcep.rules.lists.LIST_EXTENSIONS` is a list named after its file name without the
extension (``s3://fraud-config/lists/blocked_cards.txt`` is ``lists.blocked_cards``), in the
formats of a list directory (:func:`fraudcep.rules.lists.parse_list_file`: text lines, CSV,
JSON array, JSON Lines); other objects and "subdirectories" are ignored, as the directory
reader ignores them. Two objects for one name are an error.

:meth:`S3Lists.load` reads them all into a :class:`~fraudcep.rules.lists.Lists` registry
(each at version 1); anything it cannot read (S3 errors, a bad object) raises, so a detector
never starts without the lists its rules name. :meth:`S3Lists.refresh` then looks again at
most every ``refresh_s`` seconds: it lists the prefix (one paginated ListObjectsV2), reads
only the objects whose ETag changed, and replaces a list (:meth:`Lists.replace`, its version
up by one) when its entries changed; an object rewritten with the same entries changes
nothing, not even the version. What a refresh cannot take leaves the list as it was, as the
Kafka runner does with a bad lists-topic record: a bad object (not UTF-8, bad JSON, a bad
entry, too large, a second object for the name) is logged at error level once per ETag and
counted (:attr:`S3Lists.rejected`); S3 failures are logged and tried again at the next
refresh; a deleted object keeps its list's last entries (lists are never removed: a rule
naming one must always evaluate; write an empty object to empty a list). A container that
starts reads the objects as they are then, so versions count the changes one container has
seen, as they do in a Kafka runner: compare entries, not version numbers, across containers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any, Final

import attrs
from botocore.exceptions import BotoCoreError, ClientError

from fraudcep.rules.lists import LIST_EXTENSIONS, ListError, Lists, parse_list_file
from fraudcep_aws.s3_checkpoints import S3Url, parse_s3_url

__all__ = ["MAX_LIST_OBJECT_BYTES", "S3Lists", "open_s3_lists", "read_s3_lists"]

log = logging.getLogger(__name__)

MAX_LIST_OBJECT_BYTES: Final = 64 * 1024 * 1024
"""The largest list object read (64 MiB): a list is held in memory in every container."""


@attrs.frozen
class _Object:
    key: str
    etag: str
    size: int

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).stem


@attrs.define(eq=False)
class S3Lists:
    """The lists under :attr:`location`, in the registry :attr:`lists` (see the module)."""

    location: S3Url
    client: Any = attrs.field(repr=False)
    lists: Lists = attrs.field(factory=Lists)
    refresh_s: float = 60.0
    """A refresh lists the prefix at most this often (seconds); 0: at every call."""
    clock: Callable[[], float] = attrs.field(default=time.monotonic, repr=False)
    changes: int = attrs.field(default=0, init=False)
    """Lists replaced by refreshes so far."""
    rejected: int = attrs.field(default=0, init=False)
    """Objects (ETags) a refresh could not take so far."""
    _read: dict[str, str] = attrs.field(factory=dict, init=False, repr=False)
    """Object key -> the ETag last read (taken or rejected): not read again until it changes."""
    _checked_at: float | None = attrs.field(default=None, init=False, repr=False)
    _gone_logged: set[str] = attrs.field(factory=set, init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def load(self) -> Lists:
        """Read every list of the location; raises :class:`ListError` for anything that
        cannot be read (no list is then half taken)."""
        with self._lock:
            objects = self._listing()
            taken: list[tuple[_Object, list[Any]]] = []
            for obj in self._by_name(objects, strict=True).values():
                taken.append((obj, self._entries(obj)))
            for obj, entries in taken:
                self.lists.replace(obj.name, entries)
                self._read[obj.key] = obj.etag
            self._checked_at = self.clock()
        log.info(
            "lists loaded from %s: %s", self.location.describe(), self.lists.versions() or "none"
        )
        return self.lists

    def refresh(self, *, force: bool = False) -> list[str]:
        """Take the lists changed since the last look, if ``refresh_s`` has passed (or
        ``force``); returns the names of the lists replaced. Never raises: what cannot be
        taken is logged and the lists stay as they were (see the module)."""
        if not self._lock.acquire(blocking=False):
            return []  # another thread is looking right now
        try:
            now = self.clock()
            if (
                not force
                and self._checked_at is not None
                and now - self._checked_at < self.refresh_s
            ):
                return []
            self._checked_at = now
            try:
                objects = self._listing()
            except ListError as exc:
                log.warning("lists not refreshed (tried again at the next refresh): %s", exc)
                return []
            return self._take(objects)
        finally:
            self._lock.release()

    # -- reading --------------------------------------------------------------------------

    def _take(self, objects: list[_Object]) -> list[str]:
        changed: list[str] = []
        by_name = self._by_name(objects, strict=False)
        for obj in by_name.values():
            if self._read.get(obj.key) == obj.etag:
                continue
            try:
                entries = self._entries(obj)
            except _Unreadable as exc:  # S3 failed: tried again at the next refresh
                log.warning("list %s not refreshed: %s", obj.name, exc)
                continue
            except ListError as exc:
                self._reject(obj, str(exc))
                continue
            current = self.lists.get(obj.name) if obj.name in self.lists else None
            if current is not None and current.entries == frozenset(
                e if isinstance(e, str) else str(e) for e in entries
            ):
                self._read[obj.key] = obj.etag
                continue
            try:
                version = self.lists.replace(obj.name, entries)
            except ListError as exc:
                self._reject(obj, str(exc))
                continue
            self._read[obj.key] = obj.etag
            self._gone_logged.discard(obj.key)
            self.changes += 1
            changed.append(obj.name)
            log.info(
                "list %s changed: version %d, %d entries (%s, ETag %s)",
                obj.name,
                version,
                len(self.lists.get(obj.name)),
                self._url(obj.key),
                obj.etag,
            )
        present = {obj.key for obj in objects}
        for key in [k for k in self._read if k not in present]:
            del self._read[key]
            name = PurePosixPath(key).stem
            if name not in {o.name for o in by_name.values()} and key not in self._gone_logged:
                self._gone_logged.add(key)
                log.warning(
                    "list object %s is gone: list %s keeps its entries (lists are never "
                    "removed; write an empty object to empty it)",
                    self._url(key),
                    name,
                )
        return changed

    def _reject(self, obj: _Object, why: str) -> None:
        self._read[obj.key] = obj.etag  # the same bytes would fail the same way
        self.rejected += 1
        log.error("list object rejected, list %s stays as it was: %s", obj.name, why)

    def _by_name(self, objects: list[_Object], *, strict: bool) -> dict[str, _Object]:
        """The list objects by list name; two for one name are an error (raised, or logged
        once per pair of ETags with the name left out)."""
        by_name: dict[str, _Object] = {}
        twice: dict[str, list[_Object]] = {}
        for obj in objects:
            if obj.name in by_name:
                twice.setdefault(obj.name, [by_name[obj.name]]).append(obj)
            else:
                by_name[obj.name] = obj
        for name, objs in twice.items():
            why = f"two objects for list {name!r}: " + " and ".join(self._url(o.key) for o in objs)
            if strict:
                raise ListError(why)
            del by_name[name]
            if any(self._read.get(o.key) != o.etag for o in objs):
                for o in objs:
                    self._read[o.key] = o.etag
                self.rejected += 1
                log.error("list objects rejected, list %s stays as it was: %s", name, why)
        return by_name

    def _listing(self) -> list[_Object]:
        """The list objects directly under the prefix, by key."""
        prefix = f"{self.location.prefix}/" if self.location.prefix else ""
        out: list[_Object] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                for entry in page.get("Contents", ()):
                    key = str(entry["Key"])
                    if PurePosixPath(key).suffix.lower() in LIST_EXTENSIONS:
                        out.append(_Object(key, str(entry["ETag"]), int(entry["Size"])))
        except (ClientError, BotoCoreError) as exc:
            raise _Unreadable(f"{self.location.describe()}: cannot list the lists: {exc}") from None
        return sorted(out, key=lambda o: o.key)

    def _entries(self, obj: _Object) -> list[Any]:
        where = self._url(obj.key)
        if obj.size > MAX_LIST_OBJECT_BYTES:
            raise ListError(
                f"{where}: a list object is at most {MAX_LIST_OBJECT_BYTES:,} bytes, "
                f"got {obj.size:,}"
            )
        try:
            answer = self.client.get_object(
                Bucket=self.location.bucket, Key=obj.key, IfMatch=obj.etag
            )
            data = answer["Body"].read(MAX_LIST_OBJECT_BYTES + 1)
        except (ClientError, BotoCoreError) as exc:
            raise _Unreadable(f"{where}: cannot read: {exc}") from None
        if len(data) > MAX_LIST_OBJECT_BYTES:
            raise ListError(f"{where}: a list object is at most {MAX_LIST_OBJECT_BYTES:,} bytes")
        _name, entries = parse_list_file(data, obj.key, source=where)
        Lists({obj.name: entries})  # the name's and entries' checks, before anything changes
        return entries

    def _url(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{key}"


class _Unreadable(ListError):
    """S3 could not be asked (not the object's fault): a refresh tries again later."""


def open_s3_lists(
    url: str, *, client: Any = None, refresh_s: float = 60.0, lists: Lists | None = None
) -> S3Lists:
    """The lists at ``s3://BUCKET[/PREFIX][?endpoint_url=URL&region=R]``, loaded
    (:meth:`S3Lists.load`); ``client``: an S3 client to use instead of the URL's."""
    location = parse_s3_url(
        url, what="lists location", parameters=("endpoint_url", "region"), error=ListError
    )
    source = S3Lists(
        location,
        client if client is not None else location.client(),
        lists if lists is not None else Lists(),
        refresh_s=refresh_s,
    )
    source.load()
    return source


def read_s3_lists(url: str) -> Lists:
    """The lists at ``url`` as they are now, read once: the ``s3`` reader of the
    ``fraudcep.list_sources`` entry-point group, for ``fraudcep run --lists s3://...`` and
    ``fraudcep rules validate/test --lists s3://...`` (a runner follows changes through its
    lists topic, not S3). Raises :class:`ListError`."""
    return open_s3_lists(url).lists

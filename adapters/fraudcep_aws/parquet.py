"""The ``s3://bucket/prefix`` sink: alerts and payments as hive-partitioned Parquet datasets.

Layout (columns in :mod:`fraudcep_aws.parquet_schema`; the full story in ``docs/aws.md``)::

    <prefix>/alerts/dt=YYYY-MM-DD/hour=HH/<topic>-<partition>-<start>.parquet    by last_ts
    <prefix>/payments/dt=YYYY-MM-DD/hour=HH/<topic>-<partition>-<start>.parquet  by ts
    <prefix>/_intents/<topic>/<partition>.json    the partition's latest range and its files

Ranges. A partition's sink buffers rows from one checkpoint to the next and, in
:meth:`ParquetPartitionSink.checkpoint` (before the runtime saves the checkpoint and
commits), writes one file per dataset and event-time hour for the range from the checkpoint
its state started from to the checkpoint about to be saved. ``<start>`` is the id of the
start checkpoint (``<offset, 20 digits>-<12 hex digits>``,
:func:`~fraudcep.runtime.checkpoint.new_id`); a fresh partition, which has no checkpoint yet, starts
from :func:`fresh_start`,
``<offset, 20 digits>-fresh``: deterministic, so a retry finds the same name, never a
checkpoint id (``r`` and ``s`` are not hex digits), and it sorts by offset like the ids.
Checkpoint ids rather than offsets name ranges because two checkpoints may share an offset:
an idle partition's event time follows the wall clock, so a checkpoint with no new record
can still carry alerts. Such a zero-length range is an ordinary range.

Exactly once by construction. After a crash the runtime restores the checkpoint the
uncommitted range started from and replays, so the range is written again under the same
names and each file is replaced whole. The retry may end elsewhere and cover fewer hours,
so a file of the first attempt could outlive it: before uploading, the sink puts in the
partition's *intent* the range (its start and end checkpoint) and every key it is about to
write (plus those an earlier attempt from the same start listed), and after uploading
deletes the listed keys it did not write again. The intent is put at every checkpoint, even
for a range without rows, so that it always names the latest range: a range ``[A, B)`` is
followed by the range from ``B``.

The invariant this rests on: a partition has at most one uncommitted range, and it starts
at the last checkpoint the runtime committed (``docs/kafka.md``). A writer starting from
checkpoint ``S`` reads the intent at its first checkpoint and finds

- no intent: nothing written yet;
- a range from ``S``: an earlier attempt at its own range, not committed (``S`` is the last
  committed checkpoint): the listed files it does not write again are deleted;
- a range that ended at ``S``: the committed range before its own; its files stay;
- a range from a smaller offset: a committed range before its own (ranges since then were
  written without this sink, or the partition restarted without its checkpoint); its files
  stay;
- a range from a larger offset, or from another checkpoint at ``S``'s offset: the partition
  moved on past this writer (it lost the partition, or the group's offsets were moved
  back). Ids at one offset are not ordered, so a range from a same-offset checkpoint that
  neither is ``S`` nor ended at ``S`` may as well come after ``S``: refused, as are
  larger offsets.

Files are only ever deleted when they are named after the writer's own start, so a
committed range's files, the zero-length ones included, are never deleted or overwritten by
a later range. An intent of another consumer group is refused.

Zombies (a runner that lost the partition and has not noticed): Kafka fences them when they
commit, S3 does not. The intent is read at a sink's first checkpoint and then only replaced
with conditional puts (``If-Match`` / ``If-None-Match: *``), and after uploading a writer
checks that the intent is still its own; whoever sees another writer raises
:class:`~fraudcep.runtime.sink.SinkError`, and the runtime rewinds and writes the range again.

Memory: at most :data:`BATCH_ROWS` of the runtime's objects per file, then Arrow record
batches; every ``row_group_rows`` rows (default 131072) become a row group of an anonymous
local temporary file (``TMPDIR``), uploaded with one PutObject (``Content-MD5``) at the
checkpoint. zstd compression by default.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import json
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Final, TypeVar

import attrs
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from fraudcep.alert import Alert
from fraudcep.runtime.checkpoint import ID_PATTERN
from fraudcep.runtime.sink import SinkError, SourcePartition
from fraudcep_aws.parquet_schema import (
    DATASETS,
    HOUR_MS,
    SCHEMAS,
    alerts_batch,
    hour_path,
    payments_batch,
)
from fraudcep_aws.s3_checkpoints import MAX_DELETE, S3Url, content_md5, parse_s3_url, s3_error_code

__all__ = [
    "BATCH_ROWS",
    "COMPRESSIONS",
    "DEFAULT_ROW_GROUP_ROWS",
    "INTENTS",
    "MAX_ROW_GROUP_ROWS",
    "Intent",
    "ParquetPartitionSink",
    "ParquetSink",
    "file_name",
    "fresh_start",
    "open_parquet_sink",
]

DEFAULT_ROW_GROUP_ROWS: Final = 128 * 1024
MAX_ROW_GROUP_ROWS: Final = 16 * 1024 * 1024
BATCH_ROWS: Final = 4096
"""Rows kept as the runtime's objects before they become an Arrow record batch."""
COMPRESSIONS: Final = ("zstd", "snappy", "gzip", "none")
INTENTS: Final = "_intents"
"""Folder of the intent objects; readers skip names starting with ``_``."""
INTENT_FORMAT: Final = 2
FRESH: Final = "fresh"
"""What follows the offset in the start of a fresh partition's first range."""

_TOPIC: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_START: Final = re.compile(rf"(\d{{20}})-(?:[0-9a-f]{{12}}|{FRESH})")
"""A range's start: a checkpoint id (:data:`fraudcep.runtime.checkpoint.ID_PATTERN`) or a
:func:`fresh_start`."""
_MISSING: Final = frozenset({"NoSuchKey", "404", "NotFound"})
_CONFLICT: Final = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
_PARAMETERS: Final = ("data", "row_group_rows", "compression", "endpoint_url", "region")

T = TypeVar("T")


def file_name(topic: str, partition: int, start: str) -> str:
    """The name of the files of the range of ``topic[partition]`` that starts from ``start``
    (a checkpoint id, or :func:`fresh_start` of the offset a fresh partition starts at)."""
    return f"{topic}-{partition}-{start}.parquet"


def fresh_start(offset: int) -> str:
    """The start of a fresh partition's first range (no checkpoint yet) at ``offset``:
    ``<offset, 20 digits>-fresh``, never a checkpoint id, sorted by offset like them."""
    return f"{offset:020d}-{FRESH}"


def _start_offset(start: str) -> int:
    """The input offset of a range's start (a checkpoint id or a :func:`fresh_start`)."""
    m = _START.fullmatch(start)
    if m is None:
        raise ValueError(f"not a checkpoint id: {start!r}")
    return int(m.group(1))


# -- intents ----------------------------------------------------------------------------------


@attrs.frozen
class Intent:
    """The partition's latest range (from one checkpoint to the next) and the files its
    latest attempt wrote, or was about to write."""

    group: str
    topic: str
    partition: int
    start: str
    """The checkpoint id (or :func:`fresh_start`) the range starts from."""
    end: str
    """The checkpoint id the range ends at: the next range starts from it."""
    writer: str
    """A random id of the :class:`ParquetPartitionSink` that wrote it (for people)."""
    keys: tuple[str, ...]
    """Keys relative to the sink's prefix (``alerts/dt=.../hour=.../<file>``)."""

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"format": INTENT_FORMAT, **attrs.asdict(self, recurse=False), "keys": list(self.keys)},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, blob: bytes, *, source: str) -> Intent:
        try:
            data = json.loads(blob)
            if not isinstance(data, dict) or data.get("format") != INTENT_FORMAT:
                raise ValueError(
                    f"not an intent of format {INTENT_FORMAT} (one of an older fraudcep goes "
                    "once its range is committed: delete it while the partition is stopped)"
                )
            intent = cls(
                group=data["group"],
                topic=data["topic"],
                partition=data["partition"],
                start=data["start"],
                end=data["end"],
                writer=data["writer"],
                keys=tuple(data["keys"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SinkError(f"{source}: damaged intent: {exc}") from None
        strings = (intent.group, intent.topic, intent.start, intent.end, intent.writer)
        if type(intent.partition) is not int or not all(
            type(v) is str for v in (*strings, *intent.keys)
        ):
            raise SinkError(f"{source}: damaged intent: a field of the wrong type")
        if (
            not _START.fullmatch(intent.start)
            or not ID_PATTERN.fullmatch(intent.end)
            or intent.start == intent.end
            or _start_offset(intent.start) > _start_offset(intent.end)
        ):
            raise SinkError(
                f"{source}: damaged intent: {intent.start!r} to {intent.end!r} is not a range "
                "from one checkpoint to a later one"
            )
        return intent


# -- one file of a range ----------------------------------------------------------------------


@attrs.define(eq=False)
class _HourFile:
    """The rows of one dataset and hour in the open range, written as they come to a local
    Parquet file in row groups of ``row_group_rows`` (see the module docstring)."""

    dataset: str
    source: SourcePartition
    row_group_rows: int
    compression: str
    pending: list[Any] = attrs.Factory(list)
    """Payment records (offset, payment) or alerts not in :attr:`batches` yet."""
    batches: list[pa.RecordBatch] = attrs.Factory(list)
    batched: int = 0
    file: IO[bytes] | None = None
    writer: pq.ParquetWriter | None = None

    def batch(self) -> None:
        """Turn the pending rows into a record batch (and row groups, when there are enough)."""
        pending, self.pending = self.pending, []
        topic, partition = self.source.topic, self.source.partition
        try:
            if self.dataset == "payments":
                batch = payments_batch(pending, topic, partition)
            else:
                batch = alerts_batch(pending, topic, partition)
        except KeyError as exc:
            raise SinkError(
                f"payments of {topic}[{partition}]: a record without the field {exc} is not "
                "a decoded payment"
            ) from None
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise SinkError(
                f"{self.dataset} of {topic}[{partition}]: a value does not fit the dataset's "
                f"columns: {type(exc).__name__}: {exc}"
            ) from None
        self.batches.append(batch)
        self.batched += batch.num_rows
        while self.batched >= self.row_group_rows:
            self._write(self.row_group_rows)

    def _write(self, count: int) -> None:
        """The first ``count`` buffered rows as one row group of the local file."""
        schema = SCHEMAS[self.dataset]
        table = pa.Table.from_batches(self.batches, schema=schema)
        if self.writer is None:
            # kept open from row group to row group: no context manager fits
            self.file = tempfile.TemporaryFile(prefix="fraudcep-parquet-")  # noqa: SIM115
            self.writer = pq.ParquetWriter(
                self.file, schema, compression=self.compression, use_dictionary=True
            )
        self.writer.write_table(table.slice(0, count), row_group_size=count)
        rest = table.slice(count)
        self.batches, self.batched = rest.to_batches(), rest.num_rows

    def finish(self) -> IO[bytes]:
        """The complete Parquet file, positioned at its start."""
        if self.pending:
            self.batch()
        if self.batched:
            self._write(self.batched)
        assert self.writer is not None and self.file is not None, "a file has rows"
        self.writer.close()
        self.writer = None
        self.file.flush()
        self.file.seek(0)
        return self.file

    def discard(self) -> None:
        self.pending, self.batches, self.batched = [], [], 0
        if self.writer is not None:
            with contextlib.suppress(pa.ArrowException, OSError):  # the file goes anyway
                self.writer.close()
            self.writer = None
        if self.file is not None:
            self.file.close()
            self.file = None


# -- the sink ---------------------------------------------------------------------------------


@attrs.define(eq=False)
class ParquetPartitionSink:
    """One input partition's rows for the Parquet datasets (see the module docstring)."""

    sink: ParquetSink
    source: SourcePartition
    start: int
    """The first input offset of the open range: the last checkpoint's offset."""
    start_id: str
    """The checkpoint the open range starts from (:func:`fresh_start` before the first)."""
    writer: str = attrs.Factory(lambda: uuid.uuid4().hex)
    _files: dict[tuple[str, int], _HourFile] = attrs.Factory(dict)
    _seen: bool = False
    """Whether :attr:`_intent` and :attr:`_etag` are the intent as this sink left it."""
    _intent: Intent | None = None
    _etag: str | None = None
    _broken: str | None = None
    _next: int = -1
    """One past the offset of the last payment taken, -1 before the first."""

    # -- taking rows ------------------------------------------------------------------------

    def payments(self, records: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Payments with their input offsets; each goes to the hour of its ``ts``."""
        self._usable()
        if not records:
            return
        if records[0][0] < max(self.start, self._next):
            self._break(
                f"{self._name()}: payment at offset {records[0][0]}, before the range start "
                f"{self.start} or the last payment"
            )
            raise SinkError(self._broken)
        self._next = records[-1][0] + 1
        if "payments" not in self.sink.datasets:
            return
        hour, f = None, None
        try:
            for record in records:  # the hot loop: 50k records/s and more
                if record[1]["ts"] // HOUR_MS != hour:
                    hour = record[1]["ts"] // HOUR_MS
                    f = self._file("payments", hour)
                assert f is not None
                f.pending.append(record)
                if len(f.pending) >= BATCH_ROWS:
                    f.batch()
        except (KeyError, TypeError) as exc:
            self._break(
                f"{self._name()}: the record at offset {record[0]} is not a decoded payment "
                f"({type(exc).__name__}: {exc})"
            )
            raise SinkError(self._broken) from None
        except SinkError as exc:  # rows are lost: only a rewind and replay recovers them
            self._break(str(exc))
            raise

    def alerts(self, alerts: Sequence[Alert]) -> None:
        """Alerts; each goes to the hour of its ``last_ts``."""
        self._usable()
        if "alerts" not in self.sink.datasets:
            return
        try:
            for alert in alerts:
                f = self._file("alerts", alert.last_ts // HOUR_MS)
                f.pending.append(alert)
                if len(f.pending) >= BATCH_ROWS:
                    f.batch()
        except SinkError as exc:
            self._break(str(exc))
            raise

    def flush(self) -> None:
        """Nothing is written per commit: files are written per checkpoint."""
        self._usable()

    def checkpoint(self, offset: int, checkpoint_id: str) -> None:
        """Write the files of the range from :attr:`start_id` to ``checkpoint_id`` (input
        offsets ``[start, offset)``), which the next range starts from; :class:`SinkError`
        when that failed, after which the sink only closes (the runtime rewinds and
        replays)."""
        self._usable()
        if offset < max(self.start, self._next):
            raise SinkError(
                f"{self._name()}: checkpoint at offset {offset}, before the range start "
                f"{self.start} or the last payment taken ({self._next - 1})"
            )
        m = ID_PATTERN.fullmatch(checkpoint_id) if isinstance(checkpoint_id, str) else None
        if m is None or int(m.group(1)) != offset or checkpoint_id == self.start_id:
            raise SinkError(
                f"{self._name()}: {checkpoint_id!r} is not the id of a new checkpoint at offset "
                f"{offset} (the range starts from {self.start_id})"
            )
        try:
            self._write_range(checkpoint_id)
        except SinkError as exc:
            self._break(str(exc))
            raise
        except (pa.ArrowException, OSError, OverflowError) as exc:
            self._break(f"{self._name()}: writing the range from {self.start_id}: {exc}")
            raise SinkError(self._broken) from None
        self.start, self.start_id = offset, checkpoint_id

    def close(self) -> None:
        """Drop the buffered rows (the next owner replays them)."""
        self._discard()
        self._broken = self._broken or f"{self._name()}: closed"

    # -- writing a range --------------------------------------------------------------------

    def _write_range(self, end: str) -> None:
        if self._seen:  # as this sink left it: a conditional put notices any other writer
            intent, etag = self._intent, self._etag
        else:
            intent, etag = self._read_intent()
            self._check_intent(intent)
        stale = self._stale(intent)
        try:
            files = {self._relative_key(d, h): f.finish() for (d, h), f in self._files.items()}
            new = set(files)
            # also without files: the intent names the latest range, [start, end)
            intent, etag = self._put_intent(new | stale, end, etag)
            self._upload_all(files)
            gone = stale - new
            if gone:
                self._delete(sorted(gone))
                intent, etag = self._put_intent(new, end, etag)
            if files or gone:
                self._verify(etag)
        finally:
            self._discard()
        self._seen, self._intent, self._etag = True, intent, etag

    def _stale(self, intent: Intent | None) -> set[str]:
        """The keys an earlier attempt at this range listed (see the module docstring)."""
        if intent is None or intent.start != self.start_id:
            return set()
        own = re.compile(
            rf"(?:{'|'.join(DATASETS)})/dt=\d{{4,}}-\d\d-\d\d/hour=\d\d/"
            + re.escape(file_name(self.source.topic, self.source.partition, self.start_id))
        )
        strange = sorted(k for k in intent.keys if not own.fullmatch(k))
        if strange:
            raise SinkError(
                f"{self._intent_url()}: damaged intent: it lists {strange[0]!r}, not a file of "
                f"the range from {self.start_id}"
            )
        return set(intent.keys)

    def _check_intent(self, intent: Intent | None) -> None:
        if intent is None:
            return
        where = self._intent_url()
        s = self.source
        if (intent.topic, intent.partition) != (s.topic, s.partition):
            raise SinkError(f"{where}: damaged intent: it names {intent.topic}[{intent.partition}]")
        if intent.group != s.group:
            raise SinkError(
                f"{where}: {s.topic}[{s.partition}] of this dataset is written by group "
                f"{intent.group!r}, not {s.group!r}: give each group its own prefix"
            )
        if self.start_id in (intent.start, intent.end):
            return  # an earlier attempt at this range, or the committed range before it
        offset = _start_offset(intent.start)
        if offset < self.start:
            return  # a committed range before this one; nothing since wrote an intent
        if offset > self.start:
            detail = f"at offset {offset}, after this writer's range from {self.start_id}"
        else:  # ids at one offset are not ordered: it may come after this writer's start
            detail = (
                f"at the offset of this writer's range from {self.start_id}, and it is neither "
                "that range nor the one that ended where it starts"
            )
        raise SinkError(
            f"{where}: a range from checkpoint {intent.start} was written {detail}: another "
            "runner committed past this one (which lost the partition), or the group's offsets "
            "were moved back or its checkpoint was dropped (then delete the intent to go on; "
            "rows read again will be in the dataset twice)"
        )

    def _conflict(self) -> SinkError:
        return SinkError(
            f"{self._intent_url()} was changed by another writer (the partition's new owner, or "
            "an old one that has not noticed it lost it); the range is written again after the "
            "rewind"
        )

    def _read_intent(self) -> tuple[Intent | None, str | None]:
        key = self._intent_key()
        try:
            answer = self.sink.client.get_object(Bucket=self.sink.location.bucket, Key=key)
            blob = answer["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if s3_error_code(exc) in _MISSING:
                return None, None
            raise SinkError(f"reading {self._intent_url()}: {exc}") from None
        return Intent.from_bytes(blob, source=self._intent_url()), str(answer["ETag"])

    def _put_intent(self, keys: set[str], end: str, etag: str | None) -> tuple[Intent, str]:
        """Replace the intent if it is still ``etag`` (absent when None): the new one and its
        ETag."""
        s = self.source
        intent = Intent(
            s.group, s.topic, s.partition, self.start_id, end, self.writer, tuple(sorted(keys))
        )
        body = intent.to_bytes()
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            answer = self.sink.client.put_object(
                Bucket=self.sink.location.bucket,
                Key=self._intent_key(),
                Body=body,
                ContentMD5=content_md5(body),
                ContentType="application/json",
                **condition,
            )
        except (ClientError, BotoCoreError) as exc:
            if s3_error_code(exc) in _CONFLICT:
                raise self._conflict() from None
            raise SinkError(f"writing {self._intent_url()}: {exc}") from None
        return intent, str(answer["ETag"])

    def _upload_all(self, files: Mapping[str, IO[bytes]]) -> None:
        """Upload the files side by side; wait for all before reporting a failure (the files
        are closed right after)."""
        if len(files) <= 1:
            for key, body in files.items():
                self._upload(key, body)
            return
        pool = self.sink.pool()
        uploads = [pool.submit(self._upload, key, body) for key, body in sorted(files.items())]
        concurrent.futures.wait(uploads)
        for upload in uploads:
            upload.result()

    def _upload(self, key: str, body: IO[bytes]) -> None:
        md5 = hashlib.md5(usedforsecurity=False)
        while chunk := body.read(1 << 20):
            md5.update(chunk)
        size = body.tell()
        body.seek(0)
        self._s3(
            f"writing {self._url(key)}",
            lambda: self.sink.client.put_object(
                Bucket=self.sink.location.bucket,
                Key=self.sink.location.key(key),
                Body=body,
                ContentLength=size,
                ContentMD5=base64.b64encode(md5.digest()).decode(),
                ContentType="application/vnd.apache.parquet",
            ),
        )

    def _delete(self, keys: list[str]) -> None:
        bucket = self.sink.location.bucket
        for i in range(0, len(keys), MAX_DELETE):
            chunk = [{"Key": self.sink.location.key(k)} for k in keys[i : i + MAX_DELETE]]

            def delete(chunk: list[dict[str, str]] = chunk) -> dict[str, Any]:
                answer: dict[str, Any] = self.sink.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": chunk, "Quiet": True}
                )
                return answer

            failed = self._s3("deleting files of an earlier attempt", delete).get("Errors")
            if failed:
                shown = ", ".join(f"{e.get('Key')} ({e.get('Code')})" for e in failed[:5])
                raise SinkError(
                    f"{self._name()}: {len(failed)} file(s) of an earlier attempt at the range "
                    f"from {self.start_id} not deleted: {shown}"
                )

    def _verify(self, etag: str | None) -> None:
        """The intent is still this writer's: no other writer began meanwhile."""
        try:
            head = self.sink.client.head_object(
                Bucket=self.sink.location.bucket, Key=self._intent_key()
            )
        except (ClientError, BotoCoreError) as exc:
            if s3_error_code(exc) not in _MISSING:
                raise SinkError(f"reading {self._intent_url()}: {exc}") from None
            head = {}
        if head.get("ETag") != etag:
            raise self._conflict()

    # -- helpers ----------------------------------------------------------------------------

    def _file(self, dataset: str, hour: int) -> _HourFile:
        f = self._files.get((dataset, hour))
        if f is None:
            f = self._files[dataset, hour] = _HourFile(
                dataset, self.source, self.sink.row_group_rows, self.sink.compression
            )
        return f

    def _relative_key(self, dataset: str, hour: int) -> str:
        name = file_name(self.source.topic, self.source.partition, self.start_id)
        return f"{dataset}/{hour_path(hour)}/{name}"

    def _intent_key(self) -> str:
        return self.sink.location.key(INTENTS, self.source.topic, f"{self.source.partition}.json")

    def _url(self, relative: str) -> str:
        return f"{self.sink.location.describe()}/{relative}"

    def _intent_url(self) -> str:
        return f"s3://{self.sink.location.bucket}/{self._intent_key()}"

    def _name(self) -> str:
        s = self.source
        return f"parquet sink {self.sink.location.describe()} for {s.topic}[{s.partition}]"

    def _s3(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except (ClientError, BotoCoreError) as exc:
            raise SinkError(f"{self._name()}: {what}: {exc}") from None

    def _usable(self) -> None:
        if self._broken is not None:
            raise SinkError(f"{self._broken} (reopen the partition's sink)")

    def _break(self, reason: str) -> None:
        self._broken = reason
        self._discard()

    def _discard(self) -> None:
        for f in self._files.values():
            f.discard()
        self._files.clear()


@attrs.define(eq=False)
class ParquetSink:
    """The ``s3://bucket/prefix`` sink: per partition, Parquet files per checkpoint."""

    location: S3Url
    client: Any
    datasets: frozenset[str] = frozenset(DATASETS)
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS
    compression: str = "zstd"
    upload_threads: int = 8
    wants_payments: bool = attrs.field(init=False)
    _pool: concurrent.futures.ThreadPoolExecutor | None = attrs.field(default=None, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        self.wants_payments = "payments" in self.datasets

    def pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """The threads that upload a range's files side by side."""
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.upload_threads, thread_name_prefix="parquet-upload"
                )
            return self._pool

    def open(
        self, source: SourcePartition, start_offset: int, start_checkpoint: str | None
    ) -> ParquetPartitionSink:
        if not _TOPIC.fullmatch(source.topic):
            raise SinkError(f"topic {source.topic!r} cannot name a Parquet file")
        if type(source.partition) is not int or source.partition < 0:
            raise SinkError(f"partition {source.partition!r} is not a partition number")
        if type(start_offset) is not int or start_offset < 0:
            raise SinkError(f"start offset {start_offset!r} is not an offset")
        if start_checkpoint is None:
            return ParquetPartitionSink(self, source, start_offset, fresh_start(start_offset))
        m = ID_PATTERN.fullmatch(start_checkpoint) if isinstance(start_checkpoint, str) else None
        if m is None or int(m.group(1)) != start_offset:
            raise SinkError(
                f"start checkpoint {start_checkpoint!r} is not the id of a checkpoint at offset "
                f"{start_offset}"
            )
        return ParquetPartitionSink(self, source, start_offset, start_checkpoint)

    def describe(self) -> str:
        return f"{self.location.describe()} (parquet: {', '.join(sorted(self.datasets))})"

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.client.close()


def open_parquet_sink(url: str) -> ParquetSink:
    """The sink ``s3://BUCKET[/PREFIX][?data=alerts,payments&row_group_rows=N&compression=C
    &endpoint_url=URL&region=R]``.

    ``data`` picks the datasets (default both), ``row_group_rows`` the most rows in a row
    group (default 131072), ``compression`` one of zstd (default), snappy, gzip and none;
    ``endpoint_url`` and ``region`` override the environment's. Nothing is sent to S3 until
    the first checkpoint."""
    location = parse_s3_url(url, what="sink", parameters=_PARAMETERS, error=SinkError)
    options = location.options
    datasets = frozenset(DATASETS)
    if "data" in options:
        names = options["data"].split(",")
        unknown = [n for n in names if n not in DATASETS]
        if unknown or not names:
            raise SinkError(
                f"sink {url!r}: data must name datasets among {', '.join(DATASETS)}, "
                f"got {options['data']!r}"
            )
        if len(set(names)) != len(names):
            raise SinkError(f"sink {url!r}: data names a dataset twice")
        datasets = frozenset(names)
    rows = DEFAULT_ROW_GROUP_ROWS
    if "row_group_rows" in options:
        text = options["row_group_rows"]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_ROW_GROUP_ROWS:
            raise SinkError(
                f"sink {url!r}: row_group_rows must be a number from 1 to {MAX_ROW_GROUP_ROWS}, "
                f"got {text!r}"
            )
        rows = int(text)
    compression = options.get("compression", "zstd")
    if compression not in COMPRESSIONS:
        raise SinkError(
            f"sink {url!r}: compression must be one of {', '.join(COMPRESSIONS)}, "
            f"got {compression!r}"
        )
    try:
        s3 = location.client()
    except (BotoCoreError, ValueError) as exc:
        raise SinkError(f"sink {url!r}: {exc}") from None
    return ParquetSink(location, s3, datasets, rows, compression)

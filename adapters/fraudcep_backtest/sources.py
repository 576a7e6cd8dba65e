"""Payment sources of a backtest as Arrow record batches in event-time order.

- a Parquet dataset as the S3 sink writes it (``.../dt=YYYY-MM-DD/hour=HH/*.parquet``, a local
  directory or ``s3://bucket/prefix``): the ``(dt, hour)`` partitions outside ``[start, end)``
  are never opened; each hour partition is read whole (every file of the hour, whichever
  Kafka partition wrote it), cut to ``[start, end)`` on ``ts``, sorted by ``ts`` (stably) and
  cut into batches. The sink puts a payment in the hour of its ``ts``, so hours in order give
  every payment in event-time order, with memory bounded by the largest hour.
- a Parquet file, a JSON Lines file (``.jsonl``/``.ndjson``) or a CSV file (``.csv``): read
  whole, cut to ``[start, end)`` and sorted by ``ts`` (stably: payments with the same ``ts``
  keep their order in the file) — or, with a sort window (JSON Lines and CSV larger than
  :data:`STREAM_ABOVE_BYTES` get :data:`DEFAULT_SORT_WINDOW`), read as a stream of blocks and
  sorted within the window: a payment is released once one ``window`` ms later has been read,
  so memory holds a window of payments and a block, whatever the file's size. A payment
  further out of place than the window reaches the engine late (counted and warned about).

The S3 sink's bookkeeping columns (:data:`SINK_COLUMNS`) are not read; its ``extra`` column
(a JSON object of the fields beyond the nine of the payment) is given to rules as it is, a
string: its fields are not expanded.

A timestamp ``ts`` column (the sink writes ``timestamp[ms, UTC]``) is given to the rules as
epoch milliseconds, an integer, as ``ts`` is in JSON Lines payments (and as the engine reads
it anyway), so that the matched payments are the same values whatever the source.

The payment fields of :data:`fraudcep.payments.payment.PAYMENT_FIELDS` are read with their
types (``amount`` a float, ``ts`` epoch milliseconds or a timestamp, the others strings), so
that a column of ids that look like numbers stays a column of strings; other columns are
inferred.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from fraudcep.payments.payment import PAYMENT_FIELDS

__all__ = [
    "BATCH_ROWS",
    "DEFAULT_SORT_WINDOW",
    "FORMATS",
    "STREAM_ABOVE_BYTES",
    "Source",
    "SourceError",
    "open_source",
    "parse_time",
]

BATCH_ROWS: Final = 65_536
"""Rows per record batch given to the engine."""

FORMATS: Final = ("parquet", "jsonl", "csv")

STREAM_ABOVE_BYTES: Final = 512 * 1024 * 1024
"""JSON Lines and CSV files larger than this are streamed (with :data:`DEFAULT_SORT_WINDOW`
unless a window is given) instead of read whole."""
DEFAULT_SORT_WINDOW: Final = 3_600_000
"""The sort window (ms) of a streamed file when none is given: one hour."""
BLOCK_BYTES: Final = 4 * 1024 * 1024
"""Bytes pyarrow parses at a time when streaming a JSON Lines or CSV file."""

SINK_COLUMNS: Final = frozenset({"source_topic", "source_partition", "source_offset"})
"""The S3 sink's bookkeeping columns (where it read each payment), not payment fields: not
read from Parquet (the rules see the payments as they came in)."""

_SUFFIXES: Final = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}
_HIVE: Final = re.compile(r"/dt=(?P<dt>[^/]+)/hour=(?P<hour>[^/]+)/")


class SourceError(Exception):
    """A source that cannot be read: missing, of an unknown format, or not payments."""


def parse_time(text: str) -> int:
    """``YYYY-MM-DD`` or an ISO 8601 date and time (UTC unless it says otherwise) as epoch ms."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date (YYYY-MM-DD) or an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _types(names: list[str], ts_field: str) -> dict[str, pa.DataType]:
    types: dict[str, pa.DataType] = {}
    for name in names:
        if name == "amount":
            types[name] = pa.float64()
        elif name in PAYMENT_FIELDS and name != ts_field:
            types[name] = pa.string()
    return types


@attrs.define
class Source:
    """An opened source: :meth:`batches` gives its payments in event-time order."""

    location: str
    format: str
    ts_field: str = "ts"
    start: int | None = None
    end: int | None = None
    batch_rows: int = BATCH_ROWS
    filesystem: Any = None
    #: Payments in the source before cutting to [start, end), when known without reading them.
    total: int | None = None
    #: JSON Lines / CSV: None reads the file whole; else stream it and sort within this
    #: many ms of event time.
    sort_window: int | None = None
    block_bytes: int = BLOCK_BYTES
    #: The Parquet files to read by (dt, hour) partition, in event-time order; a file or a
    #: dataset without partitions is one group.
    _groups: list[list[str]] | None = None

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The payments in ``[start, end)`` in event-time order, as record batches."""
        if self._groups is None and self.sort_window is not None:
            yield from self._streamed(self.sort_window)
            return
        if self._groups is None:
            yield from self._ordered(self._read_file())
            return
        for paths in self._groups:
            try:
                dataset = ds.dataset(paths, format="parquet", filesystem=self.filesystem)
                names = [n for n in dataset.schema.names if n not in SINK_COLUMNS]
                table = dataset.to_table(columns=names)
            except (pa.ArrowInvalid, OSError) as exc:
                raise SourceError(f"{self.location}: cannot read {paths[0]}...: {exc}") from None
            yield from self._ordered(table)

    def _read_file(self) -> pa.Table:
        if self.format == "jsonl":
            import pyarrow.json as pj

            try:
                return pj.read_json(self._open(), parse_options=self._json_options())
            except pa.ArrowInvalid as exc:
                raise SourceError(f"{self.location}: not JSON Lines payments: {exc}") from None
        import pyarrow.csv as pcsv

        try:
            return pcsv.read_csv(self._open(), convert_options=self._csv_options())
        except pa.ArrowInvalid as exc:
            raise SourceError(f"{self.location}: not CSV payments: {exc}") from None

    def _json_options(self) -> Any:
        import pyarrow.json as pj

        types = _types([*PAYMENT_FIELDS], self.ts_field)
        schema = pa.schema(list(types.items()))
        return pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")

    def _csv_options(self) -> Any:
        import pyarrow.csv as pcsv

        return pcsv.ConvertOptions(column_types=_types([*PAYMENT_FIELDS], self.ts_field))

    def _blocks(self) -> Iterator[pa.RecordBatch]:
        """The file as pyarrow parses it, block by block. The readers get a Python file
        object: given a path or an Arrow stream, pyarrow's JSON reader reads the file ahead
        into memory (measured: as much memory as the file on 200 MB), which is what a
        stream is for not doing."""
        what = "JSON Lines" if self.format == "jsonl" else "CSV"
        stream = _Unbuffered(self._open_stream())
        try:
            if self.format == "jsonl":
                import pyarrow.json as pj

                reader = pj.open_json(
                    stream,
                    read_options=pj.ReadOptions(block_size=self.block_bytes),
                    parse_options=self._json_options(),
                )
            else:
                import pyarrow.csv as pcsv

                reader = pcsv.open_csv(
                    stream,
                    read_options=pcsv.ReadOptions(block_size=self.block_bytes),
                    convert_options=self._csv_options(),
                )
            yield from reader
        except pa.ArrowInvalid as exc:
            raise SourceError(f"{self.location}: not {what} payments: {exc}") from None
        finally:
            stream.close()

    def _open_stream(self) -> Any:
        if self.filesystem is not None:
            return self.filesystem.open_input_stream(self.location)
        return open(self.location, "rb")

    def _streamed(self, window: int) -> Iterator[pa.RecordBatch]:
        """Blocks sorted within ``window`` ms: after each block, the payments more than
        ``window`` behind the highest timestamp read so far are released in order; the rest
        wait for the next block."""
        pending: pa.Table | None = None
        highest: int | None = None
        for block in self._blocks():
            if block.num_rows == 0:
                continue
            table = self._in_range(pa.Table.from_batches([block]))
            if table.num_rows == 0:
                continue
            if pending is not None:
                table = pa.concat_tables([pending, table], promote_options="permissive")
            ts = table[self.ts_field]
            top = pc.max(ts).as_py()
            highest = top if highest is None else max(highest, top)
            ready = pc.less(ts, highest - window)
            yield from self._sorted(table.filter(ready))
            pending = table.filter(pc.invert(ready))
        if pending is not None:
            yield from self._sorted(pending)

    def _in_range(self, table: pa.Table) -> pa.Table:
        """``table`` cut to ``[start, end)``, its event time as epoch ms (int64)."""
        if self.ts_field not in table.column_names:
            raise SourceError(f"{self.location}: no {self.ts_field!r} column (the event time)")
        ts = table[self.ts_field]
        if pa.types.is_timestamp(ts.type):
            millis = pc.cast(pc.cast(ts, pa.timestamp("ms", tz=ts.type.tz)), pa.int64())
        elif pa.types.is_integer(ts.type):
            millis = pc.cast(ts, pa.int64())
        else:
            raise SourceError(
                f"{self.location}: {self.ts_field!r} is {ts.type}, not epoch milliseconds "
                "(an integer) or a timestamp"
            )
        keep = None
        if self.start is not None:
            keep = pc.greater_equal(millis, self.start)
        if self.end is not None:
            below = pc.less(millis, self.end)
            keep = below if keep is None else pc.and_(keep, below)
        if keep is not None:
            table, millis = table.filter(keep), millis.filter(keep)
        if millis is not ts:  # a timestamp column: rules see epoch ms, as from JSON Lines
            table = table.set_column(table.column_names.index(self.ts_field), self.ts_field, millis)
        return table

    def _sorted(self, table: pa.Table) -> Iterator[pa.RecordBatch]:
        if table.num_rows == 0:
            return
        order = pc.sort_indices(table[self.ts_field])  # stable: equal timestamps keep order
        yield from table.take(order).to_batches(max_chunksize=self.batch_rows)

    def _open(self) -> Any:
        if self.filesystem is not None:
            return self.filesystem.open_input_stream(self.location)
        return self.location

    def _ordered(self, table: pa.Table) -> Iterator[pa.RecordBatch]:
        if table.num_rows == 0:
            return
        yield from self._sorted(self._in_range(table))


class _Unbuffered(io.RawIOBase):
    """A stream seen as a plain Python file object (see :meth:`Source._blocks`)."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            super().close()


def _hour_window(start: int | None, end: int | None) -> tuple[str, str]:
    low = "0000-00-00/00" if start is None else _hour_of(start)
    high = "9999-99-99/99" if end is None else _hour_of(end - 1)
    return low, high


def _hour_of(ms: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%d/%H")


def open_source(
    location: str,
    *,
    format: str | None = None,
    ts_field: str = "ts",
    start: int | None = None,
    end: int | None = None,
    batch_rows: int = BATCH_ROWS,
    s3_endpoint: str | None = None,
    sort_window: int | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> Source:
    """Open ``location`` (a path or ``s3://bucket/key``); ``format`` is guessed from the name
    (a directory is a Parquet dataset). ``sort_window``: stream a JSON Lines or CSV file and
    sort it within this many ms (None: read it whole, unless it is larger than
    :data:`STREAM_ABOVE_BYTES`: then stream it with :data:`DEFAULT_SORT_WINDOW`). Raises
    :class:`SourceError` when it cannot be read."""
    filesystem: Any = None
    path = location
    if location.startswith("s3://"):
        from pyarrow import fs

        filesystem = fs.S3FileSystem(endpoint_override=s3_endpoint) if s3_endpoint else None
        if filesystem is None:
            filesystem, path = fs.FileSystem.from_uri(location)
        else:
            path = location.removeprefix("s3://")
        try:
            info = filesystem.get_file_info(path)
        except OSError as exc:  # the endpoint cannot be reached, or refused the request
            raise SourceError(f"{location}: cannot read: {exc}") from None
        if info.type == fs.FileType.NotFound:
            raise SourceError(f"{location}: no such file or directory")
        is_dir = info.type == fs.FileType.Directory
        size = info.size
    else:
        local = Path(location)
        if not local.exists():
            raise SourceError(f"{location}: no such file or directory")
        is_dir = local.is_dir()
        size = None if is_dir else local.stat().st_size
    if format is None:
        if is_dir:
            format = "parquet"
        else:
            suffix = Path(path).suffix.lower()
            if suffix not in _SUFFIXES:
                raise SourceError(
                    f"{location}: unknown format (give a .parquet, .jsonl or .csv file, a "
                    "Parquet directory, or --format)"
                )
            format = _SUFFIXES[suffix]
    if format not in FORMATS:
        raise SourceError(f"{location}: unknown format {format!r} (one of {', '.join(FORMATS)})")
    source = Source(
        location=path,
        format=format,
        ts_field=ts_field,
        start=start,
        end=end,
        batch_rows=batch_rows,
        filesystem=filesystem,
    )
    if sort_window is not None and sort_window < 0:
        raise SourceError(f"sort window {sort_window} ms: must be 0 or more")
    if format != "parquet":
        if is_dir:
            raise SourceError(f"{location}: a directory can only be a Parquet dataset")
        if sort_window is None and size is not None and size > STREAM_ABOVE_BYTES:
            sort_window = DEFAULT_SORT_WINDOW
        source.sort_window = sort_window
        source.block_bytes = block_bytes
        return source
    from pyarrow import fs

    if filesystem is None:
        filesystem = fs.LocalFileSystem()
        path = str(Path(path).resolve())
    if is_dir:
        try:
            infos = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
        except OSError as exc:
            raise SourceError(f"{location}: cannot list: {exc}") from None
        files = [
            i.path
            for i in infos
            if i.type == fs.FileType.File
            and not any(part.startswith(("_", ".")) for part in Path(i.path[len(path) :]).parts[1:])
            and not Path(i.path).name.startswith(("_", "."))
        ]
    else:
        files = [path]
    by_hour: dict[tuple[str, int], list[str]] = {}
    loose: list[str] = []
    low, high = _hour_window(start, end)
    for name in sorted(files):
        found = _HIVE.search(name[len(path) :])
        if found is None:
            loose.append(name)
            continue
        try:
            hour = int(found["hour"])
        except ValueError:
            raise SourceError(f"{name}: hour={found['hour']} is not an hour") from None
        if not low <= f"{found['dt']}/{hour:02d}" <= high:
            continue  # pruned: never opened
        by_hour.setdefault((found["dt"], hour), []).append(name)
    if by_hour and loose:
        raise SourceError(f"{location}: {loose[0]} is outside the dt=/hour= partitions")
    groups = [by_hour[h] for h in sorted(by_hour)] if by_hour else ([loose] if loose else [])
    total = 0
    for group in groups:
        for name in group:
            try:
                with filesystem.open_input_file(name) as handle:
                    total += pq.ParquetFile(handle).metadata.num_rows
            except pa.ArrowInvalid as exc:
                raise SourceError(f"{name}: not a Parquet file: {exc}") from None
            except OSError as exc:  # e.g. S3 refused it (credentials), or the endpoint is down
                raise SourceError(f"{name}: cannot read: {exc}") from None
    source.filesystem = filesystem
    source._groups = groups
    source.total = total
    return source

"""Payment sources of a backtest as Arrow record batches in event-time order.

- a Parquet dataset as the S3 sink writes it (``.../dt=YYYY-MM-DD/hour=HH/*.parquet``, a local
  directory or ``s3://bucket/prefix``): the ``(dt, hour)`` partitions outside ``[start, end)``
  are never opened; each hour partition is read whole (every file of the hour, whichever
  Kafka partition wrote it), cut to ``[start, end)`` on ``ts``, sorted by ``ts`` (stably) and
  cut into batches. The sink puts a payment in the hour of its ``ts``, so hours in order give
  every payment in event-time order, with memory bounded by the largest hour.
- a Parquet file, a JSON Lines file (``.jsonl``/``.ndjson``) or a CSV file (``.csv``): read
  whole, cut to ``[start, end)`` and sorted by ``ts`` (stably: payments with the same ``ts``
  keep their order in the file).

The payment fields of :data:`fraudcep.payments.payment.PAYMENT_FIELDS` are read with their
types (``amount`` a float, ``ts`` epoch milliseconds or a timestamp, the others strings), so
that a column of ids that look like numbers stays a column of strings; other columns are
inferred.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from fraudcep.payments.payment import PAYMENT_FIELDS

__all__ = ["BATCH_ROWS", "FORMATS", "Source", "SourceError", "open_source", "parse_time"]

BATCH_ROWS: Final = 65_536
"""Rows per record batch given to the engine."""

FORMATS: Final = ("parquet", "jsonl", "csv")

_SUFFIXES: Final = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}
_PARTITIONING: Final = ds.partitioning(
    pa.schema([("dt", pa.string()), ("hour", pa.string())]), flavor="hive"
)


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
    _dataset: Any = None
    #: The (dt, hour) partitions to read, in order; None for a dataset without partitions.
    _hours: list[tuple[str, str]] | None = None

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The payments in ``[start, end)`` in event-time order, as record batches."""
        if self._dataset is not None and self._hours is not None:
            for dt, hour in self._hours:
                where = (ds.field("dt") == dt) & (ds.field("hour") == hour)
                table = self._dataset.to_table(filter=where)
                table = table.drop_columns([c for c in ("dt", "hour") if c in table.column_names])
                yield from self._ordered(table)
        elif self._dataset is not None:
            yield from self._ordered(self._dataset.to_table())
        else:
            yield from self._ordered(self._read_file())

    def _read_file(self) -> pa.Table:
        if self.format == "jsonl":
            import pyarrow.json as pj

            names = [*PAYMENT_FIELDS]
            schema = pa.schema([(n, t) for n, t in _types(names, self.ts_field).items()])
            options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
            try:
                return pj.read_json(self._open(), parse_options=options)
            except pa.ArrowInvalid as exc:
                raise SourceError(f"{self.location}: not JSON Lines payments: {exc}") from None
        import pyarrow.csv as pcsv

        convert = pcsv.ConvertOptions(column_types=_types([*PAYMENT_FIELDS], self.ts_field))
        try:
            return pcsv.read_csv(self._open(), convert_options=convert)
        except pa.ArrowInvalid as exc:
            raise SourceError(f"{self.location}: not CSV payments: {exc}") from None

    def _open(self) -> Any:
        if self.filesystem is not None:
            return self.filesystem.open_input_stream(self.location)
        return self.location

    def _ordered(self, table: pa.Table) -> Iterator[pa.RecordBatch]:
        if table.num_rows == 0:
            return
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
        order = pc.sort_indices(millis)  # stable: equal timestamps keep their order
        table = table.take(order)
        yield from table.to_batches(max_chunksize=self.batch_rows)


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
) -> Source:
    """Open ``location`` (a path or ``s3://bucket/key``); ``format`` is guessed from the name
    (a directory is a Parquet dataset). Raises :class:`SourceError` when it cannot be read."""
    filesystem: Any = None
    path = location
    if location.startswith("s3://"):
        from pyarrow import fs

        filesystem = fs.S3FileSystem(endpoint_override=s3_endpoint) if s3_endpoint else None
        if filesystem is None:
            filesystem, path = fs.FileSystem.from_uri(location)
        else:
            path = location.removeprefix("s3://")
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.NotFound:
            raise SourceError(f"{location}: no such file or directory")
        is_dir = info.type == fs.FileType.Directory
    else:
        local = Path(location)
        if not local.exists():
            raise SourceError(f"{location}: no such file or directory")
        is_dir = local.is_dir()
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
    if format != "parquet":
        if is_dir:
            raise SourceError(f"{location}: a directory can only be a Parquet dataset")
        return source
    try:
        dataset = ds.dataset(
            path, format="parquet", partitioning=_PARTITIONING, filesystem=filesystem
        )
        fragments = list(dataset.get_fragments())
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{location}: not a Parquet dataset: {exc}") from None
    source._dataset = dataset
    hours: set[tuple[str, str]] = set()
    low, high = _hour_window(start, end)
    total = 0
    chosen = []
    for fragment in fragments:
        keys = ds.get_partition_keys(fragment.partition_expression)
        if "dt" in keys and "hour" in keys:
            stamp = f"{keys['dt']}/{int(keys['hour']):02d}"
            if not low <= stamp <= high:
                continue  # pruned: never opened
            hours.add((keys["dt"], keys["hour"]))
        chosen.append(fragment)
    partitioned = [
        {"dt", "hour"} <= set(ds.get_partition_keys(f.partition_expression)) for f in fragments
    ]
    if any(partitioned) and not all(partitioned):
        raise SourceError(f"{location}: some files are outside dt=/hour= partitions")
    try:
        for fragment in chosen:
            total += fragment.metadata.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{location}: not a Parquet dataset: {exc}") from None
    if any(partitioned):
        source._hours = sorted(hours, key=lambda h: (h[0], int(h[1])))
    source.total = total
    return source

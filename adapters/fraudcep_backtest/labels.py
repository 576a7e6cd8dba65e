"""Fraud labels: the ids of payments known to be fraud (chargebacks, confirmed cases).

A CSV file (with a header), a Parquet file or dataset, or a JSON Lines file; the ids are the
``payment_id`` column, or the only column when there is one. Ids are compared as strings.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from fraudcep_backtest.sources import SourceError

__all__ = ["read_labels"]


def read_labels(path: str, column: str = "payment_id") -> set[str]:
    """The payment ids of the labels file ``path``; :class:`SourceError` if unreadable."""
    local = Path(path)
    if not local.exists():
        raise SourceError(f"{path}: no such file or directory")
    suffix = local.suffix.lower()
    try:
        if local.is_dir() or suffix in (".parquet", ".pq"):
            table = ds.dataset(path, format="parquet").to_table()
        elif suffix in (".jsonl", ".ndjson", ".json"):
            import pyarrow.json as pj

            table = pj.read_json(path)
        elif suffix == ".csv":
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(
                path, convert_options=pcsv.ConvertOptions(column_types={column: pa.string()})
            )
        else:
            raise SourceError(f"{path}: unknown format (give a .csv, .parquet or .jsonl file)")
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: cannot read the labels: {exc}") from None
    if column in table.column_names:
        ids = table[column]
    elif table.num_columns == 1:
        ids = table.column(0)
    else:
        raise SourceError(
            f"{path}: no {column!r} column (columns: {', '.join(table.column_names)})"
        )
    ids = pc.drop_null(pc.cast(ids, pa.string()))
    return {str(x) for x in ids.to_pylist()}

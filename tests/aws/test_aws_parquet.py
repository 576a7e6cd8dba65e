"""The Parquet sink against moto's server, read back with pyarrow: rows land in their
event-time hour with the documented columns, and whatever the crashes and retries (the
runner's replays), the datasets hold each row exactly once.

Crashes inside a checkpoint are made by a client that lets the first *n* requests through
to the server and fails the others, as a process that died after *n* requests would."""

from __future__ import annotations

import io
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import EndpointConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.aws_server import client, unique

from fraudcep.alert import SHADOW, Alert
from fraudcep.alert.identity import canonical_key
from fraudcep.runtime.checkpoint import new_id
from fraudcep.runtime.sink import SinkError, SourcePartition, open_sink
from fraudcep_aws.parquet import (
    INTENTS,
    ParquetPartitionSink,
    ParquetSink,
    file_name,
    fresh_start,
    open_parquet_sink,
)
from fraudcep_aws.parquet_schema import ALERTS_SCHEMA, PAYMENTS_SCHEMA, SCHEMAS

pytestmark = pytest.mark.aws

SOURCE = SourcePartition("fraud-detector", "payments.raw", 3)
HOUR = 3_600_000
DAY0 = 1_699_920_000_000  # 2023-11-14T00:00:00Z
T0 = DAY0 + 22 * HOUR  # 22:00, so three hours reach into the next day
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
A100 = "00000000000000000100-0123456789ab"
"""A checkpoint at offset 100 (ids are ``new_id(offset)``)."""


def payment(offset: int, hour: int = 0, **extra: Any) -> dict[str, Any]:
    """The payment at ``offset``, in hour ``hour`` after 22:00 (the same on every replay)."""
    return {
        "payment_id": f"p{offset}",
        "user_id": f"u{offset % 7}",
        "card_id": f"c{offset % 5}",
        "merchant": "m1",
        "country": "DE",
        "amount": offset + 0.25 if offset % 2 else offset,
        "currency": "EUR",
        "status": "declined" if offset % 3 else "approved",
        "ts": T0 + hour * HOUR + offset,
        **extra,
    }


def alert(alert_id: str, last_ts: int, events: Sequence[dict[str, Any]] = ()) -> Alert:
    return Alert(
        rule_id="card-testing",
        key=("user", alert_id),
        events={"small": list(events), "large": []},
        first_ts=last_ts - 5_000,
        last_ts=last_ts,
        alert_id=alert_id,
        emitted_at=last_ts + 1,
        rule_version=2,
    )


def millis(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


@attrs.define
class Lake:
    """A fresh prefix in the test bucket, its sink and its datasets read back."""

    endpoint: str
    bucket: str
    prefix: str
    s3: Any

    def url(self, query: str = "") -> str:
        sep = "&" if query else ""
        return f"s3://{self.bucket}/{self.prefix}?endpoint_url={self.endpoint}{sep}{query}"

    def sink(self, query: str = "", *, fail_after: int | None = None) -> ParquetSink:
        sink = open_parquet_sink(self.url(query))
        if fail_after is not None:
            sink.client = DyingClient(sink.client, fail_after)
        return sink

    def keys(self, under: str = "") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/{under}"
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))

    def table(self, key: str) -> Any:
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return pq.read_table(io.BytesIO(body))

    def rows(self, dataset: str) -> list[dict[str, Any]]:
        """Every row of ``dataset``, after checking its file's columns and hour folder."""
        out = []
        clock = "ts" if dataset == "payments" else "last_ts"
        for key in self.keys(f"{dataset}/"):
            m = re.fullmatch(
                rf"{self.prefix}/{dataset}/dt=([\d-]+)/hour=(\d\d)/[^/]+\.parquet", key
            )
            assert m is not None, key
            table = self.table(key)
            assert table.schema.equals(SCHEMAS[dataset]), key
            for row in table.to_pylist():
                assert (row[clock].strftime("%Y-%m-%d"), f"{row[clock].hour:02d}") == m.groups()
                out.append(row)
        return out

    def intent(self) -> dict[str, Any]:
        key = f"{self.prefix}/{INTENTS}/{SOURCE.topic}/{SOURCE.partition}.json"
        data: dict[str, Any] = json.loads(
            self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        )
        return data


@attrs.define
class DyingClient:
    """An S3 client whose process dies (for S3) after ``left`` more requests."""

    real: Any
    left: int
    lock: threading.Lock = attrs.Factory(threading.Lock)

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.real, name)
        if name not in ("get_object", "put_object", "delete_objects", "head_object"):
            return call

        def request(**kwargs: Any) -> Any:
            with self.lock:
                self.left -= 1
                dead = self.left < 0
            if dead:
                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
            return call(**kwargs)

        return request


@pytest.fixture(scope="module")
def bucket(aws_endpoint: str) -> str:
    name = unique("lake")
    client(aws_endpoint, "s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def lake(aws_endpoint: str, bucket: str) -> Lake:
    return Lake(aws_endpoint, bucket, unique("p"), client(aws_endpoint, "s3"))


def feed(sink: ParquetPartitionSink, offsets: Iterable[int], hours: Callable[[int], int]) -> None:
    """The payments at ``offsets`` and an alert for every third one, as the runner hands them."""
    records = [(o, payment(o, hours(o))) for o in offsets]
    sink.payments(records)
    sink.alerts([alert(f"a{o}", p["ts"], [p]) for o, p in records if o % 3 == 0])


def offsets_of(rows: list[dict[str, Any]]) -> list[int]:
    return sorted(r["source_offset"] for r in rows)


# -- layout and columns -----------------------------------------------------------------------


def test_rows_land_in_their_event_time_hour_with_the_documented_columns(lake: Lake) -> None:
    sink = lake.sink().open(SOURCE, 100, A100)
    records = [(100 + i, payment(100 + i, hour=i % 3)) for i in range(9)]
    sink.payments(records)
    alerts = [alert("late-one", T0 + 2 * HOUR + 5, [records[2][1]]), alert("early", T0 + 7)]
    sink.alerts(alerts)
    sink.checkpoint(109, new_id(109))

    name = file_name(SOURCE.topic, SOURCE.partition, A100)
    assert name == "payments.raw-3-00000000000000000100-0123456789ab.parquet"
    hours = ["dt=2023-11-14/hour=22", "dt=2023-11-14/hour=23", "dt=2023-11-15/hour=00"]
    assert lake.keys("payments/") == [f"{lake.prefix}/payments/{h}/{name}" for h in hours]
    assert lake.keys("alerts/") == [f"{lake.prefix}/alerts/{h}/{name}" for h in hours[::2]]

    rows = sorted(lake.rows("payments"), key=lambda r: r["source_offset"])
    assert [
        {**r, "ts": millis(r["ts"])}
        for r in rows  # amounts are doubles: 104 reads back as 104.0, equal in Python
    ] == [
        {**p, "extra": None, "source_topic": "payments.raw", "source_partition": 3,
         "source_offset": o}
        for o, p in records
    ]  # fmt: skip
    assert rows[0]["ts"].tzinfo is not None and rows[0]["ts"].utcoffset() == timedelta(0)
    got = {r["alert_id"]: r for r in lake.rows("alerts")}
    assert set(got) == {"late-one", "early"}
    late = got["late-one"]
    assert late["key"] == canonical_key(("user", "late-one")) == '["user","late-one"]'
    assert json.loads(late["events"]) == {"small": [records[2][1]], "large": []}
    assert (late["rule_id"], late["rule_version"]) == ("card-testing", 2)
    assert [millis(late[c]) for c in ("first_ts", "last_ts", "emitted_at")] == [
        T0 + 2 * HOUR - 4_995,
        T0 + 2 * HOUR + 5,
        T0 + 2 * HOUR + 6,
    ]
    assert (late["source_topic"], late["source_partition"]) == ("payments.raw", 3)
    assert (late["mode"], late["lists"]) == ("live", None)


def test_shadow_alerts_and_list_versions_have_columns_of_their_own(lake: Lake) -> None:
    sink = lake.sink("data=alerts").open(SOURCE, 0, None)
    sink.alerts(
        [
            alert("live", T0),
            attrs.evolve(alert("shadow", T0), mode=SHADOW),
            attrs.evolve(alert("listed", T0), lists={"risky_bins": 1, "blocked_cards": 4}),
        ]
    )
    sink.checkpoint(1, new_id(1))
    got = {r["alert_id"]: (r["mode"], r["lists"]) for r in lake.rows("alerts")}
    assert got == {
        "live": ("live", None),
        "shadow": ("shadow", None),
        "listed": ("live", '{"blocked_cards":4,"risky_bins":1}'),
    }


def test_a_fresh_partitions_first_range_is_named_after_its_offset(lake: Lake) -> None:
    sink = lake.sink().open(SOURCE, 7, None)  # no checkpoint yet
    feed(sink, range(7, 10), lambda o: 0)
    end = new_id(10)
    sink.checkpoint(10, end)
    name = file_name(SOURCE.topic, SOURCE.partition, fresh_start(7))
    assert name == "payments.raw-3-00000000000000000007-fresh.parquet"
    assert [k.rsplit("/", 1)[1] for k in lake.keys("payments/")] == [name]
    assert (lake.intent()["start"], lake.intent()["end"]) == (fresh_start(7), end)
    assert fresh_start(7) < new_id(8) and fresh_start(7) > new_id(6)  # sorted by offset


def test_the_schemas_are_the_documented_ones() -> None:
    def shown(schema: Any) -> list[tuple[str, str, bool]]:
        return [(f.name, str(f.type), f.nullable) for f in schema]

    assert shown(ALERTS_SCHEMA) == [
        ("alert_id", "string", False),
        ("rule_id", "string", False),
        ("rule_version", "int32", False),
        ("key", "string", False),
        ("first_ts", "timestamp[ms, tz=UTC]", False),
        ("last_ts", "timestamp[ms, tz=UTC]", False),
        ("emitted_at", "timestamp[ms, tz=UTC]", False),
        ("events", "string", False),
        ("source_topic", "string", False),
        ("source_partition", "int32", False),
        ("mode", "string", True),
        ("lists", "string", True),
    ]
    assert shown(PAYMENTS_SCHEMA) == [
        *((name, "string", False) for name in ("payment_id", "user_id", "card_id", "merchant")),
        ("country", "string", False),
        ("amount", "double", False),
        ("currency", "string", False),
        ("status", "string", False),
        ("ts", "timestamp[ms, tz=UTC]", False),
        ("extra", "string", True),
        ("source_topic", "string", False),
        ("source_partition", "int32", False),
        ("source_offset", "int64", False),
    ]


def test_fields_beyond_the_payment_schema_are_kept_as_json(lake: Lake) -> None:
    sink = lake.sink("data=payments").open(SOURCE, 0, None)
    sink.payments(
        [
            (0, payment(0, scenario="card_testing", scenario_id=17)),
            (1, payment(1, device={"os": "ios", "ids": [1, 2]}, note="café ✓", flag=None)),
            (2, payment(2)),
            (3, payment(3, payment_id="bad\ud800id", note="\udfff")),
        ]
    )
    sink.checkpoint(4, new_id(4))
    rows = sorted(lake.rows("payments"), key=lambda r: r["source_offset"])
    assert [r["extra"] and json.loads(r["extra"]) for r in rows] == [
        {"scenario": "card_testing", "scenario_id": 17},
        {"device": {"os": "ios", "ids": [1, 2]}, "note": "café ✓", "flag": None},
        None,
        {"note": "\udfff"},  # JSON text keeps even a lone surrogate
    ]
    assert rows[3]["payment_id"] == "bad\\ud800id"  # UTF-8 cannot: written as its escape


def test_row_groups_hold_at_most_row_group_rows(lake: Lake) -> None:
    sink = lake.sink("data=payments&row_group_rows=5000&compression=snappy").open(SOURCE, 0, None)
    for start in range(0, 20_003, 4_000):  # batches and row groups across payments() calls
        sink.payments([(o, payment(o, hour=0)) for o in range(start, min(start + 4_000, 20_003))])
    sink.checkpoint(20_003, new_id(20_003))
    (key,) = lake.keys("payments/")
    body = lake.s3.get_object(Bucket=lake.bucket, Key=key)["Body"].read()
    meta = pq.ParquetFile(io.BytesIO(body)).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [5000, 5000, 5000, 5000, 3]
    assert meta.row_group(0).column(0).compression == "SNAPPY"
    assert offsets_of(lake.rows("payments")) == list(range(20_003))


def test_zstd_is_the_default_compression(lake: Lake) -> None:
    sink = lake.sink().open(SOURCE, 0, None)
    feed(sink, range(3), lambda o: 0)
    sink.checkpoint(3, new_id(3))
    body = lake.s3.get_object(Bucket=lake.bucket, Key=lake.keys("alerts/")[0])["Body"].read()
    assert pq.ParquetFile(io.BytesIO(body)).metadata.row_group(0).column(0).compression == "ZSTD"


@pytest.mark.parametrize(
    ("query", "alerts", "payments"),
    [("", True, True), ("data=alerts", True, False), ("data=payments", False, True)],
)
def test_data_picks_the_datasets(lake: Lake, query: str, alerts: bool, payments: bool) -> None:
    sink = lake.sink(query)
    assert sink.wants_payments is payments
    partition = sink.open(SOURCE, 0, None)
    feed(partition, range(6), lambda o: 0)
    partition.checkpoint(6, new_id(6))
    assert len(lake.rows("alerts")) == (2 if alerts else 0)
    assert len(lake.rows("payments")) == (6 if payments else 0)


# -- exactly once -----------------------------------------------------------------------------


def etags(lake: Lake, under: str = "") -> dict[str, str]:
    """Every Parquet file's ETag: a file written again (or replaced) gets another one."""
    pages = lake.s3.get_paginator("list_objects_v2").paginate(
        Bucket=lake.bucket, Prefix=f"{lake.prefix}/{under}"
    )
    return {
        o["Key"]: o["ETag"]
        for page in pages
        for o in page.get("Contents", ())
        if f"/{INTENTS}/" not in o["Key"]
    }


def test_consecutive_ranges_each_keep_their_files(lake: Lake) -> None:
    sink = lake.sink().open(SOURCE, 0, None)
    feed(sink, range(10), lambda o: 0)
    first = new_id(10)
    sink.checkpoint(10, first)
    feed(sink, range(10, 25), lambda o: 0)
    second, third = new_id(25), new_id(25)
    sink.checkpoint(25, second)
    sink.checkpoint(25, third)  # nothing new
    assert [k.rsplit("/", 1)[1] for k in lake.keys("payments/")] == [
        file_name(SOURCE.topic, 3, fresh_start(0)),
        file_name(SOURCE.topic, 3, first),
    ]
    assert offsets_of(lake.rows("payments")) == list(range(25))
    intent = lake.intent()
    assert (intent["start"], intent["end"], intent["keys"]) == (second, third, [])


def _three_hours(offset: int) -> int:
    return 0 if offset < 110 else 1 if offset < 120 else 2


@pytest.mark.parametrize("start", [A100, None], ids=["restored", "fresh"])
@pytest.mark.parametrize("retry_end", [100, 105, 115, 130, 140])
def test_a_retried_range_replaces_the_crashed_attempt(
    lake: Lake, retry_end: int, start: str | None
) -> None:
    """Also when the crashed attempt wrote an hour (22:00-, 23:00-, 00:00-) the retry does not."""
    first = lake.sink().open(SOURCE, 100, start)
    feed(first, range(100, 130), _three_hours)
    first.checkpoint(130, new_id(130))  # files written; the commit never happens
    first.close()
    assert len(lake.keys("payments/")) == 3

    retry = lake.sink().open(SOURCE, 100, start)
    feed(retry, range(100, retry_end), _three_hours)
    end = new_id(retry_end)
    retry.checkpoint(retry_end, end)
    assert offsets_of(lake.rows("payments")) == list(range(100, retry_end))
    alerts = sorted(r["alert_id"] for r in lake.rows("alerts"))
    assert alerts == sorted(f"a{o}" for o in range(100, retry_end) if o % 3 == 0)
    assert len(lake.keys("payments/")) == len({_three_hours(o) for o in range(100, retry_end)})
    assert (lake.intent()["start"], lake.intent()["end"]) == (start or fresh_start(100), end)

    retry.checkpoint(retry_end, new_id(retry_end))  # the next (empty) range leaves them alone
    assert offsets_of(lake.rows("payments")) == list(range(100, retry_end))


def test_a_crash_inside_a_checkpoint_is_repaired_by_the_retry(lake: Lake) -> None:
    first = lake.sink(fail_after=4).open(SOURCE, 100, A100)  # intent read and written, 2 files
    feed(first, range(100, 130), _three_hours)
    with pytest.raises(SinkError, match="Could not connect"):
        first.checkpoint(130, new_id(130))
    with pytest.raises(SinkError, match="reopen"):  # broken until reopened
        feed(first, range(130, 131), _three_hours)
    first.close()
    assert 0 < len(lake.keys("payments/")) + len(lake.keys("alerts/")) < 6

    retry = lake.sink().open(SOURCE, 100, A100)
    feed(retry, range(100, 112), _three_hours)
    retry.checkpoint(112, new_id(112))
    assert offsets_of(lake.rows("payments")) == list(range(100, 112))
    assert len(lake.rows("alerts")) == 4


def test_a_retry_that_dies_before_its_deletes_leaves_them_to_the_next(lake: Lake) -> None:
    first = lake.sink().open(SOURCE, 100, A100)
    feed(first, range(100, 130), _three_hours)
    first.checkpoint(130, new_id(130))  # six files in three hours; not committed
    first.close()
    # intent read and written, its two files (hour 22:00) written, then it dies
    second = lake.sink(fail_after=4).open(SOURCE, 100, A100)
    feed(second, range(100, 108), _three_hours)
    with pytest.raises(SinkError):
        second.checkpoint(108, new_id(108))
    second.close()
    assert len(lake.keys("payments/")) == 3  # the first attempt's other hours are still there
    third = lake.sink().open(SOURCE, 100, A100)
    feed(third, range(100, 105), _three_hours)
    third.checkpoint(105, new_id(105))
    assert offsets_of(lake.rows("payments")) == list(range(100, 105))
    assert sorted(r["alert_id"] for r in lake.rows("alerts")) == ["a102"]


def test_consecutive_checkpoints_at_one_offset_each_keep_their_alerts(lake: Lake) -> None:
    """An idle partition's watermark moves twice with no new record: two checkpoints at one
    offset, each range with alerts of its own; every file stays as it was written."""
    sink = lake.sink().open(SOURCE, 100, A100)
    feed(sink, range(100, 110), _three_hours)
    b, c, d = new_id(110), new_id(110), new_id(110)
    sink.checkpoint(110, b)
    sink.alerts([alert("idle-1", T0 + 60_000)])
    sink.checkpoint(110, c)  # committed
    after_c = etags(lake)
    sink.alerts([alert("idle-2", T0 + 120_000), alert("idle-3", T0 + HOUR + 1)])
    sink.checkpoint(110, d)  # committed
    after_d = etags(lake)
    assert after_d.items() >= after_c.items()  # nothing written again, nothing deleted
    sink.close()

    later = lake.sink().open(SOURCE, 110, d)  # restored from d: the intent ends there
    feed(later, range(110, 120), _three_hours)
    later.checkpoint(120, new_id(120))
    assert etags(lake).items() >= after_d.items()
    names = {k.rsplit("/", 1)[1] for k in lake.keys("alerts/")}
    assert names == {file_name(SOURCE.topic, 3, s) for s in (A100, b, c, d)}
    ids = Counter(r["alert_id"] for r in lake.rows("alerts"))
    want = ["idle-1", "idle-2", "idle-3"] + [f"a{o}" for o in range(100, 120) if o % 3 == 0]
    assert ids == Counter(want)
    assert offsets_of(lake.rows("payments")) == list(range(100, 120))


@pytest.mark.parametrize("retry_end", [110, 115], ids=["zero-length", "longer"])
def test_a_retried_range_at_an_unchanged_offset_replaces_its_crashed_attempt(
    lake: Lake, retry_end: int
) -> None:
    sink = lake.sink().open(SOURCE, 100, A100)
    feed(sink, range(100, 110), _three_hours)
    b = new_id(110)
    sink.checkpoint(110, b)  # committed
    sink.alerts([alert("idle-1", T0 + 60_000), alert("idle-2", T0 + HOUR + 1)])
    sink.checkpoint(110, new_id(110))  # written, never committed
    sink.close()
    assert len(lake.keys("alerts/")) == 3

    retry = lake.sink().open(SOURCE, 110, b)  # the watermark moves less far this time
    feed(retry, range(110, retry_end), _three_hours)
    retry.alerts([alert("idle-1", T0 + 60_000)])
    end = new_id(retry_end)
    retry.checkpoint(retry_end, end)
    ids = Counter(r["alert_id"] for r in lake.rows("alerts"))
    want = ["idle-1"] + [f"a{o}" for o in range(100, retry_end) if o % 3 == 0]
    assert ids == Counter(want)
    assert offsets_of(lake.rows("payments")) == list(range(100, retry_end))
    assert (lake.intent()["start"], lake.intent()["end"]) == (b, end)

    retry.alerts([alert("idle-4", T0 + 3 * HOUR)])
    retry.checkpoint(retry_end, new_id(retry_end))  # the next range keeps the retry's files
    assert Counter(r["alert_id"] for r in lake.rows("alerts")) == ids + Counter(["idle-4"])


def test_alerts_of_a_zero_length_range_survive_the_ranges_after_it(lake: Lake) -> None:
    """An idle partition's watermark moves: alerts, then a checkpoint at the same offset."""
    sink = lake.sink().open(SOURCE, 0, None)
    feed(sink, range(10), lambda o: 0)
    sink.checkpoint(10, new_id(10))
    sink.alerts([alert("idle-1", T0 + 60_000), alert("idle-2", T0 + HOUR + 1)])
    idle = new_id(10)
    sink.checkpoint(10, idle)  # committed too
    feed(sink, range(10, 20), lambda o: 0)
    sink.checkpoint(20, new_id(20))  # dies before this commit: the retry starts from idle
    sink.close()
    retry = lake.sink().open(SOURCE, 10, idle)
    feed(retry, range(10, 16), lambda o: 0)
    retry.checkpoint(16, new_id(16))
    ids = Counter(r["alert_id"] for r in lake.rows("alerts"))
    assert ids == Counter(["idle-1", "idle-2"] + [f"a{o}" for o in range(0, 16, 3)])
    assert offsets_of(lake.rows("payments")) == list(range(16))


def test_an_empty_range_removes_a_crashed_attempt(lake: Lake) -> None:
    first = lake.sink().open(SOURCE, 100, A100)
    feed(first, range(100, 130), _three_hours)
    first.checkpoint(130, new_id(130))
    first.close()
    retry = lake.sink().open(SOURCE, 100, A100)
    retry.checkpoint(104, new_id(104))  # e.g. 100..103 were not payments (dead letters)
    assert lake.keys("payments/") == lake.keys("alerts/") == []
    assert lake.intent()["keys"] == []


# -- other writers ----------------------------------------------------------------------------


def test_a_writer_behind_the_committed_range_is_refused(lake: Lake) -> None:
    owner = lake.sink().open(SOURCE, 100, A100)
    feed(owner, range(100, 110), _three_hours)
    b = new_id(110)
    owner.checkpoint(110, b)
    feed(owner, range(110, 120), _three_hours)
    owner.checkpoint(120, new_id(120))
    feed(owner, range(120, 125), _three_hours)
    owner.checkpoint(125, new_id(125))
    zombie = lake.sink().open(SOURCE, 110, b)  # restored from a checkpoint since superseded
    feed(zombie, range(110, 115), _three_hours)
    with pytest.raises(SinkError, match=r"was written at offset 120, after this writer's range"):
        zombie.checkpoint(115, new_id(115))
    assert offsets_of(lake.rows("payments")) == list(range(100, 125))


def test_a_writer_behind_a_committed_range_at_its_own_offset_is_refused(lake: Lake) -> None:
    """Checkpoint ids at one offset are not ordered: a range from another checkpoint at the
    writer's offset that did not end at the writer's start may come after it."""
    owner = lake.sink().open(SOURCE, 100, A100)
    feed(owner, range(100, 110), _three_hours)
    b, c = new_id(110), new_id(110)
    owner.checkpoint(110, b)
    owner.alerts([alert("idle-1", T0 + 60_000)])
    owner.checkpoint(110, c)  # committed: the range from b is done
    owner.alerts([alert("idle-2", T0 + 120_000)])
    owner.checkpoint(110, new_id(110))  # the range from c, at the same offset
    before = etags(lake)
    zombie = lake.sink().open(SOURCE, 110, b)  # restored from b before the owner moved on
    zombie.alerts([alert("idle-1", T0 + 60_000)])
    with pytest.raises(SinkError, match="at the offset of this writer's range from"):
        zombie.checkpoint(110, new_id(110))
    assert etags(lake) == before
    ids = Counter(r["alert_id"] for r in lake.rows("alerts"))
    assert ids == Counter(["idle-1", "idle-2"] + [f"a{o}" for o in range(100, 110) if o % 3 == 0])


def test_a_writer_whose_partition_moved_on_is_refused(lake: Lake) -> None:
    old = lake.sink().open(SOURCE, 0, None)
    feed(old, range(5), lambda o: 0)
    five = new_id(5)
    old.checkpoint(5, five)  # committed; then the partition goes to another runner
    new = lake.sink().open(SOURCE, 5, five)
    feed(new, range(5, 9), lambda o: 0)
    new.checkpoint(9, new_id(9))  # not committed yet
    feed(old, range(5, 7), lambda o: 0)
    with pytest.raises(SinkError, match="was changed by another writer"):
        old.checkpoint(7, new_id(7))
    assert offsets_of(lake.rows("payments")) == list(range(9))


def test_another_groups_partition_is_refused(lake: Lake) -> None:
    ours = lake.sink().open(SOURCE, 0, None)
    feed(ours, range(3), lambda o: 0)
    ours.checkpoint(3, new_id(3))
    theirs = lake.sink().open(attrs.evolve(SOURCE, group="other-job"), 0, None)
    feed(theirs, range(3), lambda o: 0)
    with pytest.raises(SinkError, match="written by group 'fraud-detector', not 'other-job'"):
        theirs.checkpoint(3, new_id(3))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 1}, "not an intent of format 2"),
        ({"start": 100}, "a field of the wrong type"),
        ({"end": "00000000000000000099-0123456789ab"}, "is not a range from one checkpoint"),
        ({"end": A100}, "is not a range from one checkpoint"),
        ({"start": "00000000000000000100-start"}, "is not a range from one checkpoint"),
        ({"keys": ["alerts/dt=2023-11-14/hour=22/x.parquet"]}, "not a file of the range"),
    ],
)
def test_a_damaged_intent_is_refused(lake: Lake, change: dict[str, Any], message: str) -> None:
    first = lake.sink().open(SOURCE, 100, A100)
    feed(first, range(100, 103), lambda o: 0)
    first.checkpoint(103, new_id(103))  # not committed
    key = f"{lake.prefix}/{INTENTS}/{SOURCE.topic}/{SOURCE.partition}.json"
    lake.s3.put_object(Bucket=lake.bucket, Key=key, Body=json.dumps(lake.intent() | change))
    retry = lake.sink().open(SOURCE, 100, A100)
    with pytest.raises(SinkError, match=message):
        retry.checkpoint(100, new_id(100))


# -- errors -----------------------------------------------------------------------------------


def test_s3_failures_are_sink_errors(aws_endpoint: str) -> None:
    sink = open_parquet_sink(f"s3://{unique('no-such-bucket')}/x?endpoint_url={aws_endpoint}")
    partition = sink.open(SOURCE, 0, None)
    feed(partition, range(3), lambda o: 0)
    with pytest.raises(SinkError, match="NoSuchBucket"):
        partition.checkpoint(3, new_id(3))


def test_out_of_order_input_is_refused(lake: Lake) -> None:
    sink = lake.sink().open(SOURCE, 10, None)
    with pytest.raises(SinkError, match="before the range start"):
        sink.payments([(9, payment(9))])
    sink = lake.sink().open(SOURCE, 10, None)
    sink.payments([(10, payment(10)), (11, payment(11))])
    with pytest.raises(SinkError, match="before the range start 10 or the last payment taken"):
        sink.checkpoint(11, new_id(11))
    sink = lake.sink().open(SOURCE, 10, None)
    with pytest.raises(SinkError, match="not a decoded payment"):
        sink.payments([(10, {"payment_id": "x"})])


@pytest.mark.parametrize(
    "start", ["00000000000000000011-0123456789ab", "00000000000000000010-fresh", "10", ""]
)
def test_a_start_checkpoint_of_another_offset_is_refused(lake: Lake, start: str) -> None:
    with pytest.raises(SinkError, match="is not the id of a checkpoint at offset 10"):
        lake.sink().open(SOURCE, 10, start)


def test_a_checkpoint_id_of_another_offset_or_the_start_is_refused(lake: Lake) -> None:
    start = new_id(10)
    sink = lake.sink().open(SOURCE, 10, start)
    for offset, checkpoint_id in [(10, start), (10, fresh_start(10)), (11, new_id(12)), (11, "x")]:
        with pytest.raises(SinkError, match="is not the id of a new checkpoint at offset"):
            sink.checkpoint(offset, checkpoint_id)
    sink.payments([(10, payment(10))])
    sink.checkpoint(11, new_id(11))
    assert offsets_of(lake.rows("payments")) == [10]


def test_sink_urls_name_the_parquet_sink(aws_endpoint: str, bucket: str) -> None:
    sink: Any = open_sink(f"s3://{bucket}/lake/v1/?endpoint_url={aws_endpoint}")
    assert isinstance(sink, ParquetSink)
    assert sink.describe() == f"s3://{bucket}/lake/v1 (parquet: alerts, payments)"
    sink.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://", "no bucket name"),
        ("s3://Bad_Bucket/x", "is not an S3 bucket name"),
        ("s3://bucket/a//b", "bad prefix segment"),
        ("s3://bucket/x?data=alerts,fraud", "data must name datasets among alerts, payments"),
        ("s3://bucket/x?data=", "data must name datasets"),
        ("s3://bucket/x?data=alerts,alerts", "names a dataset twice"),
        ("s3://bucket/x?row_group_rows=0", "row_group_rows must be a number from 1"),
        ("s3://bucket/x?row_group_rows=1e5", "row_group_rows must be a number from 1"),
        ("s3://bucket/x?row_group_rows=99999999", "row_group_rows must be a number from 1"),
        ("s3://bucket/x?compression=lz4", "compression must be one of zstd, snappy"),
        ("s3://bucket/x?partitioning=day", "unknown parameter 'partitioning'"),
        ("s3://bucket/x?endpoint_url=ftp://host", "endpoint_url must be an http"),
        ("s3://bucket/x?region=no%20such%20region", "region"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(SinkError, match=message):
        open_parquet_sink(url)


def test_topics_that_cannot_name_a_file_are_refused(lake: Lake) -> None:
    with pytest.raises(SinkError, match="cannot name a Parquet file"):
        lake.sink().open(attrs.evolve(SOURCE, topic="a/b"), 0, None)


# -- any crashes, any checkpoints: exactly once -----------------------------------------------

Life = tuple[list[tuple[int, bool]], int | None]
"""Ranges (offsets in it, committed?) until one is not committed, and how many requests
the process makes before it dies (None: it does not)."""

lives = st.tuples(
    st.lists(st.tuples(st.just(0) | st.integers(0, 12), st.booleans()), min_size=1, max_size=4),
    st.none() | st.integers(0, 10),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    total=st.integers(0, 40),
    hours=st.lists(st.integers(0, 3), min_size=40, max_size=40),
    plan=st.lists(lives, min_size=1, max_size=5),
    idle=st.lists(st.booleans(), min_size=25, max_size=25),
)
def test_any_crashes_leave_each_row_exactly_once(
    aws_endpoint: str,
    bucket: str,
    total: int,
    hours: list[int],
    plan: list[Life],
    idle: list[bool],
) -> None:
    """Runner lives: each opens at the committed checkpoint (none at first: a fresh
    partition) and writes ranges until one is not committed (a crash after its checkpoint,
    or death during it); a last life writes the rest. The n-th zero-length range carries an
    alert of its own when ``idle[n]``, as when an idle partition's watermark follows the
    clock: those of committed ranges must be there once, the others not at all."""
    lake = Lake(aws_endpoint, bucket, unique("prop"), client(aws_endpoint, "s3"))
    committed, committed_id = 0, None
    idle_alerts: list[str] = []
    zero = made = 0
    for ranges, dies in [*plan, ([(total, True)], None)]:
        sink = lake.sink(fail_after=dies).open(SOURCE, committed, committed_id)
        for length, commit in ranges:
            end = min(committed + length, total)
            feed(sink, range(committed, end), lambda o: hours[o])
            extra = None
            if end == committed:
                zero += 1
                if idle[zero % len(idle)]:
                    extra, made = f"idle-{made}", made + 1
                    sink.alerts([alert(extra, T0 + hours[made % len(hours)] * HOUR)])
            checkpoint_id = new_id(end)
            try:
                sink.checkpoint(end, checkpoint_id)
            except SinkError as exc:  # the process died (never a refusal)
                assert dies is not None and "Could not connect" in str(exc), exc
                break
            if not commit:
                break
            committed, committed_id = end, checkpoint_id
            if extra is not None:
                idle_alerts.append(extra)
        sink.close()
    assert committed == total
    assert offsets_of(lake.rows("payments")) == list(range(total))
    want = [f"a{o}" for o in range(total) if o % 3 == 0] + idle_alerts
    assert sorted(r["alert_id"] for r in lake.rows("alerts")) == sorted(want)

"""The DynamoDB alert table and the ``dynamodb://`` sink, against moto's server over HTTP.

Moto never answers with unprocessed items or throttling, so the batch retry loop is also run
through a small HTTP stand-in on 127.0.0.1 that sits between boto3 and moto and holds back
part of each batch (or throttles) for the first calls."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import attrs
import boto3
import pytest
from botocore.config import Config
from support.aws_server import REGION, client, unique

from fraudcep.alert import LIVE, SHADOW, Alert
from fraudcep.alert.identity import canonical_key
from fraudcep.runtime import Backoff
from fraudcep.runtime.sink import SinkError, SourcePartition, open_sink
from fraudcep_aws.dynamodb import (
    ALERTS_TTL_S,
    BATCH_BACKOFF,
    MAX_NESTING,
    AlertTable,
    DynamoDBSink,
    TableError,
    alert_from_item,
    alert_item,
    create_alerts_table,
    from_attribute_value,
    open_dynamodb_sink,
    to_item,
)

pytestmark = pytest.mark.aws

NOW_MS = 1_800_000_000_000  # a fixed wall clock, so TTL checks do not depend on the date


def make_alert(n: int, *, key: Any = None) -> Alert:
    events = {
        "first": [{"payment_id": f"p{n}-a", "amount": 2500.5, "ts": 1_000 + n}],
        "then": [{"payment_id": f"p{n}-b", "amount": 3100, "ts": 2_000 + n}],
    }
    return Alert(
        rule_id="high-value-3-in-5m",
        key=f"u{n:05d}" if key is None else key,
        events=events,
        first_ts=1_000 + n,
        last_ts=2_000 + n,
        alert_id=f"{n:032x}",
        emitted_at=2_000 + n,
        rule_version=2,
    )


@pytest.fixture
def ddb(aws_endpoint: str) -> Any:
    return client(aws_endpoint, "dynamodb")


@pytest.fixture
def table_name(ddb: Any) -> str:
    name = unique("alerts")
    create_alerts_table(ddb, name)
    return name


def fixed_clock(ms: int) -> Callable[[], int]:
    return lambda: ms


def raw_items(ddb: Any, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in ddb.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
        items.extend(page["Items"])
    return items


# == the table ===============================================================================


def test_create_alerts_table_sets_key_stream_and_ttl_and_is_idempotent(ddb: Any) -> None:
    name = unique("alerts")
    arn = create_alerts_table(ddb, name)
    assert arn.startswith("arn:aws:dynamodb:") and f":table/{name}/stream/" in arn
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "alert_id", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert table["TableStatus"] == "ACTIVE"
    ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}

    assert create_alerts_table(ddb, name) == arn  # the second call accepts the table


def test_create_alerts_table_completes_an_existing_table(ddb: Any) -> None:
    name = unique("alerts")
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "alert_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "alert_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    arn = create_alerts_table(ddb, name)
    assert f":table/{name}/stream/" in arn
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["StreamSpecification"]["StreamViewType"] == "NEW_IMAGE"
    ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED" and ttl["AttributeName"] == "expires_at"


def test_create_alerts_table_refuses_a_table_with_another_key(ddb: Any) -> None:
    name = unique("alerts")
    ddb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "alert_id", "KeyType": "HASH"},
            {"AttributeName": "ts", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "alert_id", "AttributeType": "S"},
            {"AttributeName": "ts", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(TableError, match=r"key schema \[alert_id HASH \(S\), ts RANGE \(N\)\]"):
        create_alerts_table(ddb, name)


def test_create_alerts_table_refuses_ttl_on_another_attribute(ddb: Any) -> None:
    name = unique("alerts")
    create_alerts_table(ddb, name, ttl_attribute="gone_at")
    with pytest.raises(TableError, match="TTL on 'gone_at'"):
        create_alerts_table(ddb, name)


# == items ===================================================================================


def test_alert_item_round_trips_through_the_table(ddb: Any, table_name: str) -> None:
    alert = make_alert(7, key=("u1", 42))
    item = alert_item(alert, now_ms=NOW_MS + 999, ttl_s=3600, source="payments.raw/3")
    assert item["key"] == {"S": canonical_key(("u1", 42))}
    assert item["events"]["S"] == json.dumps(alert.to_dict()["events"], separators=(",", ":"))
    ddb.put_item(TableName=table_name, Item=item)
    stored = ddb.get_item(TableName=table_name, Key={"alert_id": {"S": alert.alert_id}})["Item"]
    assert stored == item

    plain = alert_from_item(stored)
    assert plain == {
        "alert_id": alert.alert_id,
        "rule_id": "high-value-3-in-5m",
        "rule_version": 2,
        "key": '["u1",42]',
        "first_ts": 1_007,
        "last_ts": 2_007,
        "emitted_at": 2_007,
        "detected_at": NOW_MS + 999,
        "expires_at": (NOW_MS + 999) // 1000 + 3600,
        "events": alert.to_dict()["events"],
        "source": "payments.raw/3",
    }
    assert isinstance(plain["events"]["first"][0]["amount"], float)


def test_an_alert_item_keeps_the_list_versions_its_rule_read(ddb: Any, table_name: str) -> None:
    plain = make_alert(8)
    assert "lists" not in alert_item(plain, now_ms=NOW_MS)  # items of rules without lists
    alert = attrs.evolve(plain, lists={"blocked_cards": 3, "risky_bins": 1})
    item = alert_item(alert, now_ms=NOW_MS, source="lambda")
    assert item["lists"] == {"M": {"blocked_cards": {"N": "3"}, "risky_bins": {"N": "1"}}}
    ddb.put_item(TableName=table_name, Item=item)
    stored = ddb.get_item(TableName=table_name, Key={"alert_id": {"S": alert.alert_id}})["Item"]
    assert alert_from_item(stored)["lists"] == {"blocked_cards": 3, "risky_bins": 1}


def test_a_shadow_alerts_item_says_so_and_a_live_ones_is_unchanged(
    ddb: Any, table_name: str
) -> None:
    live = make_alert(9)
    assert live.mode == LIVE and "mode" not in alert_item(live, now_ms=NOW_MS)
    shadow = attrs.evolve(make_alert(10), mode=SHADOW)
    item = alert_item(shadow, now_ms=NOW_MS, source="lambda")
    assert item["mode"] == {"S": "shadow"}
    table = AlertTable(table_name, ddb)
    assert table.put_new([live, shadow, live], source="lambda") == [live, shadow]
    assert table.put_new([live, shadow]) == []
    modes = {i["alert_id"]: i.get("mode") for i in table.live_items()}
    assert modes == {live.alert_id: None, shadow.alert_id: "shadow"}


def test_items_are_made_and_read_by_boto3s_type_serializer() -> None:
    item = to_item({"s": "x", "n": 12, "b": b"\x00", "m": {"k": [1, "y"]}, "gone": None})
    assert item == {
        "s": {"S": "x"},
        "n": {"N": "12"},
        "b": {"B": b"\x00"},
        "m": {"M": {"k": {"L": [{"N": "1"}, {"S": "y"}]}}},
    }
    assert from_attribute_value(item["m"]) == {"k": [1, "y"]}
    assert from_attribute_value({"NS": ["1", "2.5"]}) == {1, 2.5}
    assert from_attribute_value({"BS": ["AAE="]}) == {b"\x00\x01"}
    with pytest.raises(ValueError, match="an N attribute value holds 'ten', not a number"):
        from_attribute_value({"N": "ten"})


def test_alert_item_defaults() -> None:
    item = alert_item(make_alert(1), now_ms=NOW_MS)
    assert item["expires_at"] == {"N": str(NOW_MS // 1000 + ALERTS_TTL_S)}
    assert item["source"] == {"S": ""}


def test_alert_from_item_reads_stream_images_and_refuses_other_items() -> None:
    image = alert_item(make_alert(3), now_ms=NOW_MS, source="lambda")
    image["extra"] = {"B": "AAEC"}  # binary arrives base64-encoded in a stream record's JSON
    assert alert_from_item(image)["extra"] == b"\x00\x01\x02"
    assert from_attribute_value({"M": {"a": {"L": [{"N": "1.5"}, {"NULL": True}]}}}) == {
        "a": [1.5, None]
    }
    with pytest.raises(ValueError, match="missing events, source"):
        alert_from_item({k: v for k, v in image.items() if k not in ("events", "source")})
    broken = {**image, "events": {"S": "{not json"}}
    with pytest.raises(ValueError, match="events is not JSON"):
        alert_from_item(broken)
    with pytest.raises(ValueError, match="unknown DynamoDB attribute type"):
        from_attribute_value({"X": 1})


def test_attribute_values_are_converted_without_recursion_within_dynamodbs_nesting() -> None:
    value: dict[str, Any] = {"S": "bottom"}
    for level in range(MAX_NESTING):
        value = {"L": [value]} if level % 2 else {"M": {"k": value, "n": {"N": "1"}}}
    plain = from_attribute_value(value)
    for level in reversed(range(MAX_NESTING)):
        plain = plain[0] if level % 2 else plain["k"]
    assert plain == "bottom"
    with pytest.raises(ValueError, match=f"deeper than {MAX_NESTING}"):
        from_attribute_value({"L": [value]})
    deep: dict[str, Any] = {"NULL": True}
    for _ in range(100_000):
        deep = {"L": [deep]}
    with pytest.raises(ValueError, match=f"deeper than {MAX_NESTING}"):
        from_attribute_value(deep)
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(ValueError, match="an M attribute value holds a list of 1 item"):
        from_attribute_value({"M": nested})
    with pytest.raises(ValueError, match="not a DynamoDB attribute value: a list"):
        from_attribute_value(nested)  # type: ignore[arg-type]


def test_alert_items_with_deep_events_are_refused_not_recursed_on() -> None:
    image = alert_item(make_alert(3), now_ms=NOW_MS)
    image["events"] = {"S": '{"a": [' + "[" * 100_000 + "]" * 100_000 + "]}"}
    with pytest.raises(ValueError, match="events is not JSON: nests 100002 deep"):
        alert_from_item(image)


# == write_batch =============================================================================


def test_write_batch_writes_new_alerts_and_skips_a_replay(ddb: Any, table_name: str) -> None:
    alerts = [make_alert(n) for n in range(30)]  # more than one BatchWriteItem (25)
    table = AlertTable(table_name, ddb, clock=fixed_clock(NOW_MS))
    assert table.write_batch(alerts, source="payments.raw/0") == 30
    before = {i["alert_id"]["S"]: i for i in raw_items(ddb, table_name)}
    assert len(before) == 30
    assert {i["detected_at"]["N"] for i in before.values()} == {str(NOW_MS)}

    later = AlertTable(table_name, ddb, clock=fixed_clock(NOW_MS + 60_000))
    assert later.write_batch(alerts, source="payments.raw/0") == 0
    after = {i["alert_id"]["S"]: i for i in raw_items(ddb, table_name)}
    assert after == before  # nothing rewritten: detected_at and expires_at unchanged


def test_write_batch_over_100_alerts_writes_only_the_missing_ones(
    ddb: Any, table_name: str
) -> None:
    table = AlertTable(table_name, ddb, clock=fixed_clock(NOW_MS))
    first = [make_alert(n) for n in range(130)]  # more than one BatchGetItem (100)
    assert table.write_batch(first) == 130
    again = [make_alert(n) for n in range(120, 250)]
    assert table.write_batch(again) == 120
    assert len(raw_items(ddb, table_name)) == 250


def test_write_batch_deduplicates_ids_within_one_call(ddb: Any, table_name: str) -> None:
    table = AlertTable(table_name, ddb, clock=fixed_clock(NOW_MS))
    alerts = [make_alert(1), make_alert(2), make_alert(1), make_alert(2), make_alert(3)]
    assert table.write_batch(alerts) == 3
    assert sorted(i["alert_id"]["S"] for i in raw_items(ddb, table_name)) == [
        f"{n:032x}" for n in (1, 2, 3)
    ]
    assert table.write_batch([]) == 0


def test_write_batch_to_a_missing_table_raises_sink_error(ddb: Any) -> None:
    table = AlertTable(unique("missing"), ddb)
    with pytest.raises(SinkError, match="ResourceNotFoundException"):
        table.write_batch([make_alert(1)])


# == put_if_absent ===========================================================================


def test_put_if_absent_with_racing_writers_stores_each_alert_once(
    ddb: Any, table_name: str
) -> None:
    alerts = [make_alert(n) for n in range(40)]
    start = threading.Barrier(2)
    counts: dict[str, int] = {}

    def write(source: str, clock_ms: int) -> None:
        table = AlertTable(table_name, client(ddb.meta.endpoint_url, "dynamodb"))
        table.clock = fixed_clock(clock_ms)
        start.wait()
        try:
            counts[source] = table.put_if_absent(alerts, source=source)
        finally:
            table.close()

    threads = [
        threading.Thread(target=write, args=("writer-a", NOW_MS)),
        threading.Thread(target=write, args=("writer-b", NOW_MS + 5_000)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    items = raw_items(ddb, table_name)
    assert len(items) == 40
    assert counts["writer-a"] + counts["writer-b"] == 40
    # no item was rewritten: each carries the source and clock of the writer that counted it
    by_source = {"writer-a": 0, "writer-b": 0}
    for item in items:
        source = item["source"]["S"]
        by_source[source] += 1
        expected_ms = NOW_MS if source == "writer-a" else NOW_MS + 5_000
        assert item["detected_at"]["N"] == str(expected_ms)
    assert by_source == counts


def test_put_if_absent_never_rewrites(ddb: Any, table_name: str) -> None:
    first = AlertTable(table_name, ddb, clock=fixed_clock(NOW_MS))
    assert first.put_if_absent([make_alert(1)], source="one") == 1
    second = AlertTable(table_name, ddb, clock=fixed_clock(NOW_MS + 1))
    assert second.put_if_absent([make_alert(1), make_alert(2), make_alert(2)], source="two") == 1
    stored = {i["alert_id"]["S"]: i for i in raw_items(ddb, table_name)}
    assert stored[f"{1:032x}"]["source"]["S"] == "one"
    assert stored[f"{1:032x}"]["detected_at"]["N"] == str(NOW_MS)
    first.close()
    second.close()


# == readers =================================================================================


def test_readers_ignore_expired_items(ddb: Any, table_name: str) -> None:
    table = AlertTable(table_name, ddb, ttl_s=60, clock=fixed_clock(NOW_MS))
    table.write_batch([make_alert(1)])
    long_lived = AlertTable(table_name, ddb, ttl_s=3600, clock=fixed_clock(NOW_MS))
    long_lived.write_batch([make_alert(2)])

    assert table.get(f"{1:032x}") is not None
    assert [i["alert_id"] for i in table.live_items()] != []
    later = NOW_MS + 61_000  # the first item's TTL has passed; DynamoDB may not have deleted it
    assert len(raw_items(ddb, table_name)) == 2
    assert table.get(f"{1:032x}", now_ms=later) is None
    assert table.get(f"{2:032x}", now_ms=later) is not None
    assert [i["alert_id"] for i in table.live_items(now_ms=later)] == [f"{2:032x}"]
    assert table.get("no-such-alert") is None


# == the sink ================================================================================


def test_sink_from_url_writes_alerts_on_flush_and_drops_them_on_close(
    aws_endpoint: str, ddb: Any
) -> None:
    name = unique("alerts")
    url = f"dynamodb://{name}?create=true&ttl=7200&endpoint_url={quote(aws_endpoint, safe='')}"
    sink = open_sink(url)
    assert isinstance(sink, DynamoDBSink)
    assert sink.wants_payments is False
    assert sink.describe() == f"dynamodb://{name}"
    assert ddb.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE"

    part = sink.open(SourcePartition("fraud", "payments.raw", 3), 0, None)
    part.payments([(0, {"payment_id": "p"})])  # not stored, and not refused
    part.alerts([make_alert(1), make_alert(2)])
    part.alerts([make_alert(1)])  # a replay inside one transaction
    assert raw_items(ddb, name) == []  # nothing before the flush
    part.flush()
    items = {i["alert_id"]["S"]: i for i in raw_items(ddb, name)}
    assert sorted(items) == [f"{1:032x}", f"{2:032x}"]
    for item in items.values():
        assert item["source"] == {"S": "payments.raw/3"}
        assert int(item["expires_at"]["N"]) - int(item["detected_at"]["N"]) // 1000 == 7200
    part.checkpoint(10, "00000000000000000010-0123456789ab")

    part.alerts([make_alert(3)])
    part.close()  # revoked before its commit: the next owner replays it
    part.flush()
    assert len(raw_items(ddb, name)) == 2
    sink.close()


def test_sink_flush_failure_raises_sink_error_and_keeps_the_alerts(aws_endpoint: str) -> None:
    name = unique("never-created")
    sink = open_dynamodb_sink(f"dynamodb://{name}?endpoint_url={quote(aws_endpoint, safe='')}")
    part = sink.open(SourcePartition("fraud", "payments.raw", 0), 0, None)
    part.alerts([make_alert(1)])
    with pytest.raises(SinkError, match=name):
        part.flush()
    create_alerts_table(client(aws_endpoint, "dynamodb"), name)
    part.flush()  # the runner's retry after an abort: the buffered alert is written now
    assert AlertTable(name, client(aws_endpoint, "dynamodb")).get(f"{1:032x}") is not None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("dynamodb://", "no table name"),
        ("dynamodb://ab", "not a DynamoDB table name"),
        ("dynamodb://bad%20name", "not a DynamoDB table name"),
        ("dynamodb://user@table", "not a DynamoDB table name"),
        ("dynamodb://" + "t" * 256, "not a DynamoDB table name"),
        ("dynamodb://alerts/extra", "no path"),
        ("dynamodb://alerts?colour=red", "unknown parameter 'colour'"),
        ("dynamodb://alerts?ttl=0", "ttl must be a positive"),
        ("dynamodb://alerts?ttl=1h", "ttl must be a positive"),
        ("dynamodb://alerts?ttl=5&ttl=6", "given twice"),
        ("dynamodb://alerts?create=yes", "create must be true or false"),
        ("dynamodb://alerts?endpoint_url=ftp://x", "endpoint_url must be an http"),
        ("dynamodb://alerts?&&", "bad query string"),
    ],
)
def test_bad_sink_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(SinkError, match=message):
        open_sink(url)


# == retries =================================================================================


def test_batch_calls_back_off_with_the_runtime_kits_policy_and_its_old_defaults() -> None:
    assert Backoff(base_s=0.05, cap_s=5.0, max_attempts=10, deadline_s=120.0) == BATCH_BACKOFF
    assert BATCH_BACKOFF.jitter
    assert AlertTable("t", None).backoff is BATCH_BACKOFF


class _StandIn:
    """An HTTP server in front of moto that throttles the first ``throttle`` batch calls,
    then, for ``hold`` more calls of each batch operation, forwards only the first half of
    the batch (none of it with ``keep_none``) and reports the rest as unprocessed."""

    def __init__(self, upstream: str, *, hold: int, throttle: int = 0, keep_none: bool = False):
        self.upstream = upstream
        self.hold = hold
        self.throttle = throttle
        self.keep_none = keep_none
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                target = self.headers.get("X-Amz-Target", "")
                status, answer = stand_in.handle(target, body, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(answer)))
                self.send_header("x-amz-crc32", str(zlib.crc32(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        operation = target.rpartition(".")[2]
        with self.lock:
            self.calls[operation] = count = self.calls.get(operation, 0) + 1
        if operation not in ("BatchWriteItem", "BatchGetItem"):
            return self.forward(body, headers)
        if count <= self.throttle:
            error = {
                "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "message": "The level of configured provisioned throughput was exceeded",
            }
            return 400, json.dumps(error).encode()
        if count > self.throttle + self.hold:
            return self.forward(body, headers)
        request = json.loads(body)
        held: dict[str, Any] = {}
        for name, part in request["RequestItems"].items():
            wanted = part if operation == "BatchWriteItem" else part["Keys"]
            keep = 0 if self.keep_none else (len(wanted) + 1) // 2
            if operation == "BatchWriteItem":
                request["RequestItems"][name], held[name] = wanted[:keep], wanted[keep:]
            else:
                held[name] = {**part, "Keys": wanted[keep:]}
                part["Keys"] = wanted[:keep]
        reply: dict[str, Any] = {}
        if any(request["RequestItems"].values()) and not self.keep_none:
            status, answer = self.forward(json.dumps(request).encode(), headers)
            if status != 200:
                return status, answer
            reply = json.loads(answer)
        if operation == "BatchWriteItem":
            reply["UnprocessedItems"] = {name: w for name, w in held.items() if w}
        else:
            reply.setdefault("Responses", {})
            reply["UnprocessedKeys"] = {name: k for name, k in held.items() if k["Keys"]}
        return 200, json.dumps(reply).encode()

    def forward(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        wanted = ("Content-Type", "X-Amz-Target", "Authorization", "X-Amz-Date")
        request = urllib.request.Request(
            self.upstream,
            data=body,
            headers={k: v for k, v in headers.items() if k in wanted},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in(aws_endpoint: str, request: pytest.FixtureRequest) -> Iterator[_StandIn]:
    server = _StandIn(aws_endpoint, **request.param)
    yield server
    server.close()


def _no_retry_client(url: str) -> Any:
    """A client whose own retries are off, so that only the table's loop retries."""
    return boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name=REGION,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


@pytest.mark.parametrize("stand_in", [{"hold": 3, "throttle": 2}], indirect=True)
def test_write_batch_retries_unprocessed_and_throttled_requests(
    stand_in: _StandIn, ddb: Any, table_name: str
) -> None:
    earlier = AlertTable(table_name, ddb, clock=fixed_clock(NOW_MS))
    assert earlier.write_batch([make_alert(n) for n in range(0, 200, 2)]) == 100
    sleeps: list[float] = []
    table = AlertTable(
        table_name,
        _no_retry_client(stand_in.url),
        backoff=Backoff(base_s=0.001, cap_s=0.01, max_attempts=20, sleep=sleeps.append),
        clock=fixed_clock(NOW_MS + 1),
    )
    # every existing id is found although the gets came back partly unprocessed
    assert table.write_batch([make_alert(n) for n in range(200)]) == 100
    items = raw_items(ddb, table_name)
    assert len(items) == 200
    for item in items:
        n = int(item["alert_id"]["S"], 16)
        assert item["detected_at"]["N"] == str(NOW_MS if n % 2 == 0 else NOW_MS + 1)
    # 2 throttled calls and 3 half-done calls of each operation were retried: the 200 ids
    # need 2 gets and the 100 new alerts 4 writes when nothing goes wrong
    assert stand_in.calls["BatchGetItem"] >= 2 + 3 + 1
    assert stand_in.calls["BatchWriteItem"] >= 2 + 3 + 2
    assert len(sleeps) >= 5 and all(0 <= s <= 0.01 for s in sleeps)


@pytest.mark.parametrize("stand_in", [{"hold": 1_000, "keep_none": True}], indirect=True)
def test_write_batch_gives_up_and_says_what_is_left(stand_in: _StandIn, ddb: Any) -> None:
    name = unique("alerts")
    create_alerts_table(ddb, name)
    sleeps: list[float] = []
    table = AlertTable(
        name,
        _no_retry_client(stand_in.url),
        backoff=Backoff(base_s=0.001, cap_s=0.004, max_attempts=4, sleep=sleeps.append),
    )
    with pytest.raises(SinkError, match=r"gave up after 4 rounds .* not checked, nothing written"):
        table.write_batch([make_alert(n) for n in range(4)])
    assert len(sleeps) == 3
    assert raw_items(ddb, name) == []

"""The notifier Lambda against moto's server and a Slack webhook stand-in.

Alerts are written to a real table with a NEW_IMAGE stream; the notifier is handed the
table's real stream records (read with dynamodbstreams, wrapped the way Lambda wraps them)
and delivers to the Slack stand-in, to SES (checked through moto's API) and to an
EventBridge bus whose rule forwards ``source=fraudcep`` events to an SQS queue. EventBridge
is reached through a small HTTP proxy that can answer chosen entries as failed, the way
EventBridge reports a partial failure.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import pytest
from support import lambda_events
from support.aws_server import client, unique
from support.webhook_server import Webhook

from fraudcep.errors import ConfigurationError
from fraudcep_aws import lambda_logs
from fraudcep_aws.alert_text import amounts, email_subject
from fraudcep_aws.channels import (
    EVENTBRIDGE_RETRY,
    EmailChannel,
    EventBridgeChannel,
    SlackChannel,
)
from fraudcep_aws.key_state import create_state_table
from fraudcep_aws.lambda_detector import Detector, DetectorConfig
from fraudcep_aws.lambda_notifier import Notifier, NotifierConfig, handler
from fraudcep_aws.slack import SLACK_RETRY, slack_message
from fraudcep_aws.stream_event import (
    MAX_JSON_DEPTH,
    MalformedEvent,
    MalformedRecord,
    alert_from_image,
    json_depth,
    loads_bounded,
    parse_event,
    table_from_stream_arn,
)

pytestmark = pytest.mark.aws

T0 = 1_714_557_600_000  # 2024-05-01T10:00:00Z
CHANNELS = ("eventbridge", "slack", "email")


# -- the AWS side -----------------------------------------------------------------------------


class FlakyEventBridge:
    """An HTTP proxy in front of moto's EventBridge that answers chosen entries of PutEvents
    as failed (``ErrorCode``/``FailedEntryCount``) without forwarding them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.fail: dict[str, tuple[int, str]] = {}
        self.calls: list[int] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def fail_entries(self, alert_id: str, times: int, code: str = "InternalFailure") -> None:
        with self.lock:
            self.fail[alert_id] = (times, code)

    def _forward(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.upstream + path, data=body, method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return int(answer.status), answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _put_events(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        entries = json.loads(body)["Entries"]
        with self.lock:
            self.calls.append(len(entries))
            failed: dict[int, str] = {}
            for i, entry in enumerate(entries):
                alert_id = json.loads(entry["Detail"])["alert_id"]
                times, code = self.fail.get(alert_id, (0, ""))
                if times:
                    self.fail[alert_id] = (times - 1, code)
                    failed[i] = code
        kept = [e for i, e in enumerate(entries) if i not in failed]
        results: list[dict[str, Any]] = []
        if kept:
            status, answer = self._forward("/", headers, json.dumps({"Entries": kept}).encode())
            if status != 200:
                return status, answer
            results = json.loads(answer)["Entries"]
        out = []
        for i in range(len(entries)):
            if i in failed:
                out.append({"ErrorCode": failed[i], "ErrorMessage": "injected by the test"})
            else:
                out.append(results.pop(0))
        failures = sum(1 for r in out if "ErrorCode" in r)
        return 200, json.dumps({"FailedEntryCount": failures, "Entries": out}).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "accept-encoding")
                }
                if self.headers.get("X-Amz-Target") == "AWSEvents.PutEvents":
                    status, answer = proxy._put_events(headers, body)
                else:
                    status, answer = proxy._forward(self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@attrs.define
class Aws:
    """One test's table, bus, queue and SES sender on the moto server."""

    endpoint: str
    table: str
    stream_arn: str
    bus: str
    queue_url: str
    sender: str
    recipients: tuple[str, ...]
    proxy: FlakyEventBridge
    ddb: Any
    events: Any
    ses: Any
    sqs: Any

    def route_bus(self, bus: str) -> None:
        """A rule on ``bus`` sending ``source=fraudcep`` events to the queue."""
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        rule = unique("to-queue")
        self.events.put_rule(
            Name=rule, EventBusName=bus, EventPattern=json.dumps({"source": ["fraudcep"]})
        )
        self.events.put_targets(
            Rule=rule, EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}]
        )


@pytest.fixture
def aws(aws_endpoint: str) -> Iterator[Aws]:
    ddb = client(aws_endpoint, "dynamodb")
    table = unique("alerts")
    created = ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "alert_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "alert_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    sqs = client(aws_endpoint, "sqs")
    ses = client(aws_endpoint, "ses")
    sender = f"{unique('fraud')}@example.com"
    ses.verify_email_identity(EmailAddress=sender)
    proxy = FlakyEventBridge(aws_endpoint)
    env = Aws(
        endpoint=aws_endpoint,
        table=table,
        stream_arn=created["TableDescription"]["LatestStreamArn"],
        bus=unique("fraud-bus"),
        queue_url=sqs.create_queue(QueueName=unique("fraud-events"))["QueueUrl"],
        sender=sender,
        recipients=("oncall@example.com", "risk@example.com"),
        proxy=proxy,
        ddb=ddb,
        events=client(proxy.url, "events"),
        ses=ses,
        sqs=sqs,
    )
    client(aws_endpoint, "events").create_event_bus(Name=env.bus)
    env.route_bus(env.bus)
    try:
        yield env
    finally:
        proxy.close()


def alert_item(n: int, *, rule: str = "big-then-abroad", user: str = "u-1") -> dict[str, Any]:
    first = {"payment_id": f"p{n}a", "user_id": user, "amount": 2500, "currency": "EUR"}
    second = {"payment_id": f"p{n}b", "user_id": user, "amount": 3100.5, "currency": "EUR"}
    first |= {"ts": T0 + n, "country": "DE"}
    second |= {"ts": T0 + n + 250_000, "country": "BR"}
    return {
        "alert_id": {"S": f"{uuid.uuid4().hex}"},
        "rule_id": {"S": rule},
        "rule_version": {"N": "2"},
        "key": {"S": json.dumps(user)},
        "first_ts": {"N": str(T0 + n)},
        "last_ts": {"N": str(T0 + n + 250_000)},
        "emitted_at": {"N": str(T0 + n + 250_000)},
        "detected_at": {"N": str(T0 + n + 251_000)},
        "expires_at": {"N": str((T0 + n) // 1000 + 86_400)},
        "events": {"S": json.dumps({"big": [first], "abroad": [second]})},
        "source": {"S": "payments.raw/0"},
    }


def put_alerts(env: Aws, count: int, **options: Any) -> list[str]:
    """``count`` alert items written with PutItem; their ids, in write order."""
    ids = []
    for n in range(count):
        item = alert_item(n, **options)
        env.ddb.put_item(TableName=env.table, Item=item)
        ids.append(item["alert_id"]["S"])
    return ids


def stream_event(env: Aws) -> dict[str, Any]:
    """Every record of the table's stream so far, as the event Lambda would invoke with."""
    streams = client(env.endpoint, "dynamodbstreams")
    description = streams.describe_stream(StreamArn=env.stream_arn)["StreamDescription"]
    records = []
    for shard in description["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=env.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator)
            records += page["Records"]
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    out = []
    for record in records:
        ddb = dict(record["dynamodb"])
        created = ddb.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            ddb["ApproximateCreationDateTime"] = created.timestamp()
        out.append({**record, "dynamodb": ddb, "eventSourceARN": env.stream_arn})
    out.sort(key=lambda r: int(r["dynamodb"]["SequenceNumber"]))
    return {"Records": out}


def inserts(event: dict[str, Any]) -> dict[str, str]:
    """alert id -> sequence number of the INSERT records."""
    return {
        r["dynamodb"]["NewImage"]["alert_id"]["S"]: r["dynamodb"]["SequenceNumber"]
        for r in event["Records"]
        if r["eventName"] == "INSERT"
    }


def queue_details(env: Aws) -> list[dict[str, Any]]:
    """The events the bus forwarded to the queue since the last call (deleted once read)."""
    out = []
    while True:
        answer = env.sqs.receive_message(
            QueueUrl=env.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        messages = answer.get("Messages", [])
        if not messages:
            return out
        for message in messages:
            body = json.loads(message["Body"])
            assert body["source"] == "fraudcep"
            assert body["detail-type"] == "fraud.alert"
            out.append(body["detail"])
            env.sqs.delete_message(QueueUrl=env.queue_url, ReceiptHandle=message["ReceiptHandle"])


def sent_emails(env: Aws) -> list[dict[str, Any]]:
    """What moto's SES sent from this test's sender (moto's state API, over HTTP)."""
    with urllib.request.urlopen(f"{env.endpoint}/moto-api/data.json", timeout=30) as answer:
        data = json.load(answer)
    return [m for m in data["ses"]["Message"] if m["source"] == env.sender]


def slack_ids(webhook: Webhook) -> list[str]:
    """The alert ids of the Slack messages answered 200, from their Block Kit fields."""
    out = []
    for message in webhook.messages():
        fields = [
            f["text"] for b in message["blocks"] if b["type"] == "section" for f in b["fields"]
        ]
        (alert_field,) = [f for f in fields if f.startswith("*Alert id*")]
        out.append(alert_field.split("`")[1])
    return out


@attrs.define
class Context:
    """The parts of Lambda's context object the notifier reads. ``remaining_ms`` are the
    answers to successive calls (the last one repeats)."""

    remaining_ms: list[int] = attrs.Factory(lambda: [300_000])
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms.pop(0) if len(self.remaining_ms) > 1 else self.remaining_ms[0]


def make_notifier(
    env: Aws,
    webhook: Webhook,
    sleeps: list[float],
    *,
    bus: str | None = None,
    slack_attempts: int = 3,
    email: bool = True,
) -> Notifier:
    channels: list[Any] = [
        EventBridgeChannel(
            env.events,
            bus=bus or env.bus,
            source="fraudcep",
            retry=attrs.evolve(EVENTBRIDGE_RETRY, sleep=sleeps.append),
        ),
        SlackChannel(
            lambda: webhook.url,
            retry=attrs.evolve(
                SLACK_RETRY,
                max_attempts=slack_attempts,
                base_s=0.01,
                cap_s=0.05,
                sleep=sleeps.append,
            ),
        ),
    ]
    if email:
        channels.append(EmailChannel(env.ses, env.sender, env.recipients))
    return Notifier(channels, dynamodb=env.ddb)


def markers(env: Aws, alert_id: str) -> set[str]:
    item = env.ddb.get_item(TableName=env.table, Key={"alert_id": {"S": alert_id}})["Item"]
    return {name.removeprefix("delivered_") for name in item if name.startswith("delivered_")}


# -- delivery ---------------------------------------------------------------------------------


def test_each_new_alert_reaches_every_channel_once(aws: Aws, webhook: Webhook) -> None:
    ids = put_alerts(aws, 3, rule="big-then-abroad")
    event = stream_event(aws)
    sleeps: list[float] = []
    notifier = make_notifier(aws, webhook, sleeps)

    result = notifier.process(event, Context())

    assert result.response() == {"batchItemFailures": []}
    assert result.delivered == dict.fromkeys(CHANNELS, 3)
    assert sorted(slack_ids(webhook)) == sorted(ids)
    message = webhook.messages()[0]
    assert message["blocks"][0]["type"] == "header"
    assert "big-then-abroad" in message["blocks"][0]["text"]["text"]
    assert "big-then-abroad" in message["text"] and "u-1" in message["text"]
    details = queue_details(aws)
    assert sorted(d["alert_id"] for d in details) == sorted(ids)
    first = next(d for d in details if d["alert_id"] == ids[0])
    assert first["rule_id"] == "big-then-abroad" and first["rule_version"] == 2
    assert first["key"] == "u-1" and first["first_ts"] == T0 and first["last_ts"] == T0 + 250_000
    assert [p["payment_id"] for p in first["events"]["big"]] == ["p0a"]
    mails = sent_emails(aws)
    assert len(mails) == 3
    assert all(m["destinations"]["ToAddresses"] == list(aws.recipients) for m in mails)
    assert all("big-then-abroad" in m["subject"] for m in mails)
    assert sorted(i for m in mails for i in ids if i in m["body"]) == sorted(ids)
    assert all(markers(aws, i) == set(CHANNELS) for i in ids)
    assert not sleeps

    # The markers wrote MODIFY records; the next batch holds them and sends nothing again.
    again = stream_event(aws)
    assert Counter(r["eventName"] for r in again["Records"]) == {"INSERT": 3, "MODIFY": 9}
    result = notifier.process(again, Context())
    assert result.response() == {"batchItemFailures": []}
    assert result.skipped == {"MODIFY": 9} and result.delivered == {}
    assert result.already_delivered == dict.fromkeys(CHANNELS, 3)
    assert len(webhook.messages()) == 3 and not queue_details(aws) and len(sent_emails(aws)) == 3


def test_more_than_ten_alerts_take_several_put_events(aws: Aws, webhook: Webhook) -> None:
    ids = put_alerts(aws, 23)
    result = make_notifier(aws, webhook, [], email=False).process(stream_event(aws))
    assert result.response() == {"batchItemFailures": []}
    assert aws.proxy.calls == [10, 10, 3]
    assert Counter(d["alert_id"] for d in queue_details(aws)) == Counter(ids)


def test_failed_entries_are_sent_again(aws: Aws, webhook: Webhook) -> None:
    ids = put_alerts(aws, 3)
    aws.proxy.fail_entries(ids[1], times=2, code="ThrottlingException")
    sleeps: list[float] = []
    result = make_notifier(aws, webhook, sleeps, email=False).process(stream_event(aws))
    assert result.response() == {"batchItemFailures": []}
    assert aws.proxy.calls == [3, 1, 1]
    assert len(sleeps) == 2
    assert Counter(d["alert_id"] for d in queue_details(aws)) == Counter(ids)


def test_a_failing_entry_names_its_own_record_and_is_delivered_on_redelivery(
    aws: Aws, webhook: Webhook
) -> None:
    ids = put_alerts(aws, 3)
    event = stream_event(aws)
    aws.proxy.fail_entries(ids[1], times=100, code="InternalFailure")
    notifier = make_notifier(aws, webhook, [])

    result = notifier.process(event, Context())

    assert result.response() == {"batchItemFailures": [{"itemIdentifier": inserts(event)[ids[1]]}]}
    assert "eventbridge: InternalFailure" in result.failures[0].reason
    assert aws.proxy.calls == [3, 1, 1, 1]  # the first try and three retries of the one entry
    assert sorted(d["alert_id"] for d in queue_details(aws)) == sorted([ids[0], ids[2]])
    assert markers(aws, ids[1]) == {"slack", "email"}

    aws.proxy.fail.clear()
    result = notifier.process(event, Context())
    assert result.response() == {"batchItemFailures": []}
    assert result.delivered == {"eventbridge": 1}
    assert [d["alert_id"] for d in queue_details(aws)] == [ids[1]]
    assert Counter(slack_ids(webhook)) == Counter(ids)
    assert len(sent_emails(aws)) == 3


def test_a_failing_webhook_fails_the_batch_from_the_first_record_then_redelivery_sends_each_once(
    aws: Aws, webhook: Webhook
) -> None:
    ids = put_alerts(aws, 3)
    event = stream_event(aws)
    seqs = inserts(event)
    webhook.fail_next(500, times=3)
    sleeps: list[float] = []
    notifier = make_notifier(aws, webhook, sleeps, slack_attempts=3)

    result = notifier.process(event, Context())

    # Slack failed for the first alert after three attempts; it is not tried for the others
    # in this invocation, which the other channels still got.
    failed = result.response()["batchItemFailures"]
    assert failed == [{"itemIdentifier": seqs[i]} for i in ids]
    assert failed[0]["itemIdentifier"] == min(seqs.values(), key=int)
    assert "HTTP 500" in result.failures[0].reason
    assert "not attempted: slack failed" in result.failures[1].reason
    assert len(webhook.received) == 3 and webhook.messages() == []
    assert len(sleeps) == 2
    assert result.delivered == {"eventbridge": 3, "email": 3}

    result = notifier.process(event, Context())  # Lambda retries from the first failed record
    assert result.response() == {"batchItemFailures": []}
    assert result.delivered == {"slack": 3}
    assert result.already_delivered == {"eventbridge": 3, "email": 3}
    assert Counter(slack_ids(webhook)) == Counter(ids)
    assert Counter(d["alert_id"] for d in queue_details(aws)) == Counter(ids)
    assert len(sent_emails(aws)) == 3


def test_an_unverified_sender_fails_then_redelivery_sends_only_the_email(
    aws: Aws, webhook: Webhook
) -> None:
    ids = put_alerts(aws, 2)
    event = stream_event(aws)
    unverified = f"{unique('nobody')}@example.com"
    notifier = make_notifier(aws, webhook, [], email=False)
    notifier.channels = [*notifier.channels, EmailChannel(aws.ses, unverified, aws.recipients)]

    result = notifier.process(event, Context())

    assert [f["itemIdentifier"] for f in result.response()["batchItemFailures"]] == [
        inserts(event)[i] for i in ids
    ]
    assert "MessageRejected" in result.failures[0].reason
    assert Counter(slack_ids(webhook)) == Counter(ids)

    aws.ses.verify_email_identity(EmailAddress=unverified)
    result = notifier.process(event, Context())
    assert result.response() == {"batchItemFailures": []}
    assert result.delivered == {"email": 2}
    assert Counter(slack_ids(webhook)) == Counter(ids)
    assert Counter(d["alert_id"] for d in queue_details(aws)) == Counter(ids)
    with urllib.request.urlopen(f"{aws.endpoint}/moto-api/data.json", timeout=30) as answer:
        sent = [m for m in json.load(answer)["ses"]["Message"] if m["source"] == unverified]
    assert len(sent) == 2


def test_a_missing_event_bus_fails_then_redelivery_after_it_exists(
    aws: Aws, webhook: Webhook
) -> None:
    ids = put_alerts(aws, 12)
    event = stream_event(aws)
    bus = unique("later-bus")
    notifier = make_notifier(aws, webhook, [], bus=bus, email=False)

    result = notifier.process(event, Context())

    assert len(result.failures) == 12
    assert result.failures[0].sequence_number == inserts(event)[ids[0]]
    assert "ResourceNotFoundException" in result.failures[0].reason
    assert "not attempted: an earlier PutEvents request failed" in result.failures[11].reason
    assert aws.proxy.calls == [10]  # the second request is not tried
    assert Counter(slack_ids(webhook)) == Counter(ids)

    client(aws.endpoint, "events").create_event_bus(Name=bus)
    aws.route_bus(bus)
    result = notifier.process(event, Context())
    assert result.response() == {"batchItemFailures": []}
    assert Counter(d["alert_id"] for d in queue_details(aws)) == Counter(ids)
    assert Counter(slack_ids(webhook)) == Counter(ids)


def test_slack_rate_limit_waits_retry_after(aws: Aws, webhook: Webhook) -> None:
    (alert_id,) = put_alerts(aws, 1)
    webhook.fail_next(429, 1, Retry_After="1")
    sleeps: list[float] = []
    result = make_notifier(aws, webhook, sleeps, email=False).process(stream_event(aws))
    assert result.response() == {"batchItemFailures": []}
    assert sleeps == [1.0]
    assert [r.headers["x-answered"] for r in webhook.received] == ["429", "200"]
    assert slack_ids(webhook) == [alert_id]


def test_slack_rate_limit_longer_than_the_bound_fails_without_waiting(
    aws: Aws, webhook: Webhook
) -> None:
    (alert_id,) = put_alerts(aws, 1)
    event = stream_event(aws)
    webhook.fail_next(429, 1, Retry_After="3600")
    sleeps: list[float] = []
    notifier = make_notifier(aws, webhook, sleeps, email=False)
    result = notifier.process(event)
    assert result.response() == {
        "batchItemFailures": [{"itemIdentifier": inserts(event)[alert_id]}]
    }
    assert "asks to wait 3600s" in result.failures[0].reason
    assert sleeps == [] and len(webhook.received) == 1
    assert notifier.process(event).response() == {"batchItemFailures": []}
    assert slack_ids(webhook) == [alert_id]


def test_a_refused_message_is_not_retried(aws: Aws, webhook: Webhook) -> None:
    put_alerts(aws, 1)
    webhook.fail_next(404, 5)
    result = make_notifier(aws, webhook, [], email=False).process(stream_event(aws))
    assert len(webhook.received) == 1
    assert "Slack refused the message: HTTP 404" in result.failures[0].reason
    assert webhook.url not in result.failures[0].reason


# -- which records ----------------------------------------------------------------------------


def test_modify_and_remove_records_are_skipped(
    aws: Aws, webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    kept, deleted = put_alerts(aws, 2)
    aws.ddb.update_item(
        TableName=aws.table,
        Key={"alert_id": {"S": kept}},
        UpdateExpression="SET note = :n",
        ExpressionAttributeValues={":n": {"S": "seen"}},
    )
    aws.ddb.delete_item(TableName=aws.table, Key={"alert_id": {"S": deleted}})
    event = stream_event(aws)
    assert [r["eventName"] for r in event["Records"]] == ["INSERT", "INSERT", "MODIFY", "REMOVE"]
    expired = json.loads(json.dumps(event["Records"][3]))
    expired["dynamodb"]["SequenceNumber"] = str(int(expired["dynamodb"]["SequenceNumber"]) + 1)
    expired["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    event["Records"].append(expired)

    with caplog.at_level(logging.INFO, logger="fraudcep"):
        result = make_notifier(aws, webhook, [], email=False).process(event)

    assert result.response() == {"batchItemFailures": []}
    assert result.skipped == {"MODIFY": 1, "REMOVE": 1, "REMOVE_TTL": 1}
    assert result.alerts == 2
    # The deleted alert's INSERT is still a new alert: delivered, without markers.
    assert Counter(slack_ids(webhook)) == Counter([kept, deleted])
    assert any(
        r.getMessage().startswith("alert item not in the table") and r.fields["alert_id"] == deleted  # type: ignore[attr-defined]
        for r in caplog.records
    )
    summary = next(r for r in caplog.records if r.getMessage() == "batch done")
    assert summary.fields["skipped"] == result.skipped  # type: ignore[attr-defined]


def test_malformed_records_are_skipped_with_an_error_and_the_others_delivered(
    aws: Aws, webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    ids = put_alerts(aws, 4)
    event = stream_event(aws)
    seqs = inserts(event)
    records = event["Records"]
    del records[1]["dynamodb"]["NewImage"]
    records[2]["dynamodb"]["NewImage"]["rule_version"] = {"S": "two"}
    records[3]["dynamodb"]["NewImage"]["events"] = {"S": "{not json"}

    with caplog.at_level(logging.INFO, logger="fraudcep"):
        result = make_notifier(aws, webhook, [], email=False).process(event)

    # reading a record is pure: a retry would fail the same way and hold up the shard
    assert result.response() == {"batchItemFailures": []}
    assert [m.sequence_number for m in result.malformed] == [seqs[i] for i in ids[1:]]
    assert [m.alert_id for m in result.malformed] == [None, ids[2], ids[3]]
    reasons = [m.reason for m in result.malformed]
    assert "INSERT record without dynamodb.NewImage" in reasons[0]
    assert "attribute 'rule_version' is of type S, expected N" in reasons[1]
    assert "attribute 'events' is not JSON" in reasons[2]
    assert slack_ids(webhook) == [ids[0]]
    logged = [r for r in caplog.records if r.getMessage() == "malformed stream record: skipped"]
    assert all(r.levelno == logging.ERROR for r in logged)
    assert [r.fields["sequence_number"] for r in logged] == [seqs[i] for i in ids[1:]]  # type: ignore[attr-defined]
    summary = next(r for r in caplog.records if r.getMessage() == "batch done")
    assert summary.fields["malformed"] == 3  # type: ignore[attr-defined]


DEEP = 100_000


@pytest.mark.parametrize(
    ("attribute", "text", "message"),
    [
        ("events", '{"a": [' + "[" * DEEP + "]" * DEEP + "]}", f"'events' nests {DEEP + 2} deep"),
        ("events", '{"a": [' + '{"x":' * DEEP + "1" + "}" * DEEP + "]}", "'events' nests"),
        ("events", '{"a": [' + "[" * DEEP + "]}", f"'events' nests {DEEP + 2} deep"),
        ("key", "[" * 65 + "]" * 65, "'key' nests 65 deep, more than 64"),
        ("events", '{"a": [{"amount": NaN}]}', "'events' is not JSON: NaN"),
    ],
)
def test_deep_or_odd_json_in_one_item_fails_only_that_record(
    aws: Aws, webhook: Webhook, attribute: str, text: str, message: str
) -> None:
    ids = put_alerts(aws, 3)
    event = stream_event(aws)
    event["Records"][1]["dynamodb"]["NewImage"][attribute] = {"S": text}
    result = make_notifier(aws, webhook, [], email=False).process(event)
    assert result.response() == {"batchItemFailures": []}
    [bad] = result.malformed
    assert bad.alert_id == ids[1]
    assert message in bad.reason
    assert sorted(slack_ids(webhook)) == sorted([ids[0], ids[2]])


def test_json_nesting_at_the_limit_is_delivered_to_every_channel(
    aws: Aws, webhook: Webhook
) -> None:
    (alert_id,) = put_alerts(aws, 1)
    event = stream_event(aws)
    deep: Any = "bottom"
    for _ in range(MAX_JSON_DEPTH - 3):  # {"a": [{"amount": 1, "x": <deep>}]}
        deep = [deep]
    events = {"a": [{"amount": 1, "currency": "EUR", "x": deep}]}
    assert json_depth(json.dumps(events)) == MAX_JSON_DEPTH
    event["Records"][0]["dynamodb"]["NewImage"]["events"] = {"S": json.dumps(events)}
    result = make_notifier(aws, webhook, []).process(event)
    assert result.response() == {"batchItemFailures": []}
    assert result.malformed == ()
    assert result.delivered == {"slack": 1, "email": 1, "eventbridge": 1}
    assert slack_ids(webhook) == [alert_id]
    [detail] = queue_details(aws)
    assert detail["events"] == events


def test_records_with_odd_fields_are_skipped_without_recursing_on_them(
    aws: Aws, webhook: Webhook
) -> None:
    ids = put_alerts(aws, 2)
    event = stream_event(aws)
    nested: Any = []
    for _ in range(DEEP):
        nested = [nested]
    odd = event["Records"][0]
    odd["eventName"] = nested  # its repr would recurse: it is described by its type
    odd["eventID"] = {"x": nested}
    odd["dynamodb"]["NewImage"]["rule_id"] = {"M": {"deep": nested}}
    result = make_notifier(aws, webhook, [], email=False).process(event)
    assert result.response() == {"batchItemFailures": []}
    [bad] = result.malformed
    assert "eventName is '<list>'" in bad.reason
    assert slack_ids(webhook) == [ids[1]]
    image = event["Records"][1]["dynamodb"]["NewImage"]
    image["rule_id"] = {"M": {"deep": nested}}
    with pytest.raises(MalformedRecord, match="'rule_id' is of type M, expected S"):
        alert_from_image(image)
    image["rule_id"] = nested
    with pytest.raises(MalformedRecord, match="not a DynamoDB attribute value: a list of 1"):
        alert_from_image(image)
    with pytest.raises(MalformedEvent, match="SequenceNumber is a list of 1 item"):
        parse_event({"Records": [{"dynamodb": {"SequenceNumber": nested}}]})


def test_json_depth_measures_without_parsing() -> None:
    assert json_depth("1") == 0
    assert json_depth('"[[[" ') == 0
    assert json_depth('{"a": "]]]\\"[[", "b": [[1], {"c": []}]}') == 4
    assert json_depth("[" * DEEP) == DEEP
    with pytest.raises(ValueError, match=f"nests {DEEP} deep"):
        loads_bounded("[" * DEEP + "]" * DEEP)
    assert loads_bounded("[[1]]", max_depth=2) == [[1]]


def test_a_channel_that_raises_fails_its_alerts_not_the_batch(aws: Aws, webhook: Webhook) -> None:
    ids = put_alerts(aws, 2)
    event = stream_event(aws)

    class Broken:
        name = "broken"

        def deliver(self, alerts: Any, budget: Any, on_delivered: Any) -> dict[str, str]:
            on_delivered(alerts[0])
            raise RecursionError("maximum recursion depth exceeded")

    result = Notifier([Broken()], dynamodb=aws.ddb).process(event)
    seqs = inserts(event)
    assert result.response() == {"batchItemFailures": [{"itemIdentifier": seqs[ids[1]]}]}
    assert "the channel raised RecursionError" in result.failures[0].reason
    assert result.delivered == {"broken": 1}


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({}, "'Records' is missing"),
        ({"Records": "x"}, "'Records' is a str"),
        ([], "not an object with 'Records'"),
        ({"Records": [1]}, r"Records\[0\] is a int"),
        ({"Records": [{"eventName": "INSERT"}]}, r"Records\[0\] has no 'dynamodb'"),
        ({"Records": [{"dynamodb": {"SequenceNumber": ""}}]}, "SequenceNumber is ''"),
    ],
)
def test_malformed_events_raise(event: Any, message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        parse_event(event)


def test_unknown_event_names_and_sources_are_skipped(aws: Aws, webhook: Webhook) -> None:
    (alert_id,) = put_alerts(aws, 1)
    event = stream_event(aws)
    odd = json.loads(json.dumps(event["Records"][0]))
    odd["eventName"] = "UPSERT"
    odd["dynamodb"]["SequenceNumber"] += "1"
    foreign = json.loads(json.dumps(event["Records"][0]))
    foreign["eventSource"] = "aws:kinesis"
    foreign["dynamodb"]["SequenceNumber"] += "2"
    event["Records"] += [odd, foreign]
    result = make_notifier(aws, webhook, [], email=False).process(event)
    assert result.failures == ()
    assert [m.sequence_number for m in result.malformed] == [
        odd["dynamodb"]["SequenceNumber"],
        foreign["dynamodb"]["SequenceNumber"],
    ]
    assert "eventName is 'UPSERT'" in result.malformed[0].reason
    assert "eventSource is 'aws:kinesis'" in result.malformed[1].reason
    assert slack_ids(webhook) == [alert_id]


def test_out_of_time_records_are_reported_not_started(aws: Aws, webhook: Webhook) -> None:
    ids = put_alerts(aws, 3)
    event = stream_event(aws)
    # 60 s at the start, so 10 s are kept back; then only 9 s are left.
    result = make_notifier(aws, webhook, []).process(event, Context([60_000, 9_000]))
    assert [f.sequence_number for f in result.failures] == [inserts(event)[i] for i in ids]
    assert all("out of time" in f.reason for f in result.failures)
    assert webhook.received == [] and aws.proxy.calls == [] and not sent_emails(aws)


def test_a_short_function_timeout_keeps_back_a_quarter(aws: Aws, webhook: Webhook) -> None:
    ids = put_alerts(aws, 2)
    result = make_notifier(aws, webhook, []).process(stream_event(aws), Context([3_000]))
    assert result.response() == {"batchItemFailures": []}
    assert Counter(slack_ids(webhook)) == Counter(ids)


def test_an_alert_too_large_for_eventbridge_goes_without_its_events(
    aws: Aws, webhook: Webhook
) -> None:
    item = alert_item(0)
    events = {"big": [{"amount": 1, "currency": "EUR", "memo": "x" * 300_000}], "abroad": []}
    item["events"] = {"S": json.dumps(events)}
    aws.ddb.put_item(TableName=aws.table, Item=item)
    result = make_notifier(aws, webhook, []).process(stream_event(aws))
    assert result.response() == {"batchItemFailures": []}
    (detail,) = queue_details(aws)
    assert detail["alert_id"] == item["alert_id"]["S"]
    assert detail["events"] == {} and detail["events_omitted"] == {"big": 1, "abroad": 0}
    (message,) = webhook.messages()
    assert len(json.dumps(message)) < 10_000


# -- the Lambda entry point -------------------------------------------------------------------


@pytest.fixture
def fresh_logging() -> Iterator[None]:
    """Undo what the handler does to the ``fraudcep`` logger."""
    logger = logging.getLogger(lambda_logs.LOGGER_NAME)
    saved = (logger.handlers[:], logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved


def test_handler_from_environment(
    aws: Aws,
    webhook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
    fresh_logging: None,
) -> None:
    ids = put_alerts(aws, 2)
    event = stream_event(aws)
    secret = unique("slack-webhook")
    client(aws.endpoint, "secretsmanager").create_secret(
        Name=secret, SecretString=json.dumps({"url": webhook.url})
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    monkeypatch.setenv("FRAUDCEP_SLACK_WEBHOOK_URL", f"secretsmanager:{secret}")
    monkeypatch.setenv("FRAUDCEP_EMAIL_FROM", aws.sender)
    monkeypatch.setenv("FRAUDCEP_EMAIL_TO", " oncall@example.com, risk@example.com ")
    monkeypatch.setenv("FRAUDCEP_EVENT_BUS", aws.bus)
    monkeypatch.delenv("FRAUDCEP_ALERTS_TABLE", raising=False)  # the stream's table
    out = io.StringIO()
    lambda_logs.configure(stream=out)

    answer = handler(event, Context(aws_request_id="req-42"))

    assert answer == {"batchItemFailures": []}
    assert Counter(slack_ids(webhook)) == Counter(ids)
    assert Counter(d["alert_id"] for d in queue_details(aws)) == Counter(ids)
    assert len(sent_emails(aws)) == 2
    assert all(markers(aws, i) == set(CHANNELS) for i in ids)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {line["request_id"] for line in lines} == {"req-42"}
    delivered = [line for line in lines if line["msg"] == "alert delivered"]
    assert Counter((d["alert_id"], d["channel"]) for d in delivered) == Counter(
        (i, c) for i in ids for c in CHANNELS
    )
    assert {(d["rule_id"], d["mode"]) for d in delivered} == {("big-then-abroad", "live")}
    assert "/services/" not in out.getvalue()  # the webhook URL is a secret

    with pytest.raises(MalformedEvent):
        handler({"records": []}, Context())
    assert json.loads(out.getvalue().splitlines()[-1])["msg"].startswith("malformed event")


def test_handler_reads_the_webhook_from_ssm(
    aws: Aws, webhook: Webhook, monkeypatch: pytest.MonkeyPatch, fresh_logging: None
) -> None:
    (alert_id,) = put_alerts(aws, 1)
    name = f"/fraudcep/{unique('webhook')}"
    client(aws.endpoint, "ssm").put_parameter(Name=name, Value=webhook.url, Type="SecureString")
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    monkeypatch.setenv("FRAUDCEP_SLACK_WEBHOOK_URL", f"ssm:{name}")
    monkeypatch.setenv("FRAUDCEP_EVENT_BUS", "none")
    monkeypatch.setenv("FRAUDCEP_ALERTS_TABLE", aws.table)
    for name_ in ("FRAUDCEP_EMAIL_FROM", "FRAUDCEP_EMAIL_TO"):
        monkeypatch.delenv(name_, raising=False)
    lambda_logs.configure(stream=io.StringIO())
    assert handler(stream_event(aws), Context()) == {"batchItemFailures": []}
    assert slack_ids(webhook) == [alert_id]
    assert markers(aws, alert_id) == {"slack"}


# -- configuration and formatting -------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FRAUDCEP_EMAIL_FROM": "a@example.com"}, "needs both FRAUDCEP_EMAIL_FROM"),
        ({"FRAUDCEP_EMAIL_TO": "a@example.com"}, "needs both FRAUDCEP_EMAIL_FROM"),
        ({"FRAUDCEP_EVENT_BUS": "none"}, "no channel configured"),
        ({"FRAUDCEP_SLACK_WEBHOOK_URL": "hooks.slack.com/x"}, "not an http"),
    ],
)
def test_bad_configuration_is_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        NotifierConfig.from_env(environ)


def test_configuration_defaults() -> None:
    config = NotifierConfig.from_env(
        {"FRAUDCEP_EMAIL_FROM": "a@x.io", "FRAUDCEP_EMAIL_TO": "b@x.io,c@x.io"}
    )
    assert config.event_bus == "default" and config.event_source == "fraudcep"
    assert config.email_to == ("b@x.io", "c@x.io") and config.slack_webhook is None
    secret = NotifierConfig.from_env(
        {"FRAUDCEP_SLACK_WEBHOOK_URL": "https://hooks.slack.com/s/T/B/k"}
    )
    assert "hooks.slack.com" not in repr(secret)


def test_bad_email_addresses_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="not an e-mail address"):
        EmailChannel(None, "alerts@example.com", ("oncall example.com",))


def _image(**changes: Any) -> dict[str, Any]:
    item = alert_item(0)
    item.update(changes)
    return item


def test_slack_message_is_bounded_and_escaped() -> None:
    alert = alert_from_image(
        _image(
            rule_id={"S": "r<&>" + "x" * 300},
            key={"S": json.dumps("<!channel> " + "k" * 500)},
            events={"S": json.dumps({"s": [{"amount": i, "currency": "USD"} for i in range(20)]})},
        )
    )
    message = slack_message(alert)
    header = message["blocks"][0]["text"]["text"]
    assert len(header) <= 150
    fields = message["blocks"][1]["fields"]
    assert len(fields) <= 10 and all(len(f["text"]) <= 2000 for f in fields)
    assert "<!channel>" not in json.dumps(message) and "&lt;!channel&gt;" in fields[1]["text"]
    assert "+ 12 more = 190.00 USD" in amounts(alert)
    assert "\n" not in email_subject(alert) and len(email_subject(alert)) <= 200


def test_amounts_by_currency() -> None:
    events = {"a": [{"amount": 10, "currency": "EUR"}, {"amount": 2.5, "currency": "USD"}]}
    alert = alert_from_image(_image(events={"S": json.dumps(events)}))
    assert amounts(alert) == "10.00 EUR + 2.50 USD = 10.00 EUR, 2.50 USD"
    alert = alert_from_image(_image(events={"S": json.dumps({"a": [{"x": 1}]})}))
    assert amounts(alert) == "n/a"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"first_ts": {"N": "1.5"}}, "'first_ts' is 1.5, not an integer"),
        ({"first_ts": {"N": "abc"}}, "'first_ts' is NaN, not an integer"),
        ({"rule_id": {"S": 3}}, "'rule_id' \\(S\\) holds a int"),
        ({"key": {"S": "u-1"}}, "'key' is not JSON"),
        ({"events": {"S": "[]"}}, "'events' must be a JSON object"),
        ({"alert_id": {"S": ""}}, "'alert_id' is empty"),
        ({"rule_id": {"Q": "x"}}, "unknown DynamoDB type 'Q'"),
        ({"mode": {"S": "dark"}}, "'mode' is 'dark', not one of \\('live', 'shadow'\\)"),
        ({"mode": {"N": "1"}}, "'mode' is of type N, expected S"),
        ({"lists": {"S": "x"}}, "'lists' is not an M attribute value"),
        ({"lists": {"M": {"blocked": {"S": "2"}}}}, "'blocked' is of type S, expected N"),
        ({"lists": {"M": {"blocked": {"N": "1.5"}}}}, "'blocked' is 1.5, not an integer"),
    ],
)
def test_bad_alert_items_are_named(change: dict[str, Any], message: str) -> None:
    from fraudcep_aws.stream_event import MalformedRecord

    with pytest.raises(MalformedRecord, match=message):
        alert_from_image(_image(**change))


def test_an_items_mode_is_read_live_by_default() -> None:
    assert alert_from_image(_image()).mode == "live"
    assert alert_from_image(_image(mode={"S": "live"})).shadow is False
    assert alert_from_image(_image(mode={"S": "shadow"})).shadow is True


def test_the_list_versions_of_an_alert_go_in_its_eventbridge_event(
    aws: Aws, webhook: Webhook
) -> None:
    item = alert_item(0)
    item["lists"] = {"M": {"blocked_cards": {"N": "3"}, "risky_bins": {"N": "1"}}}
    aws.ddb.put_item(TableName=aws.table, Item=item)
    (plain,) = put_alerts(aws, 1)
    result = make_notifier(aws, webhook, [], email=False).process(stream_event(aws))
    assert result.response() == {"batchItemFailures": []}
    details = {d["alert_id"]: d for d in queue_details(aws)}
    assert details[item["alert_id"]["S"]]["lists"] == {"blocked_cards": 3, "risky_bins": 1}
    assert "lists" not in details[plain]


def test_missing_attribute_is_named() -> None:
    from fraudcep_aws.stream_event import MalformedRecord

    image = _image()
    del image["last_ts"]
    with pytest.raises(MalformedRecord, match="no attribute 'last_ts'"):
        alert_from_image(image)


def test_table_from_stream_arn() -> None:
    arn = (
        "arn:aws:dynamodb:eu-west-1:123456789012:table/fraud_alerts/stream/2024-05-01T00:00:00.000"
    )
    assert table_from_stream_arn(arn) == "fraud_alerts"
    assert table_from_stream_arn("arn:aws:kinesis:eu-west-1:1:stream/x") is None


def test_notifier_needs_a_channel() -> None:
    with pytest.raises(ConfigurationError, match="no channel"):
        Notifier([])


# -- shadow rules: the detector records, the notifier sends nothing ----------------------------

SHADOW_RULES = """
- id: big-live
  version: 1
  key: user_id
  pattern:
    - {name: pay, where: amount > 1000}
- id: big-shadow
  version: 1
  mode: shadow
  key: user_id
  pattern:
    - {name: pay, where: amount > 500}
"""


def detect(env: Aws, rules: Path, state: str, offset: int, *payments: dict[str, Any]) -> Any:
    """The detector on ``rules`` writing to the test's table: the payments on partition 0,
    then one 10 s later that moves the partition's event time past them."""
    last = max(p["ts"] for p in payments)
    rows = [*payments, lambda_events.payment("u-tail", last + 10_000, 1.0, n=offset)]
    event = lambda_events.msk_event(
        [lambda_events.record(p, 0, offset + i) for i, p in enumerate(rows)]
    )
    config = DetectorConfig(alerts_table=env.table, state_table=state, rules=str(rules))
    detector = Detector.from_config(config, dynamodb=env.ddb)
    try:
        return detector.process(event)
    finally:
        detector.close()


pay = lambda_events.payment


def items_by_rule(env: Aws) -> dict[tuple[str, str], dict[str, Any]]:
    """(rule id, key) -> the alert item, as stored."""
    out = {}
    for page in env.ddb.get_paginator("scan").paginate(TableName=env.table, ConsistentRead=True):
        for item in page["Items"]:
            out[(item["rule_id"]["S"], json.loads(item["key"]["S"]))] = item
    return out


def test_a_shadow_rules_alerts_are_recorded_marked_and_never_sent(
    aws: Aws, webhook: Webhook, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SHADOW_RULES, encoding="utf-8")
    state = unique("state")
    create_state_table(aws.ddb, state)
    report = detect(aws, rules, state, 0, pay("u1", T0, 2000.0, n=1), pay("u2", T0, 700.0, n=1))
    assert report.failures == ()
    assert report.by_rule() == [
        {"rule_id": "big-live", "mode": "live", "alerts": 1, "new_alerts": 1},
        {"rule_id": "big-shadow", "mode": "shadow", "alerts": 2, "new_alerts": 2},
    ]
    lines = [json.loads(line) for line in report.metric_lines(timestamp_ms=T0)]
    assert [(m["rule_id"], m["mode"], m["NewAlerts"]) for m in lines] == [
        ("big-live", "live", 1),
        ("big-shadow", "shadow", 2),
    ]
    (directive,) = lines[0]["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["rule_id", "mode"]]
    assert {m["Name"] for m in directive["Metrics"]} == {"Alerts", "NewAlerts"}

    items = items_by_rule(aws)
    assert set(items) == {("big-live", "u1"), ("big-shadow", "u1"), ("big-shadow", "u2")}
    assert "mode" not in items[("big-live", "u1")]  # a live item is as it always was
    assert items[("big-shadow", "u1")]["mode"] == {"S": "shadow"}
    assert items[("big-shadow", "u2")]["mode"] == {"S": "shadow"}
    live_id = items[("big-live", "u1")]["alert_id"]["S"]
    shadow_ids = {items[k]["alert_id"]["S"] for k in items if k[0] == "big-shadow"}

    notifier = make_notifier(aws, webhook, [])
    with caplog.at_level(logging.INFO, logger="fraudcep.lambda.notifier"):
        result = notifier.process(stream_event(aws), Context())
    assert result.response() == {"batchItemFailures": []}
    assert result.alerts == 3 and result.shadow == {"big-shadow": 2}
    assert result.delivered == dict.fromkeys(CHANNELS, 1)
    assert slack_ids(webhook) == [live_id]
    assert [d["alert_id"] for d in queue_details(aws)] == [live_id]
    assert [live_id in m["body"] for m in sent_emails(aws)] == [True]
    assert markers(aws, live_id) == set(CHANNELS)
    assert all(markers(aws, i) == set() for i in shadow_ids)
    skipped = [r for r in caplog.records if r.getMessage() == "shadow alert: not sent"]
    assert {r.fields["alert_id"] for r in skipped} == shadow_ids  # type: ignore[attr-defined]
    (done,) = [r for r in caplog.records if r.getMessage() == "batch done"]
    assert done.fields["shadow"] == {"big-shadow": 2}  # type: ignore[attr-defined]

    # redelivered: the live alert is not sent again, the shadow ones never fail or go out
    again = notifier.process(stream_event(aws), Context())
    assert again.response() == {"batchItemFailures": []} and again.shadow == {"big-shadow": 2}
    assert again.delivered == {} and again.already_delivered == dict.fromkeys(CHANNELS, 1)
    assert len(webhook.messages()) == 1 and not queue_details(aws) and len(sent_emails(aws)) == 1


def test_a_promoted_rules_next_alert_is_live_and_sent(
    aws: Aws, webhook: Webhook, tmp_path: Path
) -> None:
    shadow = tmp_path / "shadow.yaml"
    shadow.write_text(SHADOW_RULES, encoding="utf-8")
    state = unique("state")
    create_state_table(aws.ddb, state)
    notifier = make_notifier(aws, webhook, [], email=False)
    detect(aws, shadow, state, 0, pay("u2", T0, 700.0, n=1))
    assert notifier.process(stream_event(aws)).shadow == {"big-shadow": 1}
    assert webhook.messages() == [] and queue_details(aws) == []

    # the promotion: a new rule file (the detector's rule-change path) with the rule's next
    # version in mode live; the mode cannot change under the same version
    promoted = tmp_path / "promoted.yaml"
    promoted.write_text(
        SHADOW_RULES.replace("version: 1\n  mode: shadow\n", "version: 2\n"), encoding="utf-8"
    )
    report = detect(aws, promoted, state, 2, pay("u2", T0 + 60_000, 700.0, n=2))
    assert report.by_rule() == [
        {"rule_id": "big-shadow", "mode": "live", "alerts": 1, "new_alerts": 1}
    ]
    promoted_item = next(
        i
        for i in scan_items(aws)
        if i["rule_id"]["S"] == "big-shadow" and i["rule_version"]["N"] == "2"
    )
    assert "mode" not in promoted_item
    result = notifier.process(stream_event(aws))
    assert result.response() == {"batchItemFailures": []}
    assert result.shadow == {"big-shadow": 1}  # the earlier shadow alert, still not sent
    promoted_id = promoted_item["alert_id"]["S"]
    assert slack_ids(webhook) == [promoted_id]
    assert [(d["alert_id"], d["rule_version"]) for d in queue_details(aws)] == [(promoted_id, 2)]


def scan_items(env: Aws) -> list[dict[str, Any]]:
    return [
        item
        for page in env.ddb.get_paginator("scan").paginate(TableName=env.table)
        for item in page["Items"]
    ]

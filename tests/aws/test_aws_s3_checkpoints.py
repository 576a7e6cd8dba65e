"""The S3 checkpoint store against moto's server: the same behaviour as the directory store
(the shared tests run on both: chains of deltas, state keys, pruning by offset and by id),
its object layout, a chain compacted in a worker process that opens the store again from its
location, and clear errors for bad locations."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest
from support.aws_server import client, unique

from fraudcep import Engine
from fraudcep.payments.default_rules import default_rule_definitions
from fraudcep.rules import dump_rules, load_rules
from fraudcep.runtime.checkpoint import (
    DELTA,
    Checkpoint,
    CheckpointError,
    load_chain,
    new_id,
    open_checkpoint_store,
)
from fraudcep_aws.s3_checkpoints import S3CheckpointStore, open_s3_store
from fraudcep_kafka.checkpoints import CheckpointStore, CheckpointWork, DirectoryCheckpointStore

pytestmark = pytest.mark.aws

GROUP, TOPIC = "fraud-detector", "payments.raw"


@pytest.fixture(scope="module")
def bucket(aws_endpoint: str) -> str:
    name = unique("checkpoints")
    client(aws_endpoint, "s3").create_bucket(Bucket=name)
    return name


def _s3_store(endpoint: str, bucket: str, prefix: str) -> S3CheckpointStore:
    return open_s3_store(f"s3://{bucket}/{prefix}?endpoint_url={endpoint}")


@attrs.define
class Backend:
    """A store and a way to put raw bytes where the store keeps a checkpoint."""

    store: CheckpointStore
    put_raw: Callable[[int, str, bytes], None]
    """(partition, object name, bytes)"""


@pytest.fixture(params=["directory", "s3"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, aws_endpoint: str, bucket: str
) -> Iterator[Backend]:
    if request.param == "directory":

        def put_file(partition: int, name: str, data: bytes) -> None:
            directory = tmp_path / GROUP / TOPIC / str(partition)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(data)

        yield Backend(DirectoryCheckpointStore(tmp_path), put_file)
        return
    prefix = unique("ck")
    s3 = client(aws_endpoint, "s3")

    def put_object(partition: int, name: str, data: bytes) -> None:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{GROUP}/{TOPIC}/{partition}/{name}", Body=data)

    yield Backend(_s3_store(aws_endpoint, bucket, prefix), put_object)


def _checkpoint(offset: int, partition: int = 0, snapshot: bytes = b"state") -> Checkpoint:
    return Checkpoint(GROUP, TOPIC, partition, offset, snapshot, "rules: []\n")


# -- the behaviour both stores share ----------------------------------------------------------


def test_a_saved_checkpoint_loads_back_equal(backend: Backend) -> None:
    first, second = _checkpoint(7, snapshot=b"\x00" * 100_000), _checkpoint(7, snapshot=b"b")
    backend.store.save(first)
    backend.store.save(second)  # same offset, another id: both kept
    assert backend.store.load(GROUP, TOPIC, 0, first.checkpoint_id) == first
    assert backend.store.load(GROUP, TOPIC, 0, second.checkpoint_id) == second


def test_a_missing_checkpoint_is_a_checkpoint_error(backend: Backend) -> None:
    with pytest.raises(CheckpointError, match="missing"):
        backend.store.load(GROUP, TOPIC, 0, new_id(5))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum mismatch"),
        (lambda b: b[: len(b) // 2], "checksum mismatch"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b"PAR1" + b[4:], "not a fraudcep checkpoint"),
    ],
    ids=["flipped-bit", "half", "header-cut", "other-file"],
)
def test_a_damaged_checkpoint_is_a_checkpoint_error(
    backend: Backend, damage: Callable[[bytes], bytes], message: str
) -> None:
    checkpoint = _checkpoint(9)
    backend.put_raw(0, f"{checkpoint.checkpoint_id}.ckpt", damage(checkpoint.to_bytes()))
    with pytest.raises(CheckpointError, match=message):
        backend.store.load(GROUP, TOPIC, 0, checkpoint.checkpoint_id)


def test_another_partitions_checkpoint_is_refused(backend: Backend) -> None:
    theirs = _checkpoint(11, partition=1)
    backend.put_raw(2, f"{theirs.checkpoint_id}.ckpt", theirs.to_bytes())
    with pytest.raises(CheckpointError, match=r"payments.raw\[1\].*not .*payments.raw\[2\]"):
        backend.store.load(GROUP, TOPIC, 2, theirs.checkpoint_id)


def test_prune_deletes_the_partitions_checkpoints_below_the_offset(backend: Backend) -> None:
    old, at, newer = _checkpoint(5), _checkpoint(10), _checkpoint(20)
    other = _checkpoint(1, partition=1)
    for c in (old, _checkpoint(6), at, newer, other):
        backend.store.save(c)
    backend.put_raw(0, "README.txt", b"not a checkpoint")
    assert backend.store.prune(GROUP, TOPIC, 0, 10) == 2
    assert backend.store.prune(GROUP, TOPIC, 0, 10) == 0
    with pytest.raises(CheckpointError, match="missing"):
        backend.store.load(GROUP, TOPIC, 0, old.checkpoint_id)
    for kept in (at, newer):
        assert backend.store.load(GROUP, TOPIC, 0, kept.checkpoint_id) == kept
    assert backend.store.load(GROUP, TOPIC, 1, other.checkpoint_id) == other
    assert backend.store.prune(GROUP, TOPIC, 7, 100) == 0  # a partition never saved


@pytest.mark.parametrize(
    ("group", "topic", "checkpoint_id"),
    [
        ("a/b", TOPIC, new_id(1)),
        (GROUP, "..", new_id(1)),
        (GROUP, TOPIC, "../../etc/passwd"),
        (GROUP, TOPIC, "00000000000000000001"),
    ],
)
def test_names_that_are_not_names_are_refused(
    backend: Backend, group: str, topic: str, checkpoint_id: str
) -> None:
    with pytest.raises(CheckpointError):
        backend.store.load(group, topic, 0, checkpoint_id)


RULES = dump_rules(default_rule_definitions())
KEY = "a state key for the s3 tests"


def _rules() -> list[Any]:
    return [d.rule for d in load_rules(RULES)]


def _pay(n: int) -> dict[str, Any]:
    user = f"u{n % 40}"
    return {"payment_id": f"p{n}", "user_id": user, "card_id": user, "merchant": "m1",
            "country": "DE", "amount": 2500.0 if n % 3 else 20.0, "currency": "EUR",
            "status": "approved", "ts": 1_700_000_000_000 + n * 1_000}  # fmt: skip


def _chain(store: CheckpointStore, state_key: str | None = None) -> tuple[Engine, list[Checkpoint]]:
    """An engine and its chain in ``store``: a base and three deltas."""
    engine = Engine(_rules(), timestamp="ts", event_id="payment_id", state_key=state_key)
    engine.process_many(_pay(n) for n in range(100))
    chain = [Checkpoint(GROUP, TOPIC, 0, 100, engine.snapshot(), RULES)]
    for k in range(3):
        engine.process_many(_pay(n) for n in range(100 + 30 * k, 130 + 30 * k))
        chain.append(Checkpoint(
            GROUP, TOPIC, 0, 130 + 30 * k, engine.snapshot_delta(), RULES, kind=DELTA,
            parent=chain[-1].checkpoint_id, base=chain[0].checkpoint_id,
        ))  # fmt: skip
    for checkpoint in chain:
        store.save(checkpoint, state_key=state_key)
    return engine, chain


def _same(engine: Engine, chain: list[Checkpoint], state_key: str | None = None) -> None:
    restored = Engine.restore(
        chain[0].snapshot, _rules(), deltas=[c.snapshot for c in chain[1:]],
        timestamp="ts", event_id="payment_id", state_key=state_key,
    )  # fmt: skip
    more = [_pay(n) for n in range(190, 400)]
    want = [a.alert_id for a in engine.process_many(more)] + [a.alert_id for a in engine.flush()]
    got = [a.alert_id for a in restored.process_many(more)]
    assert want and got + [a.alert_id for a in restored.flush()] == want


def test_a_chain_of_deltas_loads_back_to_its_state(backend: Backend) -> None:
    engine, chain = _chain(backend.store, state_key=KEY)
    loaded = load_chain(backend.store, GROUP, TOPIC, 0, chain[-1].checkpoint_id, state_key=KEY)
    assert loaded == chain
    _same(engine, loaded, state_key=KEY)
    with pytest.raises(CheckpointError, match="none was given"):
        load_chain(backend.store, GROUP, TOPIC, 0, chain[-1].checkpoint_id)


def test_a_damaged_delta_breaks_its_chain(backend: Backend) -> None:
    _, chain = _chain(backend.store)
    damaged = bytearray(chain[2].to_bytes())
    damaged[-3] ^= 0x01
    backend.put_raw(0, f"{chain[2].checkpoint_id}.ckpt", bytes(damaged))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_chain(backend.store, GROUP, TOPIC, 0, chain[-1].checkpoint_id)


def test_prune_also_deletes_the_checkpoints_named(backend: Backend) -> None:
    _, chain = _chain(backend.store)
    merged = [c.checkpoint_id for c in chain[:2]]
    assert backend.store.prune(GROUP, TOPIC, 0, 0, also=merged) == 2
    for one in chain[2:]:
        assert backend.store.load(GROUP, TOPIC, 0, one.checkpoint_id) == one
    with pytest.raises(CheckpointError, match="missing"):
        backend.store.load(GROUP, TOPIC, 0, merged[1])
    with pytest.raises(CheckpointError, match="not a checkpoint id"):
        backend.store.prune(GROUP, TOPIC, 0, 0, also=["x/../../y"])


# -- S3 only ----------------------------------------------------------------------------------


def test_a_chain_on_s3_is_compacted_in_a_worker_process(aws_endpoint: str, bucket: str) -> None:
    """The store travels to the compaction process as its location (pickled without its
    client), which saves the compacted base to the same prefix."""
    store = _s3_store(aws_endpoint, bucket, unique("chain"))
    again = pickle.loads(pickle.dumps(store))
    assert isinstance(again, S3CheckpointStore) and again.location == store.location
    assert again.client is not store.client
    engine, chain = _chain(store, state_key=KEY)
    work = CheckpointWork(store, state_key=KEY)
    try:
        assert work.processes
        done = work.compact(GROUP, TOPIC, 0, [c.checkpoint_id for c in chain]).result(120)
    finally:
        work.close()
    compacted = store.load(GROUP, TOPIC, 0, done.checkpoint_id, state_key=KEY)
    assert compacted.stands_for == chain[-1].checkpoint_id
    assert compacted.offset == chain[-1].offset
    # a delta after it names it as its base; the chain then stops where it stands
    engine.process_many(_pay(n) for n in range(190, 200))
    after = Checkpoint(GROUP, TOPIC, 0, 200, engine.snapshot_delta(), RULES, kind=DELTA,
                       parent=chain[-1].checkpoint_id, base=done.checkpoint_id)  # fmt: skip
    store.save(after, state_key=KEY)
    store.prune(GROUP, TOPIC, 0, compacted.offset, also=[chain[-1].checkpoint_id])
    loaded = load_chain(store, GROUP, TOPIC, 0, after.checkpoint_id, state_key=KEY)
    assert [c.checkpoint_id for c in loaded] == [done.checkpoint_id, after.checkpoint_id]
    restored = Engine.restore(
        loaded[0].snapshot, _rules(), deltas=[loaded[1].snapshot], timestamp="ts",
        event_id="payment_id", state_key=KEY,
    )  # fmt: skip
    more = [_pay(n) for n in range(200, 400)]
    want = [a.alert_id for a in engine.process_many(more)] + [a.alert_id for a in engine.flush()]
    got = [a.alert_id for a in restored.process_many(more)] + [a.alert_id for a in restored.flush()]
    assert want and got == want


def test_objects_are_laid_out_like_the_directory_store(aws_endpoint: str, bucket: str) -> None:
    store = _s3_store(aws_endpoint, bucket, "lake/checkpoints/")
    checkpoint = _checkpoint(42, partition=3)
    store.save(checkpoint)
    key = f"lake/checkpoints/{GROUP}/{TOPIC}/3/{checkpoint.checkpoint_id}.ckpt"
    head = client(aws_endpoint, "s3").head_object(Bucket=bucket, Key=key)
    body = checkpoint.to_bytes()
    assert head["ContentLength"] == len(body)
    assert head["ETag"].strip('"') == hashlib.md5(body).hexdigest()  # one PutObject
    assert store.describe() == f"s3://{bucket}/lake/checkpoints"
    assert _s3_store(aws_endpoint, bucket, "").describe() == f"s3://{bucket}"


def test_the_bucket_root_is_a_location(aws_endpoint: str) -> None:
    name = unique("root")
    client(aws_endpoint, "s3").create_bucket(Bucket=name)
    store = open_s3_store(f"s3://{name}?endpoint_url={aws_endpoint}")
    checkpoint = _checkpoint(1)
    store.save(checkpoint)
    assert store.load(GROUP, TOPIC, 0, checkpoint.checkpoint_id) == checkpoint
    keys = [o["Key"] for o in client(aws_endpoint, "s3").list_objects_v2(Bucket=name)["Contents"]]
    assert keys == [f"{GROUP}/{TOPIC}/0/{checkpoint.checkpoint_id}.ckpt"]


@pytest.mark.slow
def test_prune_pages_through_more_than_a_thousand(aws_endpoint: str, bucket: str) -> None:
    prefix = unique("many")
    s3 = client(aws_endpoint, "s3")
    ids = [new_id(offset) for offset in range(1_003)]

    def put(checkpoint_id: str) -> None:
        key = f"{prefix}/{GROUP}/{TOPIC}/0/{checkpoint_id}.ckpt"
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, ids))
    store = _s3_store(aws_endpoint, bucket, prefix)
    assert store.prune(GROUP, TOPIC, 0, 1_001) == 1_001  # two pages, two DeleteObjects
    left = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")["Contents"]
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in left) == [f"{i}.ckpt" for i in ids[1_001:]]


def test_a_store_it_cannot_reach_is_an_os_error_not_a_missing_checkpoint(
    aws_endpoint: str,
) -> None:
    """``--missing-checkpoint reset`` must not take a wrong bucket for lost checkpoints."""
    store = _s3_store(aws_endpoint, unique("no-such-bucket"), "x")
    with pytest.raises(OSError, match="NoSuchBucket") as saving:
        store.save(_checkpoint(1))
    assert not isinstance(saving.value, CheckpointError)
    with pytest.raises(OSError, match="NoSuchBucket"):
        store.load(GROUP, TOPIC, 0, new_id(1))
    with pytest.raises(OSError, match="NoSuchBucket"):
        store.prune(GROUP, TOPIC, 0, 10)


def test_checkpoint_locations_name_the_s3_store(aws_endpoint: str, bucket: str) -> None:
    store: Any = open_checkpoint_store(f"s3://{bucket}/p?endpoint_url={aws_endpoint}")
    assert isinstance(store, S3CheckpointStore)
    assert store.describe() == f"s3://{bucket}/p"


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("s3://", "no bucket name"),
        ("s3:///prefix", "no bucket name"),
        ("s3://My_Bucket/x", "is not an S3 bucket name"),
        ("s3://ab/x", "is not an S3 bucket name"),
        ("s3://-bucket/x", "is not an S3 bucket name"),
        ("s3://a..b/x", "is not an S3 bucket name"),
        ("s3://192.168.1.1/x", "is not an S3 bucket name"),
        ("s3://bucket/a//b", "bad prefix segment ''"),
        ("s3://bucket/a/../b", "bad prefix segment '..'"),
        ("s3://bucket/a b", "bad prefix segment 'a b'"),
        ("s3://bucket/x#frag", "no fragment"),
        ("s3://bucket/x?colour=red", "unknown parameter 'colour'"),
        ("s3://bucket/x?region=a&region=b", "given twice"),
        ("s3://bucket/x?endpoint_url=localhost:9000", "endpoint_url must be an http"),
        ("s3://bucket/x?region=no%20such%20region", "region"),
        ("s4://bucket/x", "expected s3://BUCKET/PREFIX"),
    ],
)
def test_bad_locations_are_refused_clearly(location: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message) as refused:
        open_s3_store(location)
    assert "checkpoint location" in str(refused.value)

"""Chains of delta checkpoints without a broker: a restore follows a delta's parents back to
its base (a compacted base ends the walk where the deltas it merged end), a chain that does
not hold together is a CheckpointError naming what is wrong, compaction in a worker process
gives the state base + deltas give, pruning deletes what it is told and no more, and a state
key authenticates every checkpoint of a chain."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fraudcep import Engine
from fraudcep.payments.default_rules import default_rule_definitions
from fraudcep.rules import dump_rules, load_rules
from fraudcep.runtime.checkpoint import DELTA, FULL, Checkpoint, CheckpointError, load_chain, new_id
from fraudcep_kafka.checkpoints import CheckpointWork, DirectoryCheckpointStore, compact_chain

G, T, P = "fraud", "payments.raw", 0
RULES = dump_rules(default_rule_definitions())
T0 = 1_700_000_000_000
KEY = "a state key of some length"


def rules() -> list[Any]:
    return [d.rule for d in load_rules(RULES)]


def options(state_key: str | None = None) -> dict[str, Any]:
    return {"timestamp": "ts", "event_id": "payment_id", "state_key": state_key}


def pay(n: int, user: int, amount: float = 2500.0) -> dict[str, Any]:
    return {
        "payment_id": f"p{n}", "user_id": f"u{user}", "card_id": f"c{user}", "merchant": "m1",
        "country": "DE", "amount": amount, "currency": "EUR", "status": "approved",
        "ts": T0 + n * 1_000,
    }  # fmt: skip


class Chain:
    """An engine and the checkpoints of its chain in a directory store, written the way the
    runner writes them (a base, then deltas naming their parent and base)."""

    def __init__(self, root: Path, state_key: str | None = None) -> None:
        self.store = DirectoryCheckpointStore(root)
        self.state_key = state_key
        self.engine = Engine(rules(), **options(state_key))
        self.offset = 0
        self.written: list[Checkpoint] = []
        self.base: Checkpoint | None = None

    def feed(self, count: int, users: int = 50) -> None:
        for n in range(self.offset, self.offset + count):
            self.engine.process(pay(n, n % users))
        self.offset += count

    def full(self) -> Checkpoint:
        checkpoint = Checkpoint(G, T, P, self.offset, self.engine.snapshot(), RULES)
        self.base = checkpoint
        return self._save(checkpoint)

    def delta(self, base: Checkpoint | None = None) -> Checkpoint:
        base = base or self.base
        assert base is not None
        checkpoint = Checkpoint(
            G, T, P, self.offset, self.engine.snapshot_delta(), RULES, kind=DELTA,
            parent=self.written[-1].checkpoint_id, base=base.checkpoint_id,
        )  # fmt: skip
        return self._save(checkpoint)

    def _save(self, checkpoint: Checkpoint) -> Checkpoint:
        self.store.save(checkpoint, state_key=self.state_key)
        self.written.append(checkpoint)
        return checkpoint

    def load(self, checkpoint: Checkpoint, **kwargs: Any) -> list[Checkpoint]:
        kwargs.setdefault("state_key", self.state_key)
        return load_chain(self.store, G, T, P, checkpoint.checkpoint_id, **kwargs)

    def restored(self, chain: list[Checkpoint]) -> Engine:
        return Engine.restore(
            chain[0].snapshot, rules(), deltas=[c.snapshot for c in chain[1:]],
            **options(self.state_key),
        )  # fmt: skip

    def same_state(self, engine: Engine) -> bool:
        """``engine`` goes on exactly as the chain's engine does."""
        mine = Engine.restore(self.engine.snapshot(), rules(), **options(self.state_key))
        self.engine = Engine.restore(mine.snapshot(), rules(), **options(self.state_key))
        more = [pay(n, n % 50) for n in range(self.offset, self.offset + 200)]
        want = [a.alert_id for a in mine.process_many(more)] + [a.alert_id for a in mine.flush()]
        got = [a.alert_id for a in engine.process_many(more)] + [a.alert_id for a in engine.flush()]
        return bool(want) and got == want

    def files(self) -> set[str]:
        return {p.stem for p in (self.store.root / G / T / str(P)).glob("*.ckpt")}


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return Chain(tmp_path)


def test_a_delta_is_restored_from_its_base_and_the_deltas_before_it(chain: Chain) -> None:
    chain.feed(100)
    base = chain.full()
    deltas = []
    for _ in range(3):
        chain.feed(40)
        deltas.append(chain.delta())
    loaded = chain.load(deltas[-1])
    assert [c.checkpoint_id for c in loaded] == [x.checkpoint_id for x in [base, *deltas]]
    assert chain.same_state(chain.restored(loaded))
    assert chain.load(base) == [base]


def test_a_compacted_base_ends_the_walk_where_the_deltas_it_merged_end(chain: Chain) -> None:
    chain.feed(100)
    base = chain.full()
    chain.feed(40)
    first = chain.delta()
    chain.feed(40)
    second = chain.delta()
    done = compact_chain(chain.store, G, T, P, [base.checkpoint_id, first.checkpoint_id,
                                                second.checkpoint_id], None)  # fmt: skip
    assert done.merged == (base.checkpoint_id, first.checkpoint_id, second.checkpoint_id)
    assert done.offset == second.offset
    compacted = chain.store.load(G, T, P, done.checkpoint_id)
    assert (compacted.kind, compacted.parent, compacted.base) == (FULL, second.checkpoint_id, None)
    assert compacted.stands_for == second.checkpoint_id
    # a delta written before the compaction still goes back to the old base ...
    chain.feed(40)
    third = chain.delta()
    assert chain.load(third)[0].checkpoint_id == base.checkpoint_id
    # ... one written after it names the compacted base and stops where it stands
    chain.feed(40)
    fourth = chain.delta(base=compacted)
    loaded = chain.load(fourth)
    ids = [c.checkpoint_id for c in loaded]
    assert ids == [compacted.checkpoint_id, third.checkpoint_id, fourth.checkpoint_id]
    for gone in (base, first, second):  # what it merged is no longer needed
        chain.store.prune(G, T, P, 0, also=[gone.checkpoint_id])
    assert chain.same_state(chain.restored(chain.load(fourth)))


def test_compaction_in_a_worker_process_gives_the_state_of_the_chain(chain: Chain) -> None:
    chain.feed(300, users=120)
    base = chain.full()
    for _ in range(4):
        chain.feed(60, users=120)
        chain.delta()
    work = CheckpointWork(chain.store)
    try:
        assert work.processes
        done = work.compact(G, T, P, [c.checkpoint_id for c in chain.written]).result(120)
    finally:
        work.close()
    compacted = chain.store.load(G, T, P, done.checkpoint_id)
    assert compacted.stands_for == chain.written[-1].checkpoint_id
    assert compacted.offset == chain.offset
    assert base.checkpoint_id in done.merged
    assert chain.same_state(Engine.restore(compacted.snapshot, rules(), **options()))


def test_compaction_on_a_thread_when_asked_or_when_the_store_cannot_travel(
    chain: Chain,
) -> None:
    chain.feed(80)
    chain.full()
    chain.feed(30)
    chain.delta()

    class Local(DirectoryCheckpointStore):
        def __reduce__(self) -> Any:
            raise pickle.PicklingError("stays here")

    for work in (
        CheckpointWork(chain.store, processes=False),
        CheckpointWork(Local(chain.store.root)),
    ):
        try:
            assert not work.processes
            done = work.compact(G, T, P, [c.checkpoint_id for c in chain.written]).result(60)
            assert chain.store.load(G, T, P, done.checkpoint_id).kind == FULL
        finally:
            work.close()


def test_compaction_refuses_a_chain_that_does_not_follow(chain: Chain) -> None:
    chain.feed(50)
    base = chain.full()
    chain.feed(10)
    first = chain.delta()
    chain.feed(10)
    second = chain.delta()
    with pytest.raises(CheckpointError, match="does not follow"):
        compact_chain(chain.store, G, T, P, [base.checkpoint_id, second.checkpoint_id], None)
    with pytest.raises(CheckpointError, match="is a delta, not a base"):
        compact_chain(chain.store, G, T, P, [first.checkpoint_id, second.checkpoint_id], None)


@pytest.fixture
def three(chain: Chain) -> Iterator[tuple[Chain, list[Checkpoint]]]:
    chain.feed(60)
    chain.full()
    for _ in range(3):
        chain.feed(20)
        chain.delta()
    yield chain, chain.written


def test_a_missing_delta_breaks_the_chain(three: tuple[Chain, list[Checkpoint]]) -> None:
    chain, written = three
    chain.store.prune(G, T, P, 0, also=[written[2].checkpoint_id])
    with pytest.raises(CheckpointError, match=f"{written[2].checkpoint_id}.ckpt is missing"):
        chain.load(written[3])


def test_a_missing_base_breaks_the_chain(three: tuple[Chain, list[Checkpoint]]) -> None:
    chain, written = three
    chain.store.prune(G, T, P, written[1].offset)
    with pytest.raises(CheckpointError, match="missing"):
        chain.load(written[3])


def test_a_corrupt_delta_breaks_the_chain(three: tuple[Chain, list[Checkpoint]]) -> None:
    chain, written = three
    path = chain.store.root / G / T / str(P) / f"{written[1].checkpoint_id}.ckpt"
    blob = bytearray(path.read_bytes())
    blob[-7] ^= 0x10
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        chain.load(written[3])


def test_a_delta_whose_snapshot_follows_another_is_refused_by_the_restore(chain: Chain) -> None:
    """Metadata that links the right ids around the wrong snapshot: the snapshots' own
    chain check refuses it."""
    chain.feed(60)
    base = chain.full()
    chain.feed(20)
    first = chain.delta()
    chain.feed(20)
    second = chain.delta()
    swapped = Checkpoint(G, T, P, second.offset, first.snapshot, RULES, kind=DELTA,
                         parent=first.checkpoint_id, base=base.checkpoint_id)  # fmt: skip
    chain.store.save(swapped)
    loaded = chain.load(swapped)
    with pytest.raises(Exception, match="does not follow"):
        chain.restored(loaded)


def test_chains_that_do_not_lead_to_their_base_are_refused(chain: Chain) -> None:
    chain.feed(60)
    base = chain.full()
    chain.feed(20)
    first = chain.delta()
    chain.feed(20)
    other_base = chain.full()

    def put(**fields: Any) -> Checkpoint:
        values: dict[str, Any] = {"group": G, "topic": T, "partition": P,
                                  "offset": chain.offset + 5, "snapshot": b"x",
                                  "rules": RULES, "kind": DELTA}  # fmt: skip
        values.update(fields)
        checkpoint = Checkpoint(**values)
        chain.store.save(checkpoint)
        return checkpoint

    on_a_delta = put(parent=first.checkpoint_id, base=first.checkpoint_id)
    with pytest.raises(CheckpointError, match=r"its base .* is a delta"):
        chain.load(on_a_delta)
    through_a_full = put(parent=other_base.checkpoint_id, base=base.checkpoint_id)
    with pytest.raises(CheckpointError, match="is a full checkpoint, not a delta"):
        chain.load(through_a_full)
    after_other = put(parent=first.checkpoint_id, base=base.checkpoint_id)
    passing = put(offset=chain.offset + 6, parent=after_other.checkpoint_id,
                  base=other_base.checkpoint_id)  # fmt: skip
    with pytest.raises(CheckpointError, match="passes offset"):
        chain.load(passing)
    # two deltas at one offset naming each other
    a_id, b_id = new_id(chain.offset + 9), new_id(chain.offset + 9)
    put(offset=chain.offset + 9, checkpoint_id=a_id, parent=b_id, base=base.checkpoint_id)
    b = put(offset=chain.offset + 9, checkpoint_id=b_id, parent=a_id, base=base.checkpoint_id)
    with pytest.raises(CheckpointError, match="comes back to"):
        chain.load(b)
    with pytest.raises(CheckpointError, match="longer than 1 deltas"):
        chain.load(b, max_length=1)


def test_every_checkpoint_of_a_chain_is_authenticated_with_the_state_key(
    tmp_path: Path,
) -> None:
    chain = Chain(tmp_path, state_key=KEY)
    chain.feed(60)
    chain.full()
    chain.feed(20)
    top = chain.delta()
    assert chain.same_state(chain.restored(chain.load(top)))
    with pytest.raises(CheckpointError, match="none was given"):
        chain.load(top, state_key=None)
    with pytest.raises(CheckpointError, match="or written with another state key"):
        chain.load(top, state_key="another key of some length")
    # a checkpoint without a MAC slipped into an authenticated chain is refused
    unkeyed = Chain(tmp_path / "other")
    unkeyed.feed(10)
    forged = Checkpoint(G, T, P, top.offset, unkeyed.engine.snapshot(), RULES,
                        checkpoint_id=top.checkpoint_id)  # fmt: skip
    chain.store.save(forged)
    with pytest.raises(CheckpointError, match="not authenticated, but a state key was given"):
        chain.load(top)


def test_prune_deletes_the_named_checkpoints_and_those_below_the_offset(chain: Chain) -> None:
    chain.feed(10)
    a = chain.full()
    chain.feed(10)
    b = chain.full()
    same_offset = Checkpoint(G, T, P, b.offset, b.snapshot, RULES)
    chain.store.save(same_offset)
    chain.feed(10)
    c = chain.full()
    assert chain.store.prune(G, T, P, b.offset, also=[same_offset.checkpoint_id]) == 2
    assert chain.files() == {b.checkpoint_id, c.checkpoint_id}
    assert a.checkpoint_id not in chain.files()
    with pytest.raises(CheckpointError, match="not a checkpoint id"):
        chain.store.prune(G, T, P, 0, also=["../elsewhere"])

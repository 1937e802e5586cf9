"""The C swarm (``_peertable.c`` behind ``TableSwarm``) against the Python ``Swarm`` it
mirrors: the same operations give the same answers -- membership, expiries, seeders,
pages, samples' shape -- and the memory store moves a swarm into Python, peers, counts and
paging cookies intact, when a registration of another width or TTL arrives."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendezvous.store import swarm
from rendezvous.store.base import Registration
from rendezvous.store.memory import MemoryStore
from rendezvous.store.swarm import Swarm, TableSwarm

pytestmark = pytest.mark.skipif(swarm.PeerTable is None, reason="_peertable is not built")

WIDTH, TTL = 6, 60.0
ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "put", "remove", "tick", "sample", "page", "announce"]),
        st.integers(0, 30),
        st.integers(0, 40),
    ),
    max_size=250,
)


def state(s: Swarm | TableSwarm) -> dict[str, Any]:
    stats = s.stats()
    everyone = s.page(0, 10**9)
    return {
        "peers": {r.peer_id: (r.data, r.expires) for r, _ in everyone},
        "order": [(r.peer_id, seq) for r, seq in everyone],
        "stats": stats,
    }


@settings(max_examples=300, deadline=None)
@given(ops, st.randoms(use_true_random=False))
def test_table_swarm_behaves_as_swarm(operations: list[tuple[str, int, int]], rng: Any) -> None:
    random.seed(rng.random())
    python, table = Swarm(), TableSwarm(WIDTH, TTL)
    now = 1000.0
    for op, n, k in operations:
        peer = f"p{n}"
        if op == "put":
            reg = Registration(peer, bytes([n, k]) * 3, TTL, seeder=k % 2 == 0)
            # A clock may step back a little: both keep expiries in refresh order.
            at = now - (k % 5 == 0) * 3.0
            assert python.put(reg, at) == table.put(reg, at)
        elif op == "remove":
            assert python.remove(peer) == table.remove(peer)
        elif op == "announce":  # prune, put and sample in one C call
            reg = Registration(peer, bytes([n, k]) * 3, TTL, seeder=k % 2 == 1)
            python.prune(now)
            new, listed, data = table.announce(reg, now, k, peer, records=k % 2 == 0)
            assert python.put(reg, now) == new
            assert peer not in {r.peer_id for r in listed}
            assert len(data) == WIDTH * min(k, len(table) - 1)
            if listed:
                assert data == b"".join(r.data for r in listed)
        elif op == "tick":
            now += k
            python.prune(now)
            table.prune(now)
        elif op == "sample":
            exclude = peer if k % 3 else None
            records, packed = table.sample(k, exclude)
            ids = [r.peer_id for r in records]
            asking = exclude is not None and exclude in table
            assert len(ids) == len(set(ids)) == min(k, len(table) - asking)
            assert exclude not in ids
            assert packed == b"".join(r.data for r in records)
            bare, packed_only = table.sample(k, exclude, records=False)
            assert bare == ()
            assert packed_only is not None
            assert len(packed_only) == WIDTH * len(ids)
        else:
            assert [(r, q) for r, q in python.page(k, n)] == table.page(k, n)
        assert (peer in python) == (peer in table)
        assert state(python) == state(table)
    order = table.table.order()
    assert sorted(order) == sorted(r.peer_id for r, _ in python.page(0, 10**9))


def test_many_peers_churn_against_a_dict() -> None:
    """Enough peers to grow and rehash the index many times, with deletions everywhere."""
    rng = random.Random(5)
    random.seed(5)
    table = TableSwarm(WIDTH, TTL)
    model: dict[str, bytes] = {}
    for step in range(40_000):
        peer = f"peer-{rng.randrange(6000)}"
        if rng.random() < 0.6:
            data = rng.randbytes(WIDTH)
            assert table.put(Registration(peer, data, TTL), 0.0) == (peer not in model)
            model[peer] = data
        else:
            assert table.remove(peer) == (model.pop(peer, None) is not None)
        if step % 4999 == 0:
            assert len(table) == len(model)
            assert sorted(table.table.order()) == sorted(model)
            assert {e[0]: e[1] for e in table.table.entries()} == model
    records, _ = table.sample(len(model) + 5, None)
    assert {r.peer_id: r.data for r in records} == model


def test_bad_arguments_are_refused() -> None:
    table = swarm.PeerTable(6, 60.0)
    with pytest.raises(ValueError, match="data must be 6 bytes"):
        table.put("a", b"12345", False, 0.0, 0.5)
    with pytest.raises(TypeError, match="peer id must be str"):
        table.put(b"a", b"123456", False, 0.0, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"random draw must be in \[0, 1\)"):
        table.put("a", b"123456", False, 0.0, 1.0)
    with pytest.raises(ValueError, match="width must be"):
        swarm.PeerTable(0, 60.0)
    with pytest.raises(RuntimeError, match="not initialised"):
        swarm.PeerTable.__new__(swarm.PeerTable).put("a", b"123456", False, 0.0, 0.5)
    assert len(table) == 0


async def test_the_memory_store_moves_a_swarm_to_python_and_keeps_it_whole() -> None:
    store = MemoryStore()
    for i in range(20):
        await store.announce("s", now=100.0 + i, register=Registration(f"p{i}", b"abcdef", 60.0))
    assert isinstance(store._swarms["s"], TableSwarm)
    before = await store.page("s", cookie="", limit=100, now=164.5)
    assert [p.peer_id for p in before.peers] == [f"p{i}" for i in range(5, 20)]  # 0-4 expired
    middle = await store.page("s", cookie="10", limit=100, now=164.5)
    # An IPv6 peer (18 bytes): the swarm moves into Python, everything else as it was.
    v6 = Registration("v6", bytes(18), 60.0, seeder=True)
    moved = await store.announce("s", now=164.6, register=v6, want=100)
    assert isinstance(store._swarms["s"], Swarm)
    assert moved.stats.peers == 16
    assert moved.stats.seeders == 1
    after = await store.page("s", cookie="10", limit=100, now=164.6)
    assert [p.peer_id for p in after.peers] == [p.peer_id for p in middle.peers] + ["v6"]
    assert [p.expires for p in after.peers[:-1]] == [p.expires for p in middle.peers]
    assert after.cookie == "21"
    gone = await store.announce("s", now=170.0, want=100)  # p5..p10 expire at 165..170
    assert {r.peer_id for r in gone.peers} == {f"p{i}" for i in range(11, 20)} | {"v6"}


async def test_an_emptied_table_swarm_takes_a_new_width_in_c(monkeypatch: Any) -> None:
    store = MemoryStore()
    await store.announce("s", now=0.0, register=Registration("a", b"abcdef", 60.0))
    await store.announce("s", now=0.0, leave="a", completed=True)  # kept: a download count
    state = store._swarms["s"]
    assert isinstance(state, TableSwarm)
    assert len(state) == 0
    await store.announce("s", now=1.0, register=Registration("b", bytes(18), 30.0))
    refitted = store._swarms["s"]
    assert isinstance(refitted, TableSwarm)
    assert refitted.width == 18
    assert refitted.stats().downloaded == 1
    assert refitted.table.sequence == 2

"""The memory store's random samples: a random permutation of the swarm (inside-out
Fisher-Yates on join, swap-remove on leave) answered as runs from random starts. Checked
here: the bookkeeping under any sequence of joins, refreshes and leaves, and that every
peer is picked as often as the others."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from rendezvous.store.base import Registration
from rendezvous.store.memory import _Swarm

operations = st.lists(
    st.tuples(st.sampled_from(["put", "remove"]), st.integers(0, 40)), max_size=200
)


def check(swarm: _Swarm) -> None:
    assert len(swarm.order) == len(swarm.peers)
    for slot, record in enumerate(swarm.order):
        peer = swarm.peers[record.peer_id]
        assert peer.slot == slot
        assert peer.record is record


@settings(max_examples=200, deadline=None)
@given(operations, st.integers(0, 50), st.integers(0, 40), st.randoms(use_true_random=False))
def test_bookkeeping_and_samples(
    ops: list[tuple[str, int]], want: int, asker: int, rng: random.Random
) -> None:
    swarm = _Swarm()
    random.seed(rng.random())
    for op, n in ops:
        if op == "put":
            swarm.put(Registration(f"p{n}", b"x", 60.0), 0.0)
        else:
            swarm.remove(f"p{n}")
        check(swarm)
    exclude = f"p{asker}"
    sample = swarm.sample(want, exclude)
    ids = [r.peer_id for r in sample]
    assert len(ids) == len(set(ids))
    assert exclude not in ids
    assert set(ids) <= set(swarm.peers)
    others = len(swarm.peers) - (exclude in swarm.peers)
    assert len(ids) == min(want, others)


def test_every_peer_is_picked_equally_often() -> None:
    random.seed(7)
    swarm = _Swarm()
    for i in range(200):
        swarm.put(Registration(f"p{i}", b"x", 60.0), 0.0)
    for i in range(0, 200, 3):  # leaves reorder the permutation too
        swarm.remove(f"p{i}")
    counts: Counter[str] = Counter()
    rounds = 4000
    for _ in range(rounds):
        counts.update(r.peer_id for r in swarm.sample(10, "p1"))
    assert "p1" not in counts
    expected = rounds * 10 / (len(swarm.peers) - 1)  # about 302
    # Binomial spread is about 17; a biased sampler (e.g. always the same run, or the
    # first entries more often) leaves peers far outside this band.
    assert all(abs(counts[p] - expected) < 6 * 17 for p in swarm.peers if p != "p1")
    assert len(counts) == len(swarm.peers) - 1


def test_samples_of_one_state_are_not_the_same_run() -> None:
    random.seed(8)
    swarm = _Swarm()
    for i in range(1000):
        swarm.put(Registration(f"p{i}", b"x", 60.0), 0.0)
    answers = {tuple(r.peer_id for r in swarm.sample(30, None)) for _ in range(20)}
    assert len(answers) == 20

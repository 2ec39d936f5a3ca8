"""The run lease (``kibotos.xmimic.lease``) on both object stores: of contenders racing for
a run exactly one takes it (conditional create: a hard link locally, ``If-None-Match`` on a
real S3 server), a released run is taken at once, a live holder is waited for and kept,
a silent one is taken over after its TTL, and the old holder is fenced off."""

from __future__ import annotations

import threading
import time

import pytest

from kibotos.xmimic.lease import FencedStore, LeaseLost, RunLease


def test_create_bytes_refuses_an_existing_object(object_store):
    assert object_store.create_bytes(b"first", "a/b.json") is not None
    assert object_store.create_bytes(b"second", "a/b.json") is None
    assert object_store.read_bytes(object_store.uri_for("a/b.json"), 100) == b"first"


def test_one_of_racing_contenders_takes_the_run(object_store):
    leases = [RunLease(object_store, "xmimic/r1", ttl_s=2.0) for _ in range(6)]
    won: list[bool] = [False] * len(leases)
    barrier = threading.Barrier(len(leases))

    def contend(i):
        barrier.wait()
        won[i] = leases[i].acquire(wait_s=0.0)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(leases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(won) == 1, won
    holder = leases[won.index(True)]
    loser = leases[won.index(False)]
    assert loser.holder is not None and loser.holder.owner == holder.owner
    holder.release()
    assert RunLease(object_store, "xmimic/r1", ttl_s=2.0).acquire(wait_s=0.0)  # released: taken at once, generation 2
    assert sorted(i.key[-15:] for i in object_store.list("xmimic/r1/lease/")) == ["0000000001.json", "0000000002.json"]


def test_a_live_holder_is_kept_and_a_silent_one_taken_over(object_store):
    holder = RunLease(object_store, "xmimic/r2", ttl_s=1.0)
    assert holder.acquire()
    holder.start()  # renews every 0.25 s
    t0 = time.monotonic()
    assert not RunLease(object_store, "xmimic/r2", ttl_s=1.0).acquire()  # watched it renew for 1.25 s
    assert time.monotonic() - t0 >= 1.25
    holder._stop.set()  # the holder's process freezes (no renewals, no release)
    holder._thread.join()
    t0 = time.monotonic()
    taker = RunLease(object_store, "xmimic/r2", ttl_s=1.0)
    assert taker.acquire() and taker.generation == 2
    assert time.monotonic() - t0 >= 1.0  # only after watching it unchanged for the TTL
    fenced = FencedStore(object_store, holder)
    with pytest.raises(LeaseLost):  # the old holder wakes up: its writes are refused
        fenced.put_bytes(b"late checkpoint", "xmimic/r2/model_9.pt")
    assert object_store.stat("xmimic/r2/model_9.pt") is None
    FencedStore(object_store, taker).put_bytes(b"checkpoint", "xmimic/r2/model_9.pt")

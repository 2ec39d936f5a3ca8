"""The run lease (``kibotos.xmimic.lease``) on both object stores: of contenders racing for
a run exactly one takes it (conditional create: a hard link locally, ``If-None-Match`` on a
real S3 server), a released run is taken at once, a live holder is waited for and kept,
a silent one is taken over after its TTL, and the old holder is fenced off."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from kibotos.objectstore import LocalObjectStore, S3ObjectStore
from kibotos.xmimic.lease import FencedStore, LeaseLost, RunLease


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    seaweedfs = request.getfixturevalue("seaweedfs")
    s3 = S3ObjectStore(f"t{uuid.uuid4().hex[:16]}", "env1", endpoint=seaweedfs.endpoint,
                       access_key=seaweedfs.access_key, secret_key=seaweedfs.secret_key, cache_dir=tmp_path / "cache")
    s3.ensure_bucket()
    return s3


def test_create_bytes_refuses_an_existing_object(store):
    assert store.create_bytes(b"first", "a/b.json") is not None
    assert store.create_bytes(b"second", "a/b.json") is None
    assert store.read_bytes(store.uri_for("a/b.json"), 100) == b"first"


def test_one_of_racing_contenders_takes_the_run(store):
    leases = [RunLease(store, "xmimic/r1", ttl_s=2.0) for _ in range(6)]
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
    assert RunLease(store, "xmimic/r1", ttl_s=2.0).acquire(wait_s=0.0)  # released: taken at once, generation 2
    assert sorted(i.key[-15:] for i in store.list("xmimic/r1/lease/")) == ["0000000001.json", "0000000002.json"]


def test_a_live_holder_is_kept_and_a_silent_one_taken_over(store):
    holder = RunLease(store, "xmimic/r2", ttl_s=1.0)
    assert holder.acquire()
    holder.start()  # renews every 0.25 s
    t0 = time.monotonic()
    assert not RunLease(store, "xmimic/r2", ttl_s=1.0).acquire()  # watched it renew for 1.25 s
    assert time.monotonic() - t0 >= 1.25
    holder._stop.set()  # the holder's process freezes (no renewals, no release)
    holder._thread.join()
    t0 = time.monotonic()
    taker = RunLease(store, "xmimic/r2", ttl_s=1.0)
    assert taker.acquire() and taker.generation == 2
    assert time.monotonic() - t0 >= 1.0  # only after watching it unchanged for the TTL
    fenced = FencedStore(store, holder)
    with pytest.raises(LeaseLost):  # the old holder wakes up: its writes are refused
        fenced.put_bytes(b"late checkpoint", "xmimic/r2/model_9.pt")
    assert store.stat("xmimic/r2/model_9.pt") is None
    FencedStore(store, taker).put_bytes(b"checkpoint", "xmimic/r2/model_9.pt")

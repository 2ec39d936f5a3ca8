"""Bundle views kept between the gate stages of a worker (``streams.bundle_views``), and
the worker's adaptive fetch wait (``streams.app.FetchWait``): real sample bundles in a
real object-store directory, no broker."""

from __future__ import annotations

import json
import os
import threading
import uuid

import pytest

from kibotos.bundle.limits import Limits
from kibotos.config.gates import load_config
from processors.base import gates
from streams.bundle_views import ViewCache
from streams.stages import Record, build_stages, run_in_process
from topics.catalogue import Catalogue

CONFIG = load_config()
LIMITS = Limits.from_config(CONFIG)


@pytest.fixture
def sample(stage_bundles):
    event = stage_bundles.received("ur5", "genuine")
    return stage_bundles.store.local_path(event["bundle_uri"]), event["bundle_sha256"]


def closes(view) -> list[int]:
    """Count ``view.close()`` calls (and still close it)."""
    calls: list[int] = []
    real = view.close

    def close():
        calls.append(1)
        real()

    view.close = close
    return calls


def test_a_view_given_back_is_lent_again_and_only_once(sample):
    path, digest = sample
    cache = ViewCache()
    view, key = cache.borrow(path, digest, LIMITS)
    cache.give(view, key, keep=True)
    again, key2 = cache.borrow(path, digest, LIMITS)
    assert again is view and key2 == key and cache.hits == 1
    # lent out: a second borrower of the same bundle gets a view of its own
    other, _ = cache.borrow(path, digest, LIMITS)
    assert other is not view
    cache.give(other, key, keep=False)
    cache.give(again, key, keep=False)
    assert len(cache) == 0


def test_a_view_not_kept_is_closed(sample):
    path, digest = sample
    cache = ViewCache()
    view, key = cache.borrow(path, digest, LIMITS)
    calls = closes(view)
    cache.give(view, key, keep=False)
    assert calls and len(cache) == 0
    assert cache.borrow(path, digest, LIMITS)[0] is not view


def test_another_digest_other_limits_or_a_rewritten_file_never_meet_an_old_view(sample, tmp_path):
    path, digest = sample
    cache = ViewCache()
    view, key = cache.borrow(path, digest, LIMITS)
    cache.give(view, key, keep=True)
    assert cache.borrow(path, "ff" * 32, LIMITS)[0] is not view
    other_limits = Limits(**{**{f: getattr(LIMITS, f) for f in LIMITS.__dataclass_fields__},
                             "max_total_decoded_bytes": LIMITS.max_total_decoded_bytes - 1})
    cache.give(view, key, keep=True)
    calls = closes(view)
    fresh, _ = cache.borrow(path, digest, other_limits)
    assert fresh is not view and fresh.limits == other_limits and calls  # the old one closed
    # the same path rewritten: another size or modification time, another key
    copy = tmp_path / "copy.zarr.zip"
    copy.write_bytes(path.read_bytes())
    first, k1 = cache.borrow(copy, digest, LIMITS)
    cache.give(first, k1, keep=True)
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second, k2 = cache.borrow(copy, digest, LIMITS)
    assert second is not first and k2 != k1


def test_the_cache_is_bounded_in_views_and_decoded_bytes(stage_bundles):
    paths = []
    for variant in ("genuine", "nan", "gap"):
        event = stage_bundles.received("ur5", variant)
        paths.append((stage_bundles.store.local_path(event["bundle_uri"]), event["bundle_sha256"]))
    cache = ViewCache(max_views=2)
    views = []
    for path, digest in paths:
        view, key = cache.borrow(path, digest, LIMITS)
        views.append((view, key, closes(view)))
    for view, key, _ in views:
        cache.give(view, key, keep=True)
    assert len(cache) == 2 and views[0][2] and not views[1][2]  # the least recent one closed
    assert cache.borrow(*paths[0], LIMITS)[0] is not views[0][0]
    # a view that decoded more than the byte bound is never kept
    small = ViewCache(max_bytes=1)
    view, key = small.borrow(*paths[0], LIMITS)
    view.read(view.arrays()[0].path)
    calls = closes(view)
    small.give(view, key, keep=True)
    assert calls and len(small) == 0
    cache.close()
    assert len(cache) == 0


def test_threads_borrowing_one_bundle_never_share_a_view(sample):
    path, digest = sample
    cache = ViewCache()
    seen, lock, errors = [], threading.Lock(), []

    def work():
        try:
            for _ in range(20):
                view, key = cache.borrow(path, digest, LIMITS)
                with lock:
                    assert view not in seen
                    seen.append(view)
                view.read(view.arrays()[0].path)
                with lock:
                    seen.remove(view)
                cache.give(view, key, keep=True)
        except Exception as exc:  # reported below: an assertion in a thread is lost otherwise
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(cache) <= cache.max_views


@pytest.mark.parametrize("variant", ["genuine", "nan", "sync_lie", "teleport"])
def test_gate_stages_share_one_view_per_submission_with_the_same_verdict(stage_bundles, variant):
    """The chain of stages with the shared views gives what it gives with a view per
    record; a passing submission opens its bundle once, and nothing stays open after it."""
    event = stage_bundles.received("ur5", variant)
    catalogue = Catalogue(prefix=f"t{uuid.uuid4().hex[:12]}.")
    first = [Record(catalogue.submissions_received.name, catalogue.submissions_received.serialize(event))]

    def verdict(shared: bool):
        stages = build_stages(catalogue, stage_bundles.store, CONFIG)
        gate_stages = stages[:len(gates())]
        if not shared:
            lone = ViewCache(max_views=0)
            for st in gate_stages:
                st.views = lone
        [out] = [o for o in run_in_process(stages, first) if o.topic.id == "verdicts"]
        return out.record, gate_stages[0].views

    shared, views = verdict(True)
    plain, plain_views = verdict(False)
    assert (shared["verdict"], shared["reason_code"], shared["failed_gate"]) == \
        (plain["verdict"], plain["reason_code"], plain["failed_gate"])
    ran = len(json.loads(shared["report_json"])["gates"])  # gates run: up to the first failure
    assert views.misses == 1 and views.hits == ran - 1
    assert plain_views.hits == 0 and plain_views.misses == ran
    assert len(views) == 0


def test_the_fetch_wait_is_short_while_one_record_moves_and_back_to_idle_after():
    from aiokafka.consumer.fetcher import Fetcher

    from streams.app import FETCH_WAIT, FetchWait, _adaptive

    wait = FetchWait(idle_ms=20, busy_ms=4, window_s=0.05)
    assert wait.ms == 20
    wait.begin()
    assert wait.ms == 4
    wait.begin()  # a backlog: the idle wait, no short fetches all the time
    assert wait.ms == 20
    wait.end()
    assert wait.ms == 4
    wait.end()
    assert wait.ms == 4  # within the window after the last record
    wait.last -= 1.0
    assert wait.ms == 20
    # records one after another, more than one submission's hops in a second: a backlog
    burst = FetchWait(idle_ms=20, busy_ms=4, lone_records=8)
    for _ in range(8):
        burst.begin()
        burst.end()
    assert burst.ms == 4
    burst.begin()
    assert burst.ms == 20
    burst.end()
    burst._taken = type(burst._taken)(t - 2.0 for t in burst._taken)  # a second later
    burst.begin()
    assert burst.recent == 1 and burst.ms == 4
    # the fetcher aiokafka builds reads the worker's wait for each request
    fetcher = Fetcher.__new__(Fetcher)
    fetcher._fetch_max_wait_ms = 20
    fetcher.__class__ = _adaptive(Fetcher)
    FETCH_WAIT.begin()
    try:
        assert fetcher._fetch_max_wait_ms == FETCH_WAIT.busy_ms
    finally:
        FETCH_WAIT.end()
        FETCH_WAIT.last = float("-inf")
    assert fetcher._fetch_max_wait_ms == FETCH_WAIT.idle_ms

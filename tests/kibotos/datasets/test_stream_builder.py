"""The dataset builder as a stream processor on a real broker (Tansu) feeding the real
ClickHouse sink (chdb): accepted verdicts become a version, its episodes, attribution rows
and ledger entries; redelivered verdicts and re-sent version events pay nobody twice."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from kibotos.datasets.config import default_config
from kibotos.datasets.spec import parse_spec
from streams.dataset_builder import DatasetProcessor, build_until_idle
from streams.sink import ClickHouseSink
from tests.kibotos.datasets.helpers import verdict

PER_EPISODE = default_config().attribution.points_per_episode


def produce(bootstrap, spec, records):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    for r in records:
        p.produce(spec.name, key=spec.key(r), value=spec.serialize(r))
    assert p.flush(10) == 0


def scalar(client, sql):
    return client.query(sql).result_rows[0][0]


def pump(sink, until, timeout=40.0):
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "sink did not catch up"
        sink.poll_once()


@pytest.fixture
def events():
    return [verdict(1, "alice", "franka_panda", 0.9, "file:///b1"), verdict(2, "alice", "ur5", 0.5, "file:///b2"),
            verdict(3, "bob", "ur5", 0.7, "file:///b3"), verdict(4, "bob", "ur5", 0.2, "file:///b4"),
            verdict(5, "carol", "ur5", 0.9, "file:///b5", verdict_kind="rejected")]


def test_verdicts_to_version_rows_and_ledger_once(tansu, catalogue, chdb_client, store, events):
    store.create(parse_spec({"name": "good", "min_score": 0.4}))
    produce(tansu.bootstrap, catalogue.verdicts, events)
    proc = build_until_idle(store, "good", catalogue, tansu.bootstrap, f"{catalogue.prefix}ds-good", idle_s=2.0)
    [v1] = proc.published
    assert (v1["version"], v1["episodes"]) == (1, 3)
    assert proc.outcomes == {"added": 3, "score_below_minimum": 1, "not_an_episode": 1}

    # redelivery: every verdict again (a consumer group that never committed) ...
    produce(tansu.bootstrap, catalogue.verdicts, events)
    again = build_until_idle(store, "good", catalogue, tansu.bootstrap, f"{catalogue.prefix}ds-good-2", idle_s=2.0)
    assert again.published == [] and again.outcomes.get("duplicate") == 6
    # ... and a crash between publishing v1 and sending its events: sent again at start
    store.mark_emitted("good", 0)
    resend = DatasetProcessor(store, "good", catalogue, tansu.bootstrap, f"{catalogue.prefix}ds-good-3")
    resend.close()
    assert store.emitted("good") == 1
    # alice's first verdict is revised (reconciliation: S 0.9 -> 0.6), the revision delivered
    # twice along with everything else again: v2 carries the new S, pays the difference once
    revised = verdict(1, "alice", "franka_panda", 0.6, "file:///b1", event_type="revised")
    produce(tansu.bootstrap, catalogue.verdicts, [revised, revised, *events])
    third = build_until_idle(store, "good", catalogue, tansu.bootstrap, f"{catalogue.prefix}ds-good-4", idle_s=2.0)
    assert [v["revised"] for v in third.published] == [1] and third.outcomes["revised"] == 1

    sink = ClickHouseSink(chdb_client, catalogue, tansu.bootstrap, f"{catalogue.prefix}sink")
    try:
        pump(sink, lambda: sink.rows_written["attributions"] >= 5 and sink.rows_written["points_ledger"] >= 5
             and sink.rows_written["dataset_episodes"] >= 7)
    finally:
        sink.close()
    c = chdb_client
    assert scalar(c, "SELECT count() FROM kibotos.dataset_versions FINAL") == 2
    assert scalar(c, "SELECT count() FROM kibotos.dataset_episodes FINAL WHERE dataset = 'good'") == 3
    assert c.query("SELECT dataset, latest_version, episodes FROM kibotos.datasets FINAL").result_rows == [("good", 2, 3)]
    assert scalar(c, "SELECT score FROM kibotos.dataset_episodes FINAL WHERE submission_id = "
                     f"'{revised['submission_id']}'") == 0.6
    rows = c.query("SELECT miner_id, sum(points) FROM kibotos.points_ledger FINAL WHERE kind = 'attribution' "
                   "GROUP BY miner_id ORDER BY miner_id").result_rows
    assert [(m, round(p, 6)) for m, p in rows] == [("alice", round(PER_EPISODE * 1.1, 6)),
                                                   ("bob", round(PER_EPISODE * 0.7, 6))]
    shares = dict(c.query("SELECT miner_id, share FROM kibotos.attributions FINAL WHERE version = 1").result_rows)
    assert shares["alice"] == pytest.approx(1.4 / 2.1) and shares["bob"] == pytest.approx(0.7 / 2.1)
    flags = c.query("SELECT soft_flags, evidence_uris FROM kibotos.dataset_episodes FINAL LIMIT 1").result_rows[0]
    assert "joint_vel_computed" in flags[0] and flags[1][0].endswith("-sim.png")


def test_the_builder_appends_continuously(tansu, catalogue, tmp_path):
    """``streams.dataset_builder.run``: a dataset created while it runs is picked up, and
    each batch of new verdicts becomes the next version (cadence: 1 s here)."""
    import threading

    from kibotos.datasets.config import default_config
    from kibotos.datasets.store import DatasetStore
    from streams.dataset_builder import run

    cfg = default_config().model_copy(update={"builder": default_config().builder.model_copy(
        update={"publish_every_s": 1.0})})
    store = DatasetStore(tmp_path / "ds", cfg)
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(store, catalogue, tansu.bootstrap, "t", stop), kwargs={"rescan_s": 0.5},
                              daemon=True)
    thread.start()
    try:
        store.create(parse_spec({"name": "live"}))
        produce(tansu.bootstrap, catalogue.verdicts, [verdict(1, "alice", "ur5", 0.9, "file:///b")])

        def wait_version(n, timeout=40.0):
            deadline = time.monotonic() + timeout
            while (store.latest("live") or 0) < n:
                assert time.monotonic() < deadline, f"no version {n}"
                time.sleep(0.2)

        wait_version(1)
        produce(tansu.bootstrap, catalogue.verdicts, [verdict(2, "bob", "ur5", 0.7, "file:///b"),
                                                      verdict(1, "alice", "ur5", 0.9, "file:///b")])
        wait_version(2)
    finally:
        stop.set()
        thread.join(30)
    assert [store.info("live", v)["episodes"] for v in store.versions("live")] == [1, 2]
    assert store.emitted("live") == 2


def test_the_builder_process_builds_a_new_dataset_on_request_and_stops_on_sigterm(tansu, catalogue, tmp_path):
    """``python -m streams.dataset_builder`` as ``kibotos up`` runs it: a dataset created
    while it runs is built when asked (``kibotos.datasets.requests``), and SIGTERM ends it
    cleanly (exit 0, its consumers closed)."""
    import os
    import signal
    import subprocess
    import sys

    from kibotos.datasets.requests import request_publish
    from kibotos.datasets.store import DatasetStore

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIBOTOS_")}
    env.update(KIBOTOS_HOME=str(home), KIBOTOS_TOPIC_PREFIX=catalogue.prefix,
               KIBOTOS_TOPIC_PARTITIONS=str(catalogue.partitions), KIBOTOS_LOG_LEVEL="INFO")
    proc = subprocess.Popen([sys.executable, "-m", "streams.dataset_builder", "--bootstrap", tansu.bootstrap],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        produce(tansu.bootstrap, catalogue.verdicts, [verdict(1, "alice", "ur5", 0.9, "file:///b")])
        store = DatasetStore(home / "datasets")
        store.create(parse_spec({"name": "later"}))
        answer = request_publish(store, "later", timeout_s=120)
        assert (answer["published"], answer["outcomes"]) == (1, {"added": 1}), answer
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "dataset-builder: stopped" in out, out[-3000:]

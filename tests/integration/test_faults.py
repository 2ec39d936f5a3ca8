"""Nothing accepted is lost: the reconciler on a real warehouse and broker, and one
cheap fault run through the embedded stack with its durable broker (SIGKILL of a gate
worker and of the broker mid-stream, a submission whose event never reached the broker).
The long scenarios (sink down, GPU consumer, ``kibotos up`` itself) are measured by
``kibotos bench faults``."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from datetime import UTC

import pytest
from confluent_kafka import Consumer
from typer.testing import CliRunner

from kibotos.cli.main import app
from kibotos.config.settings import Settings
from kibotos.robots import get_robot, list_robots
from kibotos.runtime.reconcile import Reconciler
from kibotos.runtime.stack import PROCESS_RESTARTS, Stack
from kibotos.runtime.submit import producer, submit_paths
from kibotos.synthetic.samples import make_episode
from streams.stages import ledger_entry_id

pytestmark = pytest.mark.integration

NOW_MS = 1_800_000_000_000
RECEIPT_COLUMNS = ("submission_id", "upload_id", "miner_id", "status", "reason_code", "merkle_root", "manifest_sha256",
                   "bundle_sha256", "bundle_size_bytes", "bundle_uri", "signature", "nodes_json", "manifest_json",
                   "details_json", "received_at")


def _receipt(sid: str, received_ms: int, status: str = "accepted") -> list:
    from datetime import datetime

    manifest = {"robot_model_id": "ur5", "task": {"task_id": "cargo_pickup"}}
    return [sid, "u-" + sid, "miner-r", status, None, "root-" + sid, "m", "sha-" + sid, 123,
            f"file:///objects/bundles/{sid}.zarr.zip", "sig", "[]", json.dumps(manifest), "{}",
            datetime.fromtimestamp(received_ms / 1000, UTC)]


def _read_all(bootstrap: str, topic: str, expect: int, timeout_s: float = 40.0) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    consumer.subscribe([topic])
    out, deadline = [], time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            out += [m for m in consumer.consume(100, 0.5) if not m.error()]
        out += [m for m in consumer.consume(100, 1.0) if not m.error()]  # nothing more may come
    finally:
        consumer.close()
    return out


def test_reconciler_reemits_only_stuck_submissions(chdb_client, tansu, catalogue):
    stuck, recent, done, rejected, operator = (str(uuid.uuid4()) for _ in range(5))
    old = NOW_MS - 3_600_000
    chdb_client.insert("kibotos.ingest_receipts",
                       [_receipt(stuck, old), _receipt(recent, NOW_MS - 1000), _receipt(done, old),
                        _receipt(rejected, old, status="rejected")], column_names=list(RECEIPT_COLUMNS))
    from datetime import datetime

    chdb_client.insert("kibotos.submissions",
                       [[operator, "miner-o", "file:///x.zarr.zip", "sha", 9, datetime.fromtimestamp(old / 1000, UTC),
                         "panda", None, 1],
                        [done, "miner-r", "file:///d", "sha", 1, datetime.fromtimestamp(old / 1000, UTC),
                         None, None, 1]],
                       column_names=["submission_id", "miner_id", "bundle_uri", "bundle_sha256", "bundle_size_bytes",
                                     "received_at", "robot_model_id", "task_id", "schema_version"])
    chdb_client.insert("kibotos.verification_reports",
                       [[done, "miner-r", "accepted", 1.0, "file:///d", "{}",
                         datetime.fromtimestamp(NOW_MS / 1000, UTC)]],
                       column_names=["submission_id", "miner_id", "verdict", "points", "bundle_uri", "report_json",
                                     "decided_at"])
    reconciler = Reconciler(chdb_client, producer(tansu.bootstrap), catalogue, stuck_after_s=600, max_attempts=2)

    first = reconciler.run_once(now_ms=NOW_MS)
    assert sorted(first.reemitted) == sorted([stuck, operator])
    assert first.pending == 1  # `recent` is in flight, not stuck; `done` and `rejected` owe nothing
    spec = catalogue.submissions_received
    events = {spec.deserialize(m.value())["submission_id"]: spec.deserialize(m.value())
              for m in _read_all(tansu.bootstrap, spec.name, expect=2)}
    assert set(events) == {stuck, operator}
    assert events[stuck]["bundle_uri"].endswith(f"{stuck}.zarr.zip") and events[stuck]["received_at"] == old
    assert (events[stuck]["robot_model_id"], events[stuck]["task_id"]) == ("ur5", "cargo_pickup")
    assert events[operator]["robot_model_id"] == "panda" and events[operator]["miner_id"] == "miner-o"

    # emitted once per bound: the next pass waits, and a reconciler gives up after max_attempts
    again = reconciler.run_once(now_ms=NOW_MS)
    assert again.reemitted == [] and sorted(again.waiting) == sorted([stuck, operator])
    reconciler.stuck_after_s = 0
    assert sorted(reconciler.run_once(now_ms=NOW_MS).reemitted) == sorted([stuck, operator, recent])
    last = reconciler.run_once(now_ms=NOW_MS)
    assert sorted(last.given_up) == sorted(last.dead_lettered) == sorted([stuck, operator])
    assert last.reemitted == [recent]


def test_reconciler_attempts_survive_a_restart_and_the_given_up_go_to_dead_letters(chdb_client, tansu, catalogue):
    """The attempt counts live in the warehouse: reconcilers started afresh (a restarted
    stack) count on instead of re-driving a submission forever; over the limit it is
    dead-lettered once with its reason and payload, listed as given up on every pass, and
    an operator's reset gives it another round."""
    sid = str(uuid.uuid4())
    old = NOW_MS - 3_600_000
    chdb_client.insert("kibotos.ingest_receipts", [_receipt(sid, old)], column_names=list(RECEIPT_COLUMNS))

    def fresh():  # a reconciler as a restarted stack builds it: nothing in memory
        return Reconciler(chdb_client, producer(tansu.bootstrap), catalogue, stuck_after_s=600, max_attempts=2)

    assert fresh().run_once(now_ms=NOW_MS).reemitted == [sid]
    assert fresh().run_once(now_ms=NOW_MS + 1000).waiting == [sid]  # its bound counts across restarts too
    assert fresh().run_once(now_ms=NOW_MS + 601_000).reemitted == [sid]
    assert fresh().attempts([sid])[sid].attempts == 2
    gave_up = fresh().run_once(now_ms=NOW_MS + 1_202_000)
    assert gave_up.reemitted == [] and gave_up.given_up == gave_up.dead_lettered == [sid]
    for at in (NOW_MS + 1_900_000, NOW_MS + 9_000_000):  # later passes list it, never emit or dead-letter again
        again = fresh().run_once(now_ms=at)
        assert (again.reemitted, again.given_up, again.dead_lettered, again.pending) == ([], [sid], [], 0)
    state, reason = chdb_client.query("SELECT state, reason FROM kibotos.reconcile_attempts FINAL "
                                      "WHERE submission_id = {s:String}", parameters={"s": sid}).result_rows[0]
    assert state == "given_up" and "2 time(s)" in reason and "--retry" in reason

    received = [m for m in _read_all(tansu.bootstrap, catalogue.submissions_received.name, expect=2)
                if catalogue.submissions_received.deserialize(m.value())["submission_id"] == sid]
    assert len(received) == 2  # max_attempts, not one more
    dead_spec = catalogue.dead_letters
    [dead] = [dead_spec.deserialize(m.value()) for m in _read_all(tansu.bootstrap, dead_spec.name, expect=1)]
    assert (dead["error_code"], dead["processor_id"], dead["key"]) == ("reconcile_attempts_exhausted", "reconciler",
                                                                       sid.encode())
    replay = catalogue.submissions_received.deserialize(dead["payload"])  # verbatim: an operator can replay it
    assert replay["submission_id"] == sid and replay["bundle_uri"].endswith(f"{sid}.zarr.zip")

    # the operator's retry: another round of max_attempts
    assert fresh().reset([sid, str(uuid.uuid4())], now_ms=NOW_MS + 9_100_000) == [sid]
    assert fresh().run_once(now_ms=NOW_MS + 9_200_000).reemitted == [sid]
    assert fresh().attempts([sid])[sid].attempts == 1


def test_reconciler_finds_operator_bundles_whose_event_was_lost(chdb_client, tansu, catalogue, tmp_path):
    """The object store is the outbox of `kibotos submit`: a bundle stored without any
    warehouse row is emitted again, rebuilt from the object and its manifest."""
    from kibotos.objectstore import LocalObjectStore

    store = LocalObjectStore(tmp_path / "objects")
    episode = make_episode(get_robot("ur5", dict(list_robots())["ur5"]), "genuine", seed=7, miner_id="miner-o",
                           duration_ms=2000).write(tmp_path / "e.zarr.zip")
    orphan, known, fresh, ingest_upload = (str(uuid.uuid4()) for _ in range(4))
    for sid in (orphan, known, fresh):
        store.put_file(episode, f"bundles/{sid}.zarr.zip")
    store.put_file(episode, f"bundles/{ingest_upload}/u1.zarr.zip")  # ingest's: owed only with a receipt
    old = (NOW_MS - 3_600_000) / 1000
    for key in (f"bundles/{orphan}.zarr.zip", f"bundles/{known}.zarr.zip", f"bundles/{ingest_upload}/u1.zarr.zip"):
        os.utime(store.root / key, (old, old))
    os.utime(store.root / f"bundles/{fresh}.zarr.zip", (NOW_MS / 1000, NOW_MS / 1000))
    chdb_client.insert("kibotos.ingest_receipts", [_receipt(known, NOW_MS - 1000)], column_names=list(RECEIPT_COLUMNS))

    result = Reconciler(chdb_client, producer(tansu.bootstrap), catalogue, stuck_after_s=600,
                        store=store).run_once(now_ms=NOW_MS)
    assert result.reemitted == [orphan]
    spec = catalogue.submissions_received
    [msg] = _read_all(tansu.bootstrap, spec.name, expect=1)
    event = spec.deserialize(msg.value())
    assert (event["submission_id"], event["miner_id"], event["robot_model_id"]) == (orphan, "miner-o", "ur5")
    assert event["bundle_uri"] == store.uri_for(f"bundles/{orphan}.zarr.zip")
    assert event["bundle_size_bytes"] == episode.stat().st_size and event["received_at"] == NOW_MS - 3_600_000


def _wait(predicate, timeout_s: float, stack: Stack, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stack.supervise()
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _final(stack: Stack) -> dict[str, tuple[str, int]]:
    rows = stack.client.query("SELECT submission_id, verdict FROM kibotos.verification_reports FINAL").result_rows
    paid = dict(stack.client.query("SELECT submission_id, count() FROM kibotos.points_ledger FINAL "
                                   "GROUP BY submission_id").result_rows)
    return {sid: (verdict, paid.get(sid, 0)) for sid, verdict in rows}


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    for name in [k for k in os.environ if k.startswith("KIBOTOS_")]:
        monkeypatch.delenv(name)
    return Settings(home=tmp_path / "home", topic_prefix=f"f{uuid.uuid4().hex[:10]}.", evidence_jobs=(),
                    xgen_jobs=(), training_jobs=(), novelty=False, log_level="INFO")


def test_worker_and_broker_killed_mid_stream_nothing_lost_nothing_paid_twice(settings, tmp_path, monkeypatch):
    robot = get_robot("ur5", dict(list_robots())["ur5"])
    paths = [make_episode(robot, "genuine", seed=20 + i, miner_id="miner-f", duration_ms=3000)
             .write(tmp_path / f"b{i}.zarr.zip") for i in range(4)]
    restarts_before = PROCESS_RESTARTS.labels("worker")._value.get()
    with Stack(settings, workers=1, log=lambda m: None, reconcile_every_s=None, stuck_after_s=2.0) as stack:
        assert not stack.ephemeral and stack.broker.s3 is not None  # the default keeps the log on disk
        first = submit_paths(paths[:2], bootstrap=stack.bootstrap, store=stack.store, catalogue=stack.catalogue)
        worker = stack.processes[0]
        worker.send_signal(signal.SIGKILL)  # mid-stream: the first two may be half done
        second = submit_paths(paths[2:], bootstrap=stack.bootstrap, store=stack.store, catalogue=stack.catalogue)
        _wait(lambda: stack.processes[0].pid != worker.pid and stack.processes[0].poll() is None, 30, stack,
              "the gate worker's restart")
        os.kill(stack.broker.tansu.pid, signal.SIGKILL)
        _wait(lambda: stack.broker.tansu.alive() and stack.broker.tansu.pid, 60, stack, "the broker's restart")

        # a submission accepted (its bundle stored, its row written) whose event never reached the broker
        lost = str(uuid.uuid4())
        stored = stack.store.put_file(paths[0], f"bundles/{lost}.zarr.zip")
        from datetime import datetime

        stack.client.insert("kibotos.submissions", [[lost, "miner-f", stored.uri, stored.sha256, stored.size_bytes,
                                                     datetime.now(UTC), "ur5", None, 1]],
                            column_names=["submission_id", "miner_id", "bundle_uri", "bundle_sha256",
                                          "bundle_size_bytes", "received_at", "robot_model_id", "task_id",
                                          "schema_version"])
        # and one `kibotos submit` stored whose event was lost: only the object store knows it
        orphan = str(uuid.uuid4())
        stack.store.put_file(paths[1], f"bundles/{orphan}.zarr.zip")
        sids = {s.submission_id for s in first + second} | {lost, orphan}

        def all_final():
            final = _final(stack)
            if set(final) >= sids:
                return final
            time.sleep(2.1)  # the bound: what is still missing is stuck
            stack.reconcile_now()
            return None

        final = _wait(all_final, 240, stack, "one final verdict per submission")
        assert {sid: final[sid] for sid in sids} == {sid: ("accepted", 1) for sid in sids}, final
        entries = stack.client.query("SELECT entry_id, submission_id FROM kibotos.points_ledger FINAL").result_rows
        assert sorted(e for e, _ in entries) == sorted(ledger_entry_id(s, "reward") for s in sids)
        assert stack.restarts()["worker-0"] >= 1

        # the sink thread taken down and started again by the supervisor
        stack.pause("sink", 0.5)
        _wait(lambda: stack.restarts()["sink"] == 1 and stack.sink is not None, 20, stack, "the sink's restart")

        # `kibotos admin reconcile` from another shell: the stack answers from its supervision loop
        monkeypatch.setenv("KIBOTOS_HOME", str(settings.home))
        monkeypatch.setenv("KIBOTOS_TOPIC_PREFIX", settings.topic_prefix)
        done: list = []
        shell = threading.Thread(target=lambda: done.append(
            CliRunner().invoke(app, ["admin", "reconcile", "--json", "--retry", lost], catch_exceptions=False)))
        shell.start()
        _wait(lambda: not shell.is_alive(), 60, stack, "kibotos admin reconcile")
        assert done[0].exit_code == 0, done[0].output
        answer = json.loads(done[0].stdout)
        assert answer["reemitted"] == [] and answer["pending"] == 0  # nothing is owed a verdict any more
        assert answer["reset"] == [lost]  # it had been emitted again: its count starts afresh (it has its verdict)
    assert PROCESS_RESTARTS.labels("worker")._value.get() >= restarts_before + 1

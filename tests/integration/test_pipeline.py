"""The whole pipeline on real services: Tansu, faust gate workers as separate processes
(``python -m streams.worker``), the ClickHouse sink on a fresh chdb, ``submit_paths`` to
produce. Fresh topics per test (``catalogue``); workers are started per test and shared
by everything the test submits.

What is asserted is what a validator or miner would see: the ``verdicts`` topic, the
pass topics between gates, and the warehouse read through ``kibotos.warehouse`` (which
reads the replacing tables with ``FINAL``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from infra.tansu import free_loopback_port
from kibotos import warehouse
from kibotos.errors import SerializationError
from kibotos.gate_config import load_config
from kibotos.objectstore import LocalObjectStore
from kibotos.robots import get_robot, list_robots
from kibotos.samples import EXPECTED, make_episode
from kibotos.submit import Submitted, submit_paths
from kibotos.warehouse import LockedClient
from processors.base import gates
from kibotos.scoring import load_scoring_config, score_submission
from streams.sink import ClickHouseSink
from streams.stages import ledger_entry_id
from topics.catalogue import Catalogue, TopicSpec

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
GATE_IDS = [g.gate_id for g in gates()]
PASS_TOPICS = [f"gates.{g.letter}.passed" for g in gates()]
CONFIG_VERSION = load_config().config_version
# the cheap chain alone: every soft component is missing and scored neutral
REWARD = score_submission({}, load_scoring_config(), passed=True).reward
MINER = "miner-it"
ROBOT = "ur5"
# every variant here was checked to reach EXPECTED's verdict with duration_ms=4000
FAILURES = ["nan", "gap", "sync_lie", "degrees", "teleport"]


# --- bundles -----------------------------------------------------------------------


class Bundles:
    """Small sample bundles (4 s episodes of the UR5), each written once per module."""

    def __init__(self, root: Path):
        self.root = root
        self._paths: dict[tuple[str, int], Path] = {}

    def path(self, variant: str = "genuine", seed: int = 0) -> Path:
        if (variant, seed) not in self._paths:
            robot = get_robot(ROBOT, dict(list_robots())[ROBOT])
            ep = make_episode(robot, variant, seed=seed, miner_id=MINER, duration_ms=4000)
            self._paths[(variant, seed)] = ep.write(self.root / f"{variant}-{seed}.zarr.zip")
        return self._paths[(variant, seed)]

    def truncated(self) -> Path:
        """The first half of a genuine bundle: an upload cut short."""
        path = self.root / "truncated.zarr.zip"
        if not path.exists():
            whole = self.path("genuine", seed=99).read_bytes()
            path.write_bytes(whole[: len(whole) // 2])
        return path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Bundles:
    return Bundles(tmp_path_factory.mktemp("pipeline-bundles"))


# --- reading topics ------------------------------------------------------------------


def read_topic(bootstrap: str, spec: TopicSpec, *, until: Callable[[list[dict]], bool] = lambda recs: True,
               idle_s: float = 0.0, timeout: float = 60.0) -> list[dict]:
    """Every record of ``spec`` from the beginning, decoded, in arrival order.

    Partitions are assigned directly (no group join). Reads until ``until(records)``
    holds and then nothing new arrived for ``idle_s`` seconds: a bounded observation
    window for the absence checks that follow.

    :raises AssertionError: ``until`` did not hold within ``timeout`` seconds.
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    })
    consumer.assign([TopicPartition(spec.name, p, OFFSET_BEGINNING) for p in range(spec.partitions)])
    records: list[dict] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while True:
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                if msg.error() is None:
                    records.append(spec.deserialize(msg.value()))
                    last = time.monotonic()
            now = time.monotonic()
            if until(records) and now - last >= idle_s:
                return records
            assert now < deadline, f"{spec.name}: condition not met after {timeout}s; read {len(records)} records"
    finally:
        consumer.close()


def census(bootstrap: str, catalogue: Catalogue, idle_s: float = 1.5) -> dict[str, Counter]:
    """Topic id -> how many records each submission has there (failure diagnostics)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"census-{uuid.uuid4().hex[:12]}",
                         "enable.auto.commit": False})
    specs = {spec.name: spec for spec in catalogue.all()}
    consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for name, spec in specs.items()
                     for p in range(spec.partitions)])
    counts: dict[str, Counter] = {spec.id: Counter() for spec in specs.values()}
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                if msg.error() is None:
                    spec = specs[msg.topic()]
                    try:
                        sid = str(spec.deserialize(msg.value()).get("submission_id", "<dead letter>"))[:8]
                    except SerializationError:
                        sid = "<undecodable>"
                    counts[spec.id][f"{sid}@p{msg.partition()}"] += 1
                    last = time.monotonic()
    finally:
        consumer.close()
    return {topic: dict(c) for topic, c in counts.items() if c}


def ids(records: list[dict]) -> Counter:
    return Counter(r["submission_id"] for r in records)


# --- the pipeline harness ------------------------------------------------------------


class Pipeline:
    """Gate worker processes + the ClickHouse sink in a thread, on one test's topics."""

    def __init__(self, bootstrap: str, catalogue: Catalogue, client, tmp_path: Path):
        self.bootstrap = bootstrap
        self.catalogue = catalogue
        self.tmp_path = tmp_path
        self.store = LocalObjectStore(tmp_path / "objects")
        # the sink thread and the test's reads share one chdb session
        self.client = LockedClient(client)
        self.group_prefix = f"it{uuid.uuid4().hex[:8]}"
        self.workers: list[tuple[subprocess.Popen, Path, int]] = []
        self.killed: set[int] = set()
        self._stop = threading.Event()
        self.sink = ClickHouseSink(self.client, catalogue, bootstrap, f"{self.group_prefix}-sink",
                                   flush_interval_s=0.2)
        self._sink_thread = threading.Thread(target=self.sink.run, args=(self._stop,), name="sink", daemon=True)
        self._sink_thread.start()

    # workers

    def start_worker(self) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIBOTOS_")}
        env.update({
            "KIBOTOS_TOPIC_PREFIX": self.catalogue.prefix,
            "KIBOTOS_TOPIC_PARTITIONS": str(self.catalogue.partitions),
            "KIBOTOS_OBJECT_STORE_URL": self.store.root.as_uri(),
            "KIBOTOS_CONSUMER_GROUP_PREFIX": self.group_prefix,
            "KIBOTOS_EVIDENCE_JOBS": "[]",  # the cheap chain: evidence jobs have their own tests
            "KIBOTOS_NOVELTY": "false",  # and so has the novelty stage (tests/streams/test_novelty_stage.py)
        })
        log_path = self.tmp_path / f"worker-{len(self.workers)}.log"
        port = free_loopback_port()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streams.worker", "--bootstrap", self.bootstrap, "--web-port", str(port),
                 "--loglevel", "INFO"],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.workers.append((proc, log_path, port))
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL: no clean shutdown, no final offset commit."""
        self.killed.add(proc.pid)
        proc.kill()
        proc.wait(10)

    def assignment(self) -> dict[str, list[int]]:
        """Worker URL -> its partitions of ``submissions.received``, as faust's web API
        (``/router/topics`` of any live worker) reports the group's assignment."""
        received = self.catalogue.submissions_received.name
        for proc, _, port in self.workers:
            if proc.poll() is not None:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/router/topics", timeout=2) as resp:
                    routes = json.loads(resp.read())
            except OSError:
                continue
            return {host: sorted(topics.get(received, [])) for host, topics in routes.items()}
        return {}

    def close(self) -> None:
        for proc, _, _ in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _, _ in self.workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._stop.set()
        self._sink_thread.join(15)
        self.sink.close()

    # produce

    def submit(self, *paths: Path) -> list[Submitted]:
        return submit_paths(list(paths), bootstrap=self.bootstrap, store=self.store, catalogue=self.catalogue,
                            miner_id=MINER)

    def produce_raw(self, spec: TopicSpec, value: bytes, key: bytes | None = None,
                    partition: int | None = None) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 0})
        kwargs = {} if partition is None else {"partition": partition}
        producer.produce(spec.name, key=key, value=value, **kwargs)
        assert producer.flush(10) == 0

    # wait and read

    def diagnostics(self, topics: bool = False) -> str:
        lines = []
        if topics:
            lines += [f"topic {topic}: {counts}" for topic, counts in census(self.bootstrap, self.catalogue).items()]
        lines += [f"sink: consumed={self.sink.records_consumed} rows={dict(self.sink.rows_written)} "
                 f"dead={self.sink.dead_lettered} insert_failures={self.sink.insert_failures} "
                 f"alive={self._sink_thread.is_alive()}"]
        for proc, log_path, port in self.workers:
            # faust's service start/stop chatter hides what matters
            log = log_path.read_text("utf-8", "replace").splitlines() if log_path.exists() else []
            tail = "\n".join([ln for ln in log if not ln.rstrip().endswith(("Starting...", "Stopping..."))][-40:])
            lines.append(f"--- worker pid={proc.pid} port={port} rc={proc.poll()} log {log_path} (tail):\n{tail}")
        return "\n".join(lines)

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Poll ``check`` until it returns something truthy; fail early if a worker that
        was not killed on purpose died, or if the sink thread died."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            dead = [p.pid for p, _, _ in self.workers if p.poll() is not None and p.pid not in self.killed]
            problem = (f"worker(s) {dead} exited" if dead else
                       "the sink thread died" if not self._sink_thread.is_alive() else
                       f"timed out after {timeout:.0f}s" if time.monotonic() > deadline else None)
            if problem:
                raise AssertionError(f"waiting for {what}: {problem}\n{self.diagnostics(topics=True)}")
            time.sleep(0.2)

    def reports(self, sids, timeout: float = 60.0) -> dict[str, dict]:
        """The warehouse report of every submission in ``sids``, once all are there."""
        sids = list(sids)

        def all_there():
            found = {sid: warehouse.get_report(self.client, sid) for sid in sids}
            return found if all(found.values()) else None

        return self.wait_for(f"reports of {len(sids)} submissions", all_there, timeout)

    def ledger(self, expected_entries: int, timeout: float = 30.0) -> list[dict]:
        """Ledger entries once there are at least ``expected_entries`` (ledger entries
        reach the sink on their own topic, maybe a batch after the verdicts)."""
        def enough():
            rows = warehouse.ledger_entries(self.client)
            return rows if len(rows) >= expected_entries else None

        return self.wait_for(f"{expected_entries} ledger entries", enough, timeout)

    def count_final(self, table: str, sid: str | None = None) -> int:
        where = "" if sid is None else " WHERE submission_id = {sid:String}"
        return self.client.query(f"SELECT count() FROM kibotos.{table} FINAL{where}",
                                 parameters={"sid": sid}).result_rows[0][0]

    def verdicts(self, sids, *, per_sid: int = 1, idle_s: float = 0.0, timeout: float = 60.0) -> list[dict]:
        """Records on ``verdicts`` once each of ``sids`` has at least ``per_sid``."""
        sids = set(sids)
        return read_topic(self.bootstrap, self.catalogue.verdicts, idle_s=idle_s, timeout=timeout,
                          until=lambda recs: all(ids(recs)[s] >= per_sid for s in sids))


@pytest.fixture
def pipeline(tansu, catalogue, chdb_client, tmp_path):
    pipe = Pipeline(tansu.bootstrap, catalogue, chdb_client, tmp_path)
    yield pipe
    print(pipe.diagnostics())  # pytest shows it only when the test failed
    pipe.close()


def assert_accepted(report: dict, sid: str) -> None:
    assert (report["submission_id"], report["verdict"], report["reason_code"]) == (sid, "accepted", None)
    assert report["points"] == REWARD and report["config_version"] == CONFIG_VERSION
    assert [g["gate"] for g in report["gates"]] == GATE_IDS and all(g["passed"] for g in report["gates"])


# --- the tests -------------------------------------------------------------------------


def test_good_bundle_is_accepted_reported_and_paid_once(pipeline, bundles):
    pipeline.start_worker()
    [sub] = pipeline.submit(bundles.path("genuine"))
    sid = sub.submission_id

    [verdict] = pipeline.verdicts([sid], idle_s=0.5)
    assert (verdict["submission_id"], verdict["miner_id"], verdict["verdict"]) == (sid, MINER, "accepted")
    assert verdict["points"] == REWARD and verdict["bundle_uri"] == sub.bundle_uri

    report = pipeline.reports([sid])[sid]
    assert_accepted(report, sid)
    assert report["bundle_uri"] == sub.bundle_uri and report["robot_model_id"] == ROBOT
    assert report["sync"]["estimated_offset_ms"] is not None
    assert pipeline.count_final("verification_reports", sid) == 1
    assert pipeline.count_final("submissions", sid) == 1

    rows = warehouse.gate_results(pipeline.client, sid)
    assert [(r["gate"], r["gate_order"], r["passed"]) for r in rows] == [(g, i, True) for i, g in enumerate(GATE_IDS)]
    assert all(r["config_version"] == CONFIG_VERSION and r["wall_ms"] is not None for r in rows)

    [entry] = pipeline.ledger(1)
    assert (entry["entry_id"], entry["submission_id"], entry["miner_id"], entry["kind"], entry["points"]) == (
        ledger_entry_id(sid, "reward"), sid, MINER, "reward", REWARD)
    assert warehouse.balances(pipeline.client) == [{"miner_id": MINER, "points": REWARD, "entries": 1}]


def test_each_failure_stops_at_its_gate_with_its_reason(pipeline, bundles):
    pipeline.start_worker()
    cases = {variant: EXPECTED[variant] for variant in FAILURES}
    cases["truncated"] = ("gate_a_integrity", "bundle_unreadable")
    paths = {variant: bundles.path(variant) for variant in FAILURES}
    paths["truncated"] = bundles.truncated()
    paths["genuine"] = bundles.path("genuine")  # the control: what reaching every gate looks like
    subs = dict(zip(paths, pipeline.submit(*paths.values())))
    assert not subs["truncated"].readable and all(s.readable for v, s in subs.items() if v != "truncated")
    sid_of = {variant: sub.submission_id for variant, sub in subs.items()}

    reports = pipeline.reports(sid_of.values(), timeout=90)
    assert_accepted(reports[sid_of["genuine"]], sid_of["genuine"])
    for variant, (gate, reason) in cases.items():
        sid, k = sid_of[variant], GATE_IDS.index(gate)
        report = reports[sid]
        assert (report["verdict"], report["failed_gate"], report["reason_code"], report["points"]) == (
            "rejected", gate, reason, 0.0), variant
        rows = warehouse.gate_results(pipeline.client, sid)
        assert [(r["gate"], r["passed"]) for r in rows] == [(g, g != gate) for g in GATE_IDS[: k + 1]], variant
        assert rows[-1]["reason_code"] == reason

    # the genuine control is paid, and only it
    [entry] = pipeline.ledger(1)
    assert entry["submission_id"] == sid_of["genuine"]
    entries = read_topic(pipeline.bootstrap, pipeline.catalogue.ledger_entries, idle_s=1.0,
                         until=lambda recs: sid_of["genuine"] in ids(recs))
    assert [e["submission_id"] for e in entries] == [sid_of["genuine"]]

    # nothing reached a pass topic at or after the gate that rejected it
    stops = {sid: GATE_IDS.index(cases[v][0]) if v in cases else len(GATE_IDS) for v, sid in sid_of.items()}
    must_see = {topic_id: {sid for sid, k in stops.items() if k > i} for i, topic_id in enumerate(PASS_TOPICS)}
    must_see["verification.rejected"] = {sid_of[v] for v in cases}
    seen = {topic_id: ids(read_topic(pipeline.bootstrap, pipeline.catalogue.get(topic_id), idle_s=0.5,
                                     until=lambda recs, want=want: want <= set(ids(recs))))
            for topic_id, want in must_see.items()}
    for variant, sid in sid_of.items():
        k = stops[sid]
        assert [seen[t][sid] for t in PASS_TOPICS] == [1] * k + [0] * (len(GATE_IDS) - k), variant
        assert seen["verification.rejected"][sid] == (variant in cases), variant


def test_poison_record_is_dead_lettered_and_later_records_still_flow(pipeline, bundles):
    pipeline.start_worker()
    received = pipeline.catalogue.submissions_received
    poison = b"\x00\xffpoison, not avro"
    # one poison record at the head of every partition: whatever partition the real
    # submission lands on, it queues behind a poison record
    for partition in range(received.partitions):
        pipeline.produce_raw(received, poison, key=f"poison-{partition}".encode(), partition=partition)
    [sub] = pipeline.submit(bundles.path("genuine", seed=1))

    report = pipeline.reports([sub.submission_id])[sub.submission_id]
    assert_accepted(report, sub.submission_id)

    def gate_a_dead_letters():
        rows = pipeline.client.query(
            "SELECT source_topic, source_partition, error_code, key, payload FROM kibotos.dead_letters FINAL "
            "WHERE processor_id = 'gate_a_integrity' ORDER BY source_partition",
            column_formats={"key": "bytes", "payload": "bytes"}).result_rows
        return rows if len(rows) >= received.partitions else None

    rows = pipeline.wait_for("gate A's dead letters", gate_a_dead_letters, timeout=30)
    assert rows == [(received.name, p, "undecodable_record", f"poison-{p}".encode(), poison)
                    for p in range(received.partitions)]
    # the poison never became a verdict, and the worker is still up
    verdicts = pipeline.verdicts([sub.submission_id], idle_s=0.5)
    assert [v["submission_id"] for v in verdicts] == [sub.submission_id]
    assert all(proc.poll() is None for proc, _, _ in pipeline.workers)


def test_same_submission_twice_is_reported_and_paid_once(pipeline, bundles):
    pipeline.start_worker()
    path = bundles.path("genuine", seed=2)
    first, second = pipeline.submit(path, path)
    sid = first.submission_id
    assert second.submission_id == sid

    # both deliveries were judged: two verdicts, two ledger entries reach the sink
    verdicts = pipeline.verdicts([sid], per_sid=2)
    assert [v["verdict"] for v in verdicts] == ["accepted", "accepted"]
    pipeline.wait_for("both ledger entries written",
                      lambda: pipeline.sink.rows_written["points_ledger"] >= 2
                      and pipeline.sink.rows_written["verification_reports"] >= 2, timeout=30)

    assert pipeline.count_final("verification_reports", sid) == 1
    latest = warehouse.iso_ms(max(v["decided_at"] for v in verdicts))
    assert warehouse.get_report(pipeline.client, sid)["decided_at"] == latest  # the later decision wins
    assert len(warehouse.gate_results(pipeline.client, sid)) == len(GATE_IDS)
    [entry] = warehouse.ledger_entries(pipeline.client)
    assert entry["entry_id"] == ledger_entry_id(sid, "reward")
    assert warehouse.balances(pipeline.client) == [{"miner_id": MINER, "points": REWARD, "entries": 1}]


def submit_mix(pipeline: Pipeline, bundles: Bundles) -> dict[str, str | None]:
    """Six genuine bundles and two faulty ones; submission id -> expected reason (None: accepted)."""
    items = [(bundles.path("genuine", seed=s), None) for s in range(10, 16)]
    items += [(bundles.path(v), EXPECTED[v][1]) for v in ("nan", "teleport")]
    subs = pipeline.submit(*(path for path, _ in items))
    return {sub.submission_id: reason for sub, (_, reason) in zip(subs, items)}


def assert_decided_exactly_once(pipeline: Pipeline, expected: dict[str, str | None], timeout: float) -> None:
    reports = pipeline.reports(expected, timeout=timeout)
    for sid, reason in expected.items():
        assert (reports[sid]["reason_code"], reports[sid]["verdict"]) == (
            reason, "accepted" if reason is None else "rejected"), sid
    assert pipeline.count_final("verification_reports") == len(expected)
    accepted = sorted(sid for sid, reason in expected.items() if reason is None)
    entries = pipeline.ledger(len(accepted))
    assert sorted(e["submission_id"] for e in entries) == accepted
    assert {e["entry_id"] for e in entries} == {ledger_entry_id(sid, "reward") for sid in accepted}
    # the balance is the sum of the accepted reports' rewards, each counted once
    assert warehouse.balances(pipeline.client) == [
        {"miner_id": MINER, "points": pytest.approx(sum(reports[sid]["scores"]["reward"] for sid in accepted)),
         "entries": len(accepted)}]
    assert sum(reports[sid]["scores"]["reward"] for sid in accepted) == pytest.approx(REWARD * len(accepted))
    # every entry ever published (duplicates included) belongs to an accepted submission
    published = read_topic(pipeline.bootstrap, pipeline.catalogue.ledger_entries, idle_s=1.0,
                           until=lambda recs: set(accepted) <= set(ids(recs)))
    assert {e["submission_id"] for e in published} == set(accepted)
    assert {e["entry_id"] for e in published} == {ledger_entry_id(sid, "reward") for sid in accepted}


def test_killed_worker_is_replaced_without_losing_or_double_paying(pipeline, bundles):
    expected = submit_mix(pipeline, bundles)
    first = pipeline.start_worker()
    # kill the only worker the moment the first verdict shows up
    read_topic(pipeline.bootstrap, pipeline.catalogue.verdicts, until=lambda recs: len(recs) >= 1, timeout=90)
    pipeline.kill(first)
    decided_before_kill = len(ids(read_topic(pipeline.bootstrap, pipeline.catalogue.verdicts,
                                             until=lambda recs: len(recs) >= 1, idle_s=0.5)))
    print(f"{decided_before_kill}/{len(expected)} submissions had a verdict when the worker was killed")

    pipeline.start_worker()
    assert_decided_exactly_once(pipeline, expected, timeout=120)
    verdicts = pipeline.verdicts(expected, idle_s=1.0)
    assert set(ids(verdicts)) == set(expected)  # every one decided (some maybe twice: at-least-once)


def test_two_workers_share_four_partitions_and_decide_each_submission_once(pipeline, bundles):
    assert pipeline.catalogue.partitions == 4
    pipeline.start_worker()
    pipeline.start_worker()

    def split_between_two():
        assignment = pipeline.assignment()
        owned = [p for parts in assignment.values() for p in parts]
        if len(assignment) == 2 and all(assignment.values()) and sorted(owned) == [0, 1, 2, 3]:
            return assignment
        return None

    assignment = pipeline.wait_for("both workers to own partitions", split_between_two, timeout=60)
    print(f"assignment of submissions.received: {assignment}")
    expected = submit_mix(pipeline, bundles)
    assert_decided_exactly_once(pipeline, expected, timeout=90)
    # no rebalance or crash here: each submission crossed each topic exactly once
    verdicts = pipeline.verdicts(expected, idle_s=1.0)
    assert ids(verdicts) == Counter({sid: 1 for sid in expected})

"""The whole pipeline on real services: Tansu, faust gate workers as separate processes
(``python -m streams.worker``), the ClickHouse sink on a fresh chdb, ``submit_paths`` to
produce. Fresh topics per test (``catalogue``); workers are started per test and shared
by everything the test submits.

What is asserted is what a validator or miner would see: the ``verdicts`` topic, the
pass topics between gates, and the warehouse read through ``kibotos.warehouse`` (which
reads the replacing tables with ``FINAL``).
"""

from __future__ import annotations

from collections import Counter

import pytest

from kibotos import warehouse
from kibotos.synthetic.samples import EXPECTED
from streams.stages import ledger_entry_id
from tests.fixtures.pipeline import (
    CONFIG_VERSION,
    FAILURES,
    GATE_IDS,
    MINER,
    PASS_TOPICS,
    REWARD,
    ROBOT,
    Bundles,
    Pipeline,
    assert_accepted,
    ids,
    read_topic,
)

pytestmark = pytest.mark.integration

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

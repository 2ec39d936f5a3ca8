"""Event → row conversion, without broker or database."""

from __future__ import annotations

import json

import pytest

from streams.sink_rows import TABLE_COLUMNS, InvalidReport, rows_for, undecodable_row, verdict_rows
from tests.fixtures.events import EVENT_FACTORIES, ledger_entry, report, submission_received, verdict


@pytest.mark.parametrize("topic_id, event", [
    ("submissions.received", "submission_received"), ("verdicts", "verdict"),
    ("ledger.entries", "ledger_entry"), ("dead.letters", "dead_letter"),
    ("datasets.versions", "dataset_version"), ("datasets.episodes", "dataset_episode"),
    ("datasets.attributions", "attribution"), ("policy.evals", "policy_eval"),
])
def test_rows_have_exactly_the_table_columns(topic_id, event):
    record = {**EVENT_FACTORIES[event](), "schema_version": 1}
    for table, row in rows_for(topic_id, record):
        assert tuple(row) == TABLE_COLUMNS[table]


def test_verdict_gives_a_report_row_and_one_row_per_gate_in_order():
    rep = report("sub-7", miner_id="m7", verdict="rejected", gates=["A", "B", "C"], failed_gate="B", points=0.0)
    event = verdict(rep, decided_at=1_700_000_000_000)
    report_row, gate_rows = verdict_rows(event)
    assert report_row["verdict"] == "rejected" and report_row["failed_gate"] == "B"
    assert report_row["robot_model_id"] == "unitree_g1" and report_row["estimated_offset_ms"] == 8.0
    assert report_row["report_json"] == event["report_json"]
    assert [(r["gate"], r["gate_order"], r["passed"]) for r in gate_rows] == [("A", 0, True), ("B", 1, False)]
    assert gate_rows[1]["reason_code"] == "b_failed" and gate_rows[1]["flags"] == ["hard_reject"]
    assert gate_rows[0]["wall_ms"] == 1.5 and json.loads(gate_rows[0]["metrics_json"])["score"] == 0.9
    assert {r["decided_at"] for r in gate_rows} == {1_700_000_000_000}


@pytest.mark.parametrize("report_json", [
    "not json", "[1, 2]", '{"gates": "A"}', '{"gates": [{"gate": "A"}]}', '{"gates": [], "sync": 3}',
])
def test_unusable_report_json_is_an_invalid_report(report_json):
    event = verdict(report("sub-1"), report_json=report_json)
    with pytest.raises(InvalidReport) as info:
        verdict_rows(event)
    assert info.value.reason_code == "invalid_report"


def test_wall_ms_is_optional():
    event = verdict(report("sub-1"), report_json='{"gates": [{"gate": "A", "passed": true, "metrics": {}}]}')
    _, gate_rows = verdict_rows(event)
    assert gate_rows[0]["wall_ms"] is None and gate_rows[0]["thresholds_json"] == "{}"


def test_submission_and_ledger_rows_copy_their_fields():
    sub = {**submission_received(), "schema_version": 1}
    [(table, row)] = rows_for("submissions.received", sub)
    assert table == "submissions" and row["bundle_size_bytes"] == sub["bundle_size_bytes"]
    [(table, row)] = rows_for("ledger.entries", ledger_entry("sub-2", points=3.5))
    assert table == "points_ledger" and row["points"] == 3.5


def test_undecodable_row_carries_the_reason_code():
    from kibotos.errors import SerializationError

    row = undecodable_row(topic="t", partition=1, offset=9, key=None, payload=b"\x00", error=SerializationError("bad"),
                          processor_id="p", failed_at_ms=5)
    assert row["error_code"] == "undecodable_record" and tuple(row) == TABLE_COLUMNS["dead_letters"]

"""Warehouse read helpers against real chdb: latest decision wins, duplicates count once."""

from __future__ import annotations

import pytest

from kibotos.errors import ServiceError
from kibotos.warehouse import balances, gate_results, get_report, iso_ms, ledger_entries, open_client
from streams.sink_rows import TABLE_COLUMNS, rows_for
from tests.fixtures.events import ledger_entry, report, verdict

pytestmark = pytest.mark.integration


def _write(client, topic_id, *events):
    tables = {}
    for event in events:
        for table, row in rows_for(topic_id, event):
            tables.setdefault(table, []).append([row[c] for c in TABLE_COLUMNS[table]])
    for table, rows in tables.items():
        client.insert(f"kibotos.{table}", rows, column_names=list(TABLE_COLUMNS[table]))


def test_unknown_submission_has_no_report(chdb_client):
    assert get_report(chdb_client, "nope") is None
    assert gate_results(chdb_client, "nope") == []


def test_latest_decision_wins_whatever_the_arrival_order(chdb_client):
    later = verdict(report("s1", gates=["A", "B"], failed_gate="B", verdict="rejected", points=0.0),
                    decided_at=2_000_000_000_000)
    earlier = verdict(report("s1", gates=["A", "B", "C"]), decided_at=1_000_000_000_000)
    _write(chdb_client, "verdicts", later)
    _write(chdb_client, "verdicts", earlier)  # arrives last, decided first
    rep = get_report(chdb_client, "s1")
    assert rep["verdict"] == "rejected" and rep["failed_gate"] == "B"
    assert rep["decided_at"] == iso_ms(2_000_000_000_000) == "2033-05-18T03:33:20.000Z"
    assert rep["bundle_uri"].endswith("s1.zarr.zip")
    gates = gate_results(chdb_client, "s1")
    assert [(g["gate"], g["passed"]) for g in gates] == [("A", True), ("B", False)]  # no stale C
    assert gates[1]["thresholds"] == {"score_min": 0.5} and gates[0]["wall_ms"] == 1.5


def test_ledger_and_balances_count_each_entry_once(chdb_client):
    e1, e2, e3 = ledger_entry("s1", "alice", 10.0), ledger_entry("s2", "alice", 5.0), ledger_entry("s3", "bob", 1.0)
    _write(chdb_client, "ledger.entries", e1, e2, e3)
    _write(chdb_client, "ledger.entries", e1, e3)  # redelivered
    assert balances(chdb_client) == [
        {"miner_id": "alice", "points": 15.0, "entries": 2}, {"miner_id": "bob", "points": 1.0, "entries": 1},
    ]
    alice = ledger_entries(chdb_client, "alice")
    assert sorted(e["submission_id"] for e in alice) == ["s1", "s2"]
    assert alice[0]["created_at"].endswith("Z")
    assert len(ledger_entries(chdb_client)) == 3


def test_open_client_wraps_errors_and_hides_passwords():
    with pytest.raises(ServiceError) as info:
        open_client("http://user:secret@127.0.0.1:1/db")
    assert "secret" not in str(info.value)

"""Training events as warehouse rows: a request is the run's queued row, each progress record
replaces the run's row and adds its iteration, a done record adds the policy; the rows fit
migration 0011's tables (real chdb) and the newest record wins."""

from __future__ import annotations

import pytest

from streams.sink_rows import TABLE_COLUMNS, rows_for
from tests.fixtures.events import training_progress, training_request


def test_a_request_is_the_queued_row_of_its_run():
    [(table, row)] = rows_for("training.requests", training_request())
    assert table == "training_runs" and row["state"] == "queued" and row["iteration"] == 0
    assert row["dataset_versions"] == ["pickups@v2"] and set(row) == set(TABLE_COLUMNS["training_runs"])


def test_progress_rows_by_state():
    running = rows_for("training.progress", training_progress())
    assert [t for t, _ in running] == ["training_runs", "training_progress"]
    assert running[1][1]["reward_terms_json"] == '{"contact": 0.25, "total": 0.5}'
    start = rows_for("training.progress", training_progress(iteration=5, resumed_from=5))
    assert [t for t, _ in start] == ["training_runs"]  # the resume point is no new iteration
    failed = rows_for("training.progress", training_progress(state="failed", reason_code="xmimic_dataset_unknown"))
    assert [t for t, _ in failed] == ["training_runs"] and failed[0][1]["reason_code"] == "xmimic_dataset_unknown"
    done = rows_for("training.progress", training_progress(state="done", iteration=4, policy_id="teacher-run-1-it4",
                                                           checkpoint_uri="file:///o/m.pt"))
    assert [t for t, _ in done] == ["training_runs", "training_progress", "policies"]
    policy = done[2][1]
    assert (policy["policy_id"], policy["iterations"], policy["dataset_versions"]) == (
        "teacher-run-1-it4", 4, ["pickups@v2"])


@pytest.mark.integration
def test_rows_fit_the_tables_and_the_newest_state_wins(chdb_client):
    t0 = 1_760_000_000_000
    events = [("training.requests", training_request(requested_at=t0)),
              ("training.progress", training_progress(iteration=1, at=t0 + 10)),
              ("training.progress", training_progress(state="done", iteration=4, policy_id="teacher-run-1-it4",
                                                      checkpoint_uri="file:///o/m.pt", at=t0 + 30)),
              ("training.progress", training_progress(iteration=2, at=t0 + 20))]  # late: older than done
    tables: dict[str, list] = {}
    for topic, ev in events:
        for table, row in rows_for(topic, ev):
            tables.setdefault(table, []).append(row)
    for table, rows in tables.items():
        cols = TABLE_COLUMNS[table]
        chdb_client.insert(f"kibotos.{table}", [[r[c] for c in cols] for r in rows], column_names=list(cols))
    run = chdb_client.query("SELECT state, iteration, policy_id FROM kibotos.training_runs FINAL").result_rows
    assert run == [("done", 4, "teacher-run-1-it4")]
    iters = chdb_client.query("SELECT iteration FROM kibotos.training_progress FINAL ORDER BY iteration").result_rows
    assert iters == [(1,), (2,), (4,)]
    policies = chdb_client.query("SELECT policy_id, dataset_versions FROM kibotos.policies FINAL").result_rows
    assert policies == [("teacher-run-1-it4", ["pickups@v2"])]

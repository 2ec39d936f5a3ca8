"""XGen rows in real chdb (migration 0009) through the sink's row mapping, and the
status a request reads as: queued -> running -> done, or rejected with its reason."""

from __future__ import annotations

import pytest

from kibotos.xgen.status import xgen_status
from streams.sink_rows import TABLE_COLUMNS, rows_for
from tests.fixtures.events import xgen_clip, xgen_progress, xgen_request

pytestmark = pytest.mark.integration


def write(client, topic_id, *events):
    for event in events:
        for table, row in rows_for(topic_id, event):
            client.insert(f"kibotos.{table}", [[row[c] for c in TABLE_COLUMNS[table]]],
                          column_names=list(TABLE_COLUMNS[table]))


def test_unknown_request(chdb_client):
    assert xgen_status(chdb_client, "nope") is None


def test_request_runs_to_done_and_redeliveries_count_once(chdb_client):
    write(chdb_client, "xgen.requests", xgen_request(request_id="r1"))
    assert xgen_status(chdb_client, "r1")["state"] == "queued"
    write(chdb_client, "xgen.progress", *(xgen_progress(request_id="r1", stage=s) for s in ("pose", "retarget")))
    st = xgen_status(chdb_client, "r1")
    assert st["state"] == "running" and st["current_stage"] == "interaction" and 0 < st["progress"] < 0.5
    write(chdb_client, "xgen.progress", xgen_progress(request_id="r1", stage="interaction"),
          xgen_progress(request_id="r1", stage="augment", clip_count=3))
    for i in range(3):
        for attempt in range(2):  # a redelivered export job writes the same rows again
            write(chdb_client, "xgen.progress", xgen_progress(request_id="r1", stage="export", clip_index=i))
            if i == 2 and attempt == 0:  # the progress row landed, the clip's row not yet: not done
                assert xgen_status(chdb_client, "r1")["state"] == "running"
            write(chdb_client, "xgen.clips", xgen_clip(request_id="r1", clip_id=f"c{i}", clip_index=i,
                                                       verified=i != 1, quality_verdict="rejected" if i == 1
                                                       else "accepted"))
        st = xgen_status(chdb_client, "r1")
        assert st["clips_exported"] == i + 1 and st["state"] == ("done" if i == 2 else "running")
    assert st["progress"] == 1.0 and st["clip_count"] == 3 and st["clips_verified"] == 2
    assert [c["clip_id"] for c in st["clips"]] == ["c0", "c1", "c2"] and st["uploader"] == "miner-1"
    assert st["stages"][1]["metrics"] == {"mean_residual_m": 0.02}


def test_a_clip_refused_by_its_export_job_counts_as_finished(chdb_client):
    write(chdb_client, "xgen.progress", *(xgen_progress(request_id="r3", stage=s) for s in
                                          ("pose", "retarget", "interaction")),
          xgen_progress(request_id="r3", stage="augment", clip_count=2),
          xgen_progress(request_id="r3", stage="export", clip_index=0, passed=False,
                        reason_code="xgen_artifact_missing"))
    write(chdb_client, "xgen.clips", xgen_clip(request_id="r3", clip_id="k1", clip_index=1))
    st = xgen_status(chdb_client, "r3")
    assert (st["state"], st["clips_exported"], st["clips_finished"]) == ("done", 1, 2)


def test_refused_request_names_stage_and_reason(chdb_client):
    write(chdb_client, "xgen.requests", xgen_request(request_id="r2"))
    write(chdb_client, "xgen.progress", xgen_progress(request_id="r2", stage="pose", passed=False,
                                                      reason_code="xgen_no_person", artifact_uri=None))
    st = xgen_status(chdb_client, "r2")
    assert (st["state"], st["failed_stage"], st["reason_code"], st["progress"]) == \
        ("rejected", "pose", "xgen_no_person", 1.0)

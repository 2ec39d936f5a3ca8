"""Copies and clawbacks through the embedded stack (Tansu, a gate worker process, the
novelty stage, the ClickHouse sink on chdb): another miner's copy that raced ahead of its
original is paid, then revised once the original is checked — a ``revised`` event on
``verdicts``, a compensating ledger entry, and balances that are the sum of the entries.

The race is staged, not hoped for: the copy is submitted and judged first, then the
original is produced with the earlier upload time it would have had.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from kibotos.config.settings import Settings
from kibotos.reports import reads
from kibotos.robots import get_robot, list_robots
from kibotos.runtime.stack import Stack
from kibotos.runtime.submit import producer, submit_paths
from kibotos.synthetic import perturb
from kibotos.synthetic.samples import make_episode
from streams.stages import ledger_entry_id, verdict_event_id
from streams.verdict_feed import follow_verdicts

pytestmark = pytest.mark.integration

OWNER, COPIER = "miner-owner", "miner-copier"


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    for name in [k for k in os.environ if k.startswith("KIBOTOS_")]:
        monkeypatch.delenv(name)
    # the cheap chain and the novelty stage: the evidence jobs are tested in test_demo.py
    return Settings(home=tmp_path / "home", topic_prefix=f"t{uuid.uuid4().hex[:12]}.", evidence_jobs=(),
                    xgen_jobs=(), training_jobs=(), log_level="INFO")


def wait_for(what: str, fn, stack: Stack, timeout_s: float = 180):
    deadline = time.monotonic() + timeout_s
    while True:
        stack.check_workers()
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_a_copy_paid_before_its_original_is_clawed_back_through_the_stack(settings, tmp_path):
    robot = get_robot("ur5", dict(list_robots())["ur5"])
    original = make_episode(robot, seed=41, miner_id=OWNER, duration_ms=4000)
    copy = perturb.copy_of(original, COPIER, crf=35)  # another H.264 pass: a near-exact copy
    original_path = original.write(tmp_path / "original.zarr.zip")
    copy_path = copy.write(tmp_path / "copy.zarr.zip")
    osid, csid = original.manifest["submission_id"], copy.manifest["submission_id"]

    stack = Stack(settings, workers=1, log=lambda message: None, ephemeral=True)
    stack.start()
    try:
        [copied] = submit_paths([copy_path], bootstrap=stack.bootstrap, store=stack.store, catalogue=stack.catalogue)
        assert copied.submission_id == csid
        paid = wait_for("the copy's verdict", lambda: reads.get_report(settings, csid), stack)
        assert paid["verdict"] == "accepted" and paid["points"] > 0  # nothing to compare with yet

        # the original, uploaded an hour before the copy, reaches the novelty stage after it
        stored = stack.store.put_file(original_path, f"bundles/{osid}.zarr.zip")
        topic = stack.catalogue.submissions_received
        event = {"submission_id": osid, "miner_id": OWNER, "bundle_uri": stored.uri,
                 "bundle_sha256": stored.sha256, "bundle_size_bytes": stored.size_bytes,
                 "received_at": int(time.time() * 1000) - 3_600_000, "robot_model_id": "ur5"}
        prod = producer(stack.bootstrap)
        prod.produce(topic.name, key=topic.key(event), value=topic.serialize(event))
        assert prod.flush(30) == 0

        def settled():
            rep_o, rep_c = reads.get_report(settings, osid), reads.get_report(settings, csid)
            entries = reads.ledger(settings, COPIER)
            return (rep_o, rep_c, entries) if rep_o and rep_c and rep_c["verdict"] == "rejected" \
                and len(entries) == 2 else None

        rep_o, rep_c, entries = wait_for("the revision", settled, stack)
        assert rep_o["verdict"] == "accepted"
        novelty_o = {g["gate"]: g for g in rep_o["gates"]}["novelty"]
        assert novelty_o["metrics"]["cross_miner_later_match"]["submission_id"] == csid
        assert novelty_o["metrics"]["s_novel"] > 0.9 and rep_o["points"] > 0  # the original keeps its reward
        # the warehouse report is the revised one
        assert (rep_c["reason_code"], rep_c["points"]) == ("copied_submission", 0.0)
        revision = {g["gate"]: g for g in rep_c["gates"]}["novelty"]["metrics"]["revision"]
        assert revision["original_submission_id"] == osid and revision["previous"]["passed"] is True

        by_kind = {e["kind"]: e for e in entries}
        assert by_kind["reward"]["entry_id"] == ledger_entry_id(csid, "reward")
        assert by_kind["reward"]["points"] == pytest.approx(paid["points"])
        assert by_kind["clawback"]["entry_id"] == ledger_entry_id(csid, "clawback:1")
        assert by_kind["clawback"]["points"] == pytest.approx(-paid["points"])
        balances = {b["miner_id"]: b for b in reads.balances(settings)}
        assert balances[COPIER]["points"] == pytest.approx(0.0, abs=1e-6) and balances[COPIER]["entries"] == 2
        assert balances[OWNER]["points"] == pytest.approx(rep_o["points"]) and balances[OWNER]["entries"] == 1

        # what a validator sees on `verdicts`: one event per decision, with stable ids
        events = []
        for v in follow_verdicts(stack.bootstrap, stack.catalogue, idle_timeout_s=5):
            events.append(v)
        kinds = sorted((v["submission_id"], v["event_type"], v["revision"], v["event_id"]) for v in events)
        expected = sorted([(csid, "decision", 0, verdict_event_id(csid)),
                           (osid, "decision", 0, verdict_event_id(osid)),
                           (csid, "revised", 1, verdict_event_id(csid, "revised", 1))])
        assert sorted(set(kinds)) == expected, kinds  # duplicates (redelivery) share their id
        [revised] = [v for v in events if v["event_type"] == "revised"]
        assert (revised["verdict"], revised["reason_code"], revised["points"]) == ("rejected", "copied_submission", 0.0)
    finally:
        stack.stop()

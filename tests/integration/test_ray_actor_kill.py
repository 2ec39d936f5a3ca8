"""One Ray job actor SIGKILLed mid-job, its GPU consumer process left alone: the consumer
sees the actor die under the job (Ray raises for it), starts a fresh actor, runs the job
again there, and every job's result is published exactly once — the consumer process
itself is never restarted. ``kibotos bench faults --scenarios ray_actor`` runs the same
fault through the whole stack (verdicts, ledger)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import pytest
from confluent_kafka import Producer

from benchmarks.faults import kill_busy_ray_actor, ray_actor_pids
from kibotos.objectstore import LocalObjectStore
from tests.fixtures.pipeline import read_topic
from tests.integration.test_gpu_consumer_group import job_events, start_consumer, wait_for

pytestmark = pytest.mark.integration


def test_a_ray_actor_killed_mid_job_loses_nothing_and_repeats_nothing(tansu, catalogue, tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    events = job_events(tmp_path, store)[:5]
    log = tmp_path / "gpu.log"
    proc = start_consumer(tansu, catalogue, store, log, f"ra{os.getpid()}{int(time.time())}")
    try:
        wait_for(lambda: "serving ik" in log.read_text("utf-8", "replace"), 180, "the consumer to serve ik", [log])
        wait_for(lambda: ray_actor_pids(proc.pid), 120, "the warm IK actor", [log])
        [first_actor] = ray_actor_pids(proc.pid)  # one warm actor per kind
        spec = catalogue.job("ik")
        producer = Producer({"bootstrap.servers": tansu.bootstrap, "batch.num.messages": 1, "linger.ms": 0})
        for ev in events:
            producer.produce(spec.name, key=spec.key(ev), value=spec.serialize(ev))
        assert producer.flush(30) == 0

        killed = kill_busy_ray_actor(proc.pid, timeout_s=180)  # while it runs a job
        assert killed == first_actor
        completed = read_topic(tansu.bootstrap, catalogue.evidence_completed,
                               until=lambda recs: {r["submission_id"] for r in recs} >= {e["submission_id"] for e in events},
                               idle_s=3.0, timeout=240)
        assert proc.poll() is None, "the consumer process died with its actor"
        replacement = ray_actor_pids(proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    counts = Counter(r["submission_id"] for r in completed)
    assert counts == Counter({e["submission_id"]: 1 for e in events}), counts  # none lost, none twice
    assert replacement and killed not in replacement  # a fresh actor took over
    text = log.read_text("utf-8", "replace")
    assert "failed (attempt 1/3)" in text, text[-3000:]  # the job died with its actor and was run again
    assert all(r["gate_results"][-1]["gate"] == "ik_residual" and r["gate_results"][-1]["passed"] for r in completed)

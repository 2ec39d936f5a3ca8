"""The GPU consumer group on a real broker: two ``gpu_consumers.worker`` processes (each
with its own local Ray and a warm IK actor) share the ``jobs.ik`` partitions; one is
SIGKILLed mid-stream and every job still completes.

Delivery is at-least-once: the killed process's unfinished job is redone by the
survivor. The test bounds those redos by what could have been in flight and checks a
redone job's result is the same as the first one (downstream effects are idempotent by
submission id), so no job is lost and none counts twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from kibotos.objectstore import LocalObjectStore
from kibotos.robots import get_robot, list_robots
from kibotos.synthetic.samples import make_episode
from tests.fixtures.pipeline import read_topic

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
N_JOBS = 12
DONE = re.compile(r"done ik job ")


def job_events(tmp_path: Path, store: LocalObjectStore) -> list[dict]:
    robot = get_robot("ur5", dict(list_robots())["ur5"])
    events = []
    for seed in range(N_JOBS):
        ep = make_episode(robot, "genuine", seed=100 + seed, miner_id=f"miner-{seed % 3}", duration_ms=3000)
        sid = ep.manifest["submission_id"]
        stored = store.put_file(ep.write(tmp_path / "bundles" / f"{seed}.zarr.zip"), f"bundles/{sid}.zarr.zip")
        events.append({"submission_id": sid, "miner_id": ep.manifest["miner_id"], "bundle_uri": stored.uri,
                       "bundle_sha256": stored.sha256, "bundle_size_bytes": stored.size_bytes,
                       "received_at": int(time.time() * 1000), "robot_model_id": "ur5", "gate_results": [],
                       "sync": None, "config_version": None, "robot_model_revision": None})
    return events


def start_consumer(tansu, catalogue, store: LocalObjectStore, log_path: Path, group: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIBOTOS_")}
    env.update({
        "KIBOTOS_TOPIC_PREFIX": catalogue.prefix,
        "KIBOTOS_TOPIC_PARTITIONS": str(catalogue.partitions),
        "KIBOTOS_OBJECT_STORE_URL": store.root.as_uri(),
        "KIBOTOS_CONSUMER_GROUP_PREFIX": group,
        "KIBOTOS_EVIDENCE_JOBS": json.dumps(["ik"]),
    })
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "gpu_consumers.worker", "--bootstrap", tansu.bootstrap,
                                 "--loglevel", "INFO"], cwd=REPO_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def done_keys(log_path: Path) -> list[str]:
    """Submission ids of the jobs a consumer finished, from its JSON log lines (each one
    carries the submission_id it was about)."""
    keys = []
    for line in log_path.read_text("utf-8", "replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # Ray's own output
        if isinstance(entry, dict) and DONE.match(entry.get("msg", "")):
            assert entry["processor"] == "job_ik" and entry["submission_id"]
            keys.append(entry["submission_id"])
    return keys


def wait_for(cond, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text('utf-8', 'replace')[-3000:]}" for p in logs)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.2)


def test_two_consumers_lose_no_job_when_one_is_killed(tansu, catalogue, tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    events = job_events(tmp_path, store)
    group = f"gc{os.getpid()}{int(time.time())}"
    logs = [tmp_path / "gpu-a.log", tmp_path / "gpu-b.log"]
    procs = [start_consumer(tansu, catalogue, store, log, group) for log in logs]
    try:
        wait_for(lambda: all("serving ik" in p.read_text("utf-8", "replace") for p in logs), 180,
                 "both consumers to serve ik", logs)
        spec = catalogue.job("ik")
        producer = Producer({"bootstrap.servers": tansu.bootstrap, "batch.num.messages": 1, "linger.ms": 0})
        for ev in events:
            producer.produce(spec.name, key=spec.key(ev), value=spec.serialize(ev))
        assert producer.flush(30) == 0

        # kill the first consumer as soon as it has finished one job (it holds more)
        wait_for(lambda: done_keys(logs[0]), 180, "the first consumer to finish a job", logs)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        killed_done = set(done_keys(logs[0]))

        completed = read_topic(tansu.bootstrap, catalogue.evidence_completed,
                               until=lambda recs: {r["submission_id"] for r in recs} >= {e["submission_id"] for e in events},
                               idle_s=2.0, timeout=240)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()

    survivor_done = set(done_keys(logs[1]))
    counts = Counter(r["submission_id"] for r in completed)
    assert set(counts) == {e["submission_id"] for e in events}, "a job was lost"
    assert killed_done and survivor_done, "both consumers must have worked"
    # a redo happens only for what the killed process had started but not committed:
    # one actor per kind means at most one job in flight, plus one finished-but-uncommitted
    redone = {sid for sid, n in counts.items() if n > 1}
    assert len(redone) <= 2, counts
    by_sid: dict[str, list[dict]] = {}
    for r in completed:
        by_sid.setdefault(r["submission_id"], []).append(r)
    for sid in redone:  # a redo gives the same evidence: idempotent downstream
        firsts = [json.loads(g["metrics_json"]) for g in by_sid[sid][0]["gate_results"]]
        for other in by_sid[sid][1:]:
            again = [json.loads(g["metrics_json"]) for g in other["gate_results"]]
            for a, b in zip(firsts, again):
                for m in (a, b):  # timings differ between runs; the evidence must not
                    m.pop("wall_ms", None)
                    m.get("ik_feasibility", {}).pop("solve_ms", None)
            assert firsts == again
    assert all(r["gate_results"][-1]["gate"] == "ik_residual" and r["gate_results"][-1]["passed"]
               for r in completed)

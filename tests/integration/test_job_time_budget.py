"""A GPU job past the job time budget frees its actor (issue 12: no bundle holds a worker).

Real broker, real Ray actors, the real pose job (MediaPipe on a human video, seconds per
job on this CPU): with a budget far below that, every try is killed with its actor and the job is dead-lettered as a validator
fault (``job_time_budget_exceeded``, no verdict); the consumer goes on and the next job
completes on the fresh actor once the budget allows it.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from gpu_consumers.consumer import JobConsumer
from kibotos.config.settings import Settings
from kibotos.objectstore import LocalObjectStore
from kibotos.robots import get_robot, list_robots
from kibotos.synthetic.samples import make_episode
from tests.fixtures.pipeline import read_topic

pytestmark = pytest.mark.integration


def human_video_event(tmp_path, store: LocalObjectStore, seed: int) -> dict:
    ep = make_episode(get_robot("ur5", dict(list_robots())["ur5"]), "human_video", seed=seed, duration_ms=3000)
    sid = ep.manifest["submission_id"]
    stored = store.put_file(ep.write(tmp_path / f"{seed}.zarr.zip"), f"bundles/{sid}.zarr.zip")
    return {"submission_id": sid, "miner_id": ep.manifest["miner_id"], "bundle_uri": stored.uri,
            "bundle_sha256": stored.sha256, "bundle_size_bytes": stored.size_bytes,
            "received_at": int(time.time() * 1000), "robot_model_id": "ur5", "gate_results": [], "sync": None,
            "config_version": None, "robot_model_revision": None}


def test_a_job_past_the_time_budget_is_killed_dead_lettered_and_the_actor_replaced(tansu, catalogue, tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    settings = Settings(home=tmp_path / "home", topic_prefix=catalogue.prefix, topic_partitions=catalogue.partitions,
                        object_store_url=store.root.as_uri(), evidence_jobs=("pose",))
    slow, fine = human_video_event(tmp_path, store, 1), human_video_event(tmp_path, store, 2)
    producer = Producer({"bootstrap.servers": tansu.bootstrap})
    spec = catalogue.job("pose")

    consumer = JobConsumer(settings, tansu.bootstrap, kinds=("pose",), actors_per_kind=1, max_job_attempts=2,
                           job_time_budget_s=0.3)  # MediaPipe needs seconds: every try is overdue
    try:
        producer.produce(spec.name, key=slow["submission_id"].encode(), value=spec.serialize(slow))
        producer.flush(10)
        deadline = time.monotonic() + 120
        while consumer.jobs_done < 1 and time.monotonic() < deadline:
            consumer.poll_once()
        assert consumer.jobs_done == 1, "the overdue job was never given up"
        letters = read_topic(tansu.bootstrap, catalogue.dead_letters, until=lambda r: len(r) >= 1)
        assert [(d["error_code"], d["processor_id"]) for d in letters] == [("job_time_budget_exceeded", "job_pose")]
        assert "past the job time budget" in letters[0]["error_message"]
        assert read_topic(tansu.bootstrap, catalogue.evidence_completed, idle_s=0.5, timeout=5) == []

        consumer.job_time_budget_s = 600.0  # the replaced actor is healthy: the next job completes
        producer.produce(spec.name, key=fine["submission_id"].encode(), value=spec.serialize(fine))
        producer.flush(10)
        deadline = time.monotonic() + 180
        while consumer.jobs_done < 2 and time.monotonic() < deadline:
            consumer.poll_once()
        assert consumer.jobs_done == 2
        outs = read_topic(tansu.bootstrap, catalogue.evidence_completed, until=lambda r: len(r) >= 1, timeout=30)
        assert [o["submission_id"] for o in outs] == [fine["submission_id"]]
    finally:
        consumer.close()

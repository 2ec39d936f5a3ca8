"""The embedded stack's broker keeps its log on disk: records and committed offsets
survive a SIGKILL of Tansu (revived on its old port) and of the whole broker (a new one
on the same directory); the ephemeral one keeps nothing."""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from infra.embedded_broker import EmbeddedBroker

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic not in admin.list_topics(timeout=10).topics:
        for fut in admin.create_topics([NewTopic(topic, 1, 1)]).values():
            fut.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, "batch.num.messages": 1})
    for value in values:
        producer.produce(topic, value=value)
        producer.flush(30)


def _consume(bootstrap: str, topic: str, group: str, count: int, timeout_s: float = 30.0) -> list[bytes]:
    """Read up to ``count`` records as ``group`` and commit what was read."""
    import time

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    consumer.subscribe([topic])
    out, deadline = [], time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg.value())
                consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()
    return out


def test_records_and_offsets_survive_kills(tmp_path):
    topic, group = f"durable-{uuid.uuid4().hex[:8]}", "g1"
    values = [f"r{i}".encode() for i in range(5)]
    broker = EmbeddedBroker(tmp_path / "broker").start()
    try:
        assert broker.storage_engine.startswith("s3://")
        _produce(broker.bootstrap, topic, values[:3])
        assert _consume(broker.bootstrap, topic, group, 2) == values[:2]

        port = broker.tansu.port
        os.kill(broker.tansu.pid, signal.SIGKILL)
        broker.tansu._proc.wait(10)
        assert broker.revive() == ["broker"] and broker.tansu.port == port  # clients find it again
        _produce(broker.bootstrap, topic, values[3:])
    finally:
        for pid in broker.pids().values():  # the whole broker dies at once, no flush
            os.kill(pid, signal.SIGKILL)
        broker.stop()

    with EmbeddedBroker(tmp_path / "broker") as again:
        # the group resumes after its committed offset: nothing read twice, nothing lost
        assert _consume(again.bootstrap, topic, group, 3) == values[2:]


def test_ephemeral_broker_keeps_nothing(tmp_path):
    topic = f"mem-{uuid.uuid4().hex[:8]}"
    with EmbeddedBroker(ephemeral=True) as broker:
        assert broker.storage_engine.startswith("memory://") and broker.s3 is None
        _produce(broker.bootstrap, topic, [b"x"])
        os.kill(broker.tansu.pid, signal.SIGKILL)
        broker.tansu._proc.wait(10)
        broker.revive()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        assert topic not in admin.list_topics(timeout=10).topics


def test_a_killed_object_store_comes_back_under_the_broker(tmp_path):
    topic = f"store-{uuid.uuid4().hex[:8]}"
    values = [f"s{i}".encode() for i in range(6)]
    with EmbeddedBroker(tmp_path / "broker") as broker:
        _produce(broker.bootstrap, topic, values[:3])
        port, endpoint = broker.tansu.port, broker.s3.endpoint
        os.kill(broker.s3.pid, signal.SIGKILL)
        broker.s3._proc.wait(10)
        assert broker.revive() == ["broker-s3", "broker"]
        assert (broker.tansu.port, broker.s3.endpoint) == (port, endpoint)
        _produce(broker.bootstrap, topic, values[3:])
        assert sorted(_consume(broker.bootstrap, topic, "g2", 6)) == sorted(values)

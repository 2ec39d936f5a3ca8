"""A gate worker stopped by SIGTERM in the middle of an event does not commit that event's
offset: the event is processed again by the next worker (at-least-once across a graceful
stop, not only across a crash). Real Tansu, real faust workers as processes, a real S3
server (SeaweedFS) holding the bundle.

To hold an event in hand at a known moment, the first worker's object store is an S3
endpoint that accepts connections and never answers: gate A is reading the bundle when
the endpoint sees its first connection, and stays there until the test lets it go."""

from __future__ import annotations

import signal
import socket
import threading
from types import SimpleNamespace

import pytest
from confluent_kafka import Consumer, TopicPartition

from kibotos.runtime.submit import submit_paths
from tests.fixtures.pipeline import MINER, ids
from topics.clients import group_id

pytestmark = pytest.mark.integration


class SilentEndpoint:
    """A TCP server on loopback that accepts connections and never answers; ``release()``
    closes them all and refuses any more (the S3 client then fails fast)."""

    def __init__(self):
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)  # the accept loop looks at ``_released`` this often
        self.endpoint = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self._released = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._released.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self.connections.append(conn)
        self._server.close()

    def release(self) -> None:
        self._released.set()
        self._thread.join(5)
        for conn in self.connections:
            conn.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The offsets ``group`` committed on ``topic`` (partition -> next offset; none: absent)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found if tp.offset >= 0}


def test_an_event_in_hand_at_sigterm_is_processed_again_after_restart(pipeline, bundles, s3_store, seaweedfs,
                                                                     tmp_path):
    [sub] = submit_paths([bundles.path("genuine")], bootstrap=pipeline.bootstrap, store=s3_store,
                         catalogue=pipeline.catalogue, miner_id=MINER)
    store = {"KIBOTOS_OBJECT_STORE_URL": f"s3://{s3_store.bucket}/env1", "KIBOTOS_S3_ACCESS_KEY": seaweedfs.access_key,
             "KIBOTOS_S3_SECRET_KEY": seaweedfs.secret_key}
    silent = SilentEndpoint()
    try:
        first = pipeline.start_worker({**store, "KIBOTOS_S3_ENDPOINT": silent.endpoint,
                                       "KIBOTOS_HOME": str(tmp_path / "home-1")})
        pipeline.wait_for("gate A reading the bundle (the event in hand)", lambda: silent.connections, 120)
        pipeline.killed.add(first.pid)  # it is meant to stop
        first.send_signal(signal.SIGTERM)
        log = pipeline.workers[-1][1]
        # the worker stops its agents and its consumer (its last offset commit) while gate A
        # still waits on the store; only then is gate A let go, so that it cannot finish first
        # (the process then waits for gate A's thread to end)
        pipeline.wait_for("the first worker's event loop closed",
                          lambda: first.poll() is not None or "Closing event loop" in log.read_text("utf-8", "replace"),
                          60)
    finally:
        silent.release()
    first.wait(60)
    group = group_id(SimpleNamespace(consumer_group_prefix=pipeline.group_prefix,
                                     topic_prefix=pipeline.catalogue.prefix), "gates")  # the workers' group
    received = pipeline.catalogue.submissions_received
    committed = committed_offsets(pipeline.bootstrap, group, received.name, pipeline.catalogue.partitions)
    assert all(offset == 0 for offset in committed.values()), f"the unfinished event was committed: {committed}"
    assert not ids(pipeline.verdicts([], idle_s=0.5, timeout=5)), "the first worker sent a verdict"

    pipeline.start_worker({**store, "KIBOTOS_S3_ENDPOINT": seaweedfs.endpoint, "KIBOTOS_HOME": str(tmp_path / "home-2")})
    [verdict] = pipeline.verdicts([sub.submission_id], idle_s=0.5, timeout=120)
    assert (verdict["submission_id"], verdict["verdict"]) == (sub.submission_id, "accepted"), verdict

"""Create topics explicitly, with their partition counts, before anything uses them.

Brokers that auto-create topics on first use pick their own partition count (and Tansu's
may not match ours), so every entry point calls ``ensure_topics`` first. It is
idempotent: topics that already exist with the right partition count are left alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from kibotos.errors import ServiceError
from topics.catalogue import TopicSpec


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], timeout: float = 30) -> None:
    """Create every topic in ``specs`` that is missing and wait until metadata lists them.

    :param bootstrap: Kafka ``bootstrap.servers``.
    :param timeout: seconds for the whole operation.
    :raises ServiceError: the broker is unreachable, refuses a topic, or an existing
        topic has a different partition count (repartitioning would reorder keys).
    """
    specs = list(specs)
    deadline = time.monotonic() + timeout
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # replication_factor=-1: the broker's default (KIP-464), right for 1-node and real clusters.
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=-1) for s in specs],
        request_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ServiceError(f"cannot create topic {name}: {exc.args[0].str()}") from exc
        except Exception as exc:  # a timeout of the future itself
            raise ServiceError(f"cannot create topic {name} on {bootstrap}: {exc!r}") from exc
    _wait_for_metadata(admin, specs, deadline, bootstrap)


def _wait_for_metadata(admin: AdminClient, specs: list[TopicSpec], deadline: float, bootstrap: str) -> None:
    missing = [s.name for s in specs]
    while True:
        try:
            topics = admin.list_topics(timeout=max(0.1, min(5.0, deadline - time.monotonic()))).topics
        except KafkaException as exc:
            topics = {}
            if time.monotonic() > deadline:
                raise ServiceError(f"no metadata from {bootstrap}: {exc.args[0].str()}") from exc
        missing = []
        for spec in specs:
            meta = topics.get(spec.name)
            if meta is None or meta.error is not None or not meta.partitions:
                missing.append(spec.name)
            elif len(meta.partitions) != spec.partitions:
                raise ServiceError(
                    f"topic {spec.name} exists with {len(meta.partitions)} partitions, expected {spec.partitions}"
                )
        if not missing:
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"topics not visible in metadata after creation: {', '.join(missing)}")
        time.sleep(0.1)

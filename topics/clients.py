"""Consumer-group names and Kafka client settings: one place for every process.

Group names are namespaced like the topics (``<consumer_group_prefix>-<topic_prefix><role>``)
so environments and tests sharing a broker never share a group. Client settings follow
the measurements in ARCHITECTURE.md: short session timeouts (a group forms in about half
of one), short fetch waits (the broker may hold a fetch for its whole wait on every hop),
one record per produce request (Tansu under-reports watermarks of multi-record batches),
offsets committed by the code after its outputs were acknowledged (at-least-once).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

# role -> whether dots of the topic prefix become dashes (faust app ids and the GPU
# group always did; the sink and novelty groups never did: kept, so running groups keep
# their committed offsets)
GROUP_ROLES: dict[str, bool] = {"gates": True, "gpu-jobs": True, "sink": False, "novelty": False}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
}
# a consumer that hops records between topics: keep each fetch short
LOW_LATENCY = {"fetch.wait.max.ms": 100}
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all", "linger.ms": 0, "batch.num.messages": 1, "enable.idempotence": False,
}


def group_id(settings, role: str) -> str:
    """The consumer group of ``role`` (one of ``GROUP_ROLES``) in this deployment."""
    if role not in GROUP_ROLES:
        raise ValueError(f"unknown consumer role {role!r}; roles: {', '.join(GROUP_ROLES)}")
    name = f"{settings.consumer_group_prefix}-{settings.topic_prefix}{role}"
    return name.replace(".", "-") if GROUP_ROLES[role] else name


def consumer_config(bootstrap: str, group: str, **overrides: Any) -> dict[str, Any]:
    """confluent-kafka consumer settings (``overrides`` win)."""
    return {"bootstrap.servers": bootstrap, "group.id": group, **CONSUMER_DEFAULTS, **overrides}


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **overrides}


def position(msg: Message) -> tuple[str, int, int]:
    """``(topic, partition, offset)`` of a fetched record. confluent-kafka types each as
    optional (an error event has none); a record polled without an error has all three."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError(f"not a fetched record: topic={topic} partition={partition} offset={offset}")
    return topic, partition, offset

"""Subscribe to ``verdicts``: what a validator runs (``kibotos verdicts --follow``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer

from kibotos.errors import SerializationError
from topics.catalogue import Catalogue


def follow_verdicts(bootstrap: str, catalogue: Catalogue, *, group_id: str | None = None,
                    idle_timeout_s: float | None = None, stop=None) -> Iterator[dict]:
    """Yield decoded verdicts from the beginning of the topic (or the group's committed
    position when ``group_id`` is given). Stops after ``idle_timeout_s`` without a record,
    or when ``stop()`` returns true. Undecodable records are skipped (the sink keeps them
    as dead letters)."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group_id or f"verdict-reader-{uuid.uuid4().hex[:12]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": group_id is not None,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    })
    consumer.subscribe([catalogue.verdicts.name])
    last = time.monotonic()
    try:
        while True:
            if stop is not None and stop():
                return
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                    return
                continue
            last = time.monotonic()
            value = msg.value()
            if value is None:  # a tombstone carries no verdict
                continue
            try:
                yield catalogue.verdicts.deserialize(value)
            except SerializationError:
                continue
    finally:
        consumer.close()

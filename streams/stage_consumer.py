"""Run one broker-free stage (``streams.stages``) as a plain Kafka consumer loop.

For stages that need a resource one process owns — the novelty stage's ClickHouse index
in the embedded stack, where chdb is locked to the stack process — rather than a faust
worker. At-least-once like the faust agents: a record's outputs are acknowledged by the
broker before its offset is committed; effects downstream are idempotent.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from kibotos.errors import ServiceError
from kibotos.runtime.metrics import update_lag
from streams.stages import Record, handle_observed, stage_inputs
from topics.catalogue import Catalogue
from topics.clients import LOW_LATENCY, consumer_config, position, producer_config

log = logging.getLogger("kibotos.streams")


class StageConsumer:
    def __init__(self, stage, catalogue: Catalogue, bootstrap: str, group_id: str, policy=None):
        self.stage = stage
        self.policy = policy  # validator-fault retries (streams.stage.FaultPolicy; None: the packaged one)
        self.catalogue = catalogue
        self.handled = 0
        self._lag_at = 0.0
        self.assigned = False  # set by this consumer's own thread once the group gave it partitions
        self.consumer = Consumer(consumer_config(bootstrap, group_id, **LOW_LATENCY, **{"client.id": stage.id}))
        self.producer = Producer(producer_config(bootstrap))
        self.consumer.subscribe([spec.name for spec in stage_inputs(stage)], on_assign=self._on_assign)

    def _on_assign(self, consumer, partitions) -> None:
        self.assigned = True

    def poll_once(self, timeout: float = 0.5) -> int:
        if time.monotonic() - self._lag_at > 5.0:
            self._lag_at = time.monotonic()
            update_lag(self.stage.processor_id, self.consumer)
        msg = self.consumer.poll(timeout)
        if msg is None or msg.error():
            return 0
        topic, partition, offset = position(msg)
        record = Record(topic, msg.value(), msg.key(), partition, offset)
        try:
            for out in handle_observed(self.stage, record, self.catalogue, self.policy):
                self.producer.produce(out.topic.name, key=out.key(), value=out.value())
            if self.producer.flush(30):
                raise ServiceError(f"{self.stage.processor_id}: outputs not acknowledged by the broker")
        except ServiceError:  # the store or the broker: this record again, after a back-off
            self.consumer.seek(TopicPartition(topic, partition, offset))
            raise
        try:
            self.consumer.commit(message=msg, asynchronous=False)
        except KafkaException as exc:  # a rebalance: the record is redone, idempotently
            log.warning("%s: commit failed: %s", self.stage.processor_id, exc)
        self.handled += 1
        return 1

    def run(self, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                self.poll_once()
                backoff = 0.5
            except ServiceError:
                log.exception("%s: retrying in %.1fs", self.stage.processor_id, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(10)

"""The ClickHouse sink: the only writer of the warehouse, fed by topics, in batches.

It consumes ``submissions.received``, ``verdicts``, ``ledger.entries`` and
``dead.letters`` and writes ``submissions``, ``verification_reports`` + ``gate_results``,
``points_ledger`` and ``dead_letters`` (and the XGen tables ``xgen_requests``,
``xgen_stage_results``, ``xgen_clips`` from ``xgen.requests``, ``xgen.progress``,
``xgen.clips``); a verdict of the ingest checks (one upload
attempt, not the submission) goes to ``upload_verdicts`` instead. Why a sink rather than processors writing
directly: the embedded ClickHouse (chdb) is locked to one process, and ClickHouse wants
few large inserts rather than many small ones.

Delivery is at-least-once. Each ``poll_once`` consumes up to ``batch_size`` records
(waiting at most ``flush_interval_s``), inserts them with one insert per table, and
only then commits the offsets. A crash between insert and commit replays the batch;
the replacing tables and deterministic ids (``entry_id``, ``submission_id``) make the
replay harmless. If an insert fails, the consumer is rewound to the batch's first
offsets so the same records are retried.

Bad input is data: a record that cannot be decoded or converted becomes a
``dead_letters`` row (error code, message, raw key and payload) and the sink moves on.

The embedded stack runs the sink in a thread of its own process; a deployment runs it as
a process of its own: ``python -m streams.sink`` (``main`` below).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from kibotos.errors import KibotosError, ServiceError
from kibotos.runtime.metrics import DEAD_LETTERS, PROCESSING, RECORDS_IN, update_lag
from streams.sink_rows import TABLE_COLUMNS, rows_for, undecodable_row
from topics.catalogue import Catalogue
from topics.clients import LOW_LATENCY, consumer_config
from topics.clients import group_id as consumer_group

log = logging.getLogger(__name__)

PROCESSOR_ID = "clickhouse-sink"
SOURCE_TOPIC_IDS = ("submissions.received", "verdicts", "ledger.entries", "dead.letters",
                    "xgen.requests", "xgen.progress", "xgen.clips",
                    "datasets.versions", "datasets.episodes", "datasets.attributions",
                    "policy.evals", "training.requests", "training.progress")
DATABASE = "kibotos"


class ClickHouseSink:
    """Consume the warehouse topics and write them to ClickHouse.

    :param client: clickhouse-connect client (see ``kibotos.warehouse.open_client``).
    :param catalogue: topic catalogue (names carry the deployment's prefix).
    :param bootstrap: Kafka ``bootstrap.servers``.
    :param group_id: consumer group, conventionally ``f"{consumer_group_prefix}-sink"``.
    :param batch_size: most records per insert.
    :param flush_interval_s: longest wait for a batch to fill; bounds the write latency.

    Counters: ``records_consumed``, ``dead_lettered``, ``flushes``, ``insert_failures``,
    ``commit_failures`` and ``rows_written`` (per table).
    """

    def __init__(
        self,
        client,
        catalogue: Catalogue,
        bootstrap: str,
        group_id: str,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
    ):
        self.client = client
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._specs = {catalogue.get(topic_id).name: catalogue.get(topic_id) for topic_id in SOURCE_TOPIC_IDS}
        self.rows_written: Counter[str] = Counter()
        self.records_consumed = 0
        self.dead_lettered = 0
        self.flushes = 0
        self.insert_failures = 0
        self.commit_failures = 0
        self._lag_at = 0.0
        self.assigned = False  # set by this consumer's own thread once the group gave it partitions
        # short fetch waits: the sink reads ten topics, and an empty partition's fetch wait
        # adds up across them on Tansu (a verdict waited out a 30 s bound behind them)
        self._consumer = Consumer(consumer_config(bootstrap, group_id, **LOW_LATENCY, **{"client.id": PROCESSOR_ID}))
        self._consumer.subscribe(list(self._specs), on_assign=self._on_assign)

    def _on_assign(self, consumer, partitions) -> None:
        self.assigned = True

    def poll_once(self) -> int:
        """Consume one batch, write it, commit it; returns the number of records handled.

        :raises ServiceError: the insert failed (the batch will be consumed again).
        """
        messages = self._consumer.consume(num_messages=self.batch_size, timeout=self.flush_interval_s)
        records = [m for m in messages if not self._is_error(m)]
        if time.monotonic() - self._lag_at > 5.0:
            self._lag_at = time.monotonic()
            update_lag(PROCESSOR_ID, self._consumer)
        if not records:
            return 0
        t0 = time.perf_counter()
        tables: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for message in records:
            for table, row in self._convert(message):
                tables[table].append(row)
        try:
            self._insert(tables)
        except Exception as exc:
            self.insert_failures += 1
            self._rewind(records)
            raise ServiceError(f"{PROCESSOR_ID}: insert of {len(records)} records failed: {exc}") from exc
        self.records_consumed += len(records)
        self.flushes += 1
        self._commit()
        for message in records:
            RECORDS_IN.labels(PROCESSOR_ID, self._specs[cast(str, message.topic())].id).inc()  # a data message has a topic
        PROCESSING.labels(PROCESSOR_ID).observe(time.perf_counter() - t0)
        return len(records)

    def run(self, stop_event: threading.Event) -> None:
        """Poll until ``stop_event`` is set; insert failures are retried with a back-off."""
        backoff = 0.5
        while not stop_event.is_set():
            try:
                self.poll_once()
                backoff = 0.5
            except ServiceError:
                log.exception("%s: batch failed; retrying in %.1fs", PROCESSOR_ID, backoff)
                stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def close(self) -> None:
        """Leave the consumer group (partitions move to other sinks at once)."""
        self._consumer.close()

    def __enter__(self) -> "ClickHouseSink":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _is_error(self, message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("%s: consumer error: %s", PROCESSOR_ID, error.str())
        return True

    def _convert(self, message) -> list[tuple[str, dict[str, Any]]]:
        spec = self._specs[message.topic()]
        try:
            return rows_for(spec.id, spec.deserialize(message.value()))
        except (KibotosError, KeyError, TypeError, ValueError) as exc:
            self.dead_lettered += 1
            DEAD_LETTERS.labels(PROCESSOR_ID, getattr(exc, "reason_code", "invalid_event")).inc()
            log.warning(
                "%s: dead-lettering %s[%d]@%d: %s",
                PROCESSOR_ID, message.topic(), message.partition(), message.offset(), exc,
            )
            row = undecodable_row(
                topic=message.topic(),
                partition=message.partition(),
                offset=message.offset(),
                key=message.key(),
                payload=message.value(),
                error=exc,
                processor_id=PROCESSOR_ID,
                failed_at_ms=int(time.time() * 1000),
            )
            return [("dead_letters", row)]

    def _insert(self, tables: dict[str, list[dict[str, Any]]]) -> None:
        for table, rows in tables.items():
            columns = TABLE_COLUMNS[table]
            self.client.insert(
                f"{DATABASE}.{table}", [[row[c] for c in columns] for row in rows], column_names=list(columns)
            )
            self.rows_written[table] += len(rows)

    def _rewind(self, records) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in records:
            tp = (m.topic(), m.partition())
            first[tp] = min(first.get(tp, m.offset()), m.offset())
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # The partition moved to another member; it resumes from the last commit.
                log.warning("%s: cannot rewind %s[%d]: %s", PROCESSOR_ID, topic, partition, exc)

    def _commit(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            # Rows are in; the records will be redelivered and replaced idempotently.
            self.commit_failures += 1
            log.warning("%s: offset commit failed: %s", PROCESSOR_ID, exc.args[0].str())


def main(argv: list[str] | None = None) -> None:
    """A standalone sink process: ``python -m streams.sink [--metrics-port N]``.

    Settings come from ``KIBOTOS_*`` (``KIBOTOS_CLICKHOUSE_DSN`` names the ClickHouse
    server). Sink processes share the warehouse topics' partitions through one consumer
    group; run one or a few. SIGTERM finishes the batch in hand, then leaves the group.
    """
    from kibotos.runtime.process import process_parser, start_process
    from kibotos.warehouse import open_client

    parser = process_parser("ClickHouse sink: warehouse topics into ClickHouse tables")
    parser.add_argument("--batch-size", type=int, default=500, help="most records per insert")
    parser.add_argument("--flush-interval", type=float, default=0.5, help="longest wait for a batch (s)")
    proc = start_process(parser, argv)
    args, settings, bootstrap, stop = proc.args, proc.settings, proc.bootstrap, proc.stop
    client = open_client(settings.chdb_dsn)
    group = consumer_group(settings, "sink")
    try:
        with ClickHouseSink(client, Catalogue.from_settings(settings), bootstrap, group, batch_size=args.batch_size,
                            flush_interval_s=args.flush_interval) as sink:
            log.info("%s: consuming as %s", PROCESSOR_ID, group)
            sink.run(stop)
    finally:
        client.close()


if __name__ == "__main__":
    main()

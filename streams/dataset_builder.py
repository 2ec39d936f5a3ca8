"""The dataset builder: a stream processor that appends accepted episodes to datasets.

One consumer group per dataset (``<group prefix>-<topic prefix>dataset-<name>``), so a
dataset created later reads its sources from the beginning while the others resume
where they committed. Each ``poll_once`` offers the records to the dataset's
``kibotos.datasets.builder.DatasetBuilder`` (selection by spec, pending spool on disk);
when a version is due it is published (immutable files) and its events — version,
changelog episodes, attribution entries and their ledger entries — are produced to the
topics; only then are the offsets committed. A crash anywhere replays records that are
already pending or published (skipped by submission id), and a version whose events were
not all sent is sent again at start (``emitted.json``; same records, same ledger ids).

Sources: ``verdicts`` and, where the catalogue declares it, ``xgen.clips``
(``available_sources``). Run it as ``python -m streams.dataset_builder`` (every dataset
in the store, continuously; ``kibotos up`` runs and supervises it), or ``kibotos datasets
build`` without a stack (until idle, then publish). A publish request
(``kibotos.datasets.requests``) makes the running builder catch up with every record
produced before it and publish at once.

Metrics (``kibotos.runtime.metrics`` families with ``processor="dataset-builder"``, plus
``kibotos_dataset_records_total{dataset,outcome}``,
``kibotos_dataset_versions_published_total{dataset}``,
``kibotos_dataset_pending_episodes{dataset}``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client import Counter, Gauge

from kibotos.datasets import requests
from kibotos.datasets.builder import DatasetBuilder, available_sources
from kibotos.datasets.events import version_events
from kibotos.datasets.store import DatasetStore
from kibotos.errors import KibotosError
from kibotos.runtime.metrics import PROCESSING, RECORDS_IN, RECORDS_OUT, update_lag
from topics.catalogue import Catalogue

log = logging.getLogger(__name__)
PROCESSOR_ID = "dataset-builder"
LAG_EVERY_S = 10.0

DATASET_RECORDS = Counter("kibotos_dataset_records", "records offered to a dataset, by outcome",
                          ["dataset", "outcome"])
DATASET_VERSIONS = Counter("kibotos_dataset_versions_published", "dataset versions published", ["dataset"])
DATASET_PENDING = Gauge("kibotos_dataset_pending_episodes", "episodes, removals and revisions waiting for the "
                        "next version", ["dataset"], multiprocess_mode="livemax")


def group_id(prefix: str, catalogue: Catalogue, name: str) -> str:
    return f"{prefix}-{catalogue.prefix}dataset-{name}"


class DatasetProcessor:
    """Build one dataset from its source topics."""

    def __init__(self, store: DatasetStore, name: str, catalogue: Catalogue, bootstrap: str, group: str,
                 producer=None):
        from kibotos.runtime.submit import producer as make_producer

        self.store, self.name, self.catalogue = store, name, catalogue
        self.builder = DatasetBuilder(store, name)
        ids = [t.id for t in catalogue.all()]
        sources = [s for k, s in available_sources(ids).items() if k in self.builder.spec.sources]
        self._specs = {catalogue.get(s.topic_id).name: catalogue.get(s.topic_id) for s in sources}
        self.producer = producer or make_producer(bootstrap)
        self.outcomes: dict[str, int] = {}
        self.published: list[dict] = []
        self.undecodable = 0
        self._targets: dict[tuple[str, int], int] | None = None  # high watermarks a publish request waits for
        self._lag_at = 0.0
        # before the consumer joins its group: a failure here leaves no member behind
        store.upload_missing(name)  # versions published before the object store was configured
        self.emit_unsent()
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "client.id": f"{PROCESSOR_ID}-{name}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
        self._consumer.subscribe(list(self._specs))

    def emit_unsent(self) -> int:
        """Send the events of every published version not yet sent; returns how many."""
        sent = 0
        for v in self.store.versions(self.name):
            if v > self.store.emitted(self.name):
                self._emit(v)
                sent += 1
        return sent

    def _emit(self, version: int) -> None:
        for topic_id, record in version_events(self.store, self.name, version):
            spec = self.catalogue.get(topic_id)
            self.producer.produce(spec.name, key=spec.key(record), value=spec.serialize(record))
            self.producer.poll(0)
            RECORDS_OUT.labels(PROCESSOR_ID, topic_id).inc()
        if self.producer.flush(30) != 0:
            raise KibotosError(f"{PROCESSOR_ID}: events of {self.name} v{version} not delivered",
                               reason_code="broker_unavailable")
        self.store.mark_emitted(self.name, version)

    def poll_once(self, timeout: float = 0.5, batch: int = 500) -> int:
        """Consume a batch, offer it, publish if due; returns the records handled."""
        messages = self._consumer.consume(num_messages=batch, timeout=timeout)
        n = 0
        for m in messages:
            if m.error() is not None:
                if cast(KafkaError, m.error()).code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consumer error: %s", PROCESSOR_ID, cast(KafkaError, m.error()).str())
                continue
            spec = self._specs[cast(str, m.topic())]  # a data message has a topic and a value
            t0 = time.perf_counter()
            try:
                outcome = self.builder.offer(spec.id, spec.deserialize(cast(bytes, m.value())))
            except (KibotosError, KeyError, TypeError, ValueError) as exc:
                # the sink dead-letters the same record; here it is simply not an episode
                self.undecodable += 1
                log.warning("%s: skipping %s[%d]@%d: %s", PROCESSOR_ID, m.topic(), m.partition(), m.offset(), exc)
                outcome = "undecodable"
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            RECORDS_IN.labels(PROCESSOR_ID, spec.id).inc()
            PROCESSING.labels(PROCESSOR_ID).observe(time.perf_counter() - t0)
            DATASET_RECORDS.labels(self.name, outcome).inc()
            n += 1
        if self.builder.due():
            self.publish()
        elif n:
            self.builder.sync()
            self._commit()  # pending episodes are on disk: their records need not come again
        DATASET_PENDING.labels(self.name).set(self.builder.pending)
        if time.monotonic() - self._lag_at > LAG_EVERY_S:
            self._lag_at = time.monotonic()
            update_lag(PROCESSOR_ID, self._consumer)
        return n

    def publish(self) -> dict | None:
        info = self.builder.publish()
        if info is not None:
            self._emit(info["version"])
            self.published.append(info)
            DATASET_VERSIONS.labels(self.name).inc()
        self._commit()
        return info

    # --- publish requests (kibotos.datasets.requests) ----------------------------------

    def _high_watermarks(self) -> dict[tuple[str, int], int]:
        out = {}
        for topic in self._specs:
            meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
                if high > low:
                    out[(topic, p)] = high
        return out

    def caught_up(self, targets: dict[tuple[str, int], int]) -> bool:
        """Whether the group's committed offsets reached ``targets`` (every record below
        them has been offered: offsets are committed after each batch)."""
        if not targets:
            return True
        committed = self._consumer.committed([TopicPartition(t, p) for t, p in targets], timeout=10)
        return all(tp.offset >= targets[(tp.topic, tp.partition)] for tp in committed)

    def answer_requests(self) -> int:
        """Answer the publish requests waiting for this dataset once caught up; returns how many."""
        waiting = list(requests.pending_requests(self.store, self.name))
        if not waiting:
            self._targets = None
            return 0
        try:
            if self._targets is None:
                self._targets = self._high_watermarks()
            if not self.caught_up(self._targets):
                return 0
            info = self.publish()
            body = {"ok": True, "dataset": self.name, "version": self.store.latest(self.name),
                    "published": info["version"] if info else None, "outcomes": dict(self.outcomes)}
        except KafkaException as exc:  # the broker is away: the request waits for the next try
            log.warning("%s: publish request for %s waits: %s", PROCESSOR_ID, self.name, exc)
            return 0
        except KibotosError as exc:
            body = {"ok": False, "error": str(exc), "reason_code": exc.reason_code}
        for request in waiting:
            requests.answer(request, body)
        self._targets = None
        return len(waiting)

    def _commit(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:  # nothing to commit yet, or a rebalance: records come again, harmlessly
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("%s: commit failed: %s", PROCESSOR_ID, exc.args[0].str())

    def close(self) -> None:
        self._consumer.close()


def build_until_idle(store: DatasetStore, name: str, catalogue: Catalogue, bootstrap: str, group: str,
                     idle_s: float = 3.0, timeout_s: float = 300.0) -> DatasetProcessor:
    """Consume until no record came for ``idle_s`` (after the first one, or ``timeout_s``),
    then publish what is pending. Returns the processor (its ``published`` versions)."""
    proc = DatasetProcessor(store, name, catalogue, bootstrap, group)
    try:
        deadline = time.monotonic() + timeout_s
        seen = False
        last = time.monotonic()
        while time.monotonic() < deadline:
            if proc.poll_once(timeout=0.5):
                seen, last = True, time.monotonic()
            elif time.monotonic() - last > (idle_s if seen else max(idle_s, 8.0)):
                break  # a fresh group needs a few seconds to join before its first record
        proc.publish()
    finally:
        proc.close()
    return proc


def run(store: DatasetStore, catalogue: Catalogue, bootstrap: str, prefix: str, stop: threading.Event,
        rescan_s: float = 10.0) -> None:
    """Every dataset of the store, polled in turn, until ``stop``; new datasets are picked
    up every ``rescan_s``."""
    procs: dict[str, DatasetProcessor] = {}
    scanned = 0.0
    try:
        while not stop.is_set():
            # a publish request for a dataset not built yet (just created) is a reason to look now
            since = time.monotonic() - scanned
            if since > rescan_s or (since > 0.5 and requests.has_requests(store) - set(procs)):
                scanned = time.monotonic()
                for name in store.names():
                    if name not in procs:
                        try:
                            procs[name] = DatasetProcessor(store, name, catalogue, bootstrap,
                                                           group_id(prefix, catalogue, name))
                        except KibotosError as exc:  # e.g. an unreadable spec: the others go on
                            log.warning("%s: cannot build %s: [%s] %s", PROCESSOR_ID, name, exc.reason_code, exc)
                            continue
                        log.info("%s: building %s", PROCESSOR_ID, name)
            if not procs:
                stop.wait(1.0)
            for name, proc in list(procs.items()):
                try:
                    proc.poll_once(timeout=0.2)
                    proc.answer_requests()
                except KibotosError as exc:  # e.g. dataset_object_conflict: this dataset waits, the others go on
                    log.error("%s: %s stopped: [%s] %s; retried in %.0fs", PROCESSOR_ID, name, exc.reason_code, exc,
                              rescan_s)
                    proc.close()
                    del procs[name]
    finally:
        for proc in procs.values():
            proc.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m streams.dataset_builder``: build every dataset under
    ``<KIBOTOS_HOME>/datasets`` continuously."""
    from kibotos.objectstore import store_from_settings
    from kibotos.runtime.process import process_parser, start_process

    parser = process_parser("Dataset builder: accepted episodes into versioned datasets")
    parser.add_argument("--rescan-s", type=float, default=2.0, help="look for new dataset specs this often")
    proc = start_process(parser, argv)
    settings = proc.settings
    store = DatasetStore(settings.home / "datasets", objects=store_from_settings(settings))
    log.info("%s: building every dataset under %s", PROCESSOR_ID, store.root)
    run(store, Catalogue.from_settings(settings), proc.bootstrap, settings.consumer_group_prefix, proc.stop,
        rescan_s=proc.args.rescan_s)
    log.info("%s: stopped", PROCESSOR_ID)


if __name__ == "__main__":
    main()

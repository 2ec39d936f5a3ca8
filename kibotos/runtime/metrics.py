"""Prometheus metrics of every processor and consumer.

One set of metric families, labelled by ``processor`` (a gate id, ``evidence_dispatch``,
``job_<kind>``, ``decision``, ``sink``):

* ``kibotos_records_in_total{processor,topic}`` / ``kibotos_records_out_total{processor,topic}``
* ``kibotos_rejections_total{processor,reason_code}`` — records routed to ``verification.rejected``
* ``kibotos_dead_letters_total{processor,error_code}``
* ``kibotos_processing_seconds{processor}`` — histogram of the work per record
* ``kibotos_consumer_lag{processor,topic,partition}`` — high watermark minus position
  (sink and GPU consumers, where the consumer loop is ours)
* ``kibotos_jobs_in_flight{kind}`` — evidence jobs running on Ray actors

**Processes.** In production every process exposes its own ``/metrics`` (gate workers on
their faust web port, GPU consumers and the sink with ``--metrics-port``) and Prometheus
scrapes each. The embedded stack sets ``PROMETHEUS_MULTIPROC_DIR`` for itself and its
children before they import ``prometheus_client``, so the stack's read API serves one
``/metrics`` aggregated over all of them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

RECORDS_IN = Counter("kibotos_records_in", "records consumed", ["processor", "topic"])
RECORDS_OUT = Counter("kibotos_records_out", "records produced", ["processor", "topic"])
REJECTIONS = Counter("kibotos_rejections", "submissions rejected", ["processor", "reason_code"])
DEAD_LETTERS = Counter("kibotos_dead_letters", "records dead-lettered", ["processor", "error_code"])
# a stage's own failure (streams.stage.ValidatorFault), counted per try; never a verdict
VALIDATOR_FAULTS_TOTAL = Counter("kibotos_validator_faults", "validator faults (retried, then dead-lettered)",
                                 ["processor", "reason_code"])
# a recoverable degradation noted while judging (kibotos.errors.note_degraded), e.g. a damaged video tail
DEGRADED_TOTAL = Counter("kibotos_degraded_inputs", "inputs judged on partial data", ["flag"])
PROCESSING = Histogram("kibotos_processing_seconds", "work per record", ["processor"], buckets=BUCKETS)
LAG = Gauge("kibotos_consumer_lag", "high watermark minus committed position", ["processor", "topic", "partition"],
            multiprocess_mode="livemax")
JOBS_IN_FLIGHT = Gauge("kibotos_jobs_in_flight", "evidence jobs running on actors", ["kind"],
                       multiprocess_mode="livesum")


def observe(processor: str, in_topic_id: str, outputs: Iterable[tuple[str, dict]], seconds: float) -> None:
    """Account one handled record: ``outputs`` are ``(topic id, record)`` pairs."""
    RECORDS_IN.labels(processor, in_topic_id).inc()
    PROCESSING.labels(processor).observe(seconds)
    for topic_id, record in outputs:
        RECORDS_OUT.labels(processor, topic_id).inc()
        if topic_id == "verification.rejected":
            REJECTIONS.labels(processor, record.get("reason_code") or "rejected").inc()
        elif topic_id == "dead.letters":
            DEAD_LETTERS.labels(processor, record.get("error_code") or "unknown").inc()


def observe_stage(processor: str, in_topic_id: str, outputs: Iterable, seconds: float) -> None:
    """``observe`` for ``streams.stages.Output`` objects."""
    observe(processor, in_topic_id, [(o.topic.id, o.record) for o in outputs], seconds)


def update_lag(processor: str, consumer) -> None:
    """Set ``kibotos_consumer_lag`` for the partitions a confluent consumer holds."""
    from confluent_kafka import KafkaException

    try:
        parts = consumer.assignment()
        positions = consumer.position(parts) if parts else []
        for tp in positions:
            _, high = consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
            lag = max(0, high - tp.offset) if tp.offset >= 0 else high
            LAG.labels(processor, tp.topic, str(tp.partition)).set(lag)
    except KafkaException:
        pass  # a rebalance in progress: the next update catches up


class _Merged:
    """Metric families of several collectors, samples of same-named families joined."""

    def __init__(self, sources):
        self.sources = sources

    def collect(self):
        families = {}
        for source in self.sources:
            for fam in source.collect():
                if fam.name in families:
                    families[fam.name].samples.extend(fam.samples)
                else:
                    families[fam.name] = copy.copy(fam)
                    families[fam.name].samples = list(fam.samples)
        yield from families.values()


def render(children_dir: str | os.PathLike | None = None) -> tuple[bytes, str]:
    """``(body, content type)``: the metrics of this process — of every process sharing
    ``PROMETHEUS_MULTIPROC_DIR`` when that is set — plus, with ``children_dir``, those of
    the child processes writing there (the embedded stack's workers)."""
    from prometheus_client import REGISTRY, multiprocess
    from prometheus_client.registry import Collector

    sources: list[Collector] = []
    if os.environ.get(MULTIPROC_ENV):
        sources.append(multiprocess.MultiProcessCollector(None, os.environ[MULTIPROC_ENV]))
    else:
        sources.append(REGISTRY)
    if children_dir and os.path.isdir(children_dir) and str(children_dir) != os.environ.get(MULTIPROC_ENV):
        sources.append(multiprocess.MultiProcessCollector(None, str(children_dir)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(sources))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Expose ``/metrics`` of this process on ``host:port`` (a daemon thread)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host)

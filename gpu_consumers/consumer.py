"""The GPU consumer group: job topics in, Ray actors do the work, results out.

The contract with job families: a kind is a ``JobSpec`` in the job registry
(``gpu_consumers.registry``: ``kind``, ``input_topic``, ``build_stage(settings, catalogue,
store) -> Stage``, ``gate``, ``family``). This module knows no kind and no family: a Ray
actor of kind K builds ``get_job(K).build_stage(...)`` once (warm models, scenes) and
returns the ``Output``s of the stage's ``handle(record)`` (``streams.stage``), which the
consumer publishes whatever their topics. The evidence jobs (``gpu_consumers.jobs``) and
other families (XGen) plug in by registering their specs; nothing here changes.

One consumer process subscribes to the input topics of the kinds it serves (consumer
group ``<prefix>-gpu-jobs``: more processes, on more nodes, share the partitions) and
dispatches each record to a Ray actor of that kind. Actors hold their models/scenes
warm and declare the accelerator they need: ``num_gpus`` where CUDA exists, otherwise a
custom ``gpu_slot`` resource, so the same code runs here on CPU and on GPU nodes.

Back-pressure: a kind never has more records in flight than it has actors; when all
its actors are busy its topic's partitions are paused, so the consumer does not pull
work it cannot start. Offsets are committed per partition up to the first record not
yet finished (at-least-once): a killed consumer's unfinished jobs are redone by the
process that inherits the partitions, and downstream effects are idempotent (one
result per stage id in an event; replacing tables; deterministic ledger ids).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from kibotos.config.settings import Settings
from kibotos.errors import ServiceError
from kibotos.runtime.logs import submission_context
from kibotos.runtime.metrics import JOBS_IN_FLIGHT, VALIDATOR_FAULTS_TOTAL, observe, update_lag
from streams.stage import Record, ValidatorFault, dead_letter, load_fault_policy
from topics.catalogue import Catalogue
from topics.clients import LOW_LATENCY, consumer_config, group_id, position, producer_config

log = logging.getLogger("kibotos.gpu")


def accelerator_options(per_actor_share: float = 1.0) -> dict:
    """Ray resource request of one actor: a GPU share where CUDA exists, else a gpu_slot."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return {"num_gpus": per_actor_share, "num_cpus": 0}
    return {"resources": {"gpu_slot": per_actor_share}, "num_cpus": 0}


class JobTimeout(ValidatorFault):
    """A job ran past the job time budget: its actor was killed (``JobConsumer``)."""

    def __init__(self, stage_id: str, reason_code: str = "job_time_budget_exceeded", message: str = ""):
        super().__init__(stage_id, reason_code, message)


def fault_code(exc: Exception) -> str:
    """The dead-letter code of a job that raised in its actor: the ``ValidatorFault``'s own
    (``job_internal_error``; Ray hands it back as ``RayTaskError(ValidatorFault)`` with the
    original as ``cause``), else ``job_service_unavailable`` (a ``ServiceError``, a dead actor)."""
    cause = getattr(exc, "cause", None) or exc
    return cause.reason_code if isinstance(cause, ValidatorFault) else "job_service_unavailable"


class JobActorImpl:
    """Body of the Ray actor: builds the stage of its job kind once (warm), then handles
    records and returns the outputs as ``(topic name, key, value)``."""

    def __init__(self, kind: str, settings_json: str):
        from gpu_consumers.registry import get_job
        from kibotos.media.gl import configure_process
        from kibotos.objectstore import store_from_settings

        settings = Settings.model_validate_json(settings_json)
        # the actor's process start: what PyOpenGL and Genesis read from the environment
        configure_process(settings)
        store = store_from_settings(settings)
        self.stage = get_job(kind).build_stage(settings, Catalogue.from_settings(settings), store)

    def handle(self, topic: str, value: bytes, key: bytes | None, partition: int, offset: int):
        outs = self.stage.handle(Record(topic, value, key, partition, offset))
        return [(o.topic.name, o.key(), o.value()) for o in outs]


@dataclass
class Job:
    """One job record in flight, kept so a failed job can be retried or dead-lettered."""

    kind: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    attempts: int = 0
    started: float = 0.0


class OffsetTracker:
    """Per partition: which offsets are in flight; the commit point is the lowest of them
    (or one past the highest finished when nothing is in flight)."""

    def __init__(self):
        self.in_flight: dict[tuple[str, int], set[int]] = defaultdict(set)
        self.done_upto: dict[tuple[str, int], int] = {}

    def start(self, tp: tuple[str, int], offset: int) -> None:
        self.in_flight[tp].add(offset)

    def finish(self, tp: tuple[str, int], offset: int) -> None:
        self.in_flight[tp].discard(offset)
        self.done_upto[tp] = max(self.done_upto.get(tp, -1), offset)

    def commit_points(self) -> dict[tuple[str, int], int]:
        points = {}
        for tp, top in self.done_upto.items():
            pending = self.in_flight.get(tp)
            points[tp] = min(pending) if pending else top + 1
        return points

    def forget(self, tps) -> None:
        for tp in tps:
            self.in_flight.pop(tp, None)
            self.done_upto.pop(tp, None)


class JobConsumer:
    """Consume job topics and run them on Ray actors. ``run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: Settings, bootstrap: str, kinds: tuple[str, ...] | None = None,
                 actors_per_kind: int | None = None, ray_address: str | None = None,
                 max_job_attempts: int | None = None, job_time_budget_s: float | None = None):
        import ray

        from gpu_consumers.registry import get_job

        self.settings = settings
        self.kinds = tuple(kinds if kinds is not None else settings.evidence_jobs)
        self.catalogue = Catalogue.from_settings(settings)
        # the input topic of each kind (raises ConfigError for an unregistered kind)
        self.inputs = {kind: self.catalogue.get(get_job(kind).input_topic) for kind in self.kinds}
        n = actors_per_kind or settings.gpu_actors_per_kind
        if not ray.is_initialized():
            if ray_address:
                ray.init(address=ray_address, logging_level=logging.ERROR, log_to_driver=False)
            else:
                ray.init(resources={"gpu_slot": float(n * len(self.kinds))}, include_dashboard=False,
                         logging_level=logging.ERROR, log_to_driver=False)
        self._actor_cls = ray.remote(**accelerator_options())(JobActorImpl)
        # the actors see the broker too: a long job (train) publishes progress while it runs
        self._payload = settings.model_copy(update={"bootstrap_servers": bootstrap}).model_dump_json()
        # tries of one job in all (versioned: kibotos/config/faults.yaml, streams.stage.FaultPolicy)
        self.policy = load_fault_policy(settings.fault_config_path)
        self.max_attempts = max_job_attempts or self.policy.max_attempts
        # a job past this is killed with its actor: no bundle holds an actor for good
        self.job_time_budget_s = job_time_budget_s or self.policy.job_time_budget_s
        # kinds with a budget of their own (faults.yaml job_time_budgets_s: train)
        self.kind_budgets_s = dict(self.policy.job_time_budgets_s)
        self.free = {kind: [self._new_actor(kind) for _ in range(n)] for kind in self.kinds}
        self.topic_kind = {spec.name: kind for kind, spec in self.inputs.items()}
        # a cold Genesis scene build can take minutes inside one job
        self.consumer = Consumer(consumer_config(bootstrap, group_id(settings, "gpu-jobs"), **LOW_LATENCY,
                                                 **{"max.poll.interval.ms": 900_000}))
        self.producer = Producer(producer_config(bootstrap))
        self.tracker = OffsetTracker()
        self.pending: dict = {}  # ray ObjectRef -> (Job, actor)
        self.paused: set[str] = set()
        self.jobs_done = 0
        self._lag_at = 0.0
        self.consumer.subscribe(list(self.topic_kind), on_revoke=self._on_revoke)

    def _new_actor(self, kind: str):
        return self._actor_cls.remote(kind, self._payload)

    def _on_revoke(self, consumer, partitions) -> None:
        # commit what is finished; unfinished jobs of revoked partitions are redone by the
        # new owner (their outputs are idempotent downstream)
        self._commit()
        self.tracker.forget((p.topic, p.partition) for p in partitions)

    def _set_paused(self, kind: str, paused: bool) -> None:
        topic = self.inputs[kind].name
        parts = [tp for tp in self.consumer.assignment() if tp.topic == topic]
        if not parts:
            return
        if paused and topic not in self.paused:
            self.consumer.pause(parts)
            self.paused.add(topic)
        elif not paused and topic in self.paused:
            self.consumer.resume(parts)
            self.paused.discard(topic)

    def _dispatch(self, msg) -> None:
        kind = self.topic_kind[msg.topic()]
        job = Job(kind, msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())
        self.tracker.start((job.topic, job.partition), job.offset)
        self._submit(job)

    def _submit(self, job: "Job") -> None:
        job.started = time.perf_counter()
        JOBS_IN_FLIGHT.labels(job.kind).inc()
        actor = self.free[job.kind].pop()
        ref = actor.handle.remote(job.topic, job.value, job.key, job.partition, job.offset)
        self.pending[ref] = (job, actor)
        if not self.free[job.kind]:
            self._set_paused(job.kind, True)

    def _failed(self, job: "Job", actor, exc: Exception) -> None:
        """A job raised in its actor (a validator fault: a crashed model, a renderer that
        cannot start, the actor process died): retry it on a fresh actor, and after
        ``max_attempts`` tries park it in the dead-letter topic with its payload verbatim
        (replayable) and the fault's reason code, rather than reject the miner for the
        validator's own fault: the verdict stays pending."""
        import ray

        JOBS_IN_FLIGHT.labels(job.kind).dec()
        job.attempts += 1
        code = fault_code(exc)
        VALIDATOR_FAULTS_TOTAL.labels(f"job_{job.kind}", code).inc()
        log.error("job %s %s[%s]@%s failed (attempt %d/%d): %s", job.kind, job.topic, job.partition,
                  job.offset, job.attempts, self.max_attempts, exc)
        ray.kill(actor, no_restart=True)
        self.free[job.kind].append(self._new_actor(job.kind))
        if job.attempts < self.max_attempts:
            time.sleep(min(self.policy.backoff_s * job.attempts, 10.0))
            self._submit(job)
            return
        record = Record(job.topic, job.value, job.key, job.partition, job.offset)
        out = dead_letter(self.catalogue, record, f"job_{job.kind}", code,
                          f"validator fault after {job.attempts} attempts, verdict pending: {exc}")
        self._publish([(out.topic.name, out.key(), out.value())])
        observe(f"job_{job.kind}", self.inputs[job.kind].id, [(out.topic.id, out.record)],
                time.perf_counter() - job.started)
        self._finish(job)

    def _publish(self, outputs) -> None:
        for out_topic, key, value in outputs:
            self.producer.produce(out_topic, key=key, value=value)
        if self.producer.flush(30):
            raise ServiceError("job results not acknowledged by the broker")

    def _observe(self, job: "Job", outputs) -> None:
        outs = []
        for name, _, value in outputs:
            spec = self.catalogue.by_name(name)
            try:
                record = spec.deserialize(value) if spec.id in ("verification.rejected", "dead.letters") else {}
            except Exception:  # accounting never fails a job
                record = {}
            outs.append((spec.id, record))
        observe(f"job_{job.kind}", self.inputs[job.kind].id, outs, time.perf_counter() - job.started)

    def _finish(self, job: "Job") -> None:
        with submission_context(job.key):
            log.info("done %s job %s[%d]@%d key=%s", job.kind, job.topic, job.partition, job.offset,
                     (job.key or b"").decode("utf-8", "replace"),
                     extra={"processor": f"job_{job.kind}", "attempts": job.attempts + 1,
                            "ms": round((time.perf_counter() - job.started) * 1000.0, 1)})
        self.tracker.finish((job.topic, job.partition), job.offset)
        self.jobs_done += 1
        self._set_paused(job.kind, False)

    def _collect(self, timeout: float) -> None:
        import ray

        if not self.pending:
            return
        ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        for ref in ready:
            job, actor = self.pending.pop(ref)
            try:
                outputs = ray.get(ref)
            except Exception as exc:
                self._failed(job, actor, exc)
                continue
            JOBS_IN_FLIGHT.labels(job.kind).dec()
            self._publish(outputs)
            self._observe(job, outputs)
            self.free[job.kind].append(actor)
            self._finish(job)
        self._expire_overdue()
        self._commit()

    def _expire_overdue(self) -> None:
        """Kill the actor of every job running past the job time budget and handle the job
        as a validator fault (``job_time_budget_exceeded``: retried on a fresh actor, then
        dead-lettered with the verdict pending): a bundle that makes a job hang, or a job
        that hangs by itself, frees its actor instead of holding it."""
        now = time.perf_counter()
        for ref in [r for r, (job, _) in self.pending.items() if now - job.started > self.budget_s(job.kind)]:
            job, actor = self.pending.pop(ref)
            self._failed(job, actor, JobTimeout(f"job_{job.kind}", message=(
                f"ran {now - job.started:.1f} s, past the job time budget of {self.budget_s(job.kind):g} s")))

    def budget_s(self, kind: str) -> float:
        """The time budget of one job of ``kind``: its own (``job_time_budgets_s``) or the common one."""
        return self.kind_budgets_s.get(kind, self.job_time_budget_s)

    def _commit(self) -> None:
        points = self.tracker.commit_points()
        if not points:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in points.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. during a rebalance: the next commit catches up
            log.warning("commit failed: %s", exc)

    def poll_once(self, timeout: float = 0.2) -> None:
        if time.monotonic() - self._lag_at > 5.0:
            self._lag_at = time.monotonic()
            update_lag("gpu_jobs", self.consumer)
        # polled even when every actor is busy (their topics are paused, so nothing is
        # fetched): a poll is what keeps this member in the group (max.poll.interval.ms)
        # while a job runs for hours (train)
        msg = self.consumer.poll(timeout if not self.pending else 0.01)
        kind = self.topic_kind.get(msg.topic() or "") if msg is not None and not msg.error() else None
        if msg is not None and kind is not None:
            if self.free[kind]:
                self._dispatch(msg)
            else:  # paused too late: rewind so the record is fetched again later
                self.consumer.seek(TopicPartition(*position(msg)))
        self._collect(timeout if self.pending else 0.0)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll_once()

    def close(self) -> None:
        import ray

        try:
            while self.pending:
                self._collect(5.0)
        finally:
            self.consumer.close()
            self.producer.flush(10)
            if ray.is_initialized():
                ray.shutdown()
